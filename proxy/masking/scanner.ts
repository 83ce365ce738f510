/**
 * Runs detectors over text: candidates from each detector's pattern (or hand-written matcher),
 * validators to reject look-alikes, then overlap resolution (higher priority, then longer, wins).
 * Every run has a deadline; a detector that throws or a run past its deadline raises MaskingError,
 * so the caller refuses the request instead of forwarding unmasked data.
 */
import { LinearPattern } from './pattern';
import type { CustomDetector } from '../../shared/config';
import type { CompiledRule } from './compiled-rule';
import type { Detector } from './detectors';
import { MaskingError } from './types';

export interface Match {
  detector: Detector;
  /** UTF-16 offsets of the value to mask. */
  start: number;
  end: number;
  /** Set for whole values masked by a column or JSON-path rule: the rule that masks them. */
  rule?: CompiledRule;
}

export interface ScanOptions {
  /** Values that start before this offset are context only (already emitted, or a JSON key). */
  from?: number;
  /**
   * Candidate passes start here (≤ from): far enough back for a keyword before its value ("DOB:",
   * "password=", an AWS key id before its secret), while look-behinds and validators still see
   * everything before it.
   */
  scanFrom?: number;
  /** `performance.now()` value after which the scan fails (fail closed). */
  deadline: number;
  budgetMs: number;
}

const DIGIT = /\d/;
const CHECK_EVERY = 64;

