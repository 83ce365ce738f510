/**
 * Recorded text made safe for a terminal. Statements, values, error messages and names in a
 * recording come from whoever used the gateway; written to xterm as they are, an ESC sequence could
 * clear the screen, move the cursor over earlier lines, retitle the window or recolour text, and a
 * CR or backspace could overwrite what the reviewer is reading. So every character a terminal would
 * act on is shown as a visible stand-in instead:
 *
 * - C0 controls (U+0000–U+001F) as their Unicode Control Pictures (`␛` ESC, `␍` CR, `␈` BS, `␇` BEL…),
 *   so `\x1b[2J` reads `␛[2J`; a tab becomes spaces (it only moves the cursor right, but it would
 *   break cell counting);
 * - DEL as `␡`;
 * - C1 controls (U+0080–U+009F), which xterm reads as 8-bit CSI, OSC, DCS…, as `⟨9B⟩`-style hex;
 * - characters that reorder or hide text (bidirectional overrides and isolates, zero-width and
 *   invisible separators, line/paragraph separators, BOM) as `⟨U+202E⟩`.
 *
 * Newlines are kept only where the caller splits lines itself (`keepNewlines`); everywhere else
 * `\n` is shown as `␊`, so a value cannot add rows that look like output.
 */
import type { Mark, Rich } from './rich';

const TAB = '  ';

/** Characters that reorder or hide text without being C0/C1 controls. */
function isInvisibleFormat(cp: number): boolean {
  return (
    cp === 0x061c || // Arabic letter mark
    cp === 0x180e ||
    (cp >= 0x200b && cp <= 0x200f) || // zero-width space/joiners, LRM, RLM
    (cp >= 0x2028 && cp <= 0x202e) || // line/paragraph separators, bidi embeddings and overrides
    (cp >= 0x2060 && cp <= 0x206f) || // word joiner, invisible operators, bidi isolates
    cp === 0xfeff ||
    (cp >= 0xfff9 && cp <= 0xfffb) // interlinear annotations
  );
}

const hex = (cp: number, width: number) => cp.toString(16).toUpperCase().padStart(width, '0');

/** The visible stand-in for one character, or undefined when it is shown as it is. */
export function visibleChar(ch: string, keepNewlines = false): string | undefined {
  const cp = ch.codePointAt(0)!;
  if (cp < 0x20) {
    if (cp === 0x0a && keepNewlines) return undefined;
    if (cp === 0x09) return TAB;
    return String.fromCodePoint(0x2400 + cp);
  }
  if (cp < 0x7f) return undefined;
  if (cp === 0x7f) return '\u2421';
  if (cp <= 0x9f) return `⟨${hex(cp, 2)}⟩`;
  if (isInvisibleFormat(cp)) return `⟨U+${hex(cp, 4)}⟩`;
  return undefined;
}

// One test for "anything to do": most text has no such character and is returned as it is.
// eslint-disable-next-line no-control-regex
const SUSPECT = /[\u0000-\u001f\u007f-\u009f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]/;

/** Plain text with every control character made visible. */
export function visibleText(text: string, keepNewlines = false): string {
  return visibleRich({ text, marks: [] }, keepNewlines).text;
}

/**
 * Rich text with every control character made visible; masked spans move with the text, so a
 * highlight still covers the same value.
 */
export function visibleRich(r: Rich, keepNewlines = false): Rich {
  if (!SUSPECT.test(r.text)) return r;
  // offsets[i] = where character i of the input starts in the output (offsets[length] = the end).
  const offsets = new Array<number>(r.text.length + 1);
  let out = '';
  for (let i = 0; i < r.text.length; ) {
    const cp = r.text.codePointAt(i)!;
    const len = cp > 0xffff ? 2 : 1;
    const ch = r.text.slice(i, i + len);
    for (let k = 0; k < len; k++) offsets[i + k] = out.length;
    out += visibleChar(ch, keepNewlines) ?? ch;
    i += len;
  }
  offsets[r.text.length] = out.length;
  const at = (p: number) => offsets[Math.max(0, Math.min(r.text.length, p))]!;
  const marks: Mark[] = r.marks.map((m) => ({ ...m, start: at(m.start), end: at(m.end) }));
  return { text: out, marks };
}
