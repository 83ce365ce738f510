/**
 * Writes the proxies' traffic events with as few commits as the rules allow. The HTTP proxy and
 * the PostgreSQL listeners each hold one; they differ only in their pacing (`SessionWriterPacing`).
 *
 * - `commit(events)`: what must be in the log before the gateway acts (a request, a statement, a
 *   whole response before its bytes go out). The caller waits for the answer: a promise, or
 *   `done` when given. Commits that arrive in the same turn of the event loop are committed
 *   together (group commit), after every deferred event.
 * - `defer(events, onFail)`: what may follow the fact it records (responses and stream chunks,
 *   statement results). Deferred events ride along with the next commit or, at the latest,
 *   `deferMs` later (0: at the end of this turn). If they cannot be written, each owner's `onFail`
 *   runs once; with `keepDeferredOnFailure` they stay queued, still owed.
 * - `commitNow(events, done)`: a commit that holds replies back, flushed at the end of this turn
 *   without the group-commit wait.
 * - `appendNow(events)`: committed before returning (PostgreSQL session start and end).
 *
 * An owner defers only after its own commit was answered, so for any one exchange or session the
 * log keeps the order in which it recorded; events of different owners queued in one turn are
 * written deferred first, then commits, in arrival order within each.
 */
import type { AuditEvent, AuditEventInput } from '../../shared/events';
import { type EventLog, RemoteCommitError } from './store';

export interface SessionWriterPacing {
  /** Deferred events wait at most this long for a commit to ride with; 0: the end of this turn. */
  deferMs: number;
  /** This many deferred entries are written at the end of this turn, without waiting longer. */
  maxDeferred: number;
  /** Group commit: the most turns a commit waits for those of other busy sessions (0: never waits). */
  maxSpins: number;
  /** A session that committed within this many ms is busy: likely to commit again soon. */
  busyMs: number;
  /** Deferred events a failed commit could not write stay queued for the next one. */
  keepDeferredOnFailure: boolean;
}

/** The PostgreSQL listeners' pacing: results wait up to 20 ms; a statement waits for the other busy sessions'. */
export const POSTGRES_PACING: SessionWriterPacing = { deferMs: 20, maxDeferred: 512, maxSpins: 16, busyMs: 5, keepDeferredOnFailure: true };

/** The HTTP proxy's pacing: everything queued in a turn is committed at its end; what fails to be written is dropped (and logged by its owner). */
export const HTTP_PACING: SessionWriterPacing = { deferMs: 0, maxDeferred: 512, maxSpins: 0, busyMs: 5, keepDeferredOnFailure: false };

interface Deferred {
  /** One event or several, as the owner handed them. */
  events: AuditEventInput | AuditEventInput[];
  onFail: ((err: Error) => void) | undefined;
}

/** Events gathered during a turn, taken when that turn's batch is written (see `enlist`). */
export interface TurnBatch {
  /** The events to write now (called once per enlistment, at the end of the turn). */
  take(): AuditEventInput[];
  /** They are in the log (`null`), or could not be written. */
  written(err: Error | null): void;
}

interface PendingCommit {
  events: AuditEventInput[];
  done: (err: Error | null) => void;
}

export class SessionAuditWriter {
  private queue: Deferred[] = [];
  private commits: PendingCommit[] = [];
  /** Enlisted turn batches (`enlist`), taken at the write. */
  private batches: TurnBatch[] = [];
  private scheduled = false;
  /** A commit that holds replies back is queued: flush at the end of this turn, without waiting for others. */
  private urgent = false;
  private spins = 0;
  private timer: NodeJS.Timeout | undefined;
  /** When each session last committed: those within `busyMs` are likely to commit again soon. */
  private readonly lastCommit = new Map<object, number>();
  private readonly pacing: SessionWriterPacing;

  constructor(
    private readonly store: Pick<EventLog, 'appendMany' | 'appendAsync'>,
    pacing: Partial<SessionWriterPacing> = {},
  ) {
    this.pacing = { ...POSTGRES_PACING, ...pacing };
  }

  /** Sessions that committed within the last `busyMs`. */
  private busySessions(): number {
    const now = performance.now();
    let n = 0;
    for (const [who, at] of this.lastCommit) {
      if (now - at < this.pacing.busyMs) n++;
      else this.lastCommit.delete(who);
    }
    return n;
  }

  /** Commits `events` (after everything deferred) before returning; throws StoreUnavailableError. */
  appendNow(events: AuditEventInput[]): AuditEvent[] {
    this.flush();
    if (this.queue.length === 0) return this.store.appendMany(events);
    const pending = this.queue;
    const deferred = eventsOf(pending);
    const written = this.store.appendMany([...deferred, ...events]);
    this.queue = [];
    return written.slice(deferred.length);
  }

