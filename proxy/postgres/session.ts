/**
 * One client connection through a PostgreSQL listener, from the first byte to the last. The session
 * is the coordinator: it moves through the phases below and hands each job to its part.
 *
 *   startup    startup packets (startup.ts): SSLRequest → TLS, GSSENCRequest → 'N', direct TLS
 *              (first byte 0x16), CancelRequest, StartupMessage
 *   password   AuthenticationCleartextPassword; the password is a Custody API key or an OIDC token
 *   connecting authentication and the upstream login with the connection's own credential (login.ts)
 *   ready      client messages are collected into batches; each batch is planned (batch-planner.ts:
 *              classified, decided by policy, what each Execute runs read from the predicted server
 *              state in protocol-state.ts), held for approval if it must be (statement-holds.ts),
 *              recorded (session-recorder.ts), then forwarded. Every reply is checked against the
 *              prediction (a mismatch ends the session), then paired with its request
 *              (reply-pairing.ts) so rows can be masked and results recorded
 *              (https://www.postgresql.org/docs/current/protocol-flow.html)
 *   closed     whatever the client does to leave, the upstream is released at once: a running
 *              statement is cancelled, a held one's hold is cancelled, unsynced messages dropped
 *
 * The bytes themselves, TLS and backpressure are session-sockets.ts's.
 *
 * A refused statement is answered the way PostgreSQL answers a failed one: the gateway sends the
 * upstream a statement that cannot parse in its place, so the upstream itself rolls back the
 * implicit transaction (or marks the explicit one failed) and skips to Sync; its error is replaced
 * by the refusal (SQLSTATE 42501 with the reason) and the client's session stays usable.
 */
import type { Socket } from 'node:net';
import type { Identity } from '../../shared/identity';
import { RemoteCommitError } from '../audit/store';
import { newId } from '../ids';
import {
  buildAuthenticationCleartextPassword,
  buildAuthenticationOk,
  buildBackendKeyData,
  buildErrorResponse,
  buildParameterStatus,
  buildReadyForQuery,
  type ErrorInit,
} from './backend-messages';
import { type BatchItem, BatchPlanner, type PlannedBatch } from './batch-planner';
import { parsePasswordMessage, parseStartupPacket } from './frontend-messages';
import { authenticateClient, connectUpstreamFor, type LoginAttempt } from './login';
import { ProtocolError, type RawMessage } from './message-buffer';
import { codeName, FrontendCode, SqlState } from './message-codes';
import { ProtocolState } from './protocol-state';
import type { Portal, PreparedStatement } from './recording';
import { maskErrorLike, ReplyPairing, type ReplyPairingHost } from './reply-pairing';
import type { ListenedSession, PgListenerContext, PgSessionServices } from './session-context';
import { SessionMaskers } from './session-maskers';
import { SessionRecorder } from './session-recorder';
import { type SessionSocketEvents, SessionSockets } from './session-sockets';
import { issueCancelKey, routeCancelRequest, startupStep } from './startup';
import { StatementHolds } from './statement-holds';
import { sendUpstreamCancel, terminateUpstream } from './upstream';

export class PgProxySession implements ListenedSession, SessionSocketEvents, ReplyPairingHost {
  readonly id = newId('pg');
  private phase: 'startup' | 'password' | 'connecting' | 'ready' | 'closed' = 'startup';
  private startupParams = new Map<string, string>();
  private identity: Identity | undefined;
  /** `session.start` is recorded: the session's end will be too. */
  private started = false;
  private readonly startedAt = Date.now();
  /** Why the session ends, if it ends now. */
  private endReason = 'client disconnected';
  /** Leaves the live-session registry (set once authenticated). */
  private unregisterLive?: () => void;
  /** The pid of the cancel key the client was given. */
  private cancelPid = 0;
  /** The server's statements and portals, predicted and checked against every reply (protocol-state.ts). */
  private serverState = new ProtocolState<PreparedStatement, Portal>();
  /** A batch that read a name an earlier, unanswered segment wrote: planned again once the replies are in. */
  private stalled: BatchItem[] | null = null;
  private readonly sockets: SessionSockets;
  private readonly maskers: SessionMaskers;
  /** Results are being journaled: replies wait for them (pumpBack). */
  private journalingResults = false;
  private readonly recorder: SessionRecorder;
  private readonly planner: BatchPlanner;
  private readonly holds: StatementHolds;
  private readonly replies: ReplyPairing;
  private readonly ctx: PgListenerContext;
  private readonly services: PgSessionServices;

