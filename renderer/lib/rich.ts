/**
 * Text with masked spans (shared/events.ts MaskSpan: UTF-16 offsets into the masked string at a
 * JSON pointer inside an event payload). Replay renders each masked span highlighted with its
 * detector type; these helpers carry the spans along as text is extracted, decoded and concatenated.
 */
import type { MaskSpan } from '../../shared/events';

export interface Mark {
  start: number;
  end: number;
  type: string;
  rule: string;
}

export interface Rich {
  text: string;
  marks: Mark[];
}

export interface Segment {
  text: string;
  mark?: { type: string; rule: string };
}

export const EMPTY_RICH: Rich = { text: '', marks: [] };

export function rich(text: string, marks: Mark[] = []): Rich {
  return { text, marks };
}

export function concatRich(parts: Rich[]): Rich {
  let text = '';
  const marks: Mark[] = [];
  for (const p of parts) {
    for (const m of p.marks) marks.push({ ...m, start: m.start + text.length, end: m.end + text.length });
    text += p.text;
  }
  return { text, marks };
}

/** Splits rich text into plain and marked segments, in order; overlapping marks are merged. */
export function segments(r: Rich): Segment[] {
  const marks = r.marks
    .map((m) => ({ ...m, start: Math.max(0, Math.min(r.text.length, m.start)), end: Math.max(0, Math.min(r.text.length, m.end)) }))
    .filter((m) => m.end > m.start)
    .sort((a, b) => a.start - b.start || b.end - a.end);
  const out: Segment[] = [];
  let pos = 0;
  for (const m of marks) {
    if (m.end <= pos) continue;
    const start = Math.max(pos, m.start);
    if (start > pos) out.push({ text: r.text.slice(pos, start) });
    out.push({ text: r.text.slice(start, m.end), mark: { type: m.type, rule: m.rule } });
    pos = m.end;
  }
  if (pos < r.text.length || out.length === 0) out.push({ text: r.text.slice(pos) });
  return out;
}

