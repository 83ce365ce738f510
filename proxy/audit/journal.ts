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
import { closeSync, existsSync, fdatasyncSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type Database from 'better-sqlite3';
import type { JournalSalvagedPayload } from '../../shared/events';
import { sha256hex } from './chain';
import { type ChainWriter, type PreparedEvent, prepareEvent } from './chain-writer';

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
    /** fdatasync each batch before it counts as written (`audit.fsync: batch`). */
    private readonly sync = false,
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
      // On the disk, not only in the page cache, before anyone is told it is recorded.
      if (this.sync) fdatasyncSync(this.fd!);
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
    // Forgotten before the next file is opened: if that fails (a full or read-only disk), the next
    // write tries to open one again rather than write to a closed (or reused) descriptor.
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
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

/** A journal line that could not be read: where it is, and why. */
export interface DamagedJournalLine {
  file: string;
  line: number;
  message: string;
  /** The line's place in the journal, as far as its readable neighbours tell (undefined: they do not). */
  jseq: number | undefined;
  text: string;
}

/** What replay found: the last jseq, how many events it folded, and damaged lines it skipped (already folded). */
export interface JournalReplay {
  lastJseq: number;
  replayed: number;
  skipped: DamagedJournalLine[];
}

/** A damaged journal line that may hold events the store does not have: the start stops here. */
export class JournalDamageError extends Error {
  constructor(
    readonly damaged: DamagedJournalLine,
    readonly folded: number,
  ) {
    const where = damaged.jseq === undefined ? 'its place in the journal cannot be told' : `it is journal line ${damaged.jseq}, past the fold mark ${folded}`;
    super(
      `journal file ${damaged.file} line ${damaged.line} cannot be read (${damaged.message}); ${where}, so it may hold recorded events that are not in the log yet. ` +
        `Run \`custody journal salvage --data-dir ${dirname(dirname(damaged.file))}\` to fold every readable line and keep the damaged ones aside`,
    );
    this.name = 'JournalDamageError';
  }
}

/**
 * Reads every journal file in `dir`, oldest first: the readable lines (decoded) and the damaged
 * ones, each damaged line placed by its readable neighbours. Journal lines are numbered one after
 * another across files (a failed write gives its numbers back and leaves no whole line), so a
 * damaged line k lines after a readable line p has the place p + k, and k lines before a readable
 * line q the place q - k; when the two disagree, the larger counts.
 */
function readJournal(dir: string): { files: number[]; lines: ({ jseq: number; event: PreparedEvent } | DamagedJournalLine)[] } {
  const files = existingFiles(dir).sort((a, b) => a - b);
  const lines: ({ jseq: number; event: PreparedEvent } | DamagedJournalLine)[] = [];
  for (const n of files) {
    const file = join(dir, fileName(n));
    const texts = readFileSync(file, 'utf8').split('\n');
    // What follows the last newline is empty, or a torn line (its batch was never acknowledged).
    texts.pop();
    for (let i = 0; i < texts.length; i++) {
      const text = texts[i]!;
      if (!text) continue;
      try {
        lines.push(decodeJournalLine(text));
      } catch (err) {
        lines.push({ file, line: i + 1, message: (err as Error).message, jseq: undefined, text });
      }
    }
  }
  const isDamaged = (l: (typeof lines)[number]): l is DamagedJournalLine => 'file' in l;
  let prev: number | undefined;
  let since = 0;
  for (const l of lines) {
    if (isDamaged(l)) {
      since++;
      if (prev !== undefined) l.jseq = prev + since;
    } else {
      prev = l.jseq;
      since = 0;
    }
  }
  let next: number | undefined;
  let before = 0;
  for (let i = lines.length - 1; i >= 0; i--) {
    const l = lines[i]!;
    if (isDamaged(l)) {
      before++;
      if (next !== undefined) l.jseq = Math.max(l.jseq ?? 0, next - before);
    } else {
      next = l.jseq;
      before = 0;
    }
  }
  return { files, lines };
}

function foldedMark(db: Database.Database): number {
  return Number((db.prepare('SELECT value FROM meta WHERE key = ?').get(JOURNAL_FOLDED_META) as { value: string } | undefined)?.value ?? 0);
}

/**
 * Folds into the store every journal line its `journal.folded` mark has not reached (left by a
 * gateway that stopped without folding them), then deletes the files. A damaged line whose place is
 * at or below the mark is already in the store: it is skipped and returned in `skipped` for the
 * caller to report. Any other damaged line stops the replay (JournalDamageError) before anything is
 * folded or deleted: it may hold acknowledged events, and `salvageJournal` is the way past it.
 */
export function replayJournal(db: Database.Database, writer: ChainWriter, dir: string): JournalReplay {
  const folded = foldedMark(db);
  const { files, lines } = readJournal(dir);
  let last = folded;
  const pending: PreparedEvent[] = [];
  const skipped: DamagedJournalLine[] = [];
  for (const l of lines) {
    if ('file' in l) {
      if (l.jseq === undefined || l.jseq > folded) throw new JournalDamageError(l, folded);
      skipped.push(l);
      continue;
    }
    if (l.jseq > last) last = l.jseq;
    if (l.jseq > folded) pending.push(l.event);
  }
  if (pending.length) {
    writer.append(pending, () => setFoldedMark(db, last));
    writer.flushSessions();
  }
  for (const n of files) rmSync(join(dir, fileName(n)), { force: true });
  return { lastJseq: last, replayed: pending.length, skipped };
}

/** What `salvageJournal` did. */
export interface JournalSalvage {
  /** Readable lines past the fold mark, now in the log. */
  folded: number;
  /** How many of those were given another place in the chain (they followed a damaged line). */
  rechained: number;
  /** Damaged lines past the fold mark: kept in `keptIn`, not in the log. */
  lost: DamagedJournalLine[];
  /** Damaged lines that were already folded (nothing lost). */
  skipped: DamagedJournalLine[];
  /** Where the damaged lines were kept (undefined when there were none past the mark). */
  keptIn: string | undefined;
}

/**
 * The way past a damaged journal (`custody journal salvage`): folds every readable line past the
 * fold mark, chained anew after what the store holds where the damage broke the chain, copies each
 * damaged line (with its file and line number) to `<dataDir>/journal-damaged-<time>.txt`, records
 * a `journal.salvaged` event saying what was lost, and deletes the journal files. The store must
 * not be open in a running gateway (journalHeld).
 */
export function salvageJournal(db: Database.Database, writer: ChainWriter, dir: string, dataDir: string, now = Date.now()): JournalSalvage {
  const folded = foldedMark(db);
  const { files, lines } = readJournal(dir);
  let last = folded;
  const pending: PreparedEvent[] = [];
  const lost: DamagedJournalLine[] = [];
  const skipped: DamagedJournalLine[] = [];
  for (const l of lines) {
    if ('file' in l) {
      if (l.jseq !== undefined && l.jseq <= folded) skipped.push(l);
      else lost.push(l);
      if (l.jseq !== undefined && l.jseq > last) last = l.jseq;
      continue;
    }
    if (l.jseq > last) last = l.jseq;
    if (l.jseq > folded) pending.push(l.event);
  }
  let keptIn: string | undefined;
  if (lost.length) {
    keptIn = join(dataDir, `journal-damaged-${new Date(now).toISOString().replace(/[:.]/g, '-')}.txt`);
    const text = lost.map((l) => `# ${l.file} line ${l.line}${l.jseq === undefined ? '' : ` (journal line ${l.jseq})`}: ${l.message}\n${l.text}\n`).join('');
    writeFileSync(keptIn, text, { mode: 0o600, flag: 'wx' });
  }
  const record: PreparedEvent[] = [];
  if (lost.length || skipped.length) {
    record.push(
      prepareEvent({
        kind: 'journal.salvaged',
        actor: 'system',
        time: now,
        payload: {
          folded: pending.length,
          lost: lost.map((l) => ({ file: l.file, line: l.line, journalLine: l.jseq ?? null, bytes: Buffer.byteLength(l.text, 'utf8'), sha256: sha256hex(l.text) })),
          skippedAlreadyFolded: skipped.length,
          keptIn: keptIn ?? null,
        } satisfies JournalSalvagedPayload,
      }),
    );
  }
  writer.append([...pending, ...record], () => setFoldedMark(db, last));
  writer.flushSessions();
  const rechained = writer.takeRechained();
  for (const n of files) rmSync(join(dir, fileName(n)), { force: true });
  return { folded: pending.length, rechained, lost, skipped, keptIn };
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
