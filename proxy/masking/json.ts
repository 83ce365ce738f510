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
  return new JsonReader(text, maxDepth).read();
}

/** Raw control characters other than tab, LF and CR (those three are checked string by string). */
// eslint-disable-next-line no-control-regex -- finding raw control characters is the point
const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f]/;

/** One parse. A class, not closures: nothing is allocated per call beyond the reader and its stacks. */
class JsonReader {
  private i: number;
  private readonly n: number;
  /** Open containers, innermost last. */
  private readonly stack: Container[] = [];
  /** For each open object, the key awaiting its value. */
  private readonly keys: (string | undefined)[] = [];
  private root: unknown;
  private haveRoot = false;
  /**
   * The next backslash at or after the current string, found once and reused: strings without
   * escapes (nearly all of them) are then a native indexOf and a slice.
   */
  private nextEscape = -2;

  constructor(
    private readonly text: string,
    private readonly maxDepth: number,
  ) {
    this.n = text.length;
    this.i = text.charCodeAt(0) === 0xfeff ? 1 : 0;
  }

  private fail(what: string, reason: JsonReadError['reason'] = 'syntax'): never {
    throw new JsonReadError(`${what} at character ${this.i}`, this.i, reason);
  }

  private ws(): void {
    const { text, n } = this;
    let i = this.i;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 32 || c === 10 || c === 13 || c === 9) i++;
      else break;
    }
    this.i = i;
  }

  private readString(): string {
    const { text, n } = this;
    // text[i] is the opening quote
    const start = ++this.i;
    const end = text.indexOf('"', start);
    if (end === -1) {
      this.i = n;
      this.fail('unterminated string');
    }
    if (this.nextEscape !== -1 && this.nextEscape < start) this.nextEscape = text.indexOf('\\', start);
    if (this.nextEscape === -1 || this.nextEscape > end) {
      const raw = text.slice(start, end);
      if (raw.indexOf('\n') !== -1 || raw.indexOf('\r') !== -1 || raw.indexOf('\t') !== -1) {
        this.i = start + raw.search(/[\n\r\t]/);
        this.fail('unescaped control character in a string');
      }
      this.i = end + 1;
      return raw;
    }
    // Escapes: find the real closing quote, then let JSON.parse decode (and validate) them.
    let i = start;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 34) break;
      if (c === 92) {
        i += 2;
        continue;
      }
      if (c < 0x20) {
        this.i = i;
        this.fail('unescaped control character in a string');
      }
      i++;
    }
    this.i = i;
    if (i >= n) this.fail('unterminated string');
    const raw = text.slice(start, i);
    this.i = i + 1; // closing quote
    try {
      return JSON.parse(`"${raw}"`) as string;
    } catch {
      this.i = start;
      return this.fail('invalid escape in a string');
    }
  }

  private readNumber(): number {
    NUMBER_RE.lastIndex = this.i;
    const m = NUMBER_RE.exec(this.text);
    if (!m) return this.fail('unexpected character');
    const lexeme = m[0];
    const value = Number(lexeme);
    if (!Number.isFinite(value)) this.fail(`the number ${lexeme.slice(0, 40)} is out of range`, 'number');
    if (m[1] === undefined && m[2] === undefined && !Number.isSafeInteger(value))
      this.fail(`the integer ${lexeme.slice(0, 40)} is beyond ±2^53 and cannot be forwarded exactly (send it as a string)`, 'number');
    this.i += lexeme.length;
    return value;
  }

  /** Places a finished value into the innermost container (or as the root). */
  private place(value: unknown): void {
    const top = this.stack[this.stack.length - 1];
    if (top === undefined) {
      this.root = value;
      this.haveRoot = true;
    } else if (Array.isArray(top)) top.push(value);
    else {
      const key = this.keys[this.keys.length - 1]!;
      if (key === '__proto__') Object.defineProperty(top, key, { value, writable: true, enumerable: true, configurable: true });
      else top[key] = value;
      this.keys[this.keys.length - 1] = undefined;
    }
  }

  read(): unknown {
    const { text, n, stack, keys } = this;
    const bad = CONTROL.exec(text);
    if (bad) {
      this.i = bad.index;
      this.fail('unexpected control character');
    }
    for (;;) {
      this.ws();
      const top = stack[stack.length - 1];
      // Inside an object, before a value: read `"key":` first.
      if (top !== undefined && !Array.isArray(top)) {
        if (text.charCodeAt(this.i) !== 34) this.fail('expected a key (a string)');
        const key = this.readString();
        if (Object.prototype.hasOwnProperty.call(top, key)) this.fail(`duplicate key ${JSON.stringify(key.length > 60 ? `${key.slice(0, 60)}…` : key)}`, 'duplicate');
        this.ws();
        if (text.charCodeAt(this.i) !== 58) this.fail('expected ":" after a key');
        this.i++;
        this.ws();
        keys[keys.length - 1] = key;
      }
      if (this.i >= n) this.fail('unexpected end of input');
      const c = text.charCodeAt(this.i);
      let opened = false;
      if (c === 123 /* { */ || c === 91 /* [ */) {
        if (stack.length >= this.maxDepth) this.fail(`nesting deeper than ${this.maxDepth} levels`, 'depth');
        this.i++;
        this.ws();
        const close = c === 123 ? 125 : 93;
        const container: Container = c === 123 ? {} : [];
        this.place(container);
        if (text.charCodeAt(this.i) === close) this.i++;
        else {
          stack.push(container);
          keys.push(undefined);
          opened = true;
        }
      } else if (c === 34) this.place(this.readString());
      else if (c === 116 && text.startsWith('true', this.i)) {
        this.i += 4;
        this.place(true);
      } else if (c === 102 && text.startsWith('false', this.i)) {
        this.i += 5;
        this.place(false);
      } else if (c === 110 && text.startsWith('null', this.i)) {
        this.i += 4;
        this.place(null);
      } else this.place(this.readNumber());
      if (opened) continue;
      // After a value: a comma continues the container, a closer ends it (possibly several).
      for (;;) {
        this.ws();
        const inner = stack[stack.length - 1];
        if (inner === undefined) {
          if (this.i < n) this.fail('unexpected data after the JSON value');
          if (!this.haveRoot) this.fail('no JSON value');
          return this.root;
        }
        const cc = text.charCodeAt(this.i);
        if (cc === 44 /* , */) {
          this.i++;
          break;
        }
        if (cc === (Array.isArray(inner) ? 93 : 125)) {
          this.i++;
          stack.pop();
          keys.pop();
          continue;
        }
        this.fail(this.i >= n ? 'unexpected end of input' : `expected "," or "${Array.isArray(inner) ? ']' : '}'}"`);
      }
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