/** RFC 6901: `/a/b~1c` → ['a', 'b/c']. */
export function parsePointer(p: string): string[] {
  if (p === '') return [];
  return p
    .replace(/^\//, '')
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

export function joinPointer(base: string, key: string | number): string {
  return `${base}/${String(key).replace(/~/g, '~0').replace(/\//g, '~1')}`;
}

/** Spans grouped by pointer (missing path = the payload itself, ''). */
export type SpanIndex = Map<string, Mark[]>;

export function indexSpans(spans: readonly MaskSpan[] | undefined): SpanIndex {
  const index: SpanIndex = new Map();
  for (const s of spans ?? []) {
    const key = s.path ?? '';
    const list = index.get(key) ?? [];
    list.push({ start: s.start, end: s.end, type: s.type, rule: s.rule });
    index.set(key, list);
  }
  return index;
}

/**
 * A cursor over an event payload that remembers where it is (JSON pointer), so a string taken from
 * anywhere inside comes back with its masked spans. When a string holds JSON (an SSE `data:` line,
 * a tool call's `arguments`), `json()` decodes it and maps the spans into the decoded strings.
 */
export class Node {
  constructor(
    readonly value: unknown,
    readonly pointer: string,
    private readonly index: SpanIndex,
  ) {}

  static root(value: unknown, spans: readonly MaskSpan[] | undefined): Node {
    return new Node(value, '', indexSpans(resolveSpanPaths(value, spans ?? [])));
  }

  get(key: string | number): Node {
    const v = this.value;
    let child: unknown;
    if (Array.isArray(v) && typeof key === 'number') child = v[key];
    else if (v && typeof v === 'object' && !Array.isArray(v)) child = (v as Record<string, unknown>)[String(key)];
    return new Node(child, joinPointer(this.pointer, key), this.index);
  }

  /** Follows a path of keys. */
  at(...keys: (string | number)[]): Node {
    return keys.reduce<Node>((n, k) => n.get(k), this);
  }

  get exists(): boolean {
    return this.value !== undefined && this.value !== null;
  }

  get isString(): boolean {
    return typeof this.value === 'string';
  }

  get isArray(): boolean {
    return Array.isArray(this.value);
  }

  get isObject(): boolean {
    return !!this.value && typeof this.value === 'object' && !Array.isArray(this.value);
  }

  str(): string | undefined {
    return typeof this.value === 'string' ? this.value : undefined;
  }

  num(): number | undefined {
    return typeof this.value === 'number' ? this.value : undefined;
  }

  items(): Node[] {
    return Array.isArray(this.value) ? this.value.map((_, i) => this.get(i)) : [];
  }

  keys(): string[] {
    return this.isObject ? Object.keys(this.value as object) : [];
  }

  /** Marks recorded for this string (its own pointer). */
  marks(): Mark[] {
    return this.index.get(this.pointer) ?? [];
  }

  /** This string with its marks; non-strings render as JSON without marks of their own, except strings inside. */
  rich(): Rich {
    if (typeof this.value === 'string') return { text: this.value, marks: this.marks() };
    if (this.value === undefined) return EMPTY_RICH;
    return this.jsonRich();
  }

  /** Pretty JSON of this node, carrying the marks of every string inside it. */
  jsonRich(indent = 2): Rich {
    const parts: Rich[] = [];
    const walk = (n: Node, depth: number) => {
      const pad = ' '.repeat(indent * depth);
      const padIn = ' '.repeat(indent * (depth + 1));
      if (typeof n.value === 'string') {
        const enc = encodeJsonString(n.value, n.marks());
        parts.push(enc);
      } else if (Array.isArray(n.value)) {
        if (!n.value.length) return void parts.push(rich('[]'));
        parts.push(rich('[\n'));
        const items = n.items();
        items.forEach((c, i) => {
          parts.push(rich(padIn));
          walk(c, depth + 1);
          parts.push(rich(i < items.length - 1 ? ',\n' : '\n'));
        });
        parts.push(rich(`${pad}]`));
      } else if (n.isObject) {
        const ks = n.keys();
        if (!ks.length) return void parts.push(rich('{}'));
        parts.push(rich('{\n'));
        ks.forEach((k, i) => {
          parts.push(rich(`${padIn}${JSON.stringify(k)}: `));
          walk(n.get(k), depth + 1);
          parts.push(rich(i < ks.length - 1 ? ',\n' : '\n'));
        });
        parts.push(rich(`${pad}}`));
      } else parts.push(rich(JSON.stringify(n.value) ?? 'null'));
    };
    walk(this, 0);
    return concatRich(parts);
  }

  /**
   * Decodes a JSON string value. Marks on the string itself (offsets into the JSON text) are mapped
   * into the decoded strings; marks whose pointer continues through the string (e.g.
   * `/events/0/data/choices/0/delta/content`, as the stream masker records them) apply inside.
   */
  json(): Node | undefined {
    if (typeof this.value !== 'string') return undefined;
    const decoded = decodeJsonWithMarks(this.value, this.marks());
    if (!decoded) return undefined;
    const prefix = `${this.pointer}/`;
    for (const [key, marks] of this.index) {
      if (!key.startsWith(prefix)) continue;
      const inner = key.slice(this.pointer.length);
      decoded.index.set(inner, [...(decoded.index.get(inner) ?? []), ...marks]);
    }
    return new Node(decoded.value, '', decoded.index);
  }
}

/** The value at a JSON pointer, or undefined; `through` reports the pointer crossed a string. */
function valueAt(root: unknown, pointer: string): { value: unknown; through: boolean } {
  let v: unknown = root;
  for (const key of parsePointer(pointer)) {
    if (typeof v === 'string') return { value: undefined, through: true };
    if (Array.isArray(v)) v = v[Number(key)];
    else if (v && typeof v === 'object') v = (v as Record<string, unknown>)[key];
    else return { value: undefined, through: false };
  }
  return { value: v, through: false };
}

/**
 * Spans whose pointer does not reach a string in the payload but does under `/body` are rebased
 * there: a recorder may give body spans relative to the body it stored under `body`.
 */
export function resolveSpanPaths(payload: unknown, spans: readonly MaskSpan[]): MaskSpan[] {
  return spans.map((s) => {
    const path = s.path ?? '';
    const here = valueAt(payload, path);
    if (typeof here.value === 'string' || here.through) return s;
    const body = payload && typeof payload === 'object' ? (payload as Record<string, unknown>)['body'] : undefined;
    if (body !== undefined) {
      const under = valueAt(body, path);
      if (typeof under.value === 'string' || under.through) return { ...s, path: `/body${path}` };
    }
    return s;
  });
}

/** JSON-encodes a string, moving marks to the escaped positions (inside the quotes). */
export function encodeJsonString(s: string, marks: Mark[]): Rich {
  if (!marks.length) return rich(JSON.stringify(s));
  const offsets: number[] = new Array(s.length + 1);
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    offsets[i] = out.length;
    out += JSON.stringify(s[i]).slice(1, -1);
  }
  offsets[s.length] = out.length;
  out += '"';
  return { text: out, marks: marks.map((m) => ({ ...m, start: offsets[Math.min(m.start, s.length)]!, end: offsets[Math.min(m.end, s.length)]! })) };
}

/**
 * Parses JSON text and maps marks (offsets into the text) onto the string values they fall in,
 * returning a span index keyed by JSON pointer into the decoded value. Returns undefined when the
 * text is not JSON.
 */
export function decodeJsonWithMarks(text: string, marks: Mark[]): { value: unknown; index: SpanIndex } | undefined {
  const index: SpanIndex = new Map();
  let i = 0;
  const ws = () => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\n' || text[i] === '\r' || text[i] === '\t')) i++;
  };
  const fail = (): never => {
    throw new SyntaxError(`bad JSON at ${i}`);
  };
  const parseString = (pointer: string | undefined): string => {
    if (text[i] !== '"') fail();
    i++;
    const srcStart = i;
    let out = '';
    // decodedAt[k] = decoded offset of source offset srcStart + k
    const decodedAt: number[] = [];
    while (true) {
      if (i >= text.length) fail();
      const c = text[i]!;
      decodedAt.push(out.length);
      if (c === '"') break;
      if (c === '\\') {
        const e = text[i + 1];
        const map: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
        if (e === 'u') {
          const hex = text.slice(i + 2, i + 6);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail();
          for (let k = 1; k < 6; k++) decodedAt.push(out.length);
          out += String.fromCharCode(parseInt(hex, 16));
          i += 6;
        } else if (e !== undefined && map[e] !== undefined) {
          decodedAt.push(out.length);
          out += map[e];
          i += 2;
        } else fail();
      } else {
        out += c;
        i++;
      }
    }
    const srcEnd = i; // the closing quote
    i++;
    if (pointer !== undefined) {
      for (const m of marks) {
        if (m.start >= srcStart && m.end <= srcEnd + 0 && m.end > m.start) {
          const list = index.get(pointer) ?? [];
          list.push({ ...m, start: decodedAt[m.start - srcStart]!, end: decodedAt[m.end - srcStart] ?? out.length });
          index.set(pointer, list);
        }
      }
    }
    return out;
  };
  const parseValue = (pointer: string): unknown => {
    ws();
    const c = text[i];
    if (c === '"') return parseString(pointer);
    if (c === '{') {
      i++;
      const obj: Record<string, unknown> = {};
      ws();
      if (text[i] === '}') {
        i++;
        return obj;
      }
      while (true) {
        ws();
        const key = parseString(undefined);
        ws();
        if (text[i] !== ':') fail();
        i++;
        obj[key] = parseValue(joinPointer(pointer, key));
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return obj;
        }
        fail();
      }
    }
    if (c === '[') {
      i++;
      const arr: unknown[] = [];
      ws();
      if (text[i] === ']') {
        i++;
        return arr;
      }
      while (true) {
        arr.push(parseValue(joinPointer(pointer, arr.length)));
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') {
          i++;
          return arr;
        }
        fail();
      }
    }
    const m = /^(-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null)/.exec(text.slice(i, i + 64));
    if (!m) fail();
    i += m![0].length;
    return JSON.parse(m![0]) as unknown;
  };
  try {
    const value = parseValue('');
    ws();
    if (i !== text.length) return undefined;
    return { value, index };
  } catch {
    return undefined;
  }
}
