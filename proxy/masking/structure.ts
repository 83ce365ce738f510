/**
 * Where the text is inside LLM API responses and stream events (requests are masked in every value
 * and key instead: request.ts). Response masking touches only message contents, tool-call
 * arguments, tool results and instructions — never ids, model names, roles or object keys.
 *
 * OpenAI: Chat Completions (messages[].content incl. content parts, tool_calls[].function.arguments,
 * tool-role results; choices[].message / .delta / .text), Responses (input string or items,
 * instructions, output[] message text, function_call arguments, function_call_output, reasoning
 * summaries), legacy Completions `prompt`, Embeddings `input`.
 * Anthropic Messages: system, messages[].content text blocks, tool_use.input string leaves,
 * tool_result content, thinking; response content blocks likewise.
 */

export type JsonPath = (string | number)[];
type Obj = Record<string, unknown>;
/** Called for every string to mask: `container[key]` is the string. */
export type LeafVisitor = (container: Obj | unknown[], key: string | number, path: JsonPath) => void;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

function str(o: Obj | unknown[], key: string | number, path: JsonPath, visit: LeafVisitor): void {
  if (typeof (o as Record<string | number, unknown>)[key] === 'string') visit(o, key, [...path, key]);
}

/** Every string leaf under `value` (values only, never keys). */
export function allStringLeaves(value: unknown, path: JsonPath, visit: LeafVisitor, skipKeys?: ReadonlySet<string>): void {
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      if (typeof value[i] === 'string') visit(value, i, [...path, i]);
      else if (typeof value[i] === 'object' && value[i] !== null) allStringLeaves(value[i], [...path, i], visit, skipKeys);
    }
  } else if (isObj(value)) {
    for (const k of Object.keys(value)) {
      if (skipKeys?.has(k)) continue;
      const v = value[k];
      if (typeof v === 'string') visit(value, k, [...path, k]);
      else if (typeof v === 'object' && v !== null) allStringLeaves(v, [...path, k], visit, skipKeys);
    }
  }
}

/** Keys that carry identifiers and protocol structure in LLM APIs; skipped by the generic fallback. */
export const STRUCTURAL_KEYS: ReadonlySet<string> = new Set([
  'id', 'object', 'model', 'role', 'type', 'created', 'created_at', 'status', 'finish_reason', 'stop_reason', 'stop_sequence',
  'index', 'call_id', 'tool_call_id', 'tool_use_id', 'item_id', 'system_fingerprint', 'service_tier', 'encoding_format',
  'previous_response_id', 'signature', 'media_type', 'url', 'file_id', 'name',
]);

// ---- OpenAI ----

function openAiContentParts(parts: unknown[], path: JsonPath, visit: LeafVisitor): void {
  parts.forEach((p, i) => {
    if (typeof p === 'string') visit(parts, i, [...path, i]);
    else if (isObj(p)) {
      str(p, 'text', [...path, i], visit);
      str(p, 'refusal', [...path, i], visit);
      if (Array.isArray(p['content'])) openAiContentParts(p['content'], [...path, i, 'content'], visit);
    }
  });
}

function openAiChatMessage(m: unknown, path: JsonPath, visit: LeafVisitor): void {
  if (!isObj(m)) return;
  if (typeof m['content'] === 'string') visit(m, 'content', [...path, 'content']);
  else if (Array.isArray(m['content'])) openAiContentParts(m['content'], [...path, 'content'], visit);
  str(m, 'refusal', path, visit);
  str(m, 'reasoning_content', path, visit);
  if (Array.isArray(m['tool_calls']))
    m['tool_calls'].forEach((tc, j) => {
      if (isObj(tc) && isObj(tc['function'])) str(tc['function'], 'arguments', [...path, 'tool_calls', j, 'function'], visit);
    });
  if (isObj(m['function_call'])) str(m['function_call'], 'arguments', [...path, 'function_call'], visit);
}

/** A Responses input/output item (or a content part) at `container[key]`, whose path is `p`. */
export function openAiItem(item: unknown, container: Obj | unknown[], key: string | number, p: JsonPath, visit: LeafVisitor): void {
  if (typeof item === 'string') {
    visit(container, key, p);
    return;
  }
  if (!isObj(item)) return;
  if (typeof item['content'] === 'string') visit(item, 'content', [...p, 'content']);
  else if (Array.isArray(item['content'])) openAiContentParts(item['content'], [...p, 'content'], visit);
  str(item, 'arguments', p, visit);
  str(item, 'text', p, visit);
  str(item, 'refusal', p, visit);
  if (typeof item['output'] === 'string') visit(item, 'output', [...p, 'output']);
  else if (Array.isArray(item['output'])) openAiContentParts(item['output'], [...p, 'output'], visit);
  if (Array.isArray(item['summary'])) openAiContentParts(item['summary'], [...p, 'summary'], visit);
}

