/**
 * Writes the PostgreSQL proxy's audit events with as few commits as the rules allow.
 *
 * - `commit(events, done)`: statements. A statement must be in the log before it is forwarded, so
 *   the session waits for `done`. Statements from every session that arrive in the same turn of the
 *   event loop are committed together (group commit), with every deferred event before them.
 * - `defer(event, onFail)`: results (pg.result, pg.error) may follow the rows they describe, so they
 *   ride along with the next commit or, at the latest, `deferMs` later. If they
 *   cannot be written they stay queued and each owner's `onFail` runs (its session closes: the
 *   gateway does not carry traffic it cannot record).
 * - `commitNow(events, done)`: results (pg.result, pg.error) whose reply bytes wait for them: the
 *   client gets CommandComplete only once its result is in the journal. Committed at the end of
 *   this turn of the event loop with everything else queued, without the group-commit wait.
 * - `appendNow(events)`: session start and end, committed before returning.
 */
import type { AuditEvent, AuditEventInput } from '../../shared/events';
import type { EventLog } from '../audit/store';

interface Deferred {
  event: AuditEventInput;
  onFail: (err: Error) => void;
}

interface PendingCommit {
  events: AuditEventInput[];
  done: (err: Error | null) => void;
}

export class AuditWriter {
  private queue: Deferred[] = [];
  private commits: PendingCommit[] = [];
  private scheduled = false;
  /** A commit that holds replies back is queued: flush at the end of this turn, without waiting for others. */
  private urgent = false;
  private spins = 0;
  private timer: NodeJS.Timeout | undefined;
  /** When each session last committed a statement: those within `busyMs` are likely to send another soon. */
  private readonly lastCommit = new Map<object, number>();

  constructor(
    private readonly store: Pick<EventLog, 'appendMany' | 'appendAsync'>,
    private readonly deferMs = 20,
    private readonly maxDeferred = 512,
    private readonly maxSpins = 16,
    private readonly busyMs = 5,
  ) {}

  /** Sessions that committed a statement within the last `busyMs`. */
  private busySessions(): number {
    const now = performance.now();
    let n = 0;
    for (const [who, at] of this.lastCommit) {
      if (now - at < this.busyMs) n++;
      else this.lastCommit.delete(who);
    }
    return n;
  }

  /** Commits `events` (after everything deferred) before returning; throws StoreUnavailableError. */
  appendNow(events: AuditEventInput[]): AuditEvent[] {
    this.flush();
    if (this.queue.length === 0) return this.store.appendMany(events);
    const pending = this.queue;
    const written = this.store.appendMany([...pending.map((d) => d.event), ...events]);
    this.queue = [];
    return written.slice(pending.length);
  }

  /**
   * Commits `events` with the others of this turn; `done(null)` once they are durable, `done(err)`
   * if not. `session` identifies the caller for group-commit pacing.
   */
  commit(events: AuditEventInput[], done: (err: Error | null) => void, session: object): void {
    this.commits.push({ events, done });
    this.lastCommit.set(session, performance.now());
    this.schedule();
  }

  /** Commits `events` at the end of this turn (no group-commit wait); `done` as for `commit`. */
  commitNow(events: AuditEventInput[], done: (err: Error | null) => void): void {
    this.commits.push({ events, done });
    this.urgent = true;
    this.schedule();
  }

  /**
   * Queues an event to be committed soon, in order with everything else: with the next statement
   * commit, or after `deferMs` when no statement comes (a commit costs far more than an event).
   */
  defer(event: AuditEventInput, onFail: (err: Error) => void): void {
    this.queue.push({ event, onFail });
    if (this.queue.length >= this.maxDeferred) this.schedule();
    else this.timer ??= setTimeout(() => this.flush(), this.deferMs);
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    this.spins = 0;
    setImmediate(this.onImmediate);
  }

  /**
   * Group commit: a commit costs far more than the events in it, so while fewer statements wait than
   * there are busy sessions (those that sent one in the last few milliseconds), give the event loop
   * a few more turns (each polls the sockets without blocking) for theirs to arrive first. A lone
   * client never waits.
   */
  private readonly onImmediate = () => {
    if (!this.urgent && this.commits.length > 0 && this.commits.length < this.busySessions() && this.spins < this.maxSpins) {
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

  /** Sends what is queued now to the store as one append. */
  flush(): void {
    this.scheduled = false;
    this.urgent = false;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const pending = this.queue;
    const commits = this.commits;
    if (pending.length === 0 && commits.length === 0) return;
    this.commits = [];
    this.queue = [];
    const events = pending.map((d) => d.event);
    for (const c of commits) for (const e of c.events) events.push(e);
    this.store.appendAsync(events, (error) => {
      if (error) {
        // Results that could not be written go back to the front of the queue: they are still owed.
        this.queue = [...pending, ...this.queue];
        const seen = new Set<(err: Error) => void>();
        for (const d of pending) {
          if (seen.has(d.onFail)) continue;
          seen.add(d.onFail);
          d.onFail(error);
        }
      }
      for (const c of commits) c.done(error);
    });
  }

  get pending(): number {
    return this.queue.length + this.commits.length;
  }
}
