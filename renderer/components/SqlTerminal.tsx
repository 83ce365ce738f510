/**
 * A PostgreSQL session replayed in xterm as a psql-like transcript. Entries up to the replay
 * position are written; seeking backwards rewrites from the start. Masked values are highlighted
 * by SGR colours and overlaid with decorations that carry the detector type (title on hover and
 * `data-mask-type`).
 */
import { Terminal } from '@xterm/xterm';
import { useEffect, useRef } from 'react';
import { entriesDue, measureCell, TERMINAL_FONT, TERMINAL_FONT_SIZE } from './terminal-cell';
import { maskCells, rowsOf, toAnsi, type TranscriptEntry } from '../lib/sql-transcript';

export function SqlTerminal({ entries, position }: { entries: TranscriptEntry[]; position: number }) {
  const host = useRef<HTMLDivElement>(null);
  const term = useRef<Terminal>(undefined);
  const written = useRef(0);
  const entriesRef = useRef(entries);

  useEffect(() => {
    const el = host.current!;
    const cell = measureCell();
    const cols = Math.max(40, Math.floor((el.clientWidth - 16) / cell.width));
    const rows = Math.max(10, Math.floor((el.clientHeight - 12) / cell.height));
    const t = new Terminal({
      cols,
      rows,
      fontFamily: TERMINAL_FONT,
      fontSize: TERMINAL_FONT_SIZE,
      disableStdin: true,
      cursorBlink: false,
      cursorStyle: 'bar',
      cursorInactiveStyle: 'none',
      scrollback: 100_000,
      convertEol: false,
      allowProposedApi: true,
      theme: { background: '#101216', foreground: '#d4d4d8', cursor: '#101216', selectionBackground: '#3f3f46', brightBlack: '#71717a' },
    });
    t.open(el);
    term.current = t;
    written.current = 0;
    const ro = new ResizeObserver(() => {
      const c2 = Math.max(40, Math.floor((el.clientWidth - 16) / cell.width));
      const r2 = Math.max(10, Math.floor((el.clientHeight - 12) / cell.height));
      if (c2 !== t.cols || r2 !== t.rows) {
        t.resize(c2, r2);
        // Wrapping changed: rewrite so the mask overlays line up again.
        rewrite(t, entriesRef.current, written.current);
      }
    });
    ro.observe(el);
    return () => {
      ro.disconnect();
      t.dispose();
      term.current = undefined;
    };
  }, []);

  useEffect(() => {
    const t = term.current;
    if (!t) return;
    const upTo = entriesDue(entries, position);
    if (entriesRef.current !== entries || upTo < written.current) {
      entriesRef.current = entries;
      rewrite(t, entries, upTo);
    } else if (upTo > written.current) {
      for (const e of entries.slice(written.current, upTo)) writeEntry(t, e);
    }
    written.current = upTo;
  }, [entries, position]);

  return <div className="terminal-host" ref={host} data-testid="sql-terminal" />;
}

function rewrite(t: Terminal, entries: TranscriptEntry[], upTo: number): void {
  t.reset();
  t.clear();
  for (const e of entries.slice(0, upTo)) writeEntry(t, e);
}

function writeEntry(t: Terminal, entry: TranscriptEntry): void {
  for (const line of entry.lines) {
    const cells = maskCells(line, t.cols);
    const lastRow = rowsOf(line, t.cols) - 1;
    t.write(toAnsi(line), () => {
      for (const c of cells) {
        const marker = t.registerMarker(c.row - lastRow);
        const deco = t.registerDecoration({ marker, x: c.x, width: c.width, layer: 'top' });
        deco?.onRender((el) => {
          el.classList.add('xterm-mask');
          el.dataset['maskType'] = c.type;
          el.title = `Masked: ${c.type} (rule ${c.rule})`;
        });
      }
    });
    t.write('\r\n');
  }
}
