/**
 * One client connection through a PostgreSQL listener, from the first byte to the last:
 *
 *   startup    SSLRequest → TLS, GSSENCRequest → 'N', direct TLS (first byte 0x16), CancelRequest,
 *              StartupMessage (NegotiateProtocolVersion for 3.x minors and `_pq_.` options)
 *   password   AuthenticationCleartextPassword; the password is a Custody API key or an OIDC token
 *   connecting the upstream login with the connection's own credential
 *   ready      every client message is classified, decided by policy, recorded, then forwarded;
 *              what each Execute runs comes from the predicted server state (protocol-state.ts),
 *              which every reply is checked against (a mismatch ends the session); replies are
 *              paired with requests through a FIFO so rows can be masked and results recorded
 *              (recording.ts) (https://www.postgresql.org/docs/current/protocol-flow.html)
 *   closed     whatever the client does to leave, the upstream is released at once: a running
 *              statement is cancelled, a held one's hold is cancelled, unsynced messages dropped
 *
 * A refused statement is answered the way PostgreSQL answers a failed one: the gateway sends the
 * upstream a statement that cannot parse in its place, so the upstream itself rolls back the
 * implicit transaction (or marks the explicit one failed) and skips to Sync; its error is replaced
 * by the refusal (SQLSTATE 42501 with the reason) and the client's session stays usable.
 */
import type { Socket } from 'node:net';
import { parseDuration, type SqlClass } from '../../shared/config';
import type { Identity } from '../../shared/identity';
import { sqlHoldText } from '../approvals/hold-queue';
import type { HoldOutcome } from '../approvals/types';
import { newId } from '../ids';
import type { PolicyDecision } from '../policy/types';
import {
  buildAuthenticationCleartextPassword,
  buildAuthenticationOk,
  buildBackendKeyData,
  buildErrorResponse,
  buildParameterStatus,
  buildReadyForQuery,
  type ErrorInit,
} from './backend-messages';
import { type Classification, classifySql, type CopyOutShape } from './classify';
import { foldEffects } from './effects';
import { withLineage } from './lineage';
import {
  buildClose,
  buildDescribe,
  buildFlush,
  buildParse,
  buildQuery,
  buildSync,
  parseBind,
  parseExecute,
  parseFunctionCall,
  parseParse,
  parsePasswordMessage,
  parseQuery,
  parseStartupPacket,
  parseTarget,
} from './frontend-messages';
import { ProtocolError, type RawMessage } from './message-buffer';
import { codeName, FrontendCode, isFrontendCode, SqlState } from './message-codes';
import { redactStatementSecrets } from './statement-secrets';
import type { Portal, PreparedStatement, StatementRun } from './recording';
import { type ExpectedReply, maskErrorLike, ReplyPairing, type ReplyPairingHost } from './reply-pairing';
import { SessionMaskers } from './session-maskers';
import { SessionRecorder } from './session-recorder';
import { type Draft, ProtocolState, type QueryStatement } from './protocol-state';
import { type NamespaceEffect, namespaceEffects } from './sql-namespace';
import type { ListenedSession, PgListenerContext, PgSessionServices } from './session-context';
import { type SessionSocketEvents, SessionSockets } from './session-sockets';
import { authenticateClient, connectUpstreamFor, type LoginAttempt } from './login';
import { issueCancelKey, routeCancelRequest, startupStep } from './startup';
import { sendUpstreamCancel, terminateUpstream } from './upstream';

/** Sent upstream in place of a refused statement: it cannot parse, so the upstream fails it. */
export const REFUSED_STATEMENT_SQL = 'CUSTODY_REFUSED_STATEMENT';
/** The gateway's own prepared statement for learning a COPY's columns (closed right away). */
const COPY_DESCRIBE_STATEMENT = 'custody_copy_columns';

type Item =
  | { kind: 'parse'; m: RawMessage }
  | { kind: 'bind'; m: RawMessage }
  | { kind: 'describe'; m: RawMessage }
  | { kind: 'execute'; m: RawMessage }
  | { kind: 'close'; m: RawMessage }
  | { kind: 'sync'; m: RawMessage }
  | { kind: 'flush'; m: RawMessage }
  | { kind: 'query'; m: RawMessage }
  | { kind: 'function'; m: RawMessage }
  | { kind: 'copy'; m: RawMessage }
  | { kind: 'terminate'; m: RawMessage };

/** What forwarding a batch puts on the wire and in the FIFO, prepared before anything is sent. */
interface Step {
  raw: Buffer[];
  expect: ExpectedReply[];
  runs: StatementRun[];
}

const MAX_BATCH_MESSAGES = 1000;
const MAX_BATCH_BYTES = 8 * 1024 * 1024;
const SUMMARY_CHARS = 500;

function paramText(v: Buffer | null, format: number): string | null {
  if (v === null) return null;
  return format === 1 ? `\\x${v.toString('hex')}` : v.toString('utf8');
}

