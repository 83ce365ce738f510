/**
 * Runs detectors over text: candidates from each detector's pattern (or hand-written matcher),
 * validators to reject look-alikes, then overlap resolution (higher priority, then longer, wins).
 * Every run has a deadline; a detector that throws or a run past its deadline raises MaskingError,
 * so the caller refuses the request instead of forwarding unmasked data.
 */
import type { CustomDetector } from '../../shared/config';
import type { Detector } from './detectors';
import { MaskingError } from './types';

export interface Match {
  detector: Detector;
  /** UTF-16 offsets of the value to mask. */
  start: number;
  end: number;
  /** Set for whole values masked by a column or JSON-path rule: the rule that masks them. */
  rule?: import('./rules').CompiledRule;
}

export interface ScanOptions {
  /** Values that start before this offset are context only (already emitted, or a JSON key). */
  from?: number;
  /** `performance.now()` value after which the scan fails (fail closed). */
  deadline: number;
  budgetMs: number;
}

const DIGIT = /\d/;
const CHECK_EVERY = 64;

/** All validated candidates of `detectors` in `text` (overlaps not yet resolved). */
export function scanText(text: string, detectors: readonly Detector[], opts: ScanOptions): Match[] {
  const out: Match[] = [];
  if (!text) return out;
  const from = opts.from ?? 0;
  let hasDigit: boolean | undefined;
  for (const d of detectors) {
    if (d.needsDigit && !(hasDigit ??= DIGIT.test(text))) continue;
    try {
      if (d.gate && !d.gate.test(text)) continue;
      if (d.find) {
        d.find(text, (start, end) => {
          if (start >= from && end > start && (!d.validate || d.validate(text.slice(start, end), text, start, end))) out.push({ detector: d, start, end });
        });
      } else if (d.pattern) runPattern(d, d.pattern, text, from, out, opts);
    } catch (err) {
      if (err instanceof MaskingError) throw err;
      throw new MaskingError(`masking failed closed: detector "${d.id}" raised ${err instanceof Error ? err.message : String(err)}`);
    }
    if (performance.now() > opts.deadline) throw overBudget(d, text, opts);
  }
  return out;
}

function overBudget(d: Detector, text: string, opts: ScanOptions): MaskingError {
  return new MaskingError(`masking failed closed: scanning ${text.length} characters exceeded the ${Math.round(opts.budgetMs)} ms budget (detector "${d.id}")`);
}

function runPattern(d: Detector, re: RegExp, text: string, from: number, out: Match[], opts: ScanOptions): void {
  re.lastIndex = 0;
  let n = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    if (m[0].length === 0) {
      re.lastIndex++;
      continue;
    }
    if (++n % CHECK_EVERY === 0 && performance.now() > opts.deadline) throw overBudget(d, text, opts);
    let start = m.index;
    let end = start + m[0].length;
    const groups = m.indices?.groups;
    if (groups) {
      for (const name in groups) {
        const span = groups[name];
        if (span && name.startsWith('v')) {
          start = span[0];
          end = span[1];
          break;
        }
      }
    }
    if (start < from || end <= start) continue;
    if (d.validate && !d.validate(text.slice(start, end), text, start, end)) {
      // a rejected candidate may hide a valid one starting inside it
      re.lastIndex = m.index + 1;
      continue;
    }
    out.push({ detector: d, start, end });
  }
}

/** Keeps non-overlapping matches: higher priority first, then longer, then earlier. Sorted by start. */
export function resolveOverlaps(matches: Match[]): Match[] {
  if (matches.length <= 1) return matches;
  const byRank = [...matches].sort(
    (a, b) => b.detector.priority - a.detector.priority || b.end - b.start - (a.end - a.start) || a.start - b.start,
  );
  const kept: Match[] = [];
  for (const m of byRank) {
    if (!kept.some((k) => m.start < k.end && k.start < m.end)) kept.push(m);
  }
  return kept.sort((a, b) => a.start - b.start);
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
  if (def.pattern !== undefined) {
    let source = def.pattern;
    let ci = !def.caseSensitive;
    if (source.startsWith('(?i)')) {
      source = source.slice(4);
      ci = true;
    }
    let shape: RegexShape;
    try {
      regexes.push(new RegExp(source, `g${ci ? 'i' : ''}${/\(\?<v/.test(source) ? 'd' : ''}`));
    } catch (err) {
      throw new Error(`detector "${def.id}": invalid regular expression: ${(err as Error).message.replace(/^Invalid regular expression: /, '')}`);
    }
    try {
      shape = analyzeRegex(source);
    } catch (err) {
      throw new Error(`detector "${def.id}": cannot analyse the pattern (${(err as Error).message}); simplify it`);
    }
    if (shape.nestedRepetition)
      throw new Error(`detector "${def.id}": the pattern nests repetition (like (a+)+), which can take exponential time; rewrite it without a repeated group that itself repeats`);
    if (regexes[0]!.test('')) throw new Error(`detector "${def.id}": the pattern matches the empty string`);
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
  if (regexes.length === 1) detector.pattern = regexes[0];
  else
    detector.find = (text, push) => {
      for (const re of regexes) {
        re.lastIndex = 0;
        let m: RegExpExecArray | null;
        while ((m = re.exec(text)) !== null) {
          if (!m[0].length) {
            re.lastIndex++;
            continue;
          }
          push(m.index, m.index + m[0].length);
        }
      }
    };
  return detector;
}
