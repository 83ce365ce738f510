/**
 * Masked values that keep their place on a terminal screen. In a table, a status line or a
 * full-screen program, replacing `4111 1111 1111 1111` (19 cells) with `[CREDIT_CARD]` (13) would
 * pull the rest of the line left and break the layout; so on a terminal the placeholder is made as
 * wide as the value it replaces: `[CREDIT_CARD******]`, or cut down (`[CRED]`) for a short value.
 *
 * The value as matched may hold more than printed characters: escape sequences (a colour change
 * between the digits, a reset a custom pattern swallowed), line breaks, tabs. Those are kept as they
 * are, where they are, and the placeholder fills only the cells the value's printed characters took
 * (wide CJK or emoji characters take two). Text inside an OSC sequence (a window title, a hyperlink
 * target) is never on screen but is still the value: it is starred out, its frame kept. A CSI
 * sequence too long to be a real one is treated as text, so a value cannot hide in one.
 */

/** A piece of a matched value: printed characters (with their cells), or a control kept as it is. */
type Token = { kind: 'text'; text: string; cells: number } | { kind: 'keep'; text: string } | { kind: 'osc'; open: string; body: string; close: string };

/** Longest CSI parameter run kept as a sequence; longer ones are read as text (and masked). */
const CSI_PARAMS_MAX = 32;

const SEQUENCE = new RegExp(`^(?:\\x1b\\[[0-?]{0,${CSI_PARAMS_MAX}}[ -/]{0,4}[@-~]|\\x1b[ -/]{1,3}[0-~]|\\x1b[@-Z\\\\^_a-~]|[\\x00-\\x1a\\x1c-\\x1f\\x7f]|[\\x80-\\x9a\\x9c-\\x9f])`);
// eslint-disable-next-line no-control-regex
const OSC = /^(\x1b\]|\x9d)([^\x07\x1b\x9c]*)(\x07|\x1b\\|\x9c)?/;
const ZERO_WIDTH = /^[\p{Mn}\p{Me}\p{Cf}]$/u;

/** East Asian wide and fullwidth ranges (as wcwidth counts them), plus the emoji blocks: two cells. */
const WIDE: readonly [number, number][] = [
  [0x1100, 0x115f], [0x231a, 0x231b], [0x2329, 0x232a], [0x23e9, 0x23ec], [0x23f0, 0x23f0], [0x23f3, 0x23f3], [0x25fd, 0x25fe],
  [0x2614, 0x2615], [0x2648, 0x2653], [0x267f, 0x267f], [0x2693, 0x2693], [0x26a1, 0x26a1], [0x26aa, 0x26ab], [0x26bd, 0x26be],
  [0x26c4, 0x26c5], [0x26ce, 0x26ce], [0x26d4, 0x26d4], [0x26ea, 0x26ea], [0x26f2, 0x26f3], [0x26f5, 0x26f5], [0x26fa, 0x26fa],
  [0x26fd, 0x26fd], [0x2705, 0x2705], [0x270a, 0x270b], [0x2728, 0x2728], [0x274c, 0x274c], [0x274e, 0x274e], [0x2753, 0x2755],
  [0x2757, 0x2757], [0x2795, 0x2797], [0x27b0, 0x27b0], [0x27bf, 0x27bf], [0x2b1b, 0x2b1c], [0x2b50, 0x2b50], [0x2b55, 0x2b55],
  [0x2e80, 0x303e], [0x3041, 0x33ff], [0x3400, 0x4dbf], [0x4e00, 0x9fff], [0xa000, 0xa4cf], [0xa960, 0xa97f], [0xac00, 0xd7a3],
  [0xf900, 0xfaff], [0xfe10, 0xfe19], [0xfe30, 0xfe6f], [0xff00, 0xff60], [0xffe0, 0xffe6], [0x16fe0, 0x18cff], [0x1b000, 0x1b2ff],
  [0x1f004, 0x1f004], [0x1f0cf, 0x1f0cf], [0x1f18e, 0x1f18e], [0x1f191, 0x1f19a], [0x1f200, 0x1f251], [0x1f300, 0x1f64f],
  [0x1f680, 0x1f6ff], [0x1f7e0, 0x1f7eb], [0x1f90c, 0x1f9ff], [0x1fa70, 0x1faff], [0x20000, 0x2fffd], [0x30000, 0x3fffd],
];

/** Cells one character takes on a terminal: 0 (combining, format), 2 (wide, fullwidth, emoji) or 1. */
export function charCells(ch: string): number {
  const cp = ch.codePointAt(0)!;
  if (cp < 0x300) return 1;
  if (ZERO_WIDTH.test(ch)) return 0;
  let lo = 0;
  let hi = WIDE.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const [a, b] = WIDE[mid]!;
    if (cp < a) hi = mid - 1;
    else if (cp > b) lo = mid + 1;
    else return 2;
  }
  return 1;
}

/** Cells a string of printed characters takes (no controls in it). */
export function textCells(text: string): number {
  let n = 0;
  for (const ch of text) n += charCells(ch);
  return n;
}

