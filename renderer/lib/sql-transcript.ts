/**
 * A PostgreSQL session as a psql-like transcript for the xterm replay: the prompt and statement,
 * aligned result tables with `(n rows)`, command tags, `ERROR:` lines, and holds/approvals as
 * comments at their moment. Lines are rich text, so masked values keep their detector type; the
 * terminal view turns marks into highlighted cells with the type on hover.
 */
import type { AuditEvent } from '../../shared/events';
import { holdNotice, redundantHoldFacts } from './conversation';
import { concatRich, Node, rich, type Rich } from './rich';
import type { Timeline } from './replay';

export type LineStyle = 'prompt' | 'plain' | 'dim' | 'error' | 'hold' | 'approve' | 'deny' | 'header';

export interface TranscriptLine {
  style: LineStyle;
  text: Rich;
}

export interface TranscriptEntry {
  at: number;
  seq: number;
  lines: TranscriptLine[];
}

/** Display width of a string in a terminal (wide East Asian characters take two cells). */
export function cellWidth(s: string): number {
  let w = 0;
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    w += cp >= 0x1100 && (cp <= 0x115f || (cp >= 0x2e80 && cp <= 0xa4cf) || (cp >= 0xac00 && cp <= 0xd7a3) || (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0xff00 && cp <= 0xff60) || (cp >= 0x1f300 && cp <= 0x1faff)) ? 2 : 1;
  }
  return w;
}

function padRich(r: Rich, width: number, align: 'left' | 'right' | 'center'): Rich {
  const gap = Math.max(0, width - cellWidth(r.text));
  if (align === 'right') return concatRich([rich(' '.repeat(gap)), r]);
  if (align === 'center') {
    const left = Math.floor(gap / 2);
    return concatRich([rich(' '.repeat(left)), r, rich(' '.repeat(gap - left))]);
  }
  return concatRich([r, rich(' '.repeat(gap))]);
}

const NUMERIC = /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/;

/** Column names of a recorded result: `['id', …]` or `[{name: 'id'}, …]`. */
function columnNames(n: Node): string[] {
  return n.items().map((c) => c.str() ?? c.get('name').str() ?? '?');
}

/** A psql aligned table: header centred, numbers right-aligned, `(n rows)` footer. */
export function formatTable(columns: string[], rows: Node[], total?: number): TranscriptLine[] {
  const cells: Rich[][] = rows.map((r) =>
    columns.map((_, j) => {
      const v = r.get(j);
      if (v.value === null || v.value === undefined) return rich('');
      return v.isString ? v.rich() : rich(JSON.stringify(v.value));
    }),
  );
  const widths = columns.map((c, j) => Math.max(cellWidth(c), ...cells.map((row) => cellWidth(row[j]!.text))));
  const numeric = columns.map((_, j) => cells.length > 0 && cells.every((row) => row[j]!.text === '' || NUMERIC.test(row[j]!.text)));
  const join = (parts: Rich[]) => concatRich(parts.flatMap((p, i) => (i ? [rich(' | '), p] : [p])));
  const lines: TranscriptLine[] = [];
  // As psql prints it: header centred (with a trailing space), the last column's text not padded.
  const last = columns.length - 1;
  lines.push({ style: 'header', text: concatRich([rich(' '), join(columns.map((c, j) => padRich(rich(c), widths[j]!, 'center'))), rich(' ')]) });
  lines.push({ style: 'dim', text: rich(widths.map((w) => '-'.repeat(w + 2)).join('+')) });
  for (const row of cells)
    lines.push({ style: 'plain', text: concatRich([rich(' '), join(row.map((c, j) => (j === last && !numeric[j] ? c : padRich(c, widths[j]!, numeric[j] ? 'right' : 'left'))))]) });
  const n = total ?? rows.length;
  const more = total !== undefined && total > rows.length ? ` — ${rows.length} recorded` : '';
  lines.push({ style: 'dim', text: rich(`(${n} row${n === 1 ? '' : 's'}${more})`) });
  return lines;
}

