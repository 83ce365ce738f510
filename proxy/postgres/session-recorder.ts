/**
 * Writes what one PostgreSQL session records, through its listener's SessionAuditWriter (which decides
 * how events are committed together): the session's start and end (committed before returning), a
 * batch's statements (committed, with the other sessions' of this turn, before the batch is
 * forwarded), a refused batch (committed at once), each statement's end (deferred: it may follow
 * the rows it describes) and a fatal error. The events are built by recording.ts; text is masked
 * for the log with the session's current masker.
 */
import type { AuditEventInput, EventPayload } from '../../shared/events';
import type { ErrorInit } from './backend-messages';
import type { SessionAuditWriter } from '../audit/session-writer';
import {
  type RecordingContext,
  type RunEnd,
  runEndEvent,
  sessionEndEvent,
  type SessionStart,
  sessionStartEvent,
  statementEvents,
  type StatementRun,
} from './recording';
import type { PgListenerContext } from './session-context';
import type { SessionMaskers } from './session-maskers';

export class SessionRecorder implements RecordingContext {
  /** Who the session is (set once authenticated). */
  actor: string | undefined;
  readonly connection: string;
  private readonly writer: SessionAuditWriter;

  /** `onResultLost` runs when a statement's end cannot be written: the session must not go on. */
  constructor(
    readonly session: string,
    private readonly ctx: PgListenerContext,
    private readonly maskers: SessionMaskers,
    private readonly onResultLost: (err: Error) => void,
  ) {
    this.connection = ctx.connection.name;
    this.writer = ctx.writer;
  }

  forLog(text: string) {
    return this.maskers.forLog(text);
  }

  /** `session.start`; throws when the log cannot take it (the session is refused then). */
  started(start: SessionStart): void {
    this.writer.appendNow([sessionStartEvent(this, start)]);
    this.publish('session.started');
  }

  /** `session.end`; throws when the log cannot take it. */
  ended(end: { reason: string; durationMs: number; statements: number }): void {
    this.writer.appendNow([sessionEndEvent(this, end)]);
    this.publish('session.ended');
  }

  private publish(type: 'session.started' | 'session.ended'): void {
    const services = this.ctx.services;
    const summary = services.store.liveSession?.(this.session);
    if (summary && services.bus) services.bus.publish({ type, session: summary });
  }

  /**
   * Commits the statements a batch runs; `done(null)` once they are durable, `done(err)` if they
   * cannot be. `owner` paces the group commit (proxy/audit/session-writer.ts).
   */
  statements(runs: StatementRun[], done: (err: Error | null) => void, owner: object): void {
    this.writer.commit(statementEvents(this, runs), done, owner);
  }

  /** The statements of a refused batch, with why; throws when the log cannot take them. */
  refused(runs: StatementRun[], refusal: ErrorInit): void {
    this.writer.appendNow(statementEvents(this, runs, refusal));
  }

  /** Results recorded since the session last took them: their reply bytes wait until they are journaled. */
  private owed: AuditEventInput[] = [];
  /** Statements whose rows were queued for the client since the last journal write, still running. */
  private rowRuns: StatementRun[] = [];

  /** `run` queued a row for the client: if its result goes on past this read, a pg.rows precedes them. */
  rowsSent(run: StatementRun): void {
    run.rowsOwed = true;
    this.rowRuns.push(run);
  }

  /** How a statement ended (once per statement: later calls are ignored). */
  runEnded(run: StatementRun, end: RunEnd): void {
    if (run.finished) return;
    run.finished = true;
    this.owed.push(runEndEvent(this, run, end));
  }

  /** True when results wait to be journaled. */
  get owesResults(): boolean {
    return this.owed.length > 0 || this.rowRuns.length > 0;
  }

  /**
   * Journals the results recorded so far, then `done(null)`: only then may the replies they
   * describe go to the client. `done(err)` when they cannot be journaled.
   */
  journalResults(done: (err: Error | null) => void): void {
    const events = this.owed;
    this.owed = [];
    // Rows of results still running (their pg.result comes with a later read): how many went out.
    for (const run of this.rowRuns) {
      run.rowsOwed = false;
      if (!run.finished) events.push({ kind: 'pg.rows', session: this.session, actor: this.actor, connection: this.connection, payload: { n: run.n, rows: run.rows } satisfies EventPayload<'pg.rows'> });
    }
    this.rowRuns.length = 0;
    if (events.length === 0) {
      done(null);
      return;
    }
    this.writer.commitNow(events, done);
  }

  /** The session is over: results still owed are written without holding anything back. */
  settleResults(): void {
    const events = this.owed;
    this.owed = [];
    this.rowRuns.length = 0;
    for (const event of events) this.writer.defer(event, this.onResultLost);
  }

  /** The error the gateway ended the session with. */
  fatal(error: ErrorInit): void {
    this.writer.defer({ kind: 'pg.error', payload: { protocol: 'postgres', fatal: true, code: error.code, message: error.message } }, () => {});
  }
}