  constructor(socket: Socket, ctx: PgListenerContext) {
    this.ctx = ctx;
    this.services = ctx.services;
    this.sockets = new SessionSockets(socket, ctx.secureContext, this);
    this.maskers = new SessionMaskers(ctx.services.masking, ctx.connection);
    this.recorder = new SessionRecorder(this.id, ctx, this.maskers, (err) =>
      this.fatal({ severity: 'FATAL', code: SqlState.SystemError, message: `the audit log cannot record results, so the gateway ends this session: ${err.message}` }),
    );
    this.planner = new BatchPlanner(ctx, this.maskers);
    this.holds = new StatementHolds(ctx, this.id, this.maskers);
    this.replies = new ReplyPairing(this, this.sockets, this.recorder, this.maskers, ctx, this.id);
    ctx.sessions.add(this);
  }

  get clientAddress(): string {
    return this.sockets.raw.remoteAddress ?? 'unknown';
  }

  // ---------------------------------------------------------------- socket events (session-sockets.ts)

  get acceptsDirectTls(): boolean {
    return this.phase === 'startup' && this.startupParams.size === 0;
  }

  clientClosed(): void {
    this.close(this.endReason);
  }

  /** The client finished sending (half-close): a partial message left over is a truncated one. */
  clientEnded(): void {
    const left = this.sockets.frontend.buffered;
    // While waiting, whole messages may still sit in the buffer; the client is gone either way.
    if (left > 0 && this.phase !== 'closed' && !this.sockets.frontWaiting) {
      this.fatal({ severity: 'FATAL', code: SqlState.ProtocolViolation, message: `incomplete message from client: the connection ended ${left} bytes into a message` });
      return;
    }
    // The client sends nothing more. Messages it queued without a Sync would never run (the
    // server rolls back an unsynced implicit transaction at end of input too), a held statement
    // dies with its client, and a running one is cancelled: the upstream is released now, never
    // left waiting for a Sync that cannot come.
    this.close(this.phase === 'ready' && (this.planner.hasQueued || this.stalled) ? 'client disconnected with unsynchronized messages' : this.endReason);
  }

  upstreamClosed(): void {
    if (this.phase !== 'closed') this.fatal({ severity: 'FATAL', code: SqlState.ConnectionFailure, message: 'the upstream server closed the connection' });
  }

  socketFailed(reason: string): void {
    this.endReason = reason;
  }

  // ---------------------------------------------------------------- reply pairing's requests (reply-pairing.ts)

  upstreamFatal(reason: string): void {
    this.endReason = reason;
  }

  skipToSync(): void {
    this.planner.discardUntilSync = true;
  }

  /** Ends the connection with an error the client can show (FATAL), records why. */
  fatal(error: ErrorInit, reason?: string): void {
    if (this.phase === 'closed') return;
    this.endReason = reason ?? error.message;
    if (this.started) {
      this.services.log.debug(`postgres ${this.ctx.connection.name}: session ${this.id} ends: ${this.endReason}`);
      this.recorder.fatal(error);
    }
    // Replies whose results are not journaled yet never go out.
    if (this.journalingResults || this.recorder.owesResults) this.sockets.discardClientOutput();
    this.sockets.holdClient = false;
    this.sockets.sendClient(buildErrorResponse({ ...error, severity: 'FATAL' }));
    this.sockets.flushClient();
    this.sockets.endClient();
    this.close(this.endReason);
  }

  private fatalFrom(err: unknown): void {
    if (err instanceof ProtocolError) this.fatal({ severity: 'FATAL', code: err.sqlState, message: err.message });
    else {
      this.services.log.error(`postgres ${this.ctx.connection.name}: session ${this.id}: ${err instanceof Error ? err.stack : String(err)}`);
      this.fatal({ severity: 'FATAL', code: SqlState.InternalError, message: `gateway error: ${err instanceof Error ? err.message : String(err)}` });
    }
  }

