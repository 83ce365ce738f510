/**
 * The audit store: one SQLite file (WAL) under the data dir holding the hash-chained event log and
 * the gateway's state tables. Every append is committed before it is acknowledged (`append`
 * returns, `appendAsync` calls back), so an event the caller saw acknowledged survives a gateway
 * crash; if SQLite cannot write (disk full, locked, read-only), the append fails with
 * `StoreUnavailableError` and the caller refuses the request (fail closed). The gateway opens it
 * with a commit thread (commit-thread.ts) so commits run beside its event loop, not in it.
 *
 * Chain (see docs/AUDIT.md):
 *   payloadHash = SHA-256(canonical({payload, spans}))
 *   body        = {seq, time, kind, session, actor, connection, payloadHash}
 *   hash        = SHA-256(prevHash ‖ canonical(body)), prevHash of seq 1 = 32 zero bytes.
 * Retention may delete a payload; its payloadHash stays, so the chain still verifies.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { inflateRawSync } from 'node:zlib';
import Database from 'better-sqlite3';
import type { AuditEvent, AuditEventInput, MaskSpan, SessionFilter, SessionSummary } from '../../shared/events';
import { GENESIS_HASH } from './chain';
import { type AppendedEvent, ChainWriter, chainAfter, countInSession, deltaSummary, newSessionDelta, type PreparedEvent, prepareEvent, type SessionDelta } from './chain-writer';
import { type CommitReply, CommitThread, type StateWrite } from './commit-thread';
import { claimJournal, type DamagedJournalLine, Journal, journalDir, journalHeld, type JournalSalvage, releaseJournal, replayJournal, salvageJournal } from './journal';
import { MIGRATIONS } from './migrations';
import { RemoteCommitQueue, type RemoteCommitter } from './remote-commit';
import { readUnrecorded, unrecordedEvent, UnrecordedNotes, type UnrecordedResult, unrecordedFile } from './unrecorded';

// The chain's definitions moved to chain.ts; re-exported for the store's many readers.
export { canonicalEventBody, canonicalPayload, chainHash, chainHashOfText, eventBody, GENESIS_HASH, payloadHashOf, sha256hex } from './chain';

export interface StoreOptions {
  readonly?: boolean;
  /** Commit appends on a worker thread (the gateway); falls back to this thread when it cannot start. */
  commitThread?: boolean;
  /**
   * Fold journal lines a stopped gateway left (default true). `custody journal salvage` opens the
   * store without it, to fold them past damage itself.
   */
  replay?: boolean;
  /** `batch`: each journaled batch is fdatasync'ed before it counts as recorded (`audit.fsync`). */
  fsync?: 'none' | 'batch';
}

/** How long after the commit thread appended to a session its index row may still be unwritten. */
const SESSION_SETTLED_MS = ChainWriter.SESSION_INDEX_DELAY_MS * 10;
/** A read for the console waits at most this long for the commit thread to fold what is journaled; then it reads what is there. */
const SETTLED_READ_WAIT_MS = 2_000;

export class StoreUnavailableError extends Error {
  constructor(cause: unknown) {
    super(`audit store unavailable: ${cause instanceof Error ? cause.message : String(cause)}`);
    this.name = 'StoreUnavailableError';
    this.cause = cause;
  }
}

/**
 * `audit.remoteCommit: sync`: the events are in this gateway's log (journal and SQLite), but the
 * shared store has not committed them, so the gateway does not act on them. They ship when the
 * store takes them.
 */
export class RemoteCommitError extends StoreUnavailableError {
  constructor(why: string) {
    super(new Error(why));
    this.name = 'RemoteCommitError';
    this.message = `audit.remoteCommit is sync and the shared store has not committed the events (${why}); they are kept in this gateway's log and ship once the store takes them`;
  }
}

/** A row of the `events` table as SQLite returns it. */
export interface EventRow {
  seq: number;
  time: number;
  kind: string;
  session: string | null;
  actor: string | null;
  connection: string | null;
  payload: Buffer | string | null;
  encoding: string;
  spans: string | null;
  payload_hash: string;
  prev_hash: string;
  hash: string;
}

/** A stored payload as canonical JSON text: inflated when deflated, `null` once purged. */
export function storedPayloadText(encoding: string, payload: Buffer | string | null): string {
  if (encoding === 'purged' || payload === null) return 'null';
  if (encoding === 'deflate') return inflateRawSync(payload as Buffer).toString('utf8');
  return typeof payload === 'string' ? payload : payload.toString('utf8');
}

