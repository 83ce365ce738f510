import { isMap, isSeq, type LineCounter, type Node as YamlNode } from 'yaml';

/**
 * Line (1-based) of the deepest node that exists along `path` in a parsed YAML document, so a
 * schema issue at `policies[2].hold.timeout` points at the line a person would fix. Used by the
 * config loader, `custody policy check` and the console's YAML editor alike.
 */
export function yamlLineOf(root: YamlNode | null, path: readonly (string | number)[], lines: LineCounter): number {
  let node: unknown = root;
  let offset = root?.range?.[0] ?? 0;
  for (const key of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => (p.key as { value?: unknown } | null)?.value === key);
      if (!pair) break;
      offset = (pair.key as YamlNode).range?.[0] ?? offset;
      node = pair.value;
    } else if (isSeq(node) && typeof key === 'number') {
      const item = node.items[key] as YamlNode | undefined;
      if (!item) break;
      offset = item.range?.[0] ?? offset;
      node = item;
    } else break;
  }
  return lines.linePos(offset).line;
}
