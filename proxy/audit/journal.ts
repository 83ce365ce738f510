/**
 * The audit journal: where the proxies' events are recorded first.
 *
 * A SQLite commit costs tens of microseconds (WAL frames for the row and its index pages, locks),
 * which made recording the most expensive step of proxying a request. A journal write is one
 * `write(2)` of the batch's lines to an append-only file: with the same durability as the store's
 * commits (`synchronous = NORMAL`: survives a crash of the gateway, not a power cut), at a fraction
 * of the cost. So the store acknowledges a proxy's batch once it is in the journal, and the commit
 * thread folds journaled batches into SQLite — where every reader looks — a moment later, many
 * batches per transaction. The gateway's thread gives each event its place in the hash chain
 * before the write, so the journal's lines carry their seq and hashes and the fold only inserts.
 *
 * Each line is one prepared event (see `encode`), with `jseq` counting journal lines across files. The
 * fold stores the highest `jseq` it committed in `meta` (`journal.folded`), in the same
 * transaction, so at the next start `replayJournal` folds exactly the lines that were not. A torn
 * last line (the gateway died inside the write) was never acknowledged and is skipped.
 *
 * Files rotate at ROTATE_BYTES; a file is deleted once everything in it is folded.
 */
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3';
import type { ChainWriter, PreparedEvent } from './chain-writer';

export const JOURNAL_FOLDED_META = 'journal.folded';
const ROTATE_BYTES = 8 * 1024 * 1024;

const fileName = (n: number) => `${String(n).padStart(8, '0')}.jsonl`;

export function journalDir(storePath: string): string {
  return `${storePath}.journal`;
}

/**
 * One line: a JSON header, then the canonical payload text and the canonical spans text as they
 * are (canonical JSON holds no raw tab or newline), so the payload is neither escaped again nor
 * parsed back. Header: `[jseq, kind, session, actor, connection, time, masked, actorName,
 * decision, protocol, seq, payloadHash, prevHash, hash]`, the last four the chain place the
 * gateway's thread gave the event (null when it gave none).
 */
function encode(jseq: number, e: PreparedEvent): string {
  const c = e.chained;
  const header = JSON.stringify([jseq, e.kind, e.session, e.actor, e.connection, e.time, e.masked, e.actorName, e.decision, e.protocol, c ? c.seq : null, c ? c.payloadHash : null, c ? c.prevHash : null, c ? c.hash : null]);
  return `${header}\t${e.text}\t${e.spansText ?? ''}\n`;
}

/** Decodes one line (without its newline); throws on a torn or foreign line. */
export function decodeJournalLine(line: string): { jseq: number; event: PreparedEvent } {
  const t1 = line.indexOf('\t');
  const t2 = t1 < 0 ? -1 : line.indexOf('\t', t1 + 1);
  if (t2 < 0 || line.indexOf('\t', t2 + 1) >= 0) throw new Error('not a journal line');
  const a = JSON.parse(line.slice(0, t1)) as unknown[];
  if (!Array.isArray(a) || a.length !== 14 || typeof a[0] !== 'number' || typeof a[1] !== 'string') throw new Error('not a journal line');
  const [jseq, kind, session, actor, connection, time, masked, actorName, decision, protocol, seq, payloadHash, prevHash, hash] = a as [
    number,
    PreparedEvent['kind'],
    string | null,
    string | null,
    string | null,
    number,
    number,
    string | null,
    string | null,
    string | null,
    number | null,
    string | null,
    string | null,
    string | null,
  ];
  const text = line.slice(t1 + 1, t2);
  const spans = line.slice(t2 + 1);
  const event: PreparedEvent = { kind, session, actor, connection, time, text, spansText: spans || null, masked, actorName, decision, protocol };
  if (seq !== null && payloadHash !== null && prevHash !== null && hash !== null) event.chained = { seq, time, payloadHash, prevHash, hash };
  return { jseq, event };
}

/** Decodes the lines of a journal write (`Journal.write`'s text), in order. */
export function decodeJournalText(text: string): PreparedEvent[] {
  const out: PreparedEvent[] = [];
  let start = 0;
  for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
    out.push(decodeJournalLine(text.slice(start, nl)).event);
    start = nl + 1;
  }
  return out;
}

export class Journal {
  private fd: number | undefined;
  private file = 0;
  private bytes = 0;
  private jseq: number;
  /** Files written and the last jseq in each, oldest first (the open one last). */
  private readonly files: { n: number; last: number }[] = [];

  /** Opens the journal in `dir`, continuing after `lastJseq` (what replay left). */
  constructor(
    private dir: string,
    lastJseq: number,
  ) {
    this.jseq = lastJseq;
  }