/** Visits the maskable strings of an OpenAI request or response body; false when the shape is not recognised. */
export function openAiLeaves(o: unknown, visit: LeafVisitor, base: JsonPath = []): boolean {
  if (!isObj(o)) return false;
  let known = false;
  if (Array.isArray(o['messages'])) {
    known = true;
    o['messages'].forEach((m, i) => openAiChatMessage(m, [...base, 'messages', i], visit));
  }
  if (Array.isArray(o['choices'])) {
    known = true;
    o['choices'].forEach((c, i) => {
      if (!isObj(c)) return;
      const p = [...base, 'choices', i];
      if (c['message']) openAiChatMessage(c['message'], [...p, 'message'], visit);
      if (c['delta']) openAiChatMessage(c['delta'], [...p, 'delta'], visit);
      str(c, 'text', p, visit);
    });
  }
  for (const key of ['prompt', 'input']) {
    const v = o[key];
    if (v === undefined) continue;
    known = true;
    if (typeof v === 'string') visit(o, key, [...base, key]);
    else if (Array.isArray(v)) v.forEach((item, i) => openAiItem(item, v, i, [...base, key, i], visit));
  }
  if (typeof o['instructions'] === 'string') {
    known = true;
    visit(o, 'instructions', [...base, 'instructions']);
  }
  if (Array.isArray(o['output'])) {
    known = true;
    const out = o['output'];
    out.forEach((item, i) => openAiItem(item, out, i, [...base, 'output', i], visit));
  }
  if (typeof o['output_text'] === 'string') {
    known = true;
    visit(o, 'output_text', [...base, 'output_text']);
  }
  if (o['object'] === 'list' || o['object'] === 'embedding' || o['object'] === 'model') known = true;
  return known;
}

// ---- Anthropic ----

function anthropicBlocks(blocks: unknown[], path: JsonPath, visit: LeafVisitor): void {
  blocks.forEach((b, i) => anthropicBlock(b, blocks, i, path, visit));
}

/** One Anthropic content block at `container[i]`. */
export function anthropicBlock(b: unknown, container: unknown[] | Obj, i: number | string, path: JsonPath, visit: LeafVisitor): void {
  const p = [...path, i];
  if (typeof b === 'string') {
    visit(container, i, p);
    return;
  }
  if (!isObj(b)) return;
  str(b, 'text', p, visit);
  str(b, 'thinking', p, visit);
  if (b['input'] !== undefined) {
    if (typeof b['input'] === 'string') visit(b, 'input', [...p, 'input']);
    else allStringLeaves(b['input'], [...p, 'input'], visit);
  }
  if (typeof b['content'] === 'string') visit(b, 'content', [...p, 'content']);
  else if (Array.isArray(b['content'])) anthropicBlocks(b['content'], [...p, 'content'], visit);
  if (isObj(b['source']) && b['source']['type'] === 'text') str(b['source'], 'data', [...p, 'source'], visit);
}

/** Visits the maskable strings of an Anthropic Messages request or response; false when not recognised. */
export function anthropicLeaves(o: unknown, visit: LeafVisitor, base: JsonPath = []): boolean {
  if (!isObj(o)) return false;
  let known = false;
  if (o['system'] !== undefined) {
    known = true;
    if (typeof o['system'] === 'string') visit(o, 'system', [...base, 'system']);
    else if (Array.isArray(o['system'])) anthropicBlocks(o['system'], [...base, 'system'], visit);
  }
  if (Array.isArray(o['messages'])) {
    known = true;
    o['messages'].forEach((m, i) => {
      if (!isObj(m)) return;
      const p = [...base, 'messages', i];
      if (typeof m['content'] === 'string') visit(m, 'content', [...p, 'content']);
      else if (Array.isArray(m['content'])) anthropicBlocks(m['content'], [...p, 'content'], visit);
    });
  }
  if (Array.isArray(o['content'])) {
    known = true;
    anthropicBlocks(o['content'], [...base, 'content'], visit);
  }
  if (typeof o['completion'] === 'string' || typeof o['prompt'] === 'string') {
    known = true;
    str(o, 'completion', base, visit);
    str(o, 'prompt', base, visit);
  }
  return known;
}

// ---- forwarding JSON without re-serialising what did not change ----

/**
 * Replaces the string values at the given JSON pointers in `src` (valid JSON) and keeps every other
 * byte as it was — whitespace, number spelling, key order, escapes.
 */
export function spliceJsonStrings(src: string, changes: ReadonlyMap<string, string>): string {
  let i = 0;
  const out: string[] = [];
  let last = 0;
  const n = src.length;
  const ws = () => {
    while (i < n) {
      const c = src.charCodeAt(i);
      if (c === 32 || c === 9 || c === 10 || c === 13) i++;
      else break;
    }
  };
  const skipString = () => {
    i++; // opening quote
    while (i < n) {
      const c = src.charCodeAt(i);
      if (c === 92) i += 2;
      else if (c === 34) {
        i++;
        return;
      } else i++;
    }
  };
  const esc = (k: string) => k.replace(/~/g, '~0').replace(/\//g, '~1');
  const value = (ptr: string): void => {
    ws();
    const c = src[i];
    if (c === '{') {
      i++;
      ws();
      if (src[i] === '}') {
        i++;
        return;
      }
      for (;;) {
        ws();
        const ks = i;
        skipString();
        const key = JSON.parse(src.slice(ks, i)) as string;
        ws();
        i++; // :
        value(`${ptr}/${esc(key)}`);
        ws();
        if (src[i] === ',') {
          i++;
          continue;
        }
        i++; // }
        return;
      }
    } else if (c === '[') {
      i++;
      ws();
      if (src[i] === ']') {
        i++;
        return;
      }
      for (let idx = 0; ; idx++) {
        value(`${ptr}/${idx}`);
        ws();
        if (src[i] === ',') {
          i++;
          continue;
        }
        i++; // ]
        return;
      }
    } else if (c === '"') {
      const s = i;
      skipString();
      const rep = changes.get(ptr);
      if (rep !== undefined) {
        out.push(src.slice(last, s), JSON.stringify(rep));
        last = i;
      }
    } else {
      while (i < n && !',]} \t\n\r'.includes(src[i]!)) i++;
    }
  };
  value('');
  out.push(src.slice(last));
  return out.join('');
}
