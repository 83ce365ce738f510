/**
 * Patterns people type — custom detectors, policy `content` rules, the console's pattern check and
 * policy dry-run — run on a linear-time engine (RE2's automata, in JavaScript: re2js), never on V8's
 * backtracking one, where `(a|aa)+$` over 40 `a`s and a `!` takes seconds and blocks the event loop
 * with every request behind it (docs/MASKING.md, "Pattern engine").
 *
 * RE2 cannot run backreferences or lookaround; a pattern using them is refused when it is loaded
 * or saved, with an error naming the rule. Matching costs time proportional to the text, and scans
 * are cut into windows with the scan budget checked between them, so a large body fails closed
 * instead of holding the gateway.
 */
import { RE2JS } from 're2js';
import { MaskingError } from './types';

/** A pattern the linear-time engine cannot run, or that does not parse. */
export class PatternError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PatternError';
  }
}

/** Thrown when a scan runs out of its budget (fail closed: the request is refused). */
export class ScanBudgetError extends MaskingError {}

/** Budget for one policy's `content` patterns over one request, in ms. */
export const CONTENT_BUDGET_MS = 500;

/** Texts up to this size are tested in one call (the DFA runs at tens to hundreds of MB/s). */
const WHOLE_TEXT = 1 << 20;
/** Larger texts are tested in windows of this size, with the deadline checked after each. */
const TEST_WINDOW = 1 << 20;
/** Windows overlap by the pattern's longest match, capped here (see docs/MASKING.md). */
const MAX_OVERLAP = 64 * 1024;

const UNSUPPORTED: [RegExp, string][] = [
  [/\(\?<?[=!]/, 'lookahead and lookbehind ((?=, (?!, (?<=, (?<!)'],
  [/\\[1-9]|\\k</, 'backreferences (\\1, \\k<name>)'],
];

/** Outside character classes: where a construct like `(?=` means what it says. */
function withoutClasses(source: string): string {
  let out = '';
  let inClass = false;
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!;
    if (c === '\\') {
      if (!inClass) out += c + (source[i + 1] ?? '');
      i++;
    } else if (inClass) inClass = c !== ']';
    else if (c === '[') inClass = true;
    else out += c;
  }
  return out;
}

export interface LinearMatch {
  start: number;
  end: number;
}

/** A compiled pattern on the linear-time engine. */
export class LinearPattern {
  private readonly re: RE2JS;
  /** Holds a named group `v`: the part of a match to mask. */
  private readonly hasValueGroup: boolean;
  /**
   * Uses `^`, `$` or a word boundary, which mean something else at a window's edge: such a
   * pattern is always tested over the whole text (still linear; one uninterruptible call).
   */
  private readonly edgeSensitive: boolean;

  /**
   * `who` names the rule in errors (`detector "emp_id"`, `policy rule "hold-export"`). A leading
   * `(?i)` is understood, as in the config examples.
   */
  static compile(source: string, who: string, caseInsensitive = false): LinearPattern {
    const plain = withoutClasses(source);
    for (const [re, what] of UNSUPPORTED)
      if (re.test(plain)) throw new PatternError(`${who}: the pattern uses ${what}, which the linear-time pattern engine cannot run; rewrite it without them`);
    try {
      return new LinearPattern(RE2JS.compile(source, caseInsensitive ? RE2JS.CASE_INSENSITIVE : 0), /\(\?P?<v>/.test(source), /[$^]|\\[bBAz]/.test(plain));
    } catch (err) {
      throw new PatternError(`${who}: invalid regular expression: ${(err as Error).message.replace(/^error parsing regexp: /, '')}`);
    }
  }

  private constructor(re: RE2JS, hasValueGroup: boolean, edgeSensitive: boolean) {
    this.re = re;
    this.hasValueGroup = hasValueGroup;
    this.edgeSensitive = edgeSensitive;
  }

  get source(): string {
    return this.re.pattern();
  }

  /** Whether the pattern matches the empty string (a detector like that would match everywhere). */
  matchesEmpty(): boolean {
    return this.re.matcher('').find();
  }

  /** Does the pattern match anywhere in `text`? `overlap`: its longest match (Infinity: unknown). */
  test(text: string, deadline: number, overlap: number, who: string): boolean {
    if (text.length <= WHOLE_TEXT || this.edgeSensitive) {
      const hit = this.re.test(text);
      if (performance.now() > deadline) throw budgetError(who, text.length);
      return hit;
    }
    const o = Math.min(overlap, MAX_OVERLAP);
    for (let s = 0; s < text.length; s += TEST_WINDOW) {
      if (this.re.test(text.slice(Math.max(0, s - o), s + TEST_WINDOW))) return true;
      if (performance.now() > deadline) throw budgetError(who, text.length);
    }
    return false;
  }

  /**
   * Every match in `text` whose start lies in [from, to): the value span (`v` group, else the whole
   * match) and where the whole match starts. The consumer may pass back a position to resume from
   * (inside a rejected candidate, where a valid one may start).
   */
  *matches(text: string, from: number, to: number): Generator<LinearMatch & { at: number }, void, number | undefined> {
    // The DFA says quickly whether anything is there at all; locating matches is the slower pass.
    if (!this.re.test(text)) return;
    const m = this.re.matcher(text);
    let at = from;
    while (at <= text.length && m.find(at)) {
      const start = m.start();
      if (start >= to) return;
      const end = m.end();
      const vs = this.hasValueGroup && m.start('v') >= 0 ? m.start('v') : start;
      const ve = this.hasValueGroup && m.end('v') >= 0 ? m.end('v') : end;
      const resume = yield { start: vs, end: ve, at: start };
      at = resume ?? (end > start ? end : start + 1);
    }
  }
}

function budgetError(who: string, length: number): ScanBudgetError {
  return new ScanBudgetError(`${who}: scanning ${length} characters exceeded the scan budget; the request was refused (fail closed)`);
}