export class PgProxySession implements ListenedSession, SessionSocketEvents, ReplyPairingHost {
  readonly id = newId('pg');
  private readonly sockets: SessionSockets;
  private phase: 'startup' | 'password' | 'connecting' | 'ready' | 'closed' = 'startup';
  private startupParams = new Map<string, string>();
  private identity: Identity | undefined;
  private started = false;
  private readonly startedAt = Date.now();
  private batch: Item[] = [];
  private batchBytes = 0;
  private discardUntilSync = false;
  /** The previous batch held DDL: the catalog's cache is dropped again once it has run. */
  private ddlBefore = false;
  /** Leaves the live-session registry (set once authenticated). */
  private unregisterLive?: () => void;
  /** The current batch's texts as classified by the pre-step. */
  private readonly preclassified = new Map<string, Classification>();
  /** Pairs each upstream reply with its request (reply-pairing.ts). */
  private readonly replies: ReplyPairing;
  /** The server's statements and portals, predicted and checked against every reply (protocol-state.ts). */
  private proto = new ProtocolState<PreparedStatement, Portal>();
  /** A batch that read a name an earlier, unanswered segment wrote: planned again once the replies are in. */
  private stalled: Item[] | null = null;
  private statementCount = 0;
  private holdAbort: AbortController | null = null;
  private readonly maskers: SessionMaskers;
  private readonly recorder: SessionRecorder;
  private cancelPid = 0;
  private endReason = 'client disconnected';
  private readonly ctx: PgListenerContext;
  private readonly s: PgSessionServices;

  constructor(socket: Socket, ctx: PgListenerContext) {
    this.ctx = ctx;
    this.s = ctx.services;
    this.sockets = new SessionSockets(socket, ctx.secureContext, this);
    this.maskers = new SessionMaskers(this.s.masking, ctx.connection);
    this.recorder = new SessionRecorder(this.id, ctx, this.maskers, (err) =>
      this.fatal({ severity: 'FATAL', code: SqlState.SystemError, message: `the audit log cannot record results, so the gateway ends this session: ${err.message}` }),
    );
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
    this.close(this.phase === 'ready' && (this.batch.length > 0 || this.stalled) ? 'client disconnected with unsynchronized messages' : this.endReason);
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
    this.discardUntilSync = true;
  }

  private sendClient(buf: Buffer): void {
    this.sockets.toClient.push(buf);
  }

  /** Ends the connection with an error the client can show (FATAL), records why. */
  fatal(error: ErrorInit, reason?: string): void {
    if (this.phase === 'closed') return;
    this.endReason = reason ?? error.message;
    if (this.started) {
      this.s.log.debug(`postgres ${this.ctx.connection.name}: session ${this.id} ends: ${this.endReason}`);
      this.recorder.fatal(error);
    }
    this.sockets.sendClient(buildErrorResponse({ ...error, severity: 'FATAL' }));
    this.sockets.flushClient();
    this.sockets.endClient();
    this.close(this.endReason);
  }

  private fatalFrom(err: unknown): void {
    if (err instanceof ProtocolError) this.fatal({ severity: 'FATAL', code: err.sqlState, message: err.message });
    else {
      this.s.log.error(`postgres ${this.ctx.connection.name}: session ${this.id}: ${err instanceof Error ? err.stack : String(err)}`);
      this.fatal({ severity: 'FATAL', code: SqlState.InternalError, message: `gateway error: ${err instanceof Error ? err.message : String(err)}` });
    }
  }

  // ---------------------------------------------------------------- frontend pump