/** Splits a matched value into printed characters and the controls among them. */
function tokenize(value: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < value.length) {
    const rest = value.slice(i);
    const osc = OSC.exec(rest);
    if (osc) {
      out.push({ kind: 'osc', open: osc[1]!, body: osc[2]!, close: osc[3] ?? '' });
      i += osc[0].length;
      continue;
    }
    const seq = SEQUENCE.exec(rest);
    if (seq) {
      out.push({ kind: 'keep', text: seq[0] });
      i += seq[0].length;
      continue;
    }
    // An escape that does not complete within the value (the match ended inside it): kept.
    // eslint-disable-next-line no-control-regex
    if (rest[0] === '\x1b' && /^\x1b(?:\[[0-?]*[ -/]*|[ -/]*)$/.test(rest)) {
      out.push({ kind: 'keep', text: rest });
      break;
    }
    const ch = String.fromCodePoint(rest.codePointAt(0)!);
    out.push({ kind: 'text', text: ch, cells: ch === '\x1b' ? 1 : charCells(ch) });
    i += ch.length;
  }
  return out;
}

/**
 * `placeholder` made exactly `cells` wide: padded with `*` before its closing bracket (or at its
 * end), or cut down keeping its brackets.
 */
export function fitPlaceholder(placeholder: string, cells: number): string {
  const have = textCells(placeholder);
  const bracketed = placeholder.length >= 2 && placeholder.startsWith('[') && placeholder.endsWith(']');
  if (have === cells) return placeholder;
  if (have < cells) return bracketed ? `${placeholder.slice(0, -1)}${'*'.repeat(cells - have)}]` : placeholder + '*'.repeat(cells - have);
  if (cells <= 0) return '';
  if (bracketed && cells >= 3) return `[${takeCells(placeholder.slice(1, -1), cells - 2)}]`;
  return takeCells(bracketed ? placeholder.slice(1, -1) : placeholder, cells);
}

/** The longest prefix of `text` that fits in `cells`, padded with `*` to exactly that many. */
function takeCells(text: string, cells: number): string {
  let out = '';
  let used = 0;
  for (const ch of text) {
    const w = charCells(ch);
    if (used + w > cells) break;
    out += ch;
    used += w;
  }
  return out + '*'.repeat(cells - used);
}

/**
 * What a terminal shows instead of `value`: `placeholder` fitted to the cells the value's printed
 * characters take, laid over them in order, with every control sequence, line break and tab of the
 * value left where it was.
 */
export function fitToScreen(placeholder: string, value: string): string {
  const tokens = tokenize(value);
  let cells = 0;
  for (const t of tokens) if (t.kind === 'text') cells += t.cells;
  const fill = [...fitPlaceholder(placeholder, cells)];
  let k = 0;
  let out = '';
  for (const t of tokens) {
    if (t.kind === 'keep') out += t.text;
    else if (t.kind === 'osc') out += t.open + '*'.repeat([...t.body].length) + t.close;
    else {
      // Fill this character's cells with the next characters of the placeholder.
      let used = 0;
      while (used < t.cells && k < fill.length) {
        const w = charCells(fill[k]!);
        if (used + w > t.cells) break;
        out += fill[k++]!;
        used += w;
      }
      if (used < t.cells) out += '*'.repeat(t.cells - used);
    }
  }
  return out;
}

/**
 * What output without a pty shows instead of `value`: the label, then the escape sequences the
 * value held (a colour change between its digits), so the terminal's state after it is the same.
 */
export function labelKeepingEscapes(label: string, value: string): string {
  if (!value.includes('\x1b')) return label;
  let out = label;
  for (const t of tokenize(value)) if (t.kind === 'keep' && t.text.startsWith('\x1b')) out += t.text;
  return out;
}

/** Text with its escape sequences taken out, and where each remaining character was. */
export interface Projection {
  text: string;
  /** `at[i]`: the offset in the original of projected character `i`; `at[text.length]` is the original's length. */
  at: number[];
}

const SCREEN_CONTROL = new RegExp(`\\x1b\\[[0-?]{0,${CSI_PARAMS_MAX}}[ -/]{0,4}[@-~]|\\x1b[ -/]{1,3}[0-~]|\\x1b[@-Z\\\\^_a-~]`, 'g');

/**
 * What the detectors read on a terminal: the text as printed, without the escape sequences that
 * colour or move it, so `\x1b[31m4111 1111 1111 1111\x1b[0m` is a card number, and so is one with
 * a colour change between its digits. OSC sequences stay in (their text is scanned: a value in a
 * window title is masked too); line breaks and other controls stay, as they separate words.
 */
export function withoutEscapes(text: string): Projection {
  SCREEN_CONTROL.lastIndex = 0;
  if (!text.includes('\x1b')) return { text, at: identity(text.length) };
  let out = '';
  const at: number[] = [];
  let last = 0;
  for (let m = SCREEN_CONTROL.exec(text); m; m = SCREEN_CONTROL.exec(text)) {
    for (let i = last; i < m.index; i++) at.push(i);
    out += text.slice(last, m.index);
    last = m.index + m[0].length;
  }
  for (let i = last; i < text.length; i++) at.push(i);
  out += text.slice(last);
  at.push(text.length);
  return { text: out, at };
}

function identity(n: number): number[] {
  const at = new Array<number>(n + 1);
  for (let i = 0; i <= n; i++) at[i] = i;
  return at;
}

/** The first projected offset at or after original offset `offset`. */
export function projectedOffset(p: Projection, offset: number): number {
  let lo = 0;
  let hi = p.at.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (p.at[mid]! < offset) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
