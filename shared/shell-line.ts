/**
 * A shell's command line rebuilt from what was typed, best effort (docs/SSH.md, "Shell lines").
 *
 * The gateway sees the keys, not the shell's line editor. `reconstructLine` replays the keys through
 * the common readline/zle emacs bindings (insert, Backspace, Delete, Ctrl-A/E/B/F/U/K/W, arrows,
 * Home/End) and marks the line uncertain, naming why, wherever the result depends on state the
 * gateway does not have: history (Up/Down, Ctrl-P/N, Ctrl-R), completion (Tab), the kill ring
 * (Ctrl-Y, Alt-Y), other escape sequences, or a line read by something other than a shell.
 * So only exec commands and file transfers are exact; shell lines are evidence, not decisions.
 *
 * `renderEcho` draws what a terminal's line shows after an echo (cursor moves, erasures, inserts),
 * so a line edited while typing can be matched with its echo without a full terminal emulator.
 */

export interface ShellLine {
  /** The line as the shell most likely read it. */
  line: string;
  /** Why the line may differ from what ran; empty when every key was replayed. */
  uncertain: string[];
}

const WORD = /[\p{L}\p{N}_]/u;

/** Replays `typed` (the keys of one line, its Enter included or not) through emacs-style line editing. */
export function reconstructLine(typed: string): ShellLine {
  let buf: string[] = [];
  let cur = 0;
  const uncertain = new Set<string>();
  const chars = [...typed];
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    const code = c.codePointAt(0)!;
    if (c === '\r' || c === '\n') break;
    if (c === '\x1b') {
      // ESC [ params final, ESC O final, or ESC + one key (Alt-key)
      let seq = '';
      const next = chars[i + 1];
      if (next === '[' || next === 'O') {
        let j = i + 2;
        while (j < chars.length && /[0-9;?]/.test(chars[j]!)) j++;
        seq = chars.slice(i, j + 1).join('');
        i = Math.min(j, chars.length - 1);
      } else if (next !== undefined) {
        seq = `\x1b${next}`;
        i++;
      } else {
        uncertain.add('an escape key');
        continue;
      }
      switch (seq) {
        case '\x1b[D':
        case '\x1bOD':
          cur = Math.max(0, cur - 1);
          break;
        case '\x1b[C':
        case '\x1bOC':
          cur = Math.min(buf.length, cur + 1);
          break;
        case '\x1b[H':
        case '\x1bOH':
        case '\x1b[1~':
        case '\x1b[7~':
          cur = 0;
          break;
        case '\x1b[F':
        case '\x1bOF':
        case '\x1b[4~':
        case '\x1b[8~':
          cur = buf.length;
          break;
        case '\x1b[3~':
          buf.splice(cur, 1);
          break;
        case '\x1b[A':
        case '\x1bOA':
        case '\x1b[B':
        case '\x1bOB':
          uncertain.add('history');
          break;
        case '\x1b[200~':
        case '\x1b[201~':
          break; // bracketed paste markers: the text between is typed as is
        case '\x1bb':
          while (cur > 0 && !WORD.test(buf[cur - 1]!)) cur--;
          while (cur > 0 && WORD.test(buf[cur - 1]!)) cur--;
          break;
        case '\x1bf':
          while (cur < buf.length && !WORD.test(buf[cur]!)) cur++;
          while (cur < buf.length && WORD.test(buf[cur]!)) cur++;
          break;
        case '\x1by':
        case '\x1b.':
        case '\x1b_':
          uncertain.add('the kill ring or history');
          break;
        default:
          uncertain.add(`a key the gateway does not replay (${JSON.stringify(seq).slice(1, -1)})`);
      }
      continue;
    }
    if (code >= 0x20 && code !== 0x7f) {
      buf.splice(cur, 0, c);
      cur++;
      continue;
    }
    switch (c) {
      case '\x7f':
      case '\x08':
        if (cur > 0) {
          buf.splice(cur - 1, 1);
          cur--;
        }
        break;
      case '\x01':
        cur = 0;
        break;
      case '\x05':
        cur = buf.length;
        break;
      case '\x02':
        cur = Math.max(0, cur - 1);
        break;
      case '\x06':
        cur = Math.min(buf.length, cur + 1);
        break;
      case '\x15':
        buf = buf.slice(cur);
        cur = 0;
        break;
      case '\x0b':
        buf = buf.slice(0, cur);
        break;
      case '\x17': {
        // Ctrl-W: the whitespace-delimited word before the cursor (readline's unix-word-rubout).
        let start = cur;
        while (start > 0 && /\s/u.test(buf[start - 1]!)) start--;
        while (start > 0 && !/\s/u.test(buf[start - 1]!)) start--;
        buf.splice(start, cur - start);
        cur = start;
        break;
      }
      case '\x04':
        if (cur < buf.length) buf.splice(cur, 1);
        break;
      case '\t':
        uncertain.add('completion');
        break;
      case '\x10':
      case '\x0e':
        uncertain.add('history');
        break;
      case '\x12':
      case '\x13':
        uncertain.add('history search');
        break;
      case '\x19':
        uncertain.add('the kill ring or history');
        break;
      case '\x16':
        // Ctrl-V: the next key is taken literally
        if (i + 1 < chars.length) {
          buf.splice(cur, 0, chars[++i]!);
          cur++;
        }
        break;
      default:
        uncertain.add(`a control key the gateway does not replay (^${String.fromCharCode(code + 64)})`);
    }
  }
  return { line: buf.join(''), uncertain: [...uncertain] };
}

/**
 * The lines a terminal shows after `output` is written from column 0: printable text overwrites,
 * `\b` and cursor keys move, `ESC[K` erases to the end, `ESC[nP` deletes and `ESC[n@` inserts, `\r`
 * returns to column 0, `\n` starts a new line; other sequences are dropped.
 */
export function renderEcho(output: string): string[] {
  const lines: string[] = [];
  let row: string[] = [];
  let col = 0;
  const chars = [...output];
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i]!;
    if (c === '\x1b') {
      const next = chars[i + 1];
      if (next === '[') {
        let j = i + 2;
        while (j < chars.length && /[0-9;?]/.test(chars[j]!)) j++;
        const params = chars.slice(i + 2, j).join('');
        const n = Math.max(1, Number.parseInt(params, 10) || 1);
        switch (chars[j]) {
          case 'D':
            col = Math.max(0, col - n);
            break;
          case 'C':
            col += n;
            break;
          case 'K':
            if (params === '' || params === '0') row = row.slice(0, col);
            else if (params === '2') row = [];
            break;
          case 'P':
            row.splice(col, n);
            break;
          case '@':
            row.splice(col, 0, ...Array<string>(n).fill(' '));
            break;
          case 'G':
            col = n - 1;
            break;
          default:
            break;
        }
        i = j;
      } else if (next === ']') {
        // OSC: up to BEL or ESC \
        let j = i + 2;
        while (j < chars.length && chars[j] !== '\x07' && !(chars[j] === '\x1b' && chars[j + 1] === '\\')) j++;
        i = chars[j] === '\x1b' ? j + 1 : j;
      } else i++;
      continue;
    }
    if (c === '\r') col = 0;
    else if (c === '\n') {
      lines.push(row.join('').trimEnd());
      row = [];
      col = 0;
    } else if (c === '\b') col = Math.max(0, col - 1);
    else if ((c.codePointAt(0) ?? 0) >= 0x20 && c !== '\x7f') {
      while (row.length < col) row.push(' ');
      row[col] = c;
      col++;
    }
  }
  lines.push(row.join('').trimEnd());
  return lines;
}