  pumpFront(): void {
    const sockets = this.sockets;
    try {
      while (!sockets.frontWaiting && this.phase !== 'closed') {
        const m = sockets.frontend.next();
        if (!m) break;
        this.onFront(m);
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

  private onFront(m: RawMessage): void {
    switch (this.phase) {
      case 'startup':
        return this.onStartupPacket(m);
      case 'password':
        return this.onPassword(m);
      case 'ready':
        return this.onReadyMessage(m);
      default:
        return;
    }
  }

  // ---------------------------------------------------------------- startup and authentication

  private onStartupPacket(m: RawMessage): void {
    const sockets = this.sockets;
    const step = startupStep(parseStartupPacket(m.body), { tls: sockets.tls, remoteAddress: sockets.raw.remoteAddress, buffered: sockets.frontend.buffered });
    switch (step.kind) {
      case 'start-tls':
        return sockets.acceptSslRequest();
      case 'decline-gssenc':
        return this.sendClient(Buffer.from('N'));
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
        if (step.negotiate) this.sendClient(step.negotiate);
        if (step.refusal) return this.fatal(step.refusal);
        this.phase = 'password';
        this.sendClient(buildAuthenticationCleartextPassword());
    }
  }

  private onPassword(m: RawMessage): void {
    if (m.code !== FrontendCode.Password) throw new ProtocolError(`expected a password message, got message type ${codeName(m.code)}`);
    const password = parsePasswordMessage(m.body);
    this.phase = 'connecting';
    this.wait();
    void this.login(password);
  }

  /** Authenticates the client, logs in to the upstream, records the session's start, then greets the client. */
  private async login(password: string): Promise<void> {
    const attempt: LoginAttempt = { user: this.startupParams.get('user') ?? '', clientAddress: this.clientAddress, startupParams: this.startupParams };
    const authenticated = await authenticateClient(this.ctx, password, attempt);
    if ('refusal' in authenticated) return this.fatal(authenticated.refusal);
    const identity = authenticated.identity;
    this.identity = identity;
    this.recorder.actor = identity.subject;
    // No session outlives its credential: expiry, revocation or a lock of the person ends it.
    this.unregisterLive = this.s.liveSessions?.register({
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
    const up = connected.upstream;
    if (this.phase === 'closed') {
      terminateUpstream(up.socket);
      return;
    }
    const target = this.ctx.target;
    const database = target.database ?? this.startupParams.get('database') ?? attempt.user;
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
        database,
        upstream: { host: target.host, port: target.port, user: target.user, tls: up.tls, auth: up.auth, pid: up.pid, role: connected.role },
      });
    } catch (err) {
      terminateUpstream(up.socket);
      this.fatal({ severity: 'FATAL', code: SqlState.SystemError, message: `the audit log cannot record this session, so the gateway refuses it: ${(err as Error).message}` });
      return;
    }
    this.started = true;
    this.sockets.attachUpstream(up);
    // The client sees the gateway's own key; a CancelRequest with it is routed to this backend.
    const key = issueCancelKey(this.ctx.cancelKeys, this);
    this.cancelPid = key.pid;
    this.replies.clientPid = key.pid;
    this.sendClient(buildAuthenticationOk());
    for (const n of up.notices) this.sendClient(maskErrorLike(n, this.maskers.current));
    for (const [name, value] of up.parameters) this.sendClient(buildParameterStatus(name, value));
    this.sendClient(buildBackendKeyData(key.pid, key.secret));
    this.sendClient(buildReadyForQuery(up.status));
    this.proto = new ProtocolState(up.status);
    this.phase = 'ready';
    this.sockets.flushClient();
    this.pumpBack();
    this.resume();
  }

  // ---------------------------------------------------------------- ready: client messages

  private onReadyMessage(m: RawMessage): void {
    const c = m.code;
    let kind: Item['kind'];
    switch (c) {
      case FrontendCode.Parse:
        kind = 'parse';
        break;
      case FrontendCode.Bind:
        kind = 'bind';
        break;
      case FrontendCode.Describe:
        kind = 'describe';
        break;
      case FrontendCode.Execute:
        kind = 'execute';
        break;
      case FrontendCode.Close:
        kind = 'close';
        break;
      case FrontendCode.Sync:
        kind = 'sync';
        break;
      case FrontendCode.Flush:
        kind = 'flush';
        break;
      case FrontendCode.Query:
        kind = 'query';
        break;
      case FrontendCode.FunctionCall:
        kind = 'function';
        break;
      case FrontendCode.CopyData:
      case FrontendCode.CopyDone:
      case FrontendCode.CopyFail:
        kind = 'copy';
        break;
      case FrontendCode.Terminate:
        kind = 'terminate';
        break;
      case FrontendCode.Password:
        throw new ProtocolError('unexpected password message: the session is already authenticated');
      default:
        throw new ProtocolError(isFrontendCode(c) ? `unexpected message type ${codeName(c)}` : `invalid frontend message type ${codeName(c)}`);
    }
    this.batch.push({ kind, m } as Item);
    this.batchBytes += m.raw.length;
    const boundary = kind === 'sync' || kind === 'flush' || kind === 'query' || kind === 'function' || kind === 'copy' || kind === 'terminate';
    if (boundary || this.batch.length >= MAX_BATCH_MESSAGES || this.batchBytes >= MAX_BATCH_BYTES) this.runBatch();
  }

  // ---------------------------------------------------------------- classification by effect (catalog)

  /** A statement's classification with what the catalog knows about its calls, operators and relations folded in. */
  private classify(sql: string): Classification {
    return foldEffects(this.preclassified.get(sql) ?? classifySql(sql), this.ctx.routines.lookup());
  }

  private newRun(
    sql: string,
    c: { classes: SqlClass[]; tables: string[]; parseError?: string; copyOut?: CopyOutShape },
    protocol: StatementRun['protocol'],
    params?: readonly (string | null)[],
  ): StatementRun {
    // Detectors that policies match on look at the statement and its parameters. A scan that
    // cannot finish leaves the gateway unable to decide: the statement is refused (fail closed).
    let detectorHits: string[] | undefined;
    let scanError: string | undefined;
    const masker = this.maskers.current;
    const { lineage, classes } = withLineage(sql, c.classes, masker);
    try {
      detectorHits = masker.detectorHits(sql, params);
    } catch (err) {
      scanError = (err as Error).message;
    }
    let decision: PolicyDecision = detectorHits
      ? this.s.policy.evaluate({
          connection: this.ctx.connection.name,
          protocol: 'postgres',
          identity: this.identity!,
          sql: { classes, tables: c.tables },
          text: sql,
          detectorHits,
        })
      : { action: 'deny', rule: 'gateway', reason: `the gateway could not check the statement for the detectors its policies match on (${scanError}), so it refuses it` };
    // With per-group upstream roles the session's role is the gateway's choice, not the client's:
    // statements that change it, and those no rule decided that could (dynamic SQL), are refused.
    if (this.ctx.connection.roles && (c.classes.includes('set_role') || (c.classes.includes('unknown') && decision.rule === undefined))) {
      decision = { action: 'deny', rule: 'gateway', reason: `connection ${this.ctx.connection.name} runs each group as its own upstream role; statements that change the role, or that the gateway cannot see into, are refused` };
    }
    return {
      n: ++this.statementCount,
      // What is recorded and shown to approvers: passwords written into the statement are replaced.
      sql: redactStatementSecrets(sql),
      detectorHits: detectorHits?.length ? detectorHits : undefined,
      classes,
      lineage,
      tables: c.tables,
      protocol,
      parseError: c.parseError,
      decision,
      masker: decision.action === 'mask' ? this.maskers.forMaskDecision(decision) : masker,
      copyShape: c.copyOut,
      startedAt: 0,
      rows: 0,
      sample: [],
      spans: [],
      masked: {},
      finished: false,
    };
  }

  /** A prepared statement as `Parse` (or SQL `PREPARE`) creates it: its text, classes and namespace effects. */
  private prepared(name: string, sql: string, classification = this.classify(sql), effects = namespaceEffects(sql, classification.statements.length)?.flat() ?? []): PreparedStatement {
    let prepared: Map<string, PreparedStatement> | undefined;
    for (const e of effects) {
      if (e.k !== 'prepare') continue;
      prepared ??= new Map();
      // PostgreSQL keeps the whole text that carried the PREPARE as the statement's text.
      prepared.set(e.name, this.prepared(e.name, sql, this.classify(e.sql), []));
    }
    return { name, sql, classification, effects, ...(prepared ? { prepared } : {}), describing: false };
  }

  /**
   * Turns the queued client messages (up to a Sync, Flush, Query, FunctionCall, COPY message or
   * Terminate) into one step: classifies and decides every statement, then forwards, holds or refuses
   * them together — a held statement holds everything queued behind it.
   */
  private runBatch(): void {
    const before = this.beforePlanning(this.batch);
    if (before) {
      // The one asynchronous step allowed before planning: the batch waits, later messages queue
      // behind it, and the planner then runs synchronously on what the step prepared.
      const items = this.batch;
      this.batch = [];
      this.batchBytes = 0;
      this.wait(false);
      before.then(
        () => {
          if (this.phase !== 'ready') return;
          this.batch = [...items, ...this.batch];
          this.resume(false);
          this.planBatch();
          if (!this.sockets.frontWaiting) this.pumpFront();
          else this.sockets.flushUpstream();
        },
        (err: unknown) => this.fatalFrom(err),
      );
      return;
    }
    this.planBatch();
  }

  /**
   * The one asynchronous step in front of the planner: resolve through the catalog (what is not
   * cached) the routines, operators, types and relations used by the queued Parse and Query texts
   * and by the prepared statements the queued Binds name; null when everything is cached. DDL in a
   * batch drops the catalog's cache now and again before this session's next batch, since the DDL
   * runs in between.
   */
  private beforePlanning(items: readonly Item[]): Promise<void> | null {
    const catalog = this.ctx.routines;
    const texts: Classification[] = [];
    let ddl = false;
    // Kept for the planner, which would otherwise classify the same texts again.
    this.preclassified.clear();
    for (const item of items) {
      if (item.kind === 'bind') {
        // A statement parsed earlier is folded again at Execute: its names must be resolved too.
        const prepared = this.proto.confirmedStatement(parseBind(item.m.body).statement);
        if (prepared) texts.push(prepared.classification);
        continue;
      }
      if (item.kind !== 'parse' && item.kind !== 'query') continue;
      const text = item.kind === 'parse' ? parseParse(item.m.body).query : parseQuery(item.m.body);
      const c = classifySql(text);
      this.preclassified.set(text, c);
      texts.push(c);
      if (c.statements.some((st) => st.classes.some((x) => x === 'ddl' || x === 'routine_ddl' || x === 'unknown'))) ddl = true;
    }
    if (ddl || this.ddlBefore) catalog.invalidate();
    this.ddlBefore = ddl;
    return texts.some((c) => catalog.needs(c)) ? catalog.resolve(texts) : null;
  }

  private planBatch(): void {
    const items = this.batch;
    this.batch = [];
    this.batchBytes = 0;
    // Masking rules can change while a connection stays open (console edits): pick up the current ones.
    this.maskers.refresh();
    const undo: (() => void)[] = [];
    const step: Step = { raw: [], expect: [], runs: [] };
    const draft = this.proto.draft();
    const count = this.statementCount;
    const discarding = this.discardUntilSync;
    let boundary: Item['kind'] | null = null;
    for (const item of items) {
      if (this.discardUntilSync) {
        // The upstream already failed this batch: it skips to Sync, and so do we.
        if (item.kind !== 'sync') continue;
        this.discardUntilSync = false;
      }
      this.plan(item, step, undo, draft);
      if (item.kind === 'sync' || item.kind === 'flush' || item.kind === 'query' || item.kind === 'function' || item.kind === 'terminate') boundary = item.kind;
    }
    if (draft.stalled) {
      // A name this batch reads was last written by a segment whose replies are not all in (did
      // that Parse succeed?): wait for them, then plan the batch again. Only then is it decided.
      for (const u of undo.reverse()) u();
      this.statementCount = count;
      this.discardUntilSync = discarding;
      this.stalled = items;
      this.wait(false);
      return;
    }
    if (step.raw.length === 0 && step.runs.length === 0) return;
    const denied = step.runs.find((r) => r.decision.action === 'deny');
    if (denied) {
      const d = denied.decision;
      this.refuse(step, undo, boundary, {
        severity: 'ERROR',
        code: SqlState.InsufficientPrivilege,
        message: `statement refused by policy "${d.rule ?? 'default'}": ${d.reason ?? 'denied'}`,
      });
      return;
    }
    const held = step.runs.filter((r) => r.decision.action === 'hold');
    if (held.length === 0) {
      this.forward(step, undo, boundary, draft);
      return;
    }
    this.wait(false);
    void this.awaitHolds(held).then(
      (refusal) => {
        if (this.phase === 'closed') return;
        this.resume(false);
        if (refusal) this.refuse(step, undo, boundary, refusal);
        else this.forward(step, undo, boundary, draft);
        this.pumpFront();
      },
      (err: unknown) => this.fatalFrom(err),
    );
  }

  /** The replies the stalled batch waited for are in: plan it again. */
  private unstall(): void {
    if (!this.stalled || !this.proto.quiet || this.phase !== 'ready') return;
    const items = this.stalled;
    this.stalled = null;
    this.batch = [...items, ...this.batch];
    this.resume(false);
    this.planBatch();
    if (!this.sockets.frontWaiting) this.pumpFront();
    else this.sockets.flushUpstream();
  }

  /** What a statement that runs prepared statements (`EXECUTE name`) does: the classes of what it runs. */
  private withExecuted(
    c: { classes: SqlClass[]; tables: string[] },
    effects: readonly NamespaceEffect[],
    executes: readonly (PreparedStatement | null)[],
  ): { classes: SqlClass[]; tables: string[]; executes?: { name: string; sql: string | null }[] } {
    const names = effects.filter((e) => e.k === 'execute').map((e) => e.name);
    if (names.length === 0) return c;
    const classes = new Set<SqlClass>(c.classes.filter((k) => k !== 'unknown'));
    const tables = new Set(c.tables);
    executes.forEach((stmt) => {
      if (!stmt) classes.add('unknown');
      for (const st of stmt?.classification.statements ?? []) {
        for (const k of st.classes) classes.add(k);
        for (const t of st.tables) tables.add(t);
      }
      if (stmt?.classification.error || stmt?.classification.statements.length === 0) classes.add('unknown');
    });
    return { classes: [...classes], tables: [...tables], executes: names.map((name, i) => ({ name, sql: executes[i]?.sql ?? null })) };
  }

  private plan(item: Item, step: Step, undo: (() => void)[], draft: Draft<PreparedStatement, Portal>): void {
    const { m } = item;
    switch (item.kind) {
      case 'parse': {
        const p = parseParse(m.body);
        draft.parse(p.name, this.prepared(p.name, p.query));
        step.raw.push(m.raw);
        step.expect.push({ kind: 'parse' });
        return;
      }
      case 'bind': {
        const b = parseBind(m.body);
        const fmt = (i: number) => (b.paramFormats.length === 0 ? 0 : b.paramFormats.length === 1 ? b.paramFormats[0]! : (b.paramFormats[i] ?? 0));
        draft.bind(b.portal, b.statement, (statement) => ({
          name: b.portal,
          statement,
          params: b.params.map((v, i) => paramText(v, fmt(i))),
          resultFormats: b.resultFormats,
          describing: false,
        }));
        step.raw.push(m.raw);
        step.expect.push({ kind: 'bind' });
        return;
      }
      case 'describe': {
        const t = parseTarget(m.body, 'Describe');
        const known = draft.describe(t.target, t.name);
        step.raw.push(m.raw);
        if (t.target === 'S') {
          const stmt = (known as PreparedStatement | null) ?? this.prepared(t.name, '', { statements: [] }, []);
          const was = stmt.describing;
          stmt.describing = true;
          undo.push(() => (stmt.describing = was));
          step.expect.push({ kind: 'describe-statement', statement: stmt });
        } else {
          const portal = (known as Portal | null) ?? { name: t.name, statement: this.prepared('', '', { statements: [] }, []), params: [], resultFormats: [], describing: false };
          const was = portal.describing;
          portal.describing = true;
          undo.push(() => (portal.describing = was));
          step.expect.push({ kind: 'describe-portal', portal, internal: false });
        }
        return;
      }
      case 'execute': {
        const e = parseExecute(m.body);
        // Masking needs the result's columns; if the client did not ask for them, the gateway does.
        // Its Describe goes before the Execute, in the prediction as on the wire.
        const peek = draft.peekPortal(e.portal);
        const describe = this.maskers.current.active && peek && !peek.fields && !peek.describing && !peek.statement.fields && !peek.statement.describing;
        if (describe) draft.describe('P', e.portal);
        const { portal, executes } = draft.execute(e.portal);
        const stmt = portal?.statement;
        // Folded again with what the catalog says now: a routine replaced since the Parse counts.
        const statements = stmt ? foldEffects(stmt.classification, this.ctx.routines.lookup()).statements : [];
        const sql = stmt?.sql ?? '';
        const c = stmt
          ? this.withExecuted(
              { classes: [...new Set(statements.flatMap((s) => s.classes))] as SqlClass[], tables: [...new Set(statements.flatMap((s) => s.tables))] },
              stmt.effects,
              executes,
            )
          : { classes: ['unknown'] as SqlClass[], tables: [] };
        const run = this.newRun(sql, { ...c, parseError: stmt ? stmt.classification.error : `no prepared statement for portal "${e.portal}"` }, 'extended', portal?.params);
        run.params = portal?.params;
        run.statementName = stmt?.name;
        run.portal = e.portal;
        run.portalRef = portal ?? undefined;
        if ('executes' in c) run.executes = c.executes;
        step.runs.push(run);
        if (describe && portal) {
          portal.describing = true;
          undo.push(() => (portal.describing = false));
          step.raw.push(buildDescribe('P', e.portal));
          step.expect.push({ kind: 'describe-portal', portal, internal: true });
        }
        step.raw.push(m.raw);
        step.expect.push({ kind: 'execute', run });
        return;
      }
      case 'close': {
        const t = parseTarget(m.body, 'Close');
        draft.close(t.target, t.name);
        step.raw.push(m.raw);
        step.expect.push({ kind: 'close' });
        return;
      }
      case 'sync':
        draft.sync();
        step.raw.push(m.raw);
        step.expect.push({ kind: 'sync' });
        return;
      case 'flush':
        step.raw.push(m.raw);
        return;
      case 'query': {
        const sql = parseQuery(m.body);
        const c = this.classify(sql);
        const effects = namespaceEffects(sql, c.statements.length);
        // Split by the same parser: statement i of both lists is the same statement.
        const aligned = effects !== null && !c.error && effects.length === c.statements.length;
        const statements: QueryStatement<PreparedStatement>[] | null = aligned
          ? effects.map((fx) => {
              const prepared = new Map<string, PreparedStatement>();
              for (const e of fx) if (e.k === 'prepare') prepared.set(e.name, this.prepared(e.name, sql, this.classify(e.sql), []));
              return { effects: fx, ...(prepared.size ? { prepared } : {}) };
            })
          : null;
        const mark = draft.mark();
        const executes = draft.query(statements);
        const runs = c.statements.map((s, i) => {
          const x = this.withExecuted(s, statements?.[i]?.effects ?? [], executes[i] ?? []);
          const run = this.newRun(s.sql, { ...s, ...x, parseError: c.error }, 'simple');
          if ('executes' in x) run.executes = x.executes;
          return run;
        });
        step.runs.push(...runs);
        // COPY … TO rows carry no column names: learn them first (on this session, so its
        // search_path applies), so column rules can mask them like DataRow values.
        draft.insertAt(mark, () => {
          for (const run of runs) {
            const shape = run.copyShape;
            if (!shape || shape.format === 'binary' || !run.masker.active) continue;
            if (!shape.describeSql) {
              run.copyColumns = false;
              continue;
            }
            const stmt = this.prepared(COPY_DESCRIBE_STATEMENT, shape.describeSql, { statements: [] }, []);
            stmt.describing = true;
            draft.parse(COPY_DESCRIBE_STATEMENT, stmt);
            draft.describe('S', COPY_DESCRIBE_STATEMENT);
            draft.close('S', COPY_DESCRIBE_STATEMENT);
            draft.sync();
            step.raw.push(buildParse(COPY_DESCRIBE_STATEMENT, shape.describeSql), buildDescribe('S', COPY_DESCRIBE_STATEMENT), buildClose('S', COPY_DESCRIBE_STATEMENT), buildSync());
            step.expect.push({ kind: 'parse', internal: true }, { kind: 'describe-statement', statement: stmt, internal: true, copyFor: run }, { kind: 'close', internal: true }, { kind: 'sync', internal: true });
          }
        });
        step.raw.push(m.raw);
        step.expect.push({ kind: 'query', runs, index: 0 });
        return;
      }
      case 'function': {
        const f = parseFunctionCall(m.body);
        // The fast-path call runs any function by OID, with effects the gateway cannot see: never read-only.
        draft.functionCall();
        const run = this.newRun(`-- FunctionCall oid ${f.functionOid} (${f.args} arguments)`, { classes: ['unknown'], tables: [] }, 'function');
        step.runs.push(run);
        step.raw.push(m.raw);
        step.expect.push({ kind: 'function-call', run });
        return;
      }
      case 'copy':
        step.raw.push(m.raw);
        return;
      case 'terminate':
        step.raw.push(m.raw);
        return;
    }
  }

  /**
   * The hold's spec for a statement waiting inside an open transaction: its timeout capped below
   * the server's idle_in_transaction_session_timeout, which would otherwise end the session (and
   * the transaction) while approvers still look at it.
   */
  private holdSpec(spec: NonNullable<PolicyDecision['hold']>, inTransaction: boolean): NonNullable<PolicyDecision['hold']> {
    const idle = this.sockets.upstream?.idleInTransactionMs ?? 0;
    if (!inTransaction || idle <= 0) return spec;
    const wanted = parseDuration(spec.timeout ?? '5m');
    const cap = Math.max(1, idle - Math.min(5000, Math.floor(idle / 10)));
    if (wanted <= cap) return spec;
    this.s.log.info(
      `postgres ${this.ctx.connection.name}: session ${this.id}: hold timeout ${spec.timeout} capped to ${cap} ms, below the server's idle_in_transaction_session_timeout (${idle} ms)`,
    );
    return { ...spec, timeout: `${cap}ms` };
  }

  private async awaitHolds(runs: StatementRun[]): Promise<ErrorInit | null> {
    // Inside an open transaction its locks stay held while approvers decide: the card says so.
    const inTransaction = this.proto.transactionStatus !== 'I';
    for (const run of runs) {
      const d = run.decision;
      const abort = new AbortController();
      this.holdAbort = abort;
      const cancelled = new Promise<'cancelled'>((resolve) => abort.signal.addEventListener('abort', () => resolve('cancelled'), { once: true }));
      let outcome: HoldOutcome | 'cancelled';
      try {
        outcome = await Promise.race([
          this.s.holds.request({
            identity: this.identity!,
            connection: this.ctx.connection.name,
            protocol: 'postgres',
            session: this.id,
            rule: d.rule ?? 'hold',
            ruleReason: d.reason,
            ...sqlHoldText(this.maskers.forLog(run.sql).text, run.params?.map((p) => (p === null ? null : this.maskers.forLog(p).text)), SUMMARY_CHARS),
            spec: this.holdSpec(d.hold!, inTransaction),
            ...(inTransaction ? { inTransaction } : {}),
            signal: abort.signal,
          }),
          cancelled,
        ]);
      } catch (err) {
        // No hold, no statement: the approval it needs cannot be asked for.
        return {
          severity: 'ERROR',
          code: SqlState.InsufficientPrivilege,
          message: `statement needs approval by policy "${d.rule ?? 'hold'}", but the hold could not be created: ${(err as Error).message}`,
        };
      } finally {
        this.holdAbort = null;
      }
      if (outcome === 'cancelled' || outcome.state === 'cancelled') {
        if (this.phase === 'closed') return null;
        return { severity: 'ERROR', code: SqlState.QueryCanceled, message: 'canceling statement due to user request (it was waiting for approval)' };
      }
      if (outcome.state !== 'approved') {
        const by = outcome.decidedBy.length ? ` by ${outcome.decidedBy.join(', ')}` : '';
        return {
          severity: 'ERROR',
          code: SqlState.InsufficientPrivilege,
          message: `statement held for approval by policy "${d.rule ?? 'hold'}" was ${outcome.state}${by}: ${outcome.reason}`,
        };
      }
    }
    return null;
  }

  /**
   * Records the step's statements, then sends it. The commit is shared with the other sessions of
   * this event-loop turn; until it is done this session takes no further client messages, so
   * nothing overtakes a statement on its way to the log.
   */
  private forward(step: Step, undo: (() => void)[], boundary: Item['kind'] | null, draft: Draft<PreparedStatement, Portal>): void {
    if (step.runs.length === 0) {
      this.send(step, boundary, draft);
      return;
    }
    this.sockets.frontWaiting = true;
    this.recorder.statements(step.runs, (err) => {
      if (this.phase === 'closed') return;
      if (err)
        this.refuse(step, undo, boundary, {
          severity: 'ERROR',
          code: SqlState.SystemError,
          message: `statement refused: the audit log cannot record it (${err.message})`,
        }, true);
      else this.send(step, boundary, draft);
      this.sockets.frontWaiting = false;
      this.pumpFront();
    }, this);
  }

  private send(step: Step, boundary: Item['kind'] | null, draft: Draft<PreparedStatement, Portal>): void {
    draft.commit();
    const now = Date.now();
    for (const r of step.runs) r.startedAt = now;
    for (const raw of step.raw) this.sockets.sendUpstream(raw);
    for (const e of step.expect) this.replies.expect(e);
    if (boundary === 'terminate') {
      this.endReason = 'client terminated the session';
      this.sockets.flushUpstream();
      this.sockets.client.end();
    }
  }

  /** Answers the batch with `error` the way PostgreSQL answers a failed statement (see the file comment). */
  private refuse(step: Step, undo: (() => void)[], boundary: Item['kind'] | null, error: ErrorInit, storeDown = false): void {
    for (const u of undo.reverse()) u();
    if (!storeDown && step.runs.length > 0) {
      try {
        this.recorder.refused(step.runs, error);
      } catch {
        // refusing anyway: nothing of this batch reaches the upstream
      }
    }
    // The refused batch never reaches the server, so none of its planning enters the prediction;
    // the failing stand-in does (an unnamed Parse or a Query drops the unnamed statement).
    const draft = this.proto.draft();
    if (boundary === 'query' || boundary === 'function') {
      draft.query([]);
      draft.commit();
      this.sockets.sendUpstream(buildQuery(REFUSED_STATEMENT_SQL));
      this.replies.expect({ kind: 'query', runs: [], index: 0, refusal: error });
      return;
    }
    draft.parse('', this.prepared('', REFUSED_STATEMENT_SQL, { statements: [] }, []));
    this.sockets.sendUpstream(buildParse('', REFUSED_STATEMENT_SQL));
    this.replies.expect({ kind: 'refusal', error });
    if (boundary === 'sync') {
      draft.sync();
      draft.commit();
      this.sockets.sendUpstream(buildSync());
      this.replies.expect({ kind: 'sync' });
    } else {
      draft.commit();
      if (boundary === 'flush') this.sockets.sendUpstream(buildFlush());
      this.discardUntilSync = true;
    }
    if (boundary === 'terminate') this.sockets.client.end();
  }

  /** A CancelRequest carrying this session's key arrived. */
  cancel(): void {
    if (this.holdAbort) {
      this.holdAbort.abort();
      return;
    }
    const up = this.sockets.upstream;
    if (up) {
      sendUpstreamCancel(this.ctx.target, up.pid, up.secret).catch((err: unknown) =>
        this.s.log.warn(`postgres ${this.ctx.connection.name}: cancel request failed: ${(err as Error).message}`),
      );
    }
  }

  // ---------------------------------------------------------------- backend pump

  pumpBack(): void {
    const sockets = this.sockets;
    const up = sockets.upstream;
    if (!up || this.phase !== 'ready') return;
    try {
      while (!sockets.backWaiting && this.phase === 'ready') {
        const m = up.buffer.next();
        if (!m) break;
        this.onBack(m);
      }
    } catch (err) {
      this.fatalFrom(err);
      return;
    }
    sockets.flushClient();
  }

  private onBack(m: RawMessage): void {
    const mismatch = this.proto.reply(m.code, m.body);
    if (mismatch !== null) {
      // The server is not in the state the gateway decided on: nothing more can be trusted.
      this.fatal(
        { severity: 'FATAL', code: SqlState.ProtocolViolation, message: `the gateway ends this session: the server's reply does not match its prediction (${mismatch})` },
        `protocol state mismatch: ${mismatch}`,
      );
      return;
    }
    // A reply can settle what a stalled batch waits for (an error settles every request the server now skips).
    if (this.stalled && this.proto.quiet) queueMicrotask(() => this.unstall());
    this.replies.pair(m);
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
    this.unregisterLive?.();
    this.holdAbort?.abort();
    this.stalled = null;
    if (this.cancelPid) this.ctx.cancelKeys.delete(this.cancelPid);
    const up = this.sockets.upstream;
    // Closing the socket does not stop a statement the server is running: cancel it first.
    if (up && this.replies.statementRunning) {
      sendUpstreamCancel(this.ctx.target, up.pid, up.secret).catch((err: unknown) =>
        this.s.log.warn(`postgres ${this.ctx.connection.name}: cancel request failed: ${(err as Error).message}`),
      );
    }
    this.sockets.closeUpstream();
    this.batch = [];
    this.sockets.endClient();
    this.replies.abandon(reason);
    if (!this.started) return;
    try {
      this.recorder.ended({ reason, durationMs: Date.now() - this.startedAt, statements: this.statementCount });
    } catch (err) {
      this.s.log.error(`postgres ${this.ctx.connection.name}: cannot record the end of session ${this.id}: ${(err as Error).message}`);
    }
  }

  /** Gateway shutdown: tell the client why, then close. */
  shutdown(): void {
    this.fatal({ severity: 'FATAL', code: SqlState.AdminShutdown, message: 'terminating connection: the Custody gateway is shutting down' }, 'gateway shutting down');
  }
}
