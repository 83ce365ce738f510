/**
 * The gateway's own JSON reader for request bodies (RFC 8259). It differs from JSON.parse where
 * parsers disagree and an attacker can use the difference to show the gateway one value and the
 * upstream another:
 *   - a duplicate key in an object is refused (JSON.parse keeps the last, other parsers the first);
 *   - nesting deeper than `maxDepth` is refused (no stack overflow, in here or in whatever walks
 *     the result afterwards);
 *   - a number that a double cannot hold exactly (an integer beyond ±2^53, or one that overflows)
 *     is refused, because the re-serialisation forwarded upstream would not say the same number.
 * It is iterative: input size never drives recursion. `__proto__` keys become own properties, as
 * with JSON.parse.
 */

/** Nesting limit for request bodies (objects and arrays together); LLM requests need fewer than 20. */
export const MAX_JSON_DEPTH = 128;

export class JsonReadError extends Error {
  constructor(
    message: string,
    /** Character offset where reading stopped. */
    readonly offset: number,
    /** `depth` when the nesting limit was hit, `syntax` for anything else. */
    readonly reason: 'syntax' | 'depth' | 'duplicate' | 'number',
  ) {
    super(message);
    this.name = 'JsonReadError';
  }
}

type Container = Record<string, unknown> | unknown[];

const NUMBER_RE = /-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/y;

/** Parses `text` as one JSON value; throws JsonReadError naming what is wrong and where. */
export function readJson(text: string, maxDepth = MAX_JSON_DEPTH): unknown {
  const n = text.length;
  let i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  // Open containers, innermost last; for objects, the key awaiting its value.
  const stack: Container[] = [];
  const keys: (string | undefined)[] = [];
  let root: unknown;
  let haveRoot = false;

  const fail = (what: string, reason: JsonReadError['reason'] = 'syntax'): never => {
    throw new JsonReadError(`${what} at character ${i}`, i, reason);
  };
  const ws = () => {
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 32 || c === 10 || c === 13 || c === 9) i++;
      else break;
    }
  };
  const readString = (): string => {
    // text[i] is the opening quote
    const start = ++i;
    let escaped = false;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 34) break;
      if (c === 92) {
        escaped = true;
        i += 2;
        continue;
      }
      if (c < 0x20) fail('unescaped control character in a string');
      i++;
    }
    if (i >= n) fail('unterminated string');
    const raw = text.slice(start, i);
    i++; // closing quote
    if (!escaped) return raw;
    try {
      return JSON.parse(`"${raw}"`) as string;
    } catch {
      i = start;
      return fail('invalid escape in a string');
    }
  };
  const readNumber = (): number => {
    NUMBER_RE.lastIndex = i;
    const m = NUMBER_RE.exec(text);
    if (!m) return fail('unexpected character');
    const lexeme = m[0];
    const value = Number(lexeme);
    if (!Number.isFinite(value)) fail(`the number ${lexeme.slice(0, 40)} is out of range`, 'number');
    if (m[1] === undefined && m[2] === undefined && !Number.isSafeInteger(value))
      fail(`the integer ${lexeme.slice(0, 40)} is beyond ±2^53 and cannot be forwarded exactly (send it as a string)`, 'number');
    i += lexeme.length;
    return value;
  };
  /** Places a finished value into the innermost container (or as the root). */
  const place = (value: unknown) => {
    const top = stack[stack.length - 1];
    if (top === undefined) {
      root = value;
      haveRoot = true;
    } else if (Array.isArray(top)) top.push(value);
    else {
      const key = keys[keys.length - 1]!;
      if (key === '__proto__') Object.defineProperty(top, key, { value, writable: true, enumerable: true, configurable: true });
      else top[key] = value;
      keys[keys.length - 1] = undefined;
    }
  };

  for (;;) {
    ws();
    const top = stack[stack.length - 1];
    // Inside an object, before a value: read `"key":` first.
    if (top !== undefined && !Array.isArray(top)) {
      if (text.charCodeAt(i) !== 34) fail('expected a key (a string)');
      const key = readString();
      if (Object.prototype.hasOwnProperty.call(top, key)) fail(`duplicate key ${JSON.stringify(key.length > 60 ? `${key.slice(0, 60)}…` : key)}`, 'duplicate');
      ws();
      if (text.charCodeAt(i) !== 58) fail('expected ":" after a key');
      i++;
      ws();
      keys[keys.length - 1] = key;
    }
    if (i >= n) fail('unexpected end of input');
    const c = text.charCodeAt(i);
    let opened = false;
    if (c === 123 /* { */ || c === 91 /* [ */) {
      if (stack.length >= maxDepth) fail(`nesting deeper than ${maxDepth} levels`, 'depth');
      i++;
      ws();
      const close = c === 123 ? 125 : 93;
      const container: Container = c === 123 ? {} : [];
      if (text.charCodeAt(i) === close) {
        i++;
        place(container);
      } else {
        place(container);
        stack.push(container);
        keys.push(undefined);
        opened = true;
      }
    } else if (c === 34) place(readString());
    else if (c === 116 && text.startsWith('true', i)) {
      i += 4;
      place(true);
    } else if (c === 102 && text.startsWith('false', i)) {
      i += 5;
      place(false);
    } else if (c === 110 && text.startsWith('null', i)) {
      i += 4;
      place(null);
    } else place(readNumber());
    if (opened) continue;
    // After a value: a comma continues the container, a closer ends it (possibly several).
    for (;;) {
      ws();
      const inner = stack[stack.length - 1];
      if (inner === undefined) {
        if (i < n) fail('unexpected data after the JSON value');
        if (!haveRoot) fail('no JSON value');
        return root;
      }
      const cc = text.charCodeAt(i);
      if (cc === 44 /* , */) {
        i++;
        break;
      }
      if (cc === (Array.isArray(inner) ? 93 : 125)) {
        i++;
        stack.pop();
        keys.pop();
        continue;
      }
      fail(i >= n ? 'unexpected end of input' : `expected "," or "${Array.isArray(inner) ? ']' : '}'}"`);
    }
  }
}

/** Does the JSON text nest deeper than `max`? One pass, strings skipped; for text JSON.parse accepted. */
export function nestedDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 34) {
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === 92) i++;
        else if (d === 34) break;
      }
    } else if (c === 123 || c === 91) {
      if (++depth > max) return true;
    } else if (c === 125 || c === 93) depth--;
  }
  return false;
}