  // ---------------------------------------------------------------- client messages

  pumpFront(): void {
    const sockets = this.sockets;
    try {
      while (!sockets.frontWaiting && this.phase !== 'closed') {
        const message = sockets.frontend.next();
        if (!message) break;
        this.onClientMessage(message);
      }
    } catch (err) {
      this.fatalFrom(err);
      return;
    }
    sockets.flushUpstream();
    sockets.flushClient();
  }

  /**
   * Stops taking client messages until `resume` (auth, upstream login, a hold). `pause: false`
   * keeps reading the socket into the buffer (up to a bound), so a client that sends Terminate or
   * goes away while its statement is held is seen at once and its hold cancelled.
   */
  private wait(pause = true): void {
    this.sockets.wait(pause);
  }

  private resume(pump = true): void {
    this.sockets.frontWaiting = false;
    if (this.phase === 'closed') return;
    this.sockets.resumeClient();
    if (pump) this.pumpFront();
  }

  private onClientMessage(message: RawMessage): void {
    switch (this.phase) {
      case 'startup':
        return this.onStartupPacket(message);
      case 'password':
        return this.onPassword(message);
      case 'ready':
        if (this.planner.queue(message)) this.runBatch();
        return;
      default:
        return;
    }
  }

  // ---------------------------------------------------------------- startup and login (startup.ts, login.ts)

  private onStartupPacket(message: RawMessage): void {
    const sockets = this.sockets;
    const step = startupStep(parseStartupPacket(message.body), { tls: sockets.tls, remoteAddress: sockets.raw.remoteAddress, buffered: sockets.frontend.buffered });
    switch (step.kind) {
      case 'start-tls':
        return sockets.acceptSslRequest();
      case 'decline-gssenc':
        return sockets.sendClient(Buffer.from('N'));
      case 'cancel':
        this.phase = 'closed';
        this.ctx.sessions.delete(this);
        routeCancelRequest(this.ctx.cancelKeys, step.pid, step.secret);
        sockets.client.end();
        return;
      case 'login':
        // Typed messages follow (or nothing: a refused client's connection ends now).
        this.startupParams = step.params;
        sockets.frontend.startupPhase = false;
        if (step.negotiate) sockets.sendClient(step.negotiate);
        if (step.refusal) return this.fatal(step.refusal);
        {
          // A gateway the shared store has not admitted serves nothing (docs/SCALE-OUT.md, enrolment).
          const refusal = this.services.admissionRefusal?.();
          if (refusal !== undefined) return this.fatal({ severity: 'FATAL', code: SqlState.CannotConnectNow, message: refusal });
        }
        this.phase = 'password';
        sockets.sendClient(buildAuthenticationCleartextPassword());
    }
  }

  private onPassword(message: RawMessage): void {
    if (message.code !== FrontendCode.Password) throw new ProtocolError(`expected a password message, got message type ${codeName(message.code)}`);
    const password = parsePasswordMessage(message.body);
    this.phase = 'connecting';
    this.wait();
    void this.login(password);
  }

  /** Whether the session has ended (read after an await, where the phase may have changed). */
  private isClosed(): boolean {
    return this.phase === 'closed';
  }