  /**
   * Commits `events` with the others of this turn. Without `done`: resolves once they are durable,
   * rejects (StoreUnavailableError) if not. With `done`: `done(null)` or `done(err)`. `session`
   * identifies the caller for group-commit pacing.
   */
  commit(events: AuditEventInput[]): Promise<void>;
  commit(events: AuditEventInput[], done: (err: Error | null) => void, session?: object): void;
  commit(events: AuditEventInput[], done?: (err: Error | null) => void, session?: object): Promise<void> | void {
    if (!done) {
      return new Promise((resolve, reject) => {
        this.commits.push({ events, done: (err) => (err ? reject(err) : resolve()) });
        this.schedule();
      });
    }
    this.commits.push({ events, done });
    if (session) this.lastCommit.set(session, performance.now());
    this.schedule();
  }

  /** Commits `events` at the end of this turn (no group-commit wait); `done` as for `commit`. */
  commitNow(events: AuditEventInput[], done: (err: Error | null) => void): void {
    this.commits.push({ events, done });
    this.urgent = true;
    this.schedule();
  }

  /**
   * Puts `batch` in the write at the end of this turn (no group-commit wait): its `take` runs when
   * the write is made, so events added until then go with it, and `written` hears the outcome (a
   * stream's bytes wait for it). Enlist again for a later turn.
   */
  enlist(batch: TurnBatch): void {
    this.batches.push(batch);
    this.urgent = true;
    this.schedule();
  }

  /**
   * Queues events to be committed soon, in order with everything else: with the next commit, or
   * after `deferMs` when none comes (a commit costs far more than an event).
   */
  defer(events: AuditEventInput | AuditEventInput[], onFail?: (err: Error) => void): void {
    this.queue.push({ events, onFail });
    if (this.pacing.deferMs === 0 || this.queue.length >= this.pacing.maxDeferred) this.schedule();
    else this.timer ??= setTimeout(() => this.flush(), this.pacing.deferMs);
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    this.spins = 0;
    setImmediate(this.onImmediate);
  }

  /**
   * Group commit: a commit costs far more than the events in it, so while fewer commits wait than
   * there are busy sessions (those that committed in the last few milliseconds), give the event loop
   * a few more turns (each polls the sockets without blocking) for theirs to arrive first. A lone
   * client never waits.
   */
  private readonly onImmediate = () => {
    const { maxSpins } = this.pacing;
    if (maxSpins > 0 && !this.urgent && this.commits.length > 0 && this.commits.length < this.busySessions() && this.spins < maxSpins) {
      this.spins++;
      setImmediate(this.onImmediate);
      return;
    }
    this.flush();
  };

  /** `session` ended: the writer keeps nothing of it (its commits are already queued or sent). */
  forget(session: object): void {
    this.lastCommit.delete(session);
  }

  /** Sends what is queued now to the store as one append (also used at shutdown). */
  flush(): void {
    this.scheduled = false;
    this.urgent = false;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const pending = this.queue;
    const commits = this.commits;
    for (const b of this.batches) commits.push({ events: b.take(), done: (err) => b.written(err) });
    this.batches = [];
    if (pending.length === 0 && commits.length === 0) return;
    this.commits = [];
    this.queue = [];
    let events: AuditEventInput[];
    if (pending.length === 0 && commits.length === 1) events = commits[0]!.events;
    else {
      events = eventsOf(pending);
      for (const c of commits) for (const e of c.events) events.push(e);
    }
    if (events.length === 0) {
      // Only enlisted batches with nothing to record this turn (a keep-alive): their bytes go on.
      for (const c of commits) c.done(null);
      return;
    }
    this.store.appendAsync(events, (error) => {
      // A batch the shared store did not commit (`remoteCommit: sync`) is in the local log all the
      // same: its deferred events are written, and only the commits waiting on it are refused.
      if (error && !(error instanceof RemoteCommitError)) {
        // With keepDeferredOnFailure, what could not be written goes back to the front of the queue: it is still owed.
        if (this.pacing.keepDeferredOnFailure) this.queue = [...pending, ...this.queue];
        const told = new Set<(err: Error) => void>();
        for (const d of pending) {
          if (!d.onFail || told.has(d.onFail)) continue;
          told.add(d.onFail);
          d.onFail(error);
        }
      }
      // Every waiter hears the outcome, even when one of them throws (that error surfaces afterwards).
      let thrown: { err: unknown } | undefined;
      for (const c of commits) {
        try {
          c.done(error);
        } catch (err) {
          thrown ??= { err };
        }
      }
      if (thrown) {
        const { err } = thrown;
        queueMicrotask(() => {
          throw err;
        });
      }
    });
  }

  /** Entries (deferred, commits and enlisted batches) not yet handed to the store. */
  get pending(): number {
    return this.queue.length + this.commits.length + this.batches.length;
  }
}

function eventsOf(pending: Deferred[]): AuditEventInput[] {
  const events: AuditEventInput[] = [];
  for (const d of pending) {
    if (Array.isArray(d.events)) for (const e of d.events) events.push(e);
    else events.push(d.events);
  }
  return events;
}
