/**
 * The audit store's commit thread (see commit-thread.ts). Holds its own SQLite connection to the
 * store's file and appends what the gateway's thread sends, in the order sent: journaled batches
 * (already acknowledged to the proxies, see journal.ts) and blocking appends. Everything waiting
 * in the port is committed together in one transaction, with the journal's fold mark.
 *
 * When a commit fails (the file is read-only, full or locked), journaled batches stay in the
 * backlog and are retried (they are recorded; they must reach the database) while the gateway's
 * thread refuses new traffic; blocking appends fail at once. After each reply the worker bumps a
 * shared counter, so a thread blocked on a synchronous call wakes.
 */
import { type MessagePort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { ChainWriter, type PreparedEvent } from './chain-writer';
import { BUSY, type CommitReply, type CommitRequest, SIGNAL } from './commit-thread';
import { decodeJournalText, setFoldedMark } from './journal';

const { path, port, signal } = workerData as { path: string; port: MessagePort; signal: Int32Array };
const RETRY_MS = 100;
/**
 * How long one commit waits for a lock another connection holds. Short: the gateway's thread
 * learns of a locked file (the BUSY word) this soon, and stops waiting on the store; the commit is
 * retried every RETRY_MS meanwhile.
 */
const BUSY_TIMEOUT_MS = 50;
/**
 * How long the file may stay locked before the store refuses new traffic. Until then the proxies'
 * events are journaled (recorded) and wait here; a lock held longer is not a passing writer.
 */
const REFUSE_AFTER_BUSY_MS = 1000;
/** How long journaled batches wait to be committed together, and how many events force it sooner. */
const FOLD_MS = 10;
const FOLD_EVENTS = 2000;

/** An append waiting in the backlog: blocking (`jseq` undefined) or journaled lines. */
interface Append {
  id: number;
  events: PreparedEvent[];
  reload?: boolean;
  jseq?: number;
}

let writer: ChainWriter;
let db: Database.Database;
try {
  db = new Database(path, { timeout: BUSY_TIMEOUT_MS });
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  writer = new ChainWriter(db);
} catch (err) {
  reply({ id: 0, ok: false, final: true, message: messageOf(err) });
  process.exit(1);
}

/** Appends not yet committed, in order; journaled ones stay here until they are. */
let backlog: Append[] = [];
let retryTimer: NodeJS.Timeout | undefined;
/** Journaled batches already told that their commit failed (told once, until it succeeds). */
const told = new Set<number>();
/** When commits started failing on a lock (SQLITE_BUSY), while they do. */
let busySince: number | undefined;

function isBusy(err: unknown): boolean {
  const code = (err as { code?: string }).code ?? '';
  return code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED');
}

/** Tells the gateway's thread, without a message, whether the file is locked (see commit-thread.ts). */
function setBusy(busy: boolean): void {
  if (busy) busySince ??= Date.now();
  else busySince = undefined;
  if ((Atomics.load(signal, BUSY) === 1) === busy) return;
  Atomics.store(signal, BUSY, busy ? 1 : 0);
  Atomics.add(signal, SIGNAL, 1);
  Atomics.notify(signal, SIGNAL);
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function reply(r: CommitReply): void {
  port.postMessage(r);
  Atomics.add(signal, SIGNAL, 1);
  Atomics.notify(signal, SIGNAL);
}

/** Commits the backlog in one transaction and answers each append; true when it is empty after. */
function commitBacklog(): boolean {
  if (!backlog.length) return true;
  const run = backlog;
  if (run.some((r) => r.reload)) writer.reloadHead();
  const all = run.length === 1 ? run[0]!.events : run.flatMap((r) => r.events);
  let folded = 0;
  for (const r of run) if (r.jseq !== undefined && r.jseq > folded) folded = r.jseq;
  let appended;
  try {
    appended = writer.append(all, folded ? () => setFoldedMark(db, folded) : undefined);
  } catch (err) {
    const message = messageOf(err);
    const code = (err as { code?: string }).code;
    const busy = isBusy(err);
    setBusy(busy);
    // A lock held briefly is waited out silently (the events are journaled); one held longer, or
    // any other failure (read-only, full), makes the store refuse new traffic until a commit works.
    const tell = !busy || Date.now() - busySince! >= REFUSE_AFTER_BUSY_MS;
    // Blocking appends fail now; journaled ones wait in the backlog for the next attempt.
    backlog = run.filter((r) => r.jseq !== undefined);
    for (const r of run) {
      if (r.jseq === undefined) reply({ id: r.id, ok: false, final: true, message, code });
      else if (tell && !told.has(r.id)) {
        told.add(r.id);
        reply({ id: r.id, ok: false, final: false, message, code });
      }
    }
    retryTimer ??= setTimeout(() => {
      retryTimer = undefined;
      commitBacklog();
    }, RETRY_MS);
    return false;
  }
  backlog = [];
  setBusy(false);
  const rechained = writer.takeRechained();
  let i = 0;
  for (const r of run) {
    told.delete(r.id);
    if (r.jseq === undefined) reply({ id: r.id, ok: true, appended: appended.slice(i, i + r.events.length) });
    else reply(rechained ? { id: r.id, ok: true, rechained } : { id: r.id, ok: true });
    i += r.events.length;
  }
  return true;
}

function handle(req: Exclude<CommitRequest, { op: 'append' | 'fold' }>): void {
  try {
    switch (req.op) {
      case 'sync':
        writer.flushSessions();
        break;
      case 'pragma':
        db.pragma(req.sql);
        break;
      case 'query':
        reply({ id: req.id, ok: true, rows: db.prepare(req.sql).all(...req.params) });
        return;
      case 'exec':
        db.prepare(req.sql).run(...req.params);
        break;
      case 'write': {
        if (req.reload) writer.reloadHead();
        const appended = writer.append(req.events, () => {
          for (const w of req.statements) db.prepare(w.sql).run(...w.params);
        });
        const rechained = writer.takeRechained();
        reply(rechained ? { id: req.id, ok: true, appended, rechained } : { id: req.id, ok: true, appended });
        return;
      }
      case 'close': {
        const empty = commitBacklog();
        clearTimeout(retryTimer);
        writer.close();
        db.close();
        reply(empty ? { id: req.id, ok: true } : { id: req.id, ok: false, final: true, message: `${backlog.length} journaled batches could not be committed; they stay in the journal for the next start` });
        port.close();
        return;
      }
    }
    reply({ id: req.id, ok: true });
  } catch (err) {
    reply({ id: req.id, ok: false, final: true, message: messageOf(err), code: (err as { code?: string }).code });
  }
}

/** Events in the backlog; past FOLD_EVENTS they are committed without waiting for the timer. */
let backlogEvents = 0;
let foldTimer: NodeJS.Timeout | undefined;

function fold(): void {
  clearTimeout(foldTimer);
  foldTimer = undefined;
  if (commitBacklog()) backlogEvents = 0;
}

port.on('message', (first: CommitRequest) => {
  const queued: CommitRequest[] = [first];
  for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) queued.push(m.message as CommitRequest);
  let now = false;
  for (const req of queued) {
    if (req.op === 'append' || req.op === 'fold') {
      // Text this process journaled always decodes; if it did not, later folds would move the fold
      // mark past these lines. The thread ends instead: the store refuses traffic (fail closed) and
      // keeps the journal, whose replay at the next start names the line.
      const events = req.op === 'append' ? req.events : decodeJournalText(req.text);
      const a: Append = { id: req.id, events, reload: req.reload, jseq: req.op === 'fold' ? req.jseq : undefined };
      backlog.push(a);
      backlogEvents += events.length;
      // A blocking append has its caller waiting, and so do journaled lines a remote commit waits
      // on (`now`); other journaled lines are already recorded and can wait a few milliseconds to
      // share a commit with many others.
      if (a.jseq === undefined || backlogEvents >= FOLD_EVENTS || (req.op === 'fold' && req.now)) now = true;
      continue;
    }
    fold();
    now = false;
    handle(req);
  }
  if (now) fold();
  else if (backlog.length) foldTimer ??= setTimeout(fold, FOLD_MS);
});