function joinParams(items: Node[]): Rich {
  const parts: Rich[] = [];
  items.forEach((p, i) => {
    if (i) parts.push(rich(', '));
    parts.push(rich(`$${i + 1} = `));
    parts.push(p.isString ? concatRich([rich("'"), p.rich(), rich("'")]) : rich(p.value === null ? 'NULL' : JSON.stringify(p.value)));
  });
  return concatRich(parts);
}

function splitLines(r: Rich): Rich[] {
  const out: Rich[] = [];
  let start = 0;
  for (let i = 0; i <= r.text.length; i++) {
    if (i === r.text.length || r.text[i] === '\n') {
      out.push({
        text: r.text.slice(start, i),
        marks: r.marks.filter((m) => m.end > start && m.start < i).map((m) => ({ ...m, start: Math.max(0, m.start - start), end: Math.min(i, m.end) - start })),
      });
      start = i + 1;
    }
  }
  return out;
}

/** The statement text of a pg.statement payload. */
export function statementOf(n: Node): Node {
  for (const k of ['sql', 'text', 'query', 'statement']) if (n.get(k).isString) return n.get(k);
  return n;
}

export function buildTranscript(events: readonly AuditEvent[], timeline: Timeline, database = 'db'): TranscriptEntry[] {
  const atBySeq = new Map(timeline.items.map((i) => [i.seq, i.at]));
  const entries: TranscriptEntry[] = [];
  const redundant = redundantHoldFacts(events);
  // A held statement is recorded once it is decided, after its hold's events: their lines wait here
  // and are printed under the statement they concern.
  let held: TranscriptLine[] = [];
  const flushHeld = (at: number, seq: number) => {
    if (held.length) entries.push({ at, seq, lines: held });
    held = [];
  };
  for (const e of [...events].sort((a, b) => a.seq - b.seq)) {
    if (redundant.has(e.seq)) continue;
    const at = atBySeq.get(e.seq) ?? 0;
    const n = Node.root(e.payload, e.spans);
    const lines: TranscriptLine[] = [];
    switch (e.kind) {
      case 'pg.statement': {
        const sql = statementOf(n);
        const text = sql.isString ? sql.rich() : sql.jsonRich();
        const db = n.get('database').str() ?? database;
        splitLines(text).forEach((l, i) => lines.push({ style: 'prompt', text: concatRich([rich(i === 0 ? `${db}=> ` : `${db}-> `), l]) }));
        const params = n.get('params');
        if (params.isArray && params.items().length) lines.push({ style: 'dim', text: concatRich([rich('-- parameters: '), joinParams(params.items())]) });
        lines.push(...held);
        held = [];
        const refused = n.get('refused');
        if (refused.isObject) {
          lines.push({ style: 'error', text: concatRich([rich('ERROR:  '), refused.get('message').rich()]) });
          const code = refused.get('code').str();
          if (code) lines.push({ style: 'dim', text: rich(`-- SQLSTATE ${code}`) });
          lines.push({ style: 'plain', text: rich('') });
        }
        break;
      }
      case 'pg.result': {
        // proxy/postgres records `columns`, a `sample` of the rows (masked) and `rows`, the row count.
        const columns = columnNames(n.get('columns').exists ? n.get('columns') : n.get('fields'));
        const data = n.get('sample').isArray ? n.get('sample') : n.get('rows').isArray ? n.get('rows') : n.get('sample');
        const total = n.get('rows').num() ?? n.get('rowCount').num();
        if (columns.length) lines.push(...formatTable(columns, data.items(), total));
        else {
          const tag = n.get('command').str() ?? n.get('tag').str();
          if (tag) lines.push({ style: 'plain', text: rich(tag) });
        }
        lines.push({ style: 'plain', text: rich('') });
        break;
      }
      case 'pg.error': {
        const severity = n.get('severity').str() ?? 'ERROR';
        const message = n.get('message');
        lines.push({ style: 'error', text: concatRich([rich(`${severity}:  `), message.isString ? message.rich() : n.jsonRich()]) });
        const detail = n.get('detail');
        if (detail.isString) lines.push({ style: 'error', text: concatRich([rich('DETAIL:  '), detail.rich()]) });
        const code = n.get('code').str() ?? n.get('sqlstate').str();
        if (code) lines.push({ style: 'dim', text: rich(`-- SQLSTATE ${code}`) });
        lines.push({ style: 'plain', text: rich('') });
        break;
      }
      case 'policy.decision': {
        const action = n.get('action').str();
        if (action && action !== 'allow') lines.push({ style: action === 'deny' ? 'deny' : 'hold', text: rich(`-- policy ${action}${n.get('rule').str() ? ` (rule ${n.get('rule').str()})` : ''}${n.get('reason').str() ? `: ${n.get('reason').str()}` : ''}`) });
        break;
      }
      case 'session.start': {
        const who = n.get('actorName').str() ?? e.actor ?? '';
        lines.push({ style: 'dim', text: rich(`-- connected${who ? ` as ${who}` : ''}${e.connection ? ` to ${e.connection}` : ''}`) });
        break;
      }
      case 'session.end':
        flushHeld(at, e.seq); // a hold whose client went away: no statement follows it
        lines.push({ style: 'dim', text: rich('-- disconnected') });
        break;
      default: {
        const notice = holdNotice(e, at);
        if (notice) {
          const style: LineStyle = notice.tone === 'approve' ? 'approve' : notice.tone === 'hold' ? 'hold' : notice.tone === 'info' ? 'dim' : 'deny';
          const line = { style, text: concatRich([rich(`-- ${notice.title}`), notice.detail ? concatRich([rich(': '), notice.detail]) : rich('')]) };
          if (e.kind.startsWith('hold.')) held.push(line);
          else lines.push(line);
        }
      }
    }
    if (lines.length) entries.push({ at, seq: e.seq, lines });
  }
  const last = entries[entries.length - 1];
  flushHeld(last?.at ?? 0, last?.seq ?? 0);
  return entries;
}