  /**
   * Appends the events in one write; returns the jseq of the last and the text written (the
   * commit thread folds from it). Throws what the write threw.
   */
  write(events: PreparedEvent[]): { last: number; text: string } {
    if (this.fd === undefined || this.bytes >= ROTATE_BYTES) this.rotate();
    let text = '';
    for (const e of events) text += encode(++this.jseq, e);
    const length = Buffer.byteLength(text, 'utf8');
    let off = 0;
    try {
      // The string goes to write(2) without a Buffer of our own; the rest of a short write follows.
      off = writeSync(this.fd!, text);
      if (off < length) {
        const buf = Buffer.from(text, 'utf8');
        while (off < length) off += writeSync(this.fd!, buf, off);
      }
    } catch (err) {
      // A partial line is skipped at replay (it has no newline); the lines are not acknowledged.
      this.jseq -= events.length;
      if (off > 0) this.rotate();
      throw err;
    }
    this.bytes += length;
    this.files[this.files.length - 1]!.last = this.jseq;
    return { last: this.jseq, text };
  }

  /** Deletes the files whose every line is folded (never the one being written). */
  folded(jseq: number): void {
    while (this.files.length > 1 && this.files[0]!.last <= jseq) {
      const f = this.files.shift()!;
      rmSync(join(this.dir, fileName(f.n)), { force: true });
    }
  }

  /** Closes the open file, keeping every file (what is in them is folded at the next start). */
  release(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  /** Closes and deletes every file: call only once everything written is folded. */
  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    for (const f of this.files) rmSync(join(this.dir, fileName(f.n)), { force: true });
    this.files.length = 0;
  }

  /** Points the journal at another file (tests: /dev/full stands for a full disk); none: back to its own files. */
  redirect(path?: string): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = path === undefined ? undefined : openSync(path, 'a');
    this.bytes = 0;
  }

  private rotate(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    this.file = Math.max(this.file, ...existingFiles(this.dir)) + 1;
    this.fd = openSync(join(this.dir, fileName(this.file)), 'a', 0o600);
    this.bytes = 0;
    this.files.push({ n: this.file, last: this.jseq });
  }
}

function existingFiles(dir: string): number[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .map((f) => /^(\d+)\.jsonl$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]));
}

/**
 * Folds into the store every journal line its `journal.folded` mark has not reached (left by a
 * gateway that stopped without folding them), then deletes the files. Returns the last jseq seen,
 * from which the journal continues, and how many events were folded.
 */
export function replayJournal(db: Database.Database, writer: ChainWriter, dir: string): { lastJseq: number; replayed: number } {
  const folded = Number((db.prepare('SELECT value FROM meta WHERE key = ?').get(JOURNAL_FOLDED_META) as { value: string } | undefined)?.value ?? 0);
  const files = existingFiles(dir).sort((a, b) => a - b);
  let last = folded;
  const pending: PreparedEvent[] = [];
  for (const n of files) {
    const lines = readFileSync(join(dir, fileName(n)), 'utf8').split('\n');
    // What follows the last newline is empty, or a torn line (its batch was never acknowledged).
    lines.pop();
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      if (!line) continue;
      let rec;
      try {
        rec = decodeJournalLine(line);
      } catch (err) {
        // A whole line that cannot be read is damage, not a torn write: it may hold recorded
        // events, so the store does not open without it being looked at.
        throw new Error(`journal file ${join(dir, fileName(n))} line ${i + 1} cannot be read (${(err as Error).message}); it may hold recorded events that are not in the log yet — move the file aside to start without them`);
      }
      if (rec.jseq > last) last = rec.jseq;
      if (rec.jseq > folded) pending.push(rec.event);
    }
  }
  if (pending.length) {
    writer.append(pending, () => setFoldedMark(db, last));
    writer.flushSessions();
  }
  for (const n of files) rmSync(join(dir, fileName(n)), { force: true });
  return { lastJseq: last, replayed: pending.length };
}

export function setFoldedMark(db: Database.Database, jseq: number): void {
  db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(JOURNAL_FOLDED_META, String(jseq));
}

const OWNER = 'owner.pid';
/** Journals a store in this process holds open. */
const claimed = new Set<string>();

/** True when the journal is held: by a store open in this process, or by another live process (a running gateway). */
export function journalHeld(dir: string): boolean {
  if (claimed.has(dir)) return true;
  let pid: number;
  try {
    pid = Number(readFileSync(join(dir, OWNER), 'utf8'));
  } catch {
    return false;
  }
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Marks the journal as this process's (a CLI command next to it then leaves it alone). */
export function claimJournal(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, OWNER), String(process.pid), { mode: 0o600 });
  claimed.add(dir);
}

export function releaseJournal(dir: string): void {
  claimed.delete(dir);
  rmSync(join(dir, OWNER), { force: true });
}