  /** Authenticates the client, logs in to the upstream, records the session's start, then greets the client. */
  private async login(password: string): Promise<void> {
    const attempt: LoginAttempt = { user: this.startupParams.get('user') ?? '', clientAddress: this.clientAddress, startupParams: this.startupParams };
    const authenticated = await authenticateClient(this.ctx, password, attempt);
    if ('refusal' in authenticated) return this.fatal(authenticated.refusal);
    // The client may have gone while its credential was checked: nothing is registered for it then.
    if (this.isClosed()) return;
    const identity = authenticated.identity;
    this.identity = identity;
    this.planner.identity = identity;
    this.recorder.actor = identity.subject;
    // No session outlives its credential: expiry, revocation or a lock of the person ends it.
    this.unregisterLive = this.services.liveSessions?.register({
      protocol: 'postgres',
      identity,
      terminate: (why) => this.fatal({ severity: 'FATAL', code: SqlState.AdminShutdown, message: why }),
    });
    try {
      this.maskers.refresh();
    } catch (err) {
      this.fatal({ severity: 'FATAL', code: SqlState.SystemError, message: `the gateway cannot mask results for this connection, so it refuses it: ${(err as Error).message}` });
      return;
    }
    const connected = await connectUpstreamFor(this.ctx, identity, attempt);
    if ('refusal' in connected) return this.fatal(connected.refusal);
    const upstream = connected.upstream;
    if (this.phase === 'closed') {
      // The client went while the upstream login ran: close() has run, undo what came after it.
      this.unregisterLive?.();
      terminateUpstream(upstream.socket);
      return;
    }
    const target = this.ctx.target;
    try {
      this.recorder.started({
        identity,
        client: {
          address: this.clientAddress,
          port: this.sockets.raw.remotePort ?? null,
          tls: this.sockets.tls,
          user: attempt.user,
          database: this.startupParams.get('database') ?? null,
          applicationName: this.startupParams.get('application_name') ?? null,
        },
        database: target.database ?? this.startupParams.get('database') ?? attempt.user,
        upstream: { host: target.host, port: target.port, user: target.user, tls: upstream.tls, auth: upstream.auth, pid: upstream.pid, role: connected.role },
      });
    } catch (err) {
      terminateUpstream(upstream.socket);
      this.fatal({ severity: 'FATAL', code: SqlState.SystemError, message: `the audit log cannot record this session, so the gateway refuses it: ${(err as Error).message}` });
      return;
    }
    this.started = true;
    this.sockets.attachUpstream(upstream);
    // The client sees the gateway's own key; a CancelRequest with it is routed to this backend.
    const key = issueCancelKey(this.ctx.cancelKeys, this);
    this.cancelPid = key.pid;
    this.replies.clientPid = key.pid;
    const sockets = this.sockets;
    sockets.sendClient(buildAuthenticationOk());
    for (const notice of upstream.notices) sockets.sendClient(maskErrorLike(notice, this.maskers.current));
    for (const [name, value] of upstream.parameters) sockets.sendClient(buildParameterStatus(name, value));
    sockets.sendClient(buildBackendKeyData(key.pid, key.secret));
    sockets.sendClient(buildReadyForQuery(upstream.status));
    this.serverState = new ProtocolState(upstream.status);
    this.phase = 'ready';
    sockets.flushClient();
    this.pumpBack();
    this.resume();
  }

  // ---------------------------------------------------------------- batches (batch-planner.ts)

  /**
   * Plans the queued client messages (up to a Sync, Flush, Query, FunctionCall, COPY message or
   * Terminate) as one batch: classifies and decides every statement, then forwards, holds or refuses
   * them together — a held statement holds everything queued behind it.
   */
  private runBatch(): void {
    const before = this.planner.beforePlanning(this.serverState);
    if (!before) {
      this.planBatch();
      return;
    }
    // The one asynchronous step allowed before planning: the batch waits, later messages queue
    // behind it, and the planner then runs synchronously on what the step prepared.
    const items = this.planner.takeQueued();
    this.wait(false);
    before.then(
      () => {
        if (this.phase === 'ready') this.planHeldBack(items);
      },
      (err: unknown) => this.fatalFrom(err),
    );
  }

  /** Plans messages that were held back (for a catalog lookup, or for the replies a stalled batch waited for). */
  private planHeldBack(items: BatchItem[]): void {
    this.planner.requeue(items);
    this.resume(false);
    this.planBatch();
    if (!this.sockets.frontWaiting) this.pumpFront();
    else this.sockets.flushUpstream();
  }