export function rowToEvent(r: EventRow): AuditEvent {
  let payload: unknown = null;
  if (r.encoding === 'json') payload = JSON.parse(typeof r.payload === 'string' ? r.payload : r.payload!.toString('utf8'));
  else if (r.encoding === 'deflate') payload = JSON.parse(inflateRawSync(r.payload as Buffer).toString('utf8'));
  return {
    seq: r.seq,
    time: r.time,
    kind: r.kind as AuditEvent['kind'],
    session: r.session,
    actor: r.actor,
    connection: r.connection,
    payload,
    spans: r.spans ? (JSON.parse(r.spans) as MaskSpan[]) : [],
    payloadHash: r.payload_hash,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
}

export interface SessionQuery extends SessionFilter {
  limit?: number;
  offset?: number;
}

type Listener = (e: AuditEvent) => void;

/** What the rest of the gateway needs from an event log; a PostgreSQL-backed store can follow it. */
export interface EventLog {
  append(input: AuditEventInput): AuditEvent;
  appendMany(inputs: AuditEventInput[]): AuditEvent[];
  appendAsync(inputs: AuditEventInput[], done: (err: StoreUnavailableError | null) => void): void;
  head(): { size: number; hash: string };
  sessionEvents(session: string, afterSeq?: number, limit?: number): AuditEvent[];
  listSessions(filter?: SessionQuery): { total: number; sessions: SessionSummary[] };
  onAppend(listener: Listener): () => void;
}

export class AuditStore implements EventLog {
  readonly db: Database.Database;
  readonly path: string;
  private listeners = new Set<Listener>();
  /** Appends on this thread's connection: all of them, or with a commit thread those made inside `transaction`. */
  private readonly writer: ChainWriter | undefined;
  /** Appends on a second core, when the store was opened with `commitThread`. */
  private readonly thread: CommitThread | undefined;
  /** With the commit thread: where the proxies' batches are recorded first (journal.ts). */
  private readonly journal: Journal | undefined;
  /** The head as of the last acknowledged append (the commit thread's or this thread's). */
  private headSeq = 0;
  private headHash = GENESIS_HASH;
  /** This thread appended since the commit thread last did: it re-reads the head first. */
  private threadStale = false;
  /** The last journal write failed (cleared by the next that succeeds): why, and since when. */
  private journalFailure: { message: string; since: number } | undefined;
  /** A fold re-chained journaled events: the head is re-read before the next append. */
  private rechained = false;
  /** The last journal line written (see `appendAsync` with a remote commit). */
  private lastJseq = 0;
  /** `audit.remoteCommit: sync`: batches appended through `appendAsync` wait for the shared store too. */
  private remote: RemoteCommitQueue | undefined;
  /** Summaries of the sessions open in this process (see `liveSession`). */
  private readonly live = new LiveSessionSummaries();
  /** Sessions the commit thread appended to recently (its index rows may still be pending). */
  private threadSessions = new Map<string, number>();
  /** How long session-index changes may wait before they are written. */
  static readonly SESSION_INDEX_DELAY_MS = ChainWriter.SESSION_INDEX_DELAY_MS;
  /** How long the gateway's own connection waits for a lock (with a commit thread). */
  static readonly GATEWAY_BUSY_TIMEOUT_MS = 50;
  /** What opening found in the journal: events folded, damaged lines skipped because they were already folded. */
  recovery: { replayed: number; skipped: DamagedJournalLine[] } = { replayed: 0, skipped: [] };

  /**
   * Opens (creating if needed) `<dataDir>/custody.db` and runs pending migrations. With
   * `commitThread` (the gateway), appends are committed on a worker thread (commit-thread.ts).
   */
  static open(dataDir: string, options: StoreOptions = {}): AuditStore {
    if (!options.readonly) {
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      keepOutOfGit(dataDir);
    }
    return new AuditStore(join(dataDir, 'custody.db'), options);
  }

  constructor(path: string, options: StoreOptions = {}) {
    this.path = path;
    try {
      this.db = new Database(path, { readonly: options.readonly ?? false, fileMustExist: options.readonly ?? false, timeout: 2000 });
      if (!options.readonly) {
        this.db.pragma('journal_mode = WAL');
        this.db.pragma('synchronous = NORMAL');
        this.db.pragma('foreign_keys = ON');
        migrate(this.db);
        this.writer = new ChainWriter(this.db);
        // Lines a stopped gateway journaled but did not fold go into the log first (not while a
        // running gateway owns the journal: its commit thread folds them).
        const dir = journalDir(path);
        let lastJseq = 0;
        if (options.replay !== false && !journalHeld(dir)) {
          const r = replayJournal(this.db, this.writer, dir);
          lastJseq = r.lastJseq;
          this.recovery = { replayed: r.replayed, skipped: r.skipped };
        }
        if (options.commitThread) this.thread = CommitThread.start(path);
        if (this.thread) {
          // The gateway's thread writes state tables only after the commit thread has drained, so
          // it never contends with it; a lock it finds belongs to another process, and is not waited
          // out here (the event loop would stop): the write fails and says so.
          this.db.pragma(`busy_timeout = ${AuditStore.GATEWAY_BUSY_TIMEOUT_MS}`);
          this.journal = new Journal(dir, lastJseq, options.fsync === 'batch');
          claimJournal(dir);
        }
      }
    } catch (err) {
      throw new StoreUnavailableError(err);
    }
    this.reloadHead();
    this.thread?.onFolded((reply, jseq) => this.folded(reply, jseq));
  }

  /** True when appends are committed on a commit thread. */
  get threaded(): boolean {
    return this.thread !== undefined;
  }

  /** Appends one event, committed before return. Throws StoreUnavailableError when it cannot. */
  append(input: AuditEventInput): AuditEvent {
    return this.appendMany([input])[0]!;
  }

  /**
   * Appends several events in one transaction, recorded before returning: without a commit thread
   * a commit; with one, a journal write (journal.ts), the commit following on the thread — so the
   * gateway's thread never waits on SQLite for an append. Throws StoreUnavailableError.
   */
  appendMany(inputs: AuditEventInput[]): AuditEvent[] {
    if (this.thread && !this.db.inTransaction) return this.appendJournaled(this.thread, inputs);
    const prepared = this.prepare(inputs);
    return this.committed(inputs, this.appendHere(prepared), prepared);
  }

  /**
   * Appends `inputs` in order after everything before them and calls `done` once they are
   * recorded (null) or not (StoreUnavailableError), as `appendMany` does.
   */
  appendAsync(inputs: AuditEventInput[], done: (err: StoreUnavailableError | null) => void): void {
    let failure: StoreUnavailableError | null = null;
    const before = this.lastJseq;
    try {
      this.appendMany(inputs);
    } catch (err) {
      failure = err instanceof StoreUnavailableError ? err : new StoreUnavailableError(err);
    }
    if (failure || !this.remote) {
      done(failure);
      return;
    }
    // With a remote commit the answer waits until the shared store has the batch too (RemoteCommitError
    // when it will not: the batch stays in this log). Its journal lines are sent to be folded at once.
    this.remote.wait(this.lastJseq === before ? 0 : this.lastJseq, (why) => done(why === undefined ? null : new RemoteCommitError(why)));
    this.thread?.sendQueued();
  }

  /**
   * `audit.remoteCommit: sync`: calls `done` once the shared store has committed everything appended
   * so far (through `appendMany` too: a request recorded synchronously, then forwarded only after
   * this), or with a RemoteCommitError saying why not. At once (null) without a remote commit.
   */
  remoteCommitted(done: (err: RemoteCommitError | null) => void, opts: { push?: boolean } = {}): void {
    if (!this.remote) {
      done(null);
      return;
    }
    this.remote.wait(this.lastJseq, (why) => done(why === undefined ? null : new RemoteCommitError(why)), opts.push);
    this.thread?.sendQueued();
  }

  /** `audit.remoteCommit: sync` is on: appends count as recorded only once the shared store has them. */
  get remoteCommit(): boolean {
    return this.remote !== undefined;
  }

  /**
   * `audit.remoteCommit: sync`: from now on `appendAsync` answers only once `committer` (the shared
   * store) has committed the batch; undefined: once it is journaled, as by default.
   */
  setRemoteCommit(committer: RemoteCommitter | undefined): void {
    this.remote = committer ? new RemoteCommitQueue(committer) : undefined;
  }

  private appendJournaled(thread: CommitThread, inputs: AuditEventInput[]): AuditEvent[] {
    if (thread.gone) throw new StoreUnavailableError(thread.gone);
    if (thread.failure !== undefined) throw new StoreUnavailableError(new Error(`the audit database cannot be written (${thread.failure}); refusing until it can`));
    if (this.rechained) {
      // A fold had to re-chain events (another process appended to the file): continue from what
      // the database holds now (refused while the file is locked: no waiting on it).
      try {
        thread.drain();
      } catch (err) {
        throw new StoreUnavailableError(err);
      }
      this.rechained = false;
      this.reloadHead();
    }
    const prepared = this.prepare(inputs);
    const appended: AppendedEvent[] = new Array(inputs.length);
    try {
      // Each event's place in the chain is given here, so the journal line carries it and the
      // listeners hear of the event now; the fold keeps it unless another writer came between.
      let prev: { seq: number; hash: string } = { seq: this.headSeq, hash: this.headHash };
      for (let i = 0; i < prepared.length; i++) prev = appended[i] = prepared[i]!.chained = chainAfter(prev, prepared[i]!);
    } catch (err) {
      throw new StoreUnavailableError(err);
    }
    let written: { last: number; text: string };
    try {
      written = this.journal!.write(prepared);
    } catch (err) {
      this.journalFailure ??= { message: (err as Error).message, since: Date.now() };
      this.journalFailure.message = (err as Error).message;
      throw new StoreUnavailableError(err);
    }
    this.journalFailure = undefined;
    this.lastJseq = written.last;
    // Recorded: the batch is in the journal. The commit thread folds it into the database.
    thread.queue(written.text, prepared.length, { reload: this.takeStale(), jseq: written.last });
    this.noteThreadSessions(inputs);
    return this.committed(inputs, appended, prepared);
  }

  /**
   * A read on the commit thread's connection, so the gateway's thread never waits on the file
   * (without a thread: here, at once). Rejects with StoreUnavailableError.
   */
  async readAsync<T>(sql: string, params: unknown[] = []): Promise<T[]> {
    if (!this.thread) {
      try {
        return this.db.prepare(sql).all(...params) as T[];
      } catch (err) {
        throw new StoreUnavailableError(err);
      }
    }
    const r = await this.thread.request({ op: 'query', sql, params });
    if (!r.ok) throw new StoreUnavailableError(Object.assign(new Error(r.message), { code: r.code }));
    return r.rows as T[];
  }

  /**
   * A state-table write that need not be in place before the caller goes on (a user's last
   * sighting): on the commit thread after everything before it; `done` hears the outcome.
   */
  writeBehind(sql: string, params: unknown[], done: (err: StoreUnavailableError | null) => void = () => {}): void {
    if (!this.thread) {
      try {
        this.db.prepare(sql).run(...params);
      } catch (err) {
        done(new StoreUnavailableError(err));
        return;
      }
      done(null);
      return;
    }
    void this.thread.request({ op: 'exec', sql, params }).then((r) => done(r.ok ? null : new StoreUnavailableError(Object.assign(new Error(r.message), { code: r.code }))));
  }

  /**
   * State-table writes and the events that record them, committed together or not at all, on the
   * commit thread after everything before them (holds, votes): the gateway's thread waits on
   * nothing, and the events keep their places in the chain (later appends chain after them at
   * once). Resolves with the events once committed; rejects with StoreUnavailableError, at once
   * while the file is locked or failing. Without a commit thread: here, in one transaction.
   */
  async writeAsync(statements: StateWrite[], inputs: AuditEventInput[]): Promise<AuditEvent[]> {
    const thread = this.thread;
    if (!thread) {
      try {
        return this.transaction(() => {
          for (const w of statements) this.db.prepare(w.sql).run(...w.params);
          return this.appendMany(inputs);
        });
      } catch (err) {
        throw err instanceof StoreUnavailableError ? err : new StoreUnavailableError(err);
      }
    }
    if (thread.gone) throw new StoreUnavailableError(thread.gone);
    if (thread.failure !== undefined) throw new StoreUnavailableError(new Error(`the audit database cannot be written (${thread.failure})`));
    if (thread.busy) throw new StoreUnavailableError(Object.assign(new Error('the audit database is locked by another connection'), { code: 'SQLITE_BUSY' }));
    const prepared = this.prepare(inputs);
    const before = { seq: this.headSeq, hash: this.headHash };
    let prev = before;
    for (const p of prepared) prev = p.chained = chainAfter(prev, p);
    // Appends made while this one is on its way chain after it.
    this.headSeq = prev.seq;
    this.headHash = prev.hash;
    const r = await thread.request({ op: 'write', statements, events: prepared, reload: this.takeStale() });
    if (!r.ok) {
      // Nothing was written: when nothing chained after these events meanwhile, the head goes back
      // (otherwise what did is given new places when it is folded, and the head re-read then).
      if (this.headSeq === prev.seq && this.headHash === prev.hash) {
        this.headSeq = before.seq;
        this.headHash = before.hash;
      } else this.rechained = true;
      throw new StoreUnavailableError(Object.assign(new Error(r.message), { code: r.code }));
    }
    if (r.rechained) this.rechained = true;
    this.noteThreadSessions(inputs);
    return this.committed(inputs, r.appended!, prepared);
  }

  /**
   * How the database is doing, from what the gateway's thread already knows (never a query):
   * `degraded` with the cause while it is locked, failing or behind; `failed` once it cannot be used.
   */
  health(): { state: 'ok' | 'degraded' | 'failed'; cause?: string; since?: number; behindMs?: number } {
    if (!this.thread) return { state: 'ok' };
    const db = this.thread.health();
    // A journal that cannot be written (disk full, read-only) refuses every recorded request, while
    // the database itself, with nothing new to fold, has no complaint.
    if (this.journalFailure && db.state !== 'failed') {
      return { state: 'degraded', cause: `the audit journal cannot be written (${this.journalFailure.message}); recorded traffic is refused (503) until it can`, since: this.journalFailure.since, behindMs: db.behindMs };
    }
    return db;
  }

  /** True when waiting on the commit thread would wait on a locked or failing file: readers then read what is there. */
  private get stalled(): boolean {
    return !!this.thread && (this.thread.busy || this.thread.failure !== undefined || this.thread.gone !== undefined);
  }

  /** The outcome of a fold of journaled lines (see `appendAsync`). */
  private folded(reply: CommitReply, jseq: number): void {
    this.remote?.folded(jseq, reply.ok ? undefined : reply.message);
    if (!reply.ok) return; // the thread reports the failure itself (`failure`, `gone`)
    if (reply.rechained) this.rechained = true;
    this.journal?.folded(jseq);
  }

  /** Re-reads the head from the database. */
  private reloadHead(): void {
    const last = this.db.prepare('SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1').get() as { seq: number; hash: string } | undefined;
    if (last) {
      this.headSeq = last.seq;
      this.headHash = last.hash;
    }
  }

  /**
   * Folds what a stopped gateway journaled, past damaged lines (`custody journal salvage`); the
   * store must have been opened with `replay: false` and no gateway may hold the journal.
   */
  salvageJournal(): JournalSalvage {
    const dir = journalDir(this.path);
    if (!this.writer) throw new StoreUnavailableError(new Error('the store is open read-only'));
    if (journalHeld(dir)) throw new Error(`a running gateway holds the journal ${dir}; stop it first`);
    const r = salvageJournal(this.db, this.writer, dir, dirname(this.path));
    this.reloadHead();
    return r;
  }

  /** Where this run notes results it could not journal (see `recordUnrecordedResults`). */
  private unrecorded: UnrecordedNotes | undefined;

  /**
   * At start: each result a previous run could not journal (its note in `custody.db.unrecorded`,
   * unrecorded.ts) is recorded as a `result.unrecorded` event, then the file is reserved anew for
   * this run's notes. Returns how many were recorded; throws when they cannot be (the notes stay),
   * or when the file cannot be reserved.
   */
  recordUnrecordedResults(): number {
    const file = unrecordedFile(this.path);
    const left = readUnrecorded(file);
    if (left.length) this.appendMany(left.map(unrecordedEvent));
    this.unrecorded?.close();
    // Cleared first: if the file cannot be reserved, nothing notes into the closed one.
    this.unrecorded = undefined;
    this.unrecorded = new UnrecordedNotes(file);
    return left.length;
  }

  /**
   * Notes a result that could not be journaled after the upstream acted (the client was cut off),
   * for the next start to record; false when it cannot be noted either.
   */
  noteUnrecorded(n: Omit<UnrecordedResult, 'at'>): boolean {
    return this.unrecorded?.note({ ...n, at: Date.now() }) ?? false;
  }

  /** For tests: journal to another file (/dev/full stands for a full disk); none: back to the journal's own files. */
  redirectJournal(path?: string): void {
    this.journal?.redirect(path);
  }

  /**
   * Runs `fn` in one transaction on this thread's connection: state-table writes and the events
   * that record them commit together or not at all. With a commit thread, everything sent to it
   * is committed first and appends inside `fn` happen here.
   */
  transaction<T>(fn: () => T): T {
    if (this.thread && !this.db.inTransaction) {
      try {
        if (this.thread.failure !== undefined) throw new Error(`the audit database cannot be written (${this.thread.failure})`);
        this.thread.drain();
      } catch (err) {
        throw new StoreUnavailableError(err);
      }
    }
    if (this.db.inTransaction) return this.db.transaction(fn).immediate();
    const head = { seq: this.headSeq, hash: this.headHash };
    try {
      return this.db.transaction(fn).immediate();
    } catch (err) {
      // Rolled back: events appended inside did not happen; the next ones take their places.
      this.headSeq = head.seq;
      this.headHash = head.hash;
      this.writer?.resetHead();
      throw err;
    }
  }

  /** Runs a PRAGMA on every connection that appends (tests use `query_only` for a read-only file). */
  writerPragma(sql: string): void {
    this.db.pragma(sql);
    if (!this.thread) return;
    const r = this.thread.call({ op: 'pragma', sql });
    if (!r.ok) throw new StoreUnavailableError(new Error(r.message));
  }

  private prepare(inputs: AuditEventInput[]): PreparedEvent[] {
    try {
      return inputs.map(prepareEvent);
    } catch (err) {
      throw new StoreUnavailableError(err);
    }
  }

  private takeStale(): boolean {
    const stale = this.threadStale;
    this.threadStale = false;
    return stale;
  }

  private appendHere(prepared: PreparedEvent[]): AppendedEvent[] {
    if (!this.writer) throw new StoreUnavailableError(new Error('the store is open read-only'));
    try {
      if (this.thread) {
        this.writer.reloadHead();
        this.threadStale = true;
      }
      return this.writer.append(prepared);
    } catch (err) {
      throw new StoreUnavailableError(err);
    }
  }

  /** Sessions the commit thread is about to index (readers of the index wait for it). */
  private noteThreadSessions(inputs: AuditEventInput[]): void {
    const now = Date.now();
    for (const i of inputs) if (i.session) this.threadSessions.set(i.session, now);
    this.trimThreadSessionsLater();
    // Entries older than SESSION_SETTLED_MS mean nothing: trimmed at most that often, so the map
    // holds only the sessions of the last moment, not every session ever seen.
    if (now - this.threadSessionsTrimmed > SESSION_SETTLED_MS) {
      this.threadSessionsTrimmed = now;
      for (const [id, at] of this.threadSessions) if (now - at > SESSION_SETTLED_MS) this.threadSessions.delete(id);
    }
  }

  /** A last trim once traffic stops, so nothing per session stays behind for long. */
  private trimThreadSessionsLater(): void {
    if (!this.threadSessions.size || this.threadSessionsTimer) return;
    this.threadSessionsTimer = setTimeout(() => {
      this.threadSessionsTimer = undefined;
      const at = Date.now();
      for (const [id, t] of this.threadSessions) if (at - t > SESSION_SETTLED_MS) this.threadSessions.delete(id);
      this.trimThreadSessionsLater();
    }, SESSION_SETTLED_MS * 2);
    this.threadSessionsTimer.unref();
  }

  /** When `threadSessions` was last trimmed, and the timer that trims it after the last append. */
  private threadSessionsTrimmed = 0;
  private threadSessionsTimer: NodeJS.Timeout | undefined;

  /** How many sessions the store still tracks as recently appended to (tests: nothing per session outlives it for long). */
  get recentSessionCount(): number {
    return this.threadSessions.size;
  }

  /** The events as stored, from their inputs and what the chain assigned; listeners hear of them. */
  private committed(inputs: AuditEventInput[], appended: AppendedEvent[], prepared: PreparedEvent[]): AuditEvent[] {
    const events: AuditEvent[] = new Array(inputs.length);
    for (let i = 0; i < inputs.length; i++) {
      const input = inputs[i]!;
      const a = appended[i]!;
      if (input.session) this.live.count(input.session, prepared[i]!, a.time);
      // Written out, not spread: this runs for every event on the proxies' path.
      events[i] = {
        seq: a.seq,
        time: a.time,
        kind: input.kind,
        session: input.session ?? null,
        actor: input.actor ?? null,
        connection: input.connection ?? null,
        payload: input.payload === undefined ? null : input.payload,
        spans: input.spans ?? [],
        payloadHash: a.payloadHash,
        prevHash: a.prevHash,
        hash: a.hash,
      };
    }
    const last = appended[appended.length - 1];
    if (last && last.seq > this.headSeq) {
      this.headSeq = last.seq;
      this.headHash = last.hash;
    }
    for (const e of events) for (const l of this.listeners) l(e);
    return events;
  }

  /**
   * Runs `read` (reads of events or sessions) once what was journaled before it is in the database,
   * without blocking this thread: it waits for the commit thread's answer (at most
   * SETTLED_READ_WAIT_MS, and not at all while the file is locked or failing, as `settle` does), and
   * the reads inside `read` do not wait again. For the console and the WebSocket's resumes, which
   * share the proxies' thread: a synchronous `settle` there would hold every proxy until the
   * commit thread had folded everything queued (a large body's fold takes hundreds of ms).
   */
  async settledRead<T>(read: () => T): Promise<T> {
    const thread = this.thread;
    if (thread && !this.stalled && (thread.pending > 0 || this.threadSessions.size)) {
      const sentAt = Date.now();
      let timer: NodeJS.Timeout | undefined;
      const answer = await Promise.race([thread.request({ op: 'sync' }), new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), SETTLED_READ_WAIT_MS)))]);
      clearTimeout(timer);
      // The sync wrote the session index too: rows of sessions last appended to before it are current.
      if (answer?.ok) for (const [id, at] of this.threadSessions) if (at <= sentAt) this.threadSessions.delete(id);
    }
    this.readsSettled = true;
    try {
      return read();
    } finally {
      this.readsSettled = false;
    }
  }

  /** Set inside `settledRead`: the reads it runs do not wait on the commit thread again. */
  private readsSettled = false;

  /** Waits until everything sent to the commit thread is in the database (before reads of events). */
  settle(): void {
    if (!this.thread || this.thread.pending === 0 || this.stalled || this.readsSettled) return;
    try {
      this.thread.drain();
    } catch {
      // Reads show what is in the database; appends report the failure.
    }
  }

  /**
   * The summary of a session this process recorded, from memory (no SQLite read, no waiting on the
   * commit thread): what the proxies publish on session start and end. Known from its
   * `session.start` until shortly after its `session.end`.
   */
  liveSession(id: string): SessionSummary | undefined {
    return this.live.get(id);
  }

  /** How many sessions the live summaries hold (open ones, and the last few ended). */
  get liveSessionCount(): number {
    return this.live.size;
  }

  /** Writes pending session-index changes for `id` (or all) before a read of the index. */
  private settleSessions(id?: string): void {
    if (this.writer && (id === undefined || this.writer.hasPendingSession(id))) this.writer.flushSessions();
    if (!this.thread || this.readsSettled) return;
    // Batches still on their way to the database, or index rows the thread may not have written yet.
    const at = id === undefined ? (this.threadSessions.size ? Math.max(...this.threadSessions.values()) : undefined) : this.threadSessions.get(id);
    const recent = at !== undefined && Date.now() - at <= SESSION_SETTLED_MS;
    if ((this.thread.pending > 0 || recent) && !this.stalled) {
      try {
        this.thread.drain();
      } catch {
        // The index lags; the log is complete. Reads show what was written.
      }
    }
    if (id === undefined) this.threadSessions.clear();
    else this.threadSessions.delete(id);
  }

  /** Writes the pending session-index changes now (done by a timer, before session reads and at close). */
  flushSessions(): void {
    this.settleSessions();
  }

  head(): { size: number; hash: string } {
    return { size: this.headSeq, hash: this.headHash };
  }

  onAppend(listener: Listener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  event(seq: number): AuditEvent | undefined {
    this.settle();
    const r = this.db.prepare('SELECT * FROM events WHERE seq = ?').get(seq) as EventRow | undefined;
    return r && rowToEvent(r);
  }

  /** Events in seq order, `from` inclusive, at most `limit`. */
  events(from = 1, limit = 1000): AuditEvent[] {
    this.settle();
    return (this.db.prepare('SELECT * FROM events WHERE seq >= ? ORDER BY seq LIMIT ?').all(from, limit) as EventRow[]).map(rowToEvent);
  }

  /** Raw rows in seq order, for the verifier (no JSON decoding it does not need). */
  *iterateRows(from = 1): IterableIterator<EventRow> {
    this.settle();
    yield* this.db.prepare('SELECT * FROM events WHERE seq >= ? ORDER BY seq').iterate(from) as IterableIterator<EventRow>;
  }

  sessionEvents(session: string, afterSeq = 0, limit = 10_000): AuditEvent[] {
    this.settle();
    return (
      this.db.prepare('SELECT * FROM events WHERE session = ? AND seq > ? ORDER BY seq LIMIT ?').all(session, afterSeq, limit) as EventRow[]
    ).map(rowToEvent);
  }

  session(id: string): SessionSummary | undefined {
    this.settleSessions(id);
    const r = this.db.prepare('SELECT * FROM sessions WHERE id = ?').get(id) as SessionRow | undefined;
    return r && rowToSession(r);
  }

  listSessions(filter: SessionQuery = {}): { total: number; sessions: SessionSummary[] } {
    this.settleSessions();
    const where: string[] = [];
    const args: Record<string, unknown> = {};
    if (filter.user) {
      where.push('(actor = @user OR actor_name LIKE @userLike)');
      args['user'] = filter.user;
      args['userLike'] = `%${filter.user}%`;
    }
    const eq = (column: string, value: unknown, op = '=') => {
      where.push(`${column} ${op} @${column}`);
      args[column] = value;
    };
    if (filter.connection) eq('connection', filter.connection);
    if (filter.protocol) eq('protocol', filter.protocol);
    if (filter.from !== undefined) eq('last_event_at', filter.from, '>=');
    if (filter.to !== undefined) eq('started_at', filter.to, '<=');
    if (filter.hadHolds) where.push('holds > 0');
    if (filter.hadMasking) where.push('masked > 0');
    const clause = where.length ? `WHERE ${where.join(' AND ')}` : '';
    const total = (this.db.prepare(`SELECT count(*) AS n FROM sessions ${clause}`).get(args) as { n: number }).n;
    const rows = this.db
      .prepare(`SELECT * FROM sessions ${clause} ORDER BY last_event_at DESC LIMIT @limit OFFSET @offset`)
      .all({ ...args, limit: filter.limit ?? 100, offset: filter.offset ?? 0 }) as SessionRow[];
    return { total, sessions: rows.map(rowToSession) };
  }

  meta(key: string): string | undefined {
    return (this.db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined)?.value;
  }

  setMeta(key: string, value: string): void {
    this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  close(): void {
    clearTimeout(this.threadSessionsTimer);
    this.unrecorded?.close();
    try {
      const folded = this.thread ? this.thread.close() : true;
      if (this.journal) {
        // Journal files stay when something in them did not reach the database: the next start folds them.
        if (folded) this.journal.close();
        else this.journal.release();
        releaseJournal(journalDir(this.path));
      }
    } finally {
      this.writer?.close();
      this.listeners.clear();
      if (this.db.open) this.db.close();
    }
  }

}

/**
 * In-memory summaries of the sessions this process recorded, counted as the session index counts
 * them: created by `session.start`, kept current by every later event of the session, and dropped
 * in the turn of the event loop after `session.end` (whoever records the end publishes it in the
 * same turn). Bounded: at most OPEN_MAX open sessions (the oldest go first; their ends are still
 * recorded).
 */
class LiveSessionSummaries {
  private static readonly OPEN_MAX = 100_000;
  private readonly open = new Map<string, SessionDelta>();
  private readonly ended: string[] = [];
  private sweep: NodeJS.Immediate | undefined;

  count(id: string, e: PreparedEvent, time: number): void {
    let d = this.open.get(id);
    if (!d) {
      if (e.kind !== 'session.start') return;
      d = newSessionDelta(id, e, time);
      this.open.set(id, d);
      if (this.open.size > LiveSessionSummaries.OPEN_MAX) this.open.delete(this.open.keys().next().value!);
    } else if (d.ended !== null) return;
    countInSession(d, e, time);
    if (e.kind === 'session.end') {
      // Whoever records the end publishes it in the same turn; then the summary goes.
      this.ended.push(id);
      this.sweep ??= setImmediate(() => {
        this.sweep = undefined;
        for (const gone of this.ended.splice(0)) this.open.delete(gone);
      });
    }
  }

  get(id: string): SessionSummary | undefined {
    const d = this.open.get(id);
    if (!d) return undefined;
    return deltaSummary(d);
  }

  get size(): number {
    return this.open.size;
  }
}

interface SessionRow {
  id: string;
  connection: string | null;
  protocol: string;
  actor: string | null;
  actor_name: string | null;
  started_at: number;
  last_event_at: number;
  ended_at: number | null;
  events: number;
  requests: number;
  holds: number;
  masked: number;
  denied: number;
  errors: number;
}

function rowToSession(r: SessionRow): SessionSummary {
  return {
    id: r.id,
    connection: r.connection,
    protocol: r.protocol as SessionSummary['protocol'],
    actor: r.actor,
    actorName: r.actor_name,
    startedAt: r.started_at,
    lastEventAt: r.last_event_at,
    endedAt: r.ended_at,
    events: r.events,
    requests: r.requests,
    holds: r.holds,
    masked: r.masked,
    denied: r.denied,
    errors: r.errors,
  };
}

/** Applies pending migrations, each in its own transaction. Exported for migration tests. */
export function migrate(db: Database.Database, migrations = MIGRATIONS): number {
  const current = db.pragma('user_version', { simple: true }) as number;
  let version = current;
  for (const m of migrations) {
    if (m.version <= current) continue;
    db.transaction(() => {
      db.exec(m.sql);
      db.pragma(`user_version = ${m.version}`);
    })();
    version = m.version;
  }
  return version;
}

/**
 * The store and the signing key must never be one `git add .` away from a repository (a config's
 * `dataDir: ./data` puts them inside the project): every data dir carries a `.gitignore` of `*`.
 */
function keepOutOfGit(dataDir: string): void {
  const file = join(dataDir, '.gitignore');
  if (!existsSync(file)) writeFileSync(file, '# Custody data dir: the audit store and keys stay out of version control.\n*\n', { mode: 0o600 });
}