/** Candidate passes shared by the anchored detectors (see Detector.anchors). */
const NUMBER_TOKEN = /[+(]?\d(?:[ ()./-]{0,2}\d){3,}/g;
const LETTERS = /[A-Z]{2} ?\d\d|[XYZ]-?\d{7}/g;
const PREFIX = /gh[pousr]_|github_pat_|xox[abposre]-|xapp-|https:\/\/hooks\.slack\.com|[sr]k_(?:live|test)_|whsec_|sk-|eyJ|-----BEGIN|A(?:KIA|SIA|BIA|CCA)|:\/\//g;
// factored, and the "not after a letter" check done on each hit: faster than a look-behind at every position
const KEYWORD = /p(?:ass|wd|rivate)|secret|a(?:pi|ccess|uth|ws)|d(?:\.?o\.?b|ate)|b(?:irth|orn|earer|asic)|token/gi;

function isAsciiLetter(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
}

const stickyCache = new WeakMap<RegExp, RegExp>();
function sticky(re: RegExp): RegExp {
  let s = stickyCache.get(re);
  if (!s) {
    s = new RegExp(re.source, re.flags.replace('g', '') + 'y');
    stickyCache.set(re, s);
  }
  return s;
}

/** Does `text` at `pos` start with `lower` (ASCII, case-insensitive)? */
export function startsWithLower(text: string, pos: number, lower: string): boolean {
  for (let i = 0; i < lower.length; i++) {
    let c = text.charCodeAt(pos + i);
    if (c >= 65 && c <= 90) c |= 0x20;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

interface ScanState {
  text: string;
  from: number;
  out: Match[];
  opts: ScanOptions;
  /** Per detector: end of its last accepted match (no overlapping matches of one detector). */
  lastEnd: Map<Detector, number>;
  n: number;
  /** Anchored detectors switched off for this text (their gate failed). */
  off: Set<Detector> | undefined;
  scanFrom: number;
  /** Scratch arrays of scanNumbers. */
  numStarts: number[];
  numDigits: number[];
  /** Whether the text holds a digit, once asked. */
  hasDigit: boolean | undefined;
  /** The gate words the text holds (lower case), once asked. */
  present: Set<string> | undefined;
  gate: RegExp | undefined;
}

/** Detectors by the (lower-case) anchor hit they start at; detectors without `hits` get every hit. */
function hitDispatch(ds: Detector[]): [string, Detector[]][] {
  const map = new Map<string, Detector[]>();
  for (const d of ds) for (const h of d.hits ?? ['']) map.set(h, [...(map.get(h) ?? []), d]);
  return [...map.entries()];
}

interface Prepared {
  /** Detectors scanned on their own (whole-text pattern or finder). */
  plain: Detector[];
  anchored: Partial<Record<'number' | 'letters' | 'prefix' | 'keyword', Detector[]>>;
  dispatch: { prefix: [string, Detector[]][]; keyword: [string, Detector[]][] };
  /** All gate words of these detectors, to find which occur in a text in one pass. */
  gate?: RegExp;
}
const preparedCache = new WeakMap<readonly Detector[], Prepared>();
function prepare(detectors: readonly Detector[]): Prepared {
  let p = preparedCache.get(detectors);
  if (!p) {
    p = { plain: [], anchored: {}, dispatch: { prefix: [], keyword: [] } };
    for (const d of detectors) {
      if (d.anchors && (d.pattern || d.findAt)) for (const a of d.anchors) (p.anchored[a] ??= []).push(d);
      else p.plain.push(d);
    }
    p.dispatch.prefix = hitDispatch(p.anchored.prefix ?? []);
    p.dispatch.keyword = hitDispatch(p.anchored.keyword ?? []);
    const words = [...new Set(detectors.flatMap((d) => d.gateWords ?? []))];
    if (words.length) p.gate = new RegExp(words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'gi');
    preparedCache.set(detectors, p);
  }
  return p;
}

/** Tries `d`'s pattern at exactly `pos`. */
function tryAt(d: Detector, pos: number, st: ScanState): void {
  if (pos < (st.lastEnd.get(d) ?? 0)) return;
  if (d.findAt) {
    d.findAt(st.text, pos, (start, end) => {
      if (start >= st.from && start >= (st.lastEnd.get(d) ?? 0) && (!d.validate || d.validate(st.text.slice(start, end), st.text, start, end))) {
        st.out.push({ detector: d, start, end });
        st.lastEnd.set(d, end);
      }
    });
    return;
  }
  const re = sticky(d.pattern!);
  re.lastIndex = pos;
  const m = re.exec(st.text);
  if (!m || !m[0].length) return;
  accept(d, m, st);
}

/** The part of a match to mask: the first defined named group starting with `v`, else all of it. */
function valueSpan(m: RegExpExecArray): [number, number] {
  const groups = m.indices?.groups;
  if (groups) {
    for (const name in groups) {
      const span = groups[name];
      if (span && name.startsWith('v')) return span;
    }
  }
  return [m.index, m.index + m[0].length];
}

function accept(d: Detector, m: RegExpExecArray, st: ScanState): boolean {
  const [start, end] = valueSpan(m);
  if (start < st.from || end <= start) return false;
  if (d.validate && !d.validate(st.text.slice(start, end), st.text, start, end)) return false;
  st.out.push({ detector: d, start, end });
  st.lastEnd.set(d, m.index + m[0].length);
  return true;
}

function checkDeadline(d: Detector | undefined, st: ScanState): void {
  if (++st.n % CHECK_EVERY === 0 && performance.now() > st.opts.deadline) throw overBudget(d, st.text, st.opts);
}

/** Whether a gate rules `d` out for this text: it needs a digit there is not, or none of its gate words occurs. */
function skipped(d: Detector, st: ScanState): boolean {
  if (d.needsDigit && !(st.hasDigit ??= DIGIT.test(st.text))) return true;
  if (d.gateWords === undefined) return false;
  const present = (st.present ??= gateWordsPresent(st));
  for (const w of d.gateWords) if (present.has(w)) return false;
  return true;
}

/** Every gate word of the detectors that occurs in the text, lower case (one pass). */
function gateWordsPresent(st: ScanState): Set<string> {
  const found = new Set<string>();
  const gate = st.gate;
  if (gate) {
    gate.lastIndex = 0;
    let g: RegExpExecArray | null;
    while ((g = gate.exec(st.text)) !== null) found.add(g[0].toLowerCase());
  }
  return found;
}

/** `ds` without the detectors switched off for this text. */
function switchedOn(ds: Detector[] | undefined, st: ScanState): Detector[] | undefined {
  const off = st.off;
  return ds && off ? ds.filter((d) => !off.has(d)) : ds;
}

/** The anchor-hit passes, in order: the hit pattern each walks the text with. */
const HIT_PASSES = [
  ['prefix', PREFIX],
  ['keyword', KEYWORD],
] as const;

/** All validated candidates of `detectors` in `text` (overlaps not yet resolved). */
export function scanText(text: string, detectors: readonly Detector[], opts: ScanOptions): Match[] {
  const out: Match[] = [];
  if (!text) return out;
  const prep = prepare(detectors);
  const st: ScanState = {
    text,
    from: opts.from ?? 0,
    out,
    opts,
    lastEnd: new Map(),
    n: 0,
    off: undefined,
    numStarts: [],
    numDigits: [],
    scanFrom: Math.min(opts.scanFrom ?? 0, opts.from ?? 0),
    hasDigit: undefined,
    present: undefined,
    gate: prep.gate,
  };
  let current: Detector | undefined;
  try {
    for (const d of detectors) {
      current = d;
      if (d.anchors && (d.pattern || d.findAt)) {
        if (skipped(d, st)) (st.off ??= new Set()).add(d);
        continue;
      }
      if (skipped(d, st)) continue;
      if (d.linear) runLinear(d, d.linear, st);
      if (d.find) {
        d.find(text, (start, end) => {
          if (start >= st.from && end > start && (!d.validate || d.validate(text.slice(start, end), text, start, end))) out.push({ detector: d, start, end });
        });
      } else if (d.pattern) runPattern(d, d.pattern, st);
      if (performance.now() > opts.deadline) throw overBudget(d, text, opts);
    }
    current = undefined;
    const numbers = switchedOn(prep.anchored.number, st);
    if (numbers?.length) scanNumbers(numbers, st);
    const letters = switchedOn(prep.anchored.letters, st);
    if (letters?.length) {
      st.lastEnd.clear(); // each pass walks the text from the start
      LETTERS.lastIndex = st.scanFrom;
      let m: RegExpExecArray | null;
      while ((m = LETTERS.exec(text)) !== null) {
        for (const d of letters) tryAt(d, m.index, st);
        checkDeadline(undefined, st);
      }
    }
    for (const [kind, re] of HIT_PASSES) {
      const dispatch = prep.dispatch[kind];
      if (!dispatch.length) continue;
      st.lastEnd.clear(); // each pass walks the text from the start
      re.lastIndex = st.scanFrom;
      let m: RegExpExecArray | null;
      while ((m = re.exec(text)) !== null) {
        if (kind === 'keyword' && m.index > 0 && isAsciiLetter(text.charCodeAt(m.index - 1))) {
          re.lastIndex = m.index + 1; // overlapping hits, as the look-behind form found them
          continue;
        }
        for (const [prefix, which] of dispatch) if (startsWithLower(text, m.index, prefix)) for (const d of which) if (!st.off?.has(d)) tryAt(d, m.index, st);
        checkDeadline(undefined, st);
      }
    }
  } catch (err) {
    if (err instanceof MaskingError) throw err;
    const who = current ? `detector "${current.id}"` : 'a detector';
    throw new MaskingError(`masking failed closed: ${who} raised ${err instanceof Error ? err.message : String(err)}`);
  }
  if (performance.now() > opts.deadline) throw overBudget(undefined, text, opts);
  return out;
}

/**
 * Number-anchored detectors run at the start of each digit token and after each separator inside
 * it, and only when enough digits follow (a 4-digit year never reaches the card pattern).
 */
function scanNumbers(ds: Detector[], st: ScanState): void {
  const text = st.text;
  NUMBER_TOKEN.lastIndex = st.scanFrom;
  let m: RegExpExecArray | null;
  // reused between tokens; filled up to `n` (setting an array's length is slow)
  const starts = st.numStarts;
  const digitsBefore = st.numDigits;
  while ((m = NUMBER_TOKEN.exec(text)) !== null) {
    const ts = m.index;
    const te = ts + m[0].length;
    // Where a number-anchored pattern can start: the token start, after a space or "(" — the
    // patterns' look-behinds reject a start after "-" or "." — and after "/" for IPv4 in URLs.
    let n = 0;
    let digits = 0;
    let hasDot = false;
    let prev = 0;
    for (let i = ts; i < te; i++) {
      const c = text.charCodeAt(i);
      const digit = c >= 48 && c <= 57;
      if (i === ts || ((digit || c === 40 || c === 43) && (prev === 32 || prev === 40 || prev === 47))) {
        starts[n] = i;
        digitsBefore[n++] = digits;
      }
      if (digit) digits++;
      else if (c === 46) hasDot = true;
      prev = c;
    }
    if (digits < 7 && !hasDot) continue; // fewer digits than any number-anchored value
    let covered = 0;
    for (let j = 0; j < n; j++) {
      const pos = starts[j]!;
      if (pos < covered) continue; // inside a value already found
      const after = digits - digitsBefore[j]!;
      // shape of the start: first character, first run of digits, the character after it
      const first = text.charCodeAt(pos);
      let r = isDigit(first) ? pos : pos + 1;
      const runStart = r;
      while (r < te && isDigit(text.charCodeAt(r))) r++;
      const run = r - runStart;
      const next = text.charCodeAt(r);
      const before = st.out.length;
      for (const d of ds)
        if (after >= (d.minDigits ?? 0) && (!d.needsDot || hasDot) && (!d.startShape || d.startShape(first, run, next)) && (!d.eligible || d.eligible(text, pos, te))) tryAt(d, pos, st);
      for (let q = before; q < st.out.length; q++) if (st.out[q]!.end > covered) covered = st.out[q]!.end;
    }
    checkDeadline(undefined, st);
  }
}

function overBudget(d: Detector | undefined, text: string, opts: ScanOptions): MaskingError {
  return new MaskingError(
    `masking failed closed: scanning ${text.length} characters exceeded the ${Math.round(opts.budgetMs)} ms budget${d ? ` (detector "${d.id}")` : ''}`,
  );
}

/** Custom dictionaries (V8) run over windows of this many characters, with the deadline checked in between. */
const WINDOW = 4096;

function runPattern(d: Detector, re: RegExp, st: ScanState): void {
  if (d.kind === 'custom' && st.text.length > WINDOW) {
    runWindowed(d, re, st);
    return;
  }
  re.lastIndex = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(st.text)) !== null) {
    if (m[0].length === 0) {
      re.lastIndex++;
      continue;
    }
    checkDeadline(d, st);
    // a rejected candidate may hide a valid one starting inside it
    if (!accept(d, m, st)) re.lastIndex = m.index + 1;
  }
}

/**
 * A JavaScript regular expression cannot be interrupted, so a custom dictionary (an escaped,
 * prefix-factored alternation: no backtracking blow-up, but large) runs over bounded windows
 * (overlapping by its longest match, with context on the left), and the deadline is checked after
 * each. Typed patterns never come here: they run on the linear-time engine (runLinear).
 */
function runWindowed(d: Detector, re: RegExp, st: ScanState): void {
  const text = st.text;
  const overlap = Math.min(Number.isFinite(d.maxLength) ? d.maxLength : 256, 256) + (d.holdExtra ?? 1);
  const lead = 64;
  for (let s = 0; s < text.length; s += WINDOW) {
    const from = Math.max(0, s - lead);
    const slice = text.slice(from, Math.min(text.length, s + WINDOW + overlap));
    re.lastIndex = s - from;
    let m: RegExpExecArray | null;
    while ((m = re.exec(slice)) !== null && m.index + from < s + WINDOW) {
      if (m[0].length === 0) {
        re.lastIndex++;
        continue;
      }
      const [vs, ve] = valueSpan(m);
      const start = vs + from;
      const end = ve + from;
      if (end > start && start >= st.from && start >= (st.lastEnd.get(d) ?? 0) && (!d.validate || d.validate(text.slice(start, end), text, start, end))) {
        st.out.push({ detector: d, start, end });
        st.lastEnd.set(d, end);
      } else re.lastIndex = m.index + 1;
    }
    if (performance.now() > st.opts.deadline) throw overBudget(d, text, st.opts);
  }
}

/** Patterns on the linear-time engine run over windows of this many characters (fewer calls than WINDOW). */
const LINEAR_WINDOW = 16 * 1024;

/**
 * A typed pattern on the linear-time engine (pattern.ts): each window costs time proportional to its
 * length whatever the pattern, and the deadline is checked after each, so the scan fails closed
 * when the budget runs out. Windows overlap as in runWindowed.
 */
function runLinear(d: Detector, lp: LinearPattern, st: ScanState): void {
  const text = st.text;
  const overlap = Math.min(Number.isFinite(d.maxLength) ? d.maxLength : CUSTOM_UNBOUNDED_CAP, CUSTOM_UNBOUNDED_CAP) + (d.holdExtra ?? 1);
  const lead = text.length > LINEAR_WINDOW ? 64 : 0;
  for (let s = 0; s < text.length; s += LINEAR_WINDOW) {
    const from = Math.max(0, s - lead);
    const slice = from === 0 && text.length <= LINEAR_WINDOW ? text : text.slice(from, Math.min(text.length, s + LINEAR_WINDOW + overlap));
    const it = lp.matches(slice, s - from, s + LINEAR_WINDOW - from);
    for (let r = it.next(); !r.done; ) {
      const start = r.value.start + from;
      const end = r.value.end + from;
      if (end > start && start >= st.from && start >= (st.lastEnd.get(d) ?? 0) && (!d.validate || d.validate(text.slice(start, end), text, start, end))) {
        st.out.push({ detector: d, start, end });
        st.lastEnd.set(d, end);
        r = it.next();
      } else r = it.next(r.value.at + 1);
    }
    if (performance.now() > st.opts.deadline) throw overBudget(d, text, st.opts);
  }
}

/**
 * Keeps non-overlapping matches: higher priority first, then longer, then earlier. Sorted by start.
 * Only matches in one cluster of mutually overlapping spans compete, so this stays O(n log n).
 */
export function resolveOverlaps(matches: Match[]): Match[] {
  if (matches.length <= 1) return matches;
  const sorted = [...matches].sort((a, b) => a.start - b.start || b.end - a.end);
  const out: Match[] = [];
  let i = 0;
  while (i < sorted.length) {
    let j = i + 1;
    let end = sorted[i]!.end;
    while (j < sorted.length && sorted[j]!.start < end) end = Math.max(end, sorted[j++]!.end);
    if (j === i + 1) out.push(sorted[i]!);
    else {
      const byRank = sorted.slice(i, j).sort((a, b) => b.detector.priority - a.detector.priority || b.end - b.start - (a.end - a.start) || a.start - b.start);
      const kept: Match[] = [];
      for (const m of byRank) if (!kept.some((k) => m.start < k.end && k.start < m.end)) kept.push(m);
      for (const m of kept.sort((a, b) => a.start - b.start)) out.push(m);
    }
    i = j;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Regular-expression analysis for custom detectors: longest possible match (streaming holdback)
// and nested unbounded repetition (the shape behind catastrophic backtracking).

export interface RegexShape {
  /** Longest match in UTF-16 units; Infinity when unbounded. */
  maxLength: number;
  /** A repeated group that itself contains repetition, e.g. `(a+)+`, `(\w*\s?)*`. */
  nestedRepetition: boolean;
}

/** Analyses a JavaScript regular expression source (best effort; throws on syntax it cannot read). */
export function analyzeRegex(source: string): RegexShape {
  let i = 0;
  let nested = false;

  interface Node {
    max: number;
    /** Contains a quantifier allowing more than one repetition. */
    repeats: boolean;
  }

  function parseAlternation(): Node {
    let best: Node = { max: 0, repeats: false };
    let first = true;
    for (;;) {
      const seq = parseSequence();
      best = first ? seq : { max: Math.max(best.max, seq.max), repeats: best.repeats || seq.repeats };
      first = false;
      if (source[i] === '|') {
        i++;
        continue;
      }
      return best;
    }
  }

  function parseSequence(): Node {
    let max = 0;
    let repeats = false;
    while (i < source.length && source[i] !== '|' && source[i] !== ')') {
      const atom = parseAtom();
      const q = parseQuantifier();
      let node = atom;
      if (q) {
        if (q.max > 1 && atom.repeats && (q.max === Infinity || q.max > 10)) nested = true;
        node = { max: atom.max * q.max, repeats: atom.repeats || q.max > 1 };
        if (atom.max === 0) node.max = 0;
      }
      max += node.max;
      repeats ||= node.repeats;
    }
    return { max, repeats };
  }

  function parseQuantifier(): { max: number } | undefined {
    const c = source[i];
    let max: number;
    if (c === '*' || c === '+') {
      i++;
      max = Infinity;
    } else if (c === '?') {
      i++;
      max = 1;
    } else if (c === '{') {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(source.slice(i));
      if (!m) return undefined;
      i += m[0].length;
      max = m[2] === undefined ? Number(m[1]) : m[3] === '' ? Infinity : Number(m[3]);
    } else return undefined;
    if (source[i] === '?') i++;
    return { max };
  }

  function parseAtom(): Node {
    const c = source[i]!;
    if (c === '(') {
      i++;
      let zeroWidth = false;
      if (source.startsWith('?:', i)) i += 2;
      else if (source.startsWith('?=', i) || source.startsWith('?!', i)) {
        i += 2;
        zeroWidth = true;
      } else if (source.startsWith('?<=', i) || source.startsWith('?<!', i)) {
        i += 3;
        zeroWidth = true;
      } else if (source.startsWith('?<', i)) {
        const close = source.indexOf('>', i);
        if (close < 0) throw new SyntaxError('unterminated group name');
        i = close + 1;
      }
      const inner = parseAlternation();
      if (source[i] !== ')') throw new SyntaxError('unterminated group');
      i++;
      return zeroWidth ? { max: 0, repeats: false } : inner;
    }
    if (c === '[') {
      i++;
      if (source[i] === '^') i++;
      if (source[i] === ']') i++;
      while (i < source.length && source[i] !== ']') i += source[i] === '\\' ? 2 : 1;
      if (source[i] !== ']') throw new SyntaxError('unterminated character class');
      i++;
      return { max: 1, repeats: false };
    }
    if (c === '\\') {
      const next = source[i + 1] ?? '';
      if (/[1-9]/.test(next) || next === 'k') {
        i += 2;
        if (next === 'k') i = source.indexOf('>', i) + 1;
        return { max: Infinity, repeats: true }; // a backreference can be as long as its group
      }
      if (next === 'b' || next === 'B') {
        i += 2;
        return { max: 0, repeats: false };
      }
      if (next === 'u' && source[i + 2] === '{') i = source.indexOf('}', i) + 1;
      else if (next === 'u') i += 6;
      else if (next === 'x') i += 4;
      else if ((next === 'p' || next === 'P') && source[i + 2] === '{') i = source.indexOf('}', i) + 1;
      else if (next === 'c') i += 3;
      else i += 2;
      return { max: 1, repeats: false };
    }
    if (c === '^' || c === '$') {
      i++;
      return { max: 0, repeats: false };
    }
    i++;
    return { max: 1, repeats: false };
  }

  const node = parseAlternation();
  if (i !== source.length) throw new SyntaxError(`unexpected "${source[i]}" at ${i}`);
  return { maxLength: node.max, nestedRepetition: nested };
}

// ---------------------------------------------------------------------------------------------
// Custom detectors from config.

/** Longest value a custom detector with unbounded repetition is assumed to match when streaming. */
export const CUSTOM_UNBOUNDED_CAP = 256;

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');
}

/** A regex alternation of `words` factored by common prefixes (a trie), so large dictionaries stay fast. */
export function dictionaryRegexSource(words: string[], caseSensitive: boolean): string {
  interface Trie {
    [ch: string]: Trie | boolean | undefined;
    end?: boolean;
  }
  const root: Trie = {};
  for (const raw of words) {
    const w = caseSensitive ? raw : raw.toLowerCase();
    if (!w) continue;
    let node = root;
    for (const ch of w) node = (node[`c${ch}`] ??= {}) as Trie;
    node.end = true;
  }
  const emit = (node: Trie): string => {
    const branches = Object.keys(node)
      .filter((k) => k.startsWith('c'))
      .map((k) => escapeRegex(k.slice(1)) + emit(node[k] as Trie));
    if (!branches.length) return '';
    const body = branches.length === 1 ? branches[0]! : `(?:${branches.join('|')})`;
    return node.end ? `(?:${body})?` : body;
  };
  return emit(root);
}

function contextRegex(words: string[]): RegExp {
  return new RegExp(`(?<![\\p{L}\\p{N}])(?:${words.map(escapeRegex).join('|')})(?![\\p{L}\\p{N}])`, 'iu');
}

/** Compiles a custom detector; throws Error with a message naming the detector on a bad definition. */
export function compileCustomDetector(def: CustomDetector, validators: Record<string, (v: string) => boolean>): Detector {
  const type = def.type ?? def.id.toUpperCase();
  const regexes: RegExp[] = [];
  let maxLength = 0;
  let linear: LinearPattern | undefined;
  if (def.pattern !== undefined) {
    let source = def.pattern;
    let ci = !def.caseSensitive;
    if (source.startsWith('(?i)')) {
      source = source.slice(4);
      ci = true;
    }
    // A typed pattern runs on the linear-time engine (pattern.ts); PatternError names the detector.
    linear = LinearPattern.compile(source, `detector "${def.id}"`, ci);
    let shape: RegexShape;
    try {
      shape = analyzeRegex(source);
    } catch (err) {
      throw new Error(`detector "${def.id}": cannot analyse the pattern (${(err as Error).message}); simplify it`);
    }
    if (linear.matchesEmpty()) throw new Error(`detector "${def.id}": the pattern matches the empty string`);
    maxLength = Math.max(maxLength, Math.min(shape.maxLength, CUSTOM_UNBOUNDED_CAP));
  }
  if (def.dictionary !== undefined) {
    const words = def.dictionary.map((w) => w.trim()).filter(Boolean);
    if (!words.length) throw new Error(`detector "${def.id}": the dictionary is empty`);
    const body = dictionaryRegexSource(words, def.caseSensitive);
    regexes.push(new RegExp(`(?<![\\p{L}\\p{N}_])${body}(?![\\p{L}\\p{N}_])`, def.caseSensitive ? 'gu' : 'giu'));
    maxLength = Math.max(maxLength, ...words.map((w) => w.length));
  }
  let validator: ((v: string) => boolean) | undefined;
  if (def.validator !== undefined) {
    validator = validators[def.validator];
    if (!validator) throw new Error(`detector "${def.id}": unknown validator "${def.validator}" (known: ${Object.keys(validators).sort().join(', ')})`);
  }
  const positive = def.context?.length ? contextRegex(def.context) : undefined;
  const negative = def.negativeContext?.length ? contextRegex(def.negativeContext) : undefined;
  const window = def.contextWindow;
  const validate =
    validator || positive || negative
      ? (value: string, text: string, start: number, end: number) => {
          if (validator && !validator(value)) return false;
          if (positive || negative) {
            const around = text.slice(Math.max(0, start - window), start) + ' ' + text.slice(end, end + window);
            if (negative?.test(around)) return false;
            if (positive && !positive.test(around)) return false;
          }
          return true;
        }
      : undefined;
  const detector: Detector = {
    id: def.id,
    type,
    kind: 'custom',
    description: def.dictionary ? `custom dictionary (${def.dictionary.length} entries)` : `custom pattern ${def.pattern}`,
    priority: 60,
    validate,
    maxLength,
    holdExtra: positive || negative ? window + 1 : 2,
  };
  if (linear) detector.linear = linear;
  // A dictionary is an escaped, prefix-factored alternation: safe on V8's engine, and faster there.
  if (regexes.length === 1) detector.pattern = regexes[0];
  return detector;
}
