/**
 * Turns the schema validator's issues into messages a person can act on: an unknown key names the
 * nearest valid one ("did you mean `connections`?"), and a missing field says it is required and what
 * it holds, instead of "expected string, received undefined". Used by validateConfig, so the config
 * loader, `custody policy check` and the console's editors all say the same thing.
 */

/** The subset of a zod v4 schema's definition this file reads. */
interface SchemaDef {
  type: string;
  shape?: Record<string, { _zod: { def: SchemaDef } }>;
  element?: { _zod: { def: SchemaDef } };
  innerType?: { _zod: { def: SchemaDef } };
  in?: { _zod: { def: SchemaDef } };
  options?: { _zod: { def: SchemaDef } }[];
  valueType?: { _zod: { def: SchemaDef } };
}

interface RawIssue {
  code?: string;
  path: PropertyKey[];
  message: string;
  keys?: string[];
  expected?: string;
}

export interface HintedIssue {
  path: (string | number)[];
  message: string;
}

/** The object schemas reachable at `path` (unions give several), with wrappers looked through. */
function objectsAt(root: { _zod: { def: SchemaDef } }, path: readonly (string | number)[]): SchemaDef[] {
  let current: SchemaDef[] = [root._zod.def];
  for (const step of path) {
    const next: SchemaDef[] = [];
    for (const def of current.flatMap(unwrap)) {
      if (typeof step === 'number' && def.type === 'array' && def.element) next.push(def.element._zod.def);
      else if (typeof step === 'string' && def.type === 'object' && def.shape?.[step]) next.push(def.shape[step]._zod.def);
      else if (typeof step === 'string' && def.type === 'record' && def.valueType) next.push(def.valueType._zod.def);
    }
    current = next;
  }
  return current.flatMap(unwrap).filter((d) => d.type === 'object');
}

function unwrap(def: SchemaDef): SchemaDef[] {
  if (def.innerType) return unwrap(def.innerType._zod.def);
  if (def.type === 'pipe' && def.in) return unwrap(def.in._zod.def);
  if (def.options) return def.options.flatMap((o) => unwrap(o._zod.def));
  return [def];
}

/** Levenshtein distance, small strings only. */
function distance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1]!.toLowerCase() === b[j - 1]!.toLowerCase() ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

/** The valid key nearest to `key`, if it is near enough to be a slip of the keyboard. */
export function nearestKey(key: string, valid: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const v of valid) {
    const d = distance(key, v);
    if (d < bestD) [best, bestD] = [v, d];
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(best.length / 3)) ? best : undefined;
}

/** One message per problem, unknown keys one per key at the key's own path. */
export function hintIssues(schema: unknown, issues: readonly unknown[]): HintedIssue[] {
  const root = schema as { _zod: { def: SchemaDef } };
  const out: HintedIssue[] = [];
  for (const issue of issues as readonly RawIssue[]) {
    const path = issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p)) as (string | number)[];
    if (issue.code === 'unrecognized_keys' && issue.keys) {
      const valid = [...new Set(objectsAt(root, path).flatMap((d) => Object.keys(d.shape ?? {})))];
      for (const key of issue.keys) {
        const near = nearestKey(key, valid);
        const known = valid.length ? ` Valid keys here: ${valid.join(', ')}.` : '';
        out.push({ path: [...path, key], message: near ? `unknown key "${key}": did you mean "${near}"?` : `unknown key "${key}".${known}` });
      }
      continue;
    }
    if (issue.code === 'invalid_type' && /received undefined$/.test(issue.message)) {
      const field = path[path.length - 1];
      out.push({ path, message: `${String(field)} is required (${issue.expected ? `a ${issue.expected}` : 'a value'})` });
      continue;
    }
    out.push({ path, message: issue.message });
  }
  return out;
}