const SGR: Record<LineStyle, string> = {
  prompt: '\x1b[1m',
  plain: '',
  dim: '\x1b[90m',
  error: '\x1b[31m',
  hold: '\x1b[33m',
  approve: '\x1b[32m',
  deny: '\x1b[31m',
  header: '\x1b[1m',
};
/** Masked values: black on amber, like the conversation view's highlight. */
export const MASK_SGR = '\x1b[30;48;5;221m';
const RESET = '\x1b[0m';

/** A line as terminal output (ANSI SGR), masked spans highlighted. No trailing newline. */
export function toAnsi(line: TranscriptLine): string {
  const base = SGR[line.style];
  const { text, marks } = line.text;
  let out = base;
  let pos = 0;
  for (const m of [...marks].sort((a, b) => a.start - b.start)) {
    if (m.start < pos) continue;
    out += text.slice(pos, m.start) + MASK_SGR + text.slice(m.start, m.end) + RESET + base;
    pos = m.end;
  }
  return out + text.slice(pos) + RESET;
}

/** Terminal cell ranges of masked spans in a line, wrapped at `cols`: {row offset, x, width, type}. */
export function maskCells(line: TranscriptLine, cols: number): { row: number; x: number; width: number; type: string; rule: string }[] {
  const out: { row: number; x: number; width: number; type: string; rule: string }[] = [];
  for (const m of line.text.marks) {
    let x0 = cellWidth(line.text.text.slice(0, m.start));
    let w = cellWidth(line.text.text.slice(m.start, m.end));
    while (w > 0) {
      const row = Math.floor(x0 / cols);
      const x = x0 % cols;
      const width = Math.min(w, cols - x);
      out.push({ row, x, width, type: m.type, rule: m.rule });
      x0 += width;
      w -= width;
    }
  }
  return out;
}

/** Rows a line occupies when wrapped at `cols`. */
export function rowsOf(line: TranscriptLine, cols: number): number {
  return Math.max(1, Math.ceil(cellWidth(line.text.text) / cols));
}