  private planBatch(): void {
    const items = this.planner.takeQueued();
    const batch = this.planner.plan(items, this.serverState.draft());
    if (!batch) {
      // A name this batch reads was last written by a segment whose replies are not all in (did
      // that Parse succeed?): wait for them, then plan the batch again. Only then is it decided.
      this.stalled = items;
      this.wait(false);
      return;
    }
    if (batch.wire.length === 0 && batch.runs.length === 0) return;
    if (batch.runs.length) {
      // Each statement is a new request: a gateway that stopped admitting (store.staleAfter, docs/SCALE-OUT.md)
      // runs none, even on a session it admitted before, so a key revoked meanwhile stops here too.
      const refusal = this.services.admissionRefusal?.();
      if (refusal !== undefined) {
        this.refuse(batch, { severity: 'ERROR', code: SqlState.CannotConnectNow, message: `statement refused: ${refusal}` });
        return;
      }
    }
    const denied = batch.runs.find((run) => run.decision.action === 'deny');
    if (denied) {
      const decision = denied.decision;
      this.refuse(batch, {
        severity: 'ERROR',
        code: SqlState.InsufficientPrivilege,
        message: `statement refused by policy "${decision.rule ?? 'default'}": ${decision.reason ?? 'denied'}`,
      });
      return;
    }
    const held = batch.runs.filter((run) => run.decision.action === 'hold');
    if (held.length === 0) {
      this.forward(batch);
      return;
    }
    this.wait(false);
    const where = {
      identity: this.identity!,
      // Inside an open transaction its locks stay held while approvers decide: the card says so.
      inTransaction: this.serverState.transactionStatus !== 'I',
      idleInTransactionMs: this.sockets.upstream?.idleInTransactionMs ?? 0,
    };
    void this.holds.request(held, where).then(
      (refusal) => {
        if (this.phase === 'closed') return;
        this.resume(false);
        if (refusal) this.refuse(batch, refusal);
        else this.forward(batch);
        this.pumpFront();
      },
      (err: unknown) => this.fatalFrom(err),
    );
  }

  /** The replies the stalled batch waited for are in: plan it again. */
  private unstall(): void {
    if (!this.stalled || !this.serverState.quiet || this.phase !== 'ready') return;
    const items = this.stalled;
    this.stalled = null;
    this.planHeldBack(items);
  }

  /**
   * Records the batch's statements, then sends it. The commit is shared with the other sessions of
   * this event-loop turn; until it is done this session takes no further client messages, so
   * nothing overtakes a statement on its way to the log.
   */
  private forward(batch: PlannedBatch): void {
    if (batch.runs.length === 0) {
      this.send(batch);
      return;
    }
    this.sockets.frontWaiting = true;
    this.recorder.statements(batch.runs, (err) => {
      if (this.phase === 'closed') return;
      if (err) this.refuse(batch, { severity: 'ERROR', code: SqlState.SystemError, message: `statement refused: the audit log cannot record it (${err.message})` }, true);
      else this.send(batch);
      this.sockets.frontWaiting = false;
      this.pumpFront();
    }, this);
  }

  private send(batch: PlannedBatch): void {
    batch.draft.commit();
    const now = Date.now();
    for (const run of batch.runs) run.startedAt = now;
    for (const message of batch.wire) this.sockets.sendUpstream(message);
    for (const reply of batch.expected) this.replies.expect(reply);
    if (batch.boundary === 'terminate') {
      this.endReason = 'client terminated the session';
      this.sockets.flushUpstream();
      this.sockets.client.end();
    }
  }

  /** Answers the batch with `error` the way PostgreSQL answers a failed statement (see the file comment). */
  private refuse(batch: PlannedBatch, error: ErrorInit, logUnavailable = false): void {
    this.planner.undo(batch);
    if (!logUnavailable && batch.runs.length > 0) {
      try {
        this.recorder.refused(batch.runs, error);
      } catch {
        // refusing anyway: nothing of this batch reaches the upstream
      }
    }
    // The refused batch never reaches the server, so none of its planning enters the prediction;
    // the failing stand-in does.
    const standIn = this.planner.standIn(batch.boundary, error, this.serverState.draft());
    for (const message of standIn.wire) this.sockets.sendUpstream(message);
    for (const reply of standIn.expected) this.replies.expect(reply);
    if (batch.boundary === 'terminate') this.sockets.client.end();
  }

  /** A CancelRequest carrying this session's key arrived. */
  cancel(): void {
    if (this.holds.cancel()) return;
    const upstream = this.sockets.upstream;
    if (upstream) {
      sendUpstreamCancel(this.ctx.target, upstream.pid, upstream.secret).catch((err: unknown) =>
        this.services.log.warn(`postgres ${this.ctx.connection.name}: cancel request failed: ${(err as Error).message}`),
      );
    }
  }

