/**
 * An SSH session replayed (or watched live) in xterm: the entries of lib/ssh-transcript.ts up to the
 * replay position, a shell at its recorded window size. Seeking backwards rewrites from the start.
 * Masked values are drawn black on yellow and overlaid with decorations that carry the detector
 * type (title on hover and `data-mask-type`), as in the SQL transcript.
 */
import { Terminal } from '@xterm/xterm';
import { useEffect, useRef } from 'react';
import { entriesDue, measureCell, TERMINAL_FONT, TERMINAL_FONT_SIZE } from './terminal-cell';
import type { TerminalEntry } from '../lib/ssh-transcript';

const MASK_ON = '\x1b[30;43m';
const MASK_OFF = '\x1b[39;49m';

export function SshTerminal({ entries, position }: { entries: TerminalEntry[]; position: number }) {
  const host = useRef<HTMLDivElement>(null);
  const term = useRef<Terminal>(undefined);
  const written = useRef(0);
  const entriesRef = useRef(entries);
  const fitted = useRef({ cols: 80, rows: 24 });

  useEffect(() => {
    const el = host.current!;
    const cell = measureCell();
    fitted.current = { cols: Math.max(40, Math.floor((el.clientWidth - 16) / cell.width)), rows: Math.max(10, Math.floor((el.clientHeight - 12) / cell.height)) };
    const t = new Terminal({
      ...fitted.current,
      fontFamily: TERMINAL_FONT,
      fontSize: TERMINAL_FONT_SIZE,
      disableStdin: true,
      cursorBlink: false,
      scrollback: 100_000,
      allowProposedApi: true,
      theme: { background: '#101216', foreground: '#d4d4d8', cursor: '#a1a1aa', selectionBackground: '#3f3f46', brightBlack: '#71717a' },
    });
    t.open(el);
    term.current = t;
    written.current = 0;
    rewrite(t, entriesRef.current, 0, fitted.current);
    return () => {
      t.dispose();
      term.current = undefined;
    };
  }, []);

  useEffect(() => {
    const t = term.current;
    if (!t) return;
    const upTo = entriesDue(entries, position);
    // New entries at the end (a live session) are appended; anything else rewrites.
    const appended = entriesRef.current !== entries && entries.length >= entriesRef.current.length && entriesRef.current.every((e, i) => entries[i] === e || (entries[i]!.seq === e.seq && entries[i]!.at === e.at));
    if ((entriesRef.current !== entries && !appended) || upTo < written.current) {
      entriesRef.current = entries;
      rewrite(t, entries, upTo, fitted.current);
    } else {
      entriesRef.current = entries;
      for (const e of entries.slice(written.current, upTo)) writeEntry(t, e);
    }
    written.current = upTo;
  }, [entries, position]);

  return <div className="terminal-host" ref={host} data-testid="ssh-terminal" />;
}

function rewrite(t: Terminal, entries: TerminalEntry[], upTo: number, fitted: { cols: number; rows: number }): void {
  t.reset();
  t.clear();
  // A shell replays at its recorded size (full-screen programs place text by it); exec transcripts fit the pane.
  const size = entries.find((e) => e.resize)?.resize ?? fitted;
  if (size.cols !== t.cols || size.rows !== t.rows) t.resize(size.cols, size.rows);
  for (const e of entries.slice(0, upTo)) writeEntry(t, e);
}

function writeEntry(t: Terminal, entry: TerminalEntry): void {
  if (entry.resize && (entry.resize.cols !== t.cols || entry.resize.rows !== t.rows)) t.resize(Math.min(500, entry.resize.cols), Math.min(200, entry.resize.rows));
  for (const part of entry.parts) {
    if (!part.mask) {
      t.write(part.text);
      continue;
    }
    const mask = part.mask;
    const width = part.text.length;
    // The decoration goes where the cursor is once everything before the value has been drawn.
    t.write(MASK_ON, () => {
      const x = t.buffer.active.cursorX;
      const marker = t.registerMarker(0);
      const deco = t.registerDecoration({ marker, x, width: Math.max(1, Math.min(width, t.cols - x)), layer: 'top' });
      deco?.onRender((el) => {
        el.classList.add('xterm-mask');
        el.dataset['maskType'] = mask.type;
        el.title = `Masked: ${mask.type} (rule ${mask.rule})`;
      });
    });
    t.write(part.text);
    t.write(MASK_OFF);
  }
}