  // ---------------------------------------------------------------- upstream replies (reply-pairing.ts)

  pumpBack(): void {
    const sockets = this.sockets;
    const upstream = sockets.upstream;
    if (!upstream || this.phase !== 'ready' || this.journalingResults) return;
    try {
      while (!sockets.backWaiting && this.phase === 'ready') {
        const message = upstream.buffer.next();
        if (!message) break;
        this.onReply(message);
      }
    } catch (err) {
      this.fatalFrom(err);
      return;
    }
    if (this.phase !== 'ready') return;
    if (this.recorder.owesResults) {
      // No reply reaches the client before its result is in the journal: the replies wait (and
      // later ones queue behind them) until the end of this turn's journal write.
      this.journalingResults = true;
      sockets.holdClient = true;
      this.recorder.journalResults((err) => {
        this.journalingResults = false;
        this.sockets.holdClient = false;
        if (this.phase === 'closed') return;
        if (err) {
          // The server has acted; the client must not be told otherwise, nor invited to retry.
          this.sockets.discardClientOutput();
          // A result the shared store did not take (`remoteCommit: sync`) is in the local log: nothing to note.
          if (!(err instanceof RemoteCommitError)) this.services.store.noteUnrecorded?.({ result: 'pg.result', session: this.id, actor: this.identity?.subject, connection: this.ctx.connection.name, error: err.message, client: 'FATAL, connection closed' });
          this.fatal({ severity: 'FATAL', code: SqlState.SystemError, message: `the audit log cannot record results, so the gateway ends this session without them: ${err.message}` });
          return;
        }
        this.sockets.flushClient();
        this.pumpBack();
      });
      return;
    }
    sockets.flushClient();
  }

  private onReply(message: RawMessage): void {
    const mismatch = this.serverState.reply(message.code, message.body);
    if (mismatch !== null) {
      // The server is not in the state the gateway decided on: nothing more can be trusted.
      this.fatal(
        { severity: 'FATAL', code: SqlState.ProtocolViolation, message: `the gateway ends this session: the server's reply does not match its prediction (${mismatch})` },
        `protocol state mismatch: ${mismatch}`,
      );
      return;
    }
    // A reply can settle what a stalled batch waits for (an error settles every request the server now skips).
    if (this.stalled && this.serverState.quiet) queueMicrotask(() => this.unstall());
    this.replies.pair(message);
  }

  // ---------------------------------------------------------------- end

  /** Ends the session (both sockets) and records why. Idempotent. */
  close(reason: string): void {
    if (this.phase === 'closed') {
      this.ctx.sessions.delete(this);
      return;
    }
    this.phase = 'closed';
    this.ctx.sessions.delete(this);
    this.ctx.writer.forget(this);
    this.unregisterLive?.();
    this.holds.cancel();
    this.stalled = null;
    if (this.cancelPid) this.ctx.cancelKeys.delete(this.cancelPid);
    const upstream = this.sockets.upstream;
    // Closing the socket does not stop a statement the server is running: cancel it first.
    if (upstream && this.replies.statementRunning) {
      sendUpstreamCancel(this.ctx.target, upstream.pid, upstream.secret).catch((err: unknown) =>
        this.services.log.warn(`postgres ${this.ctx.connection.name}: cancel request failed: ${(err as Error).message}`),
      );
    }
    this.sockets.closeUpstream();
    this.planner.takeQueued();
    this.sockets.endClient();
    this.replies.abandon(reason);
    // Results still owed are written (their replies never went out).
    this.recorder.settleResults();
    if (!this.started) return;
    try {
      this.recorder.ended({ reason, durationMs: Date.now() - this.startedAt, statements: this.planner.statementCount });
    } catch (err) {
      this.services.log.error(`postgres ${this.ctx.connection.name}: cannot record the end of session ${this.id}: ${(err as Error).message}`);
    }
  }

  /** Gateway shutdown: tell the client why, then close. */
  shutdown(): void {
    this.fatal({ severity: 'FATAL', code: SqlState.AdminShutdown, message: 'terminating connection: the Custody gateway is shutting down' }, 'gateway shutting down');
  }
}
