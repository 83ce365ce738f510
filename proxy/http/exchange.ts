/**
 * One request/response exchange through the proxy, once admission.ts has routed and authenticated it.
 *
 * In order: read the body (limit) → mask the request → policy → record `http.request`
 * (+ `session.start`, `policy.decision`) BEFORE forwarding, fail closed with 503 when the store
 * cannot write → hold / deny / forward → hand the upstream's response to its relay: relay-stream.ts
 * for text/event-stream, relay-body.ts for everything else.
 */
import { type IncomingMessage, request as httpRequest, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { type AuditEventInput, type EventKind, type EventPayload, type HttpErrorPayload, type HttpRequestPayload, type HttpSessionStart, type MaskSpan, type PolicyDecisionPayload, SESSION_START_VERSION, type SessionEndPayload } from '../../shared/events';
import type { Identity } from '../../shared/identity';
import { RemoteCommitError, StoreUnavailableError } from '../audit/store';
import { UnmaskableValueError } from '../masking/request';
import { type ConnectionMasker, MaskingError } from '../masking/types';
import { describeRequest, holdSummary, queryText, type RequestFacts } from '../policy/llm-request';
import type { PolicyDecision } from '../policy/types';
import type { GatewayServices } from '../services';
import { canDecode, contentEncodingOf, decodeBody, readRequestBody, responseDecoder } from './bodies';
import type { ProxyContext } from './context';
import type { OffLoopMasking } from './off-loop';
import { errorBody, type ErrorStyle, GatewayError, type GatewayErrorCode, sendError } from './errors';
import { clientResponseHeaders, recordedHeaders, upstreamRequestHeaders } from './headers';
import { relayBody } from './relay-body';
import type { RelayedExchange } from './relayed-exchange';
import { relayStream } from './relay-stream';
import { policyValue, type ReadBody, readRequest } from './request-body';
import { type InspectedRequest, inspectRequest } from './request-inspection';
import { type HttpSession, validSessionLabel } from './sessions';
import { SILENT } from './silence-watch';
import type { UpstreamRoute } from './upstreams';

const round1 = (ms: number) => Math.round(ms * 10) / 10;

export function clientAddress(req: IncomingMessage): string {
  const a = req.socket.remoteAddress ?? '';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}

/**
 * One request/response exchange through the proxy. Its public members are what the response
 * relays read and call (`RelayedExchange`, relayed-exchange.ts); only they and this class change its state.
 */
export class Exchange implements RelayedExchange {
  readonly s: GatewayServices;
  readonly limits: GatewayServices['config']['limits'];
  /** Set once the exchange is recorded (before anything is forwarded). */
  session!: HttpSession;
  /** The client went away before its answer was complete. */
  clientGone = false;
  /** Set once the exchange's outcome is recorded, so no second ending is recorded. */
  finished = false;
  masker: ConnectionMasker | null = null;
  /** Masking rules a policy `mask` decision added. */
  extraRules: string[] | undefined;
  /** Set by a stream relay: what to record when the client goes away mid-stream. */
  onClientGone: (() => void) | undefined;
  /** Created only when a hold needs a signal (an AbortController per request costs more than it looks). */
  private abort: AbortController | undefined;
  private upstreamReq: (ReturnType<typeof httpRequest> & { [SILENT]?: string }) | undefined;
  /** Why the gateway stopped waiting for the upstream to connect, when it did. */
  private connectTimedOut: string | undefined;
  /** The upstream's response headers arrived: from then on its failures are the relay's to answer. */
  private responded = false;
  /** An error the upstream request raised after its response began (a reset, invalid HTTP framing). */
  private upstreamFault: NodeJS.ErrnoException | undefined;

  constructor(
    readonly ctx: ProxyContext,
    private readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly route: UpstreamRoute,
    private readonly identity: Identity,
    /** The canonical path after the connection name: what policy saw and the upstream receives. */
    readonly path: string,
    private readonly search: string,
    readonly style: ErrorStyle,
    private readonly t0: number,
  ) {
    this.s = ctx.s;
    this.limits = ctx.s.config.limits;
    res.once('close', () => {
      if (res.writableFinished) return;
      this.clientGone = true;
      this.abort?.abort(new Error('client disconnected'));
      this.upstreamReq?.destroy();
      this.onClientGone?.();
    });
  }

  get name(): string {
    return this.route.connection.name;
  }

  elapsed(): number {
    return round1(performance.now() - this.t0);
  }

  base<K extends EventKind>(kind: K, payload: EventPayload<K>, spans?: MaskSpan[]): AuditEventInput {
    const e: AuditEventInput = { kind, session: this.session.id, actor: this.identity.subject, connection: this.name, payload };
    if (spans?.length) e.spans = spans;
    return e;
  }

  /** Records outside the fail-closed path (after the request was recorded); a failure is logged. */
  record(events: AuditEventInput[]): void {
    this.ctx.writer.defer(events, (err) => {
      this.s.log.error(`http proxy: could not record ${events.map((e) => e.kind).join(', ')} for session ${this.session.id}: ${(err as Error).message}`);
    });
  }

  /**
   * The upstream answered but its result (`result`: the event that could not be journaled) is not
   * in the log, and the client was cut off (`client`): noted for the next start to record.
   */
  noteUnrecorded(result: string, err: unknown, client: string): void {
    // In the log all the same, only not in the shared store yet (`remoteCommit: sync`): nothing to note.
    if (err instanceof RemoteCommitError) return;
    const error = err instanceof Error ? err.message : String(err);
    this.s.store.noteUnrecorded({ result, session: this.session.id, actor: this.identity.subject, connection: this.name, error, client });
  }

  /**
   * Inside response handlers any masker error, expected (MaskingError) or not, refuses what it was
   * masking — throwing there would take the gateway down. The unexpected ones are logged.
   */
  unexpectedMaskingError(err: unknown): string {
    if (!(err instanceof MaskingError)) this.s.log.error(`http proxy: masking threw unexpectedly: ${err instanceof Error ? err.stack : String(err)}`);
    return err instanceof Error ? err.message : String(err);
  }

  fail(status: number, code: GatewayErrorCode, message: string, phase: string): void {
    if (this.finished) return;
    this.finished = true;
    this.record([this.base('http.error', { phase, status, code, message, duration: this.elapsed() })]);
    sendError(this.res, this.style, status, code, message, this.sessionHeader());
  }

  /** The session the exchange was recorded in, on gateway-made answers too (once it has one). */
  sessionHeader(): OutgoingHttpHeaders | undefined {
    const session = this.session as HttpSession | undefined; // set once the exchange is recorded
    return session ? { 'x-custody-session': session.id } : undefined;
  }

  async run(): Promise<void> {
    const { req, res, s } = this;
    const method = req.method ?? 'GET';
    const limit = this.limits.maxRequestBytes;

    // Body: refuse early on a declared length, and count the bytes that actually arrive.
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > limit) {
      req.resume();
      sendError(res, this.style, 413, 'request_too_large', `request body of ${declared} bytes exceeds the gateway limit of ${limit} bytes (limits.maxRequestBytes)`, { connection: 'close' });
      return;
    }
    let body: Buffer;
    let requestEncoding: string | undefined;
    try {
      body = await readRequestBody(req, limit);
      requestEncoding = contentEncodingOf(req.headers['content-encoding'] as string | undefined);
      if (requestEncoding && body.length) body = decodeBody(body, requestEncoding, limit);
    } catch (err) {
      if (err instanceof GatewayError) {
        sendError(res, this.style, err.status, err.code, err.message, err.status === 413 ? { connection: 'close' } : undefined);
        return;
      }
      if (this.clientGone) return;
      throw err;
    }
    if (this.clientGone) return;

    const contentType = req.headers['content-type'];
    const kind = this.route.connection.kind;
    // One reading of the body, whatever its headers say (request-body.ts). A large body is read,
    // masked and scanned on a worker thread (off-loop.ts): the event loop goes on meanwhile.
    const connection = this.route.connection;
    const offLoop = this.ctx.offLoop?.wants(body.length) ? this.ctx.offLoop : undefined;
    let read: ReadBody | undefined;
    let facts: RequestFacts = NO_FACTS;
    if (!offLoop) {
      try {
        read = readRequest(kind, this.path, contentType, body);
      } catch (err) {
        if (!(err instanceof GatewayError)) throw err;
        this.refuseUnread(method, err);
        return;
      }
      facts = describeRequest(kind, this.path, policyValue(read));
    }

    // Masking and policy. A masking failure is recorded and refused, never forwarded unmasked.
    const found: BodyRead = { method, contentType, body, read, offLoop, facts, masked: undefined, maskError: undefined };
    try {
      this.masker = s.masking.forConnection(connection);
    } catch (err) {
      if (!(err instanceof MaskingError)) throw err;
      found.maskError = err;
    }
    if (found.maskError === undefined && !(await this.inspect(found, []))) return;
    if (this.clientGone) return;
    let decision: PolicyDecision = { action: 'allow' };
    if (found.maskError === undefined) {
      const query = queryText(this.search);
      try {
        decision = s.policy.evaluate({
          connection: this.name,
          protocol: 'http',
          identity: this.identity,
          http: { method, path: this.path, model: found.facts.model, tools: found.facts.tools },
          get text() {
            return query ? `${found.facts.all}\n${query}` : found.facts.all;
          },
          detectorHits: found.masked!.detectorHits,
        });
      } catch (err) {
        s.log.error(`http proxy: policy evaluation failed: ${(err as Error).stack}`);
        sendError(res, this.style, 500, 'internal_error', `policy evaluation failed (${(err as Error).message}); the request was not forwarded`);
        return;
      }
      if (decision.action === 'mask' && decision.mask?.length) {
        this.extraRules = decision.mask;
        try {
          this.masker ??= s.masking.forConnection(connection, decision.mask);
        } catch (err) {
          if (!(err instanceof MaskingError)) throw err;
          found.maskError = err;
        }
        if (found.maskError !== undefined) {
          // refused below
        } else if (!this.masker) found.maskError = new MaskingError(`policy rule "${decision.rule}" asks for masking rules ${decision.mask.join(', ')}, but none of them can be applied to connection ${this.name}`);
        else if (!(await this.inspect(found, decision.mask, decision.mask))) return;
        if (this.clientGone) return;
      }
    }
    // A body nobody can inspect goes on only to a person (hold) or when its type is let through.
    const uninspectable = found.maskError === undefined && decision.action !== 'hold' && decision.action !== 'deny' ? found.masked!.uninspectable : undefined;

    // Record before forwarding (fail closed).
    const now = Date.now();
    const label = validSessionLabel(req.headers['x-custody-session']);
    const resolved = this.ctx.sessions.resolve(this.identity, this.name, label, now);
    this.session = resolved.session;
    const events: AuditEventInput[] = [];
    if (resolved.isNew) {
      if (resolved.replaced) events.push({ kind: 'session.end', session: resolved.replaced.id, actor: this.identity.subject, connection: this.name, payload: { protocol: 'http', reason: 'idle', lastActivityAt: resolved.replaced.lastAt } satisfies SessionEndPayload });
      events.push(
        this.base('session.start', {
          v: SESSION_START_VERSION,
          protocol: 'http',
          actorName: this.identity.name,
          identity: { subject: this.identity.subject, name: this.identity.name, groups: this.identity.groups, via: this.identity.via },
          client: { address: clientAddress(req), port: req.socket.remotePort ?? null, userAgent: req.headers['user-agent'], session: label },
          upstream: { kind, host: this.route.hostname, port: this.route.port, tls: this.route.protocol === 'https:' },
        } satisfies HttpSessionStart),
      );
    }
    const requestPayload: HttpRequestPayload = {
      method,
      path: this.path,
      headers: recordedHeaders(found.masked?.logHeaders ?? req.headers),
      bytes: body.length,
      actorName: this.identity.name,
    };
    if (found.masked?.logQuery) requestPayload['query'] = found.masked.logQuery;
    if (found.facts.model && found.maskError === undefined) requestPayload['model'] = found.facts.model; // a refused model name may be what carried PII
    if (found.facts.stream) requestPayload['stream'] = true;
    let requestSpans: MaskSpan[] | undefined;
    if (found.maskError !== undefined) requestPayload['bodyOmitted'] = 'masking failed; the body is not recorded unmasked';
    else if (found.masked) {
      Object.assign(requestPayload, found.masked.log);
      if (Object.keys(found.masked.counts).length) requestPayload['masked'] = found.masked.counts;
      if (found.masked.spans.length) requestSpans = found.masked.spans;
    }
    events.push(this.base('http.request', requestPayload, requestSpans));
    if (decision.rule !== undefined) events.push(this.base('policy.decision', decisionPayload(decision, method, this.path, found.facts)));
    const refusal = found.maskError !== undefined ? maskingRefusal(found.maskError) : uninspectable !== undefined ? inspectionRefusal(this.name, uninspectable) : undefined;
    if (refusal) events.push(this.base('http.error', { phase: found.maskError !== undefined ? 'masking' : 'inspection', ...refusal }));
    try {
      await this.ctx.writer.commit(events);
    } catch (err) {
      if (resolved.isNew) this.ctx.sessions.forget(this.session, resolved.replaced);
      if (!(err instanceof StoreUnavailableError)) throw err;
      s.log.error(`http proxy: refusing ${method} /${this.name}${this.path}: ${err.message}`);
      sendError(res, this.style, 503, 'store_unavailable', `the gateway cannot record this request (${err.message}), so it was not forwarded`);
      return;
    }
    if (this.clientGone) {
      this.recordClientGone('request');
      return;
    }
    if (resolved.isNew) {
      const summary = s.store.liveSession(this.session.id);
      if (summary) s.bus.publish({ type: 'session.started', session: summary });
    }

    if (refusal) {
      this.finished = true;
      sendError(res, this.style, refusal.status, refusal.code, refusal.message);
      return;
    }
    if (decision.action === 'deny') {
      const message = `denied by policy rule "${decision.rule ?? 'default'}"${decision.reason ? `: ${decision.reason}` : ''}`;
      this.refuse(403, 'policy_denied', message);
      return;
    }
    if (decision.action === 'hold') {
      const approved = await this.hold(decision, method, found.facts, found.masked);
      if (!approved) return;
    }
    this.forward(method, found.masked!, requestEncoding !== undefined);
  }

  /** Inspects the request; false when the body could not even be read (refused already). */
  private async inspect(b: BodyRead, maskerRules: string[], extraRules?: string[]): Promise<boolean> {
    const { s, req } = this;
    const connection = this.route.connection;
    const wantAll = s.policy.inspects(this.name);
    const inspect = this.masker !== null || wantAll;
    if (b.offLoop) {
      const r = await b.offLoop.inspectRequest({ connection, path: this.path, contentType: b.contentType, body: b.body, search: this.search, headers: req.headers, maskerRules, extraRules, inspect, wantAll });
      if ('refused' in r) {
        this.refuseUnread(b.method, r.refused);
        return false;
      }
      if (b.facts === NO_FACTS) b.facts = { ...r.facts, all: r.facts.all ?? '' };
      b.masked = r.inspected;
      b.maskError = r.maskError;
      return true;
    }
    try {
      b.masked = inspectRequest(this.masker, b.read!, b.body, { contentType: b.contentType, search: this.search, headers: req.headers }, { inspect, passthroughTypes: connection.passthroughTypes, extraRules });
    } catch (err) {
      if (!(err instanceof MaskingError)) throw err;
      b.maskError = err;
    }
    return true;
  }

  /** A body the gateway could not read (400, 415): recorded without a session, then answered. */
  private refuseUnread(method: string, err: GatewayError): void {
    this.ctx.writer.defer([
      { kind: 'http.error', actor: this.identity.subject, connection: this.name, payload: { phase: 'request', status: err.status, code: err.code, message: err.message, method, path: this.path, duration: this.elapsed() } satisfies HttpErrorPayload },
    ]);
    sendError(this.res, this.style, err.status, err.code, err.message);
  }

  /** A refusal the policy decided: recorded as the response the client got. */
  private refuse(status: number, code: GatewayErrorCode, message: string): void {
    if (this.finished) return;
    this.finished = true;
    const body = errorBody(this.style, status, code, message);
    this.record([this.base('http.response', { status, body, bodyEncoding: 'json', gateway: true, code, duration: this.elapsed() })]);
    sendError(this.res, this.style, status, code, message, this.sessionHeader());
  }

  /** Parks the request until approvers decide; true when approved (and the client is still there). */
  private async hold(decision: PolicyDecision, method: string, facts: RequestFacts, masked: InspectedRequest | undefined): Promise<boolean> {
    // approvers see the request as recorded (masked)
    const text = masked?.log.body !== undefined ? describeRequest(this.route.connection.kind, this.path, masked.log.body).text : facts.text;
    this.abort = new AbortController();
    if (this.clientGone) this.abort.abort(new Error('client disconnected'));
    let outcome;
    try {
      outcome = await this.s.holds.request({
        identity: this.identity,
        connection: this.name,
        protocol: 'http',
        session: this.session.id,
        rule: decision.rule ?? 'hold',
        ruleReason: decision.reason,
        summary: holdSummary(method, this.path, facts.model, text),
        spec: decision.hold!,
        signal: this.abort.signal,
      });
    } catch (err) {
      if (this.clientGone) return false;
      this.s.log.error(`http proxy: hold failed: ${(err as Error).stack}`);
      this.fail(503, 'hold_unavailable', `the request is held by policy rule "${decision.rule}" but the approval queue failed (${(err as Error).message}); it was not forwarded`, 'hold');
      return false;
    }
    if (this.clientGone) {
      if (!this.finished) {
        this.finished = true;
        this.record([this.base('http.error', { phase: 'hold', code: 'client_closed', message: `client disconnected while held (${outcome.state})`, duration: this.elapsed() })]);
      }
      return false;
    }
    if (outcome.state === 'approved') return true;
    const by = outcome.decidedBy.length ? ` by ${outcome.decidedBy.join(', ')}` : '';
    const code: GatewayErrorCode = outcome.state === 'expired' ? 'hold_expired' : 'hold_denied';
    this.refuse(403, code, `held for approval by policy rule "${decision.rule}" and ${outcome.state}${by}: ${outcome.reason}`);
    return false;
  }

  private forward(method: string, inspected: InspectedRequest, bodyWasDecoded: boolean): void {
    const { req, route } = this;
    const body = inspected.forward;
    const headers = upstreamRequestHeaders(inspected.headers, bodyWasDecoded);
    if (inspected.contentType !== undefined) headers['content-type'] = inspected.contentType;
    headers['host'] = route.host;
    headers['accept-encoding'] = 'identity';
    if (route.authHeader) headers[route.authHeader[0]] = route.authHeader[1];
    if (body.length || req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined) headers['content-length'] = body.length;
    let upstreamPath = route.basePath + this.path;
    if (upstreamPath === '') upstreamPath = '/';
    const options = { protocol: route.protocol, hostname: route.hostname, port: route.port, method, path: upstreamPath + inspected.search, headers, agent: route.agent, setHost: false };
    const upReq = route.protocol === 'https:' ? httpsRequest(options) : httpRequest(options);
    this.upstreamReq = upReq;
    const tForward = performance.now();
    upReq.on('response', (upRes) => this.onResponse(upRes, tForward, method));
    upReq.on('error', (err: NodeJS.ErrnoException) => this.onUpstreamError(err));
    upReq.on('socket', (socket: Socket) => {
      if (!socket.connecting) return; // a reused keep-alive connection
      const timer = setTimeout(() => this.timedOut(`no connection within ${this.limits.upstreamConnectTimeout} (limits.upstreamConnectTimeout)`), this.ctx.connectTimeout);
      // Both listeners go as soon as one fires: a keep-alive socket outlives this exchange, and its
      // listeners would keep the exchange (and its bodies) alive with it.
      const clear = () => {
        clearTimeout(timer);
        socket.off('connect', clear).off('close', clear);
      };
      socket.once('connect', clear);
      socket.once('close', clear);
    });
    // Silence after that — before the response or between two pieces of it — is the SilenceWatch's.
    upReq.end(body);
  }

  private timedOut(why: string): void {
    this.connectTimedOut = why;
    this.upstreamReq?.destroy(Object.assign(new Error(why), { code: 'ETIMEDOUT' }));
  }

  /** Why the gateway gave up waiting for the upstream (connect or idle timeout), if it did. */
  get upstreamTimedOut(): string | undefined {
    return this.connectTimedOut ?? this.upstreamReq?.[SILENT];
  }

  private onUpstreamError(err: NodeJS.ErrnoException): void {
    if (this.clientGone) {
      this.recordClientGone('upstream');
      return;
    }
    if (this.responded) {
      // The response relay sees the response break and answers; this says why.
      this.upstreamFault ??= err;
      return;
    }
    const where = `${this.route.protocol}//${this.route.host}`;
    if (this.upstreamTimedOut !== undefined) {
      this.fail(504, 'upstream_timeout', `connection ${this.name}: the upstream ${where} timed out (${this.upstreamTimedOut})`, 'upstream');
      return;
    }
    if (isHttpParseError(err)) this.fail(502, 'upstream_failed', `connection ${this.name}: the upstream ${where} answered with something that is not valid HTTP (${errorDetail(err)})`, 'upstream');
    else if (CLOSED_BEFORE_ANSWER.has(err.code ?? '')) this.fail(502, 'upstream_failed', `connection ${this.name}: the upstream ${where} closed the connection before answering (${errorDetail(err)})`, 'upstream');
    else this.fail(502, 'upstream_unavailable', `connection ${this.name}: the upstream ${where} cannot be reached (${errorDetail(err)})`, 'upstream');
  }

  /**
   * What the client is told when the upstream's answer breaks after its headers arrived: the body
   * does not decode, its HTTP framing is invalid, the connection closed before the end, or the
   * upstream went silent. `what` is `response` or `stream`.
   */
  upstreamFailure(err: NodeJS.ErrnoException | undefined, encoding: string | undefined, what: string): { status: number; code: GatewayErrorCode; message: string } {
    const timedOut = this.upstreamTimedOut;
    if (timedOut !== undefined) return { status: 504, code: 'upstream_timeout', message: `connection ${this.name}: the upstream ${what} timed out midway (${timedOut})` };
    const fault = this.upstreamFault;
    let why: string;
    if (encoding !== undefined && err !== undefined && isDecodingError(err)) why = `the upstream's ${what} is not valid ${encoding} (${err.message})`;
    else if (fault !== undefined && isHttpParseError(fault)) why = `the upstream's ${what} is not valid HTTP (${errorDetail(fault)})`;
    else why = `the upstream closed the connection before the ${what} was complete${fault !== undefined ? ` (${errorDetail(fault)})` : ''}`;
    return { status: 502, code: 'upstream_failed', message: `connection ${this.name}: ${why}` };
  }

  recordClientGone(phase: string, extra?: Record<string, unknown>): void {
    if (this.finished) return;
    this.finished = true;
    this.record([this.base('http.error', { phase, code: 'client_closed', message: 'client disconnected; the upstream request was aborted', duration: this.elapsed(), ...extra })]);
  }

  private onResponse(upRes: IncomingMessage, tForward: number, method: string): void {
    this.responded = true;
    if (this.clientGone) {
      upRes.destroy();
      this.recordClientGone('upstream');
      return;
    }
    const status = upRes.statusCode ?? 502;
    if (method === 'HEAD' || status === 204 || status === 304) {
      // No body by definition: headers (content-length included) pass as they are.
      this.res.writeHead(status, this.responseHeaders(upRes, false));
      this.res.end();
      upRes.resume();
      this.finished = true;
      this.record([this.base('http.response', { status, headers: this.recordedResponseHeaders(upRes), bytes: 0, duration: this.elapsed() })]);
      return;
    }
    const contentType = upRes.headers['content-type'];
    const encoding = contentEncodingOf(upRes.headers['content-encoding']);
    if (encoding && !canDecode(encoding)) {
      upRes.destroy();
      this.fail(502, 'upstream_failed', `connection ${this.name}: the upstream answered with content-encoding "${encoding}", which the gateway cannot decode to record or mask`, 'upstream');
      return;
    }
    let source: Readable = upRes;
    if (encoding) {
      const decoder = responseDecoder(encoding);
      upRes.on('error', (err) => decoder.destroy(err));
      source = upRes.pipe(decoder);
    }
    const isSse = contentType !== undefined && /^text\/event-stream/i.test(contentType);
    if (isSse) relayStream(this, upRes, source, status, tForward, encoding);
    else relayBody(this, upRes, source, status, encoding);
  }

  responseHeaders(upRes: IncomingMessage, bodyRewritten: boolean): OutgoingHttpHeaders {
    const headers = clientResponseHeaders(upRes.headers, bodyRewritten);
    this.route.scrubber?.headers(headers);
    headers['x-custody-session'] = this.session.id;
    if (this.ctx.isClosing()) headers['connection'] = 'close';
    return headers;
  }

  recordedResponseHeaders(upRes: IncomingMessage): Record<string, string | string[]> {
    const headers = recordedHeaders(upRes.headers);
    return this.route.scrubber ? this.route.scrubber.headers(headers) : headers;
  }
}

/** Upstream request errors that mean the upstream closed or reset the connection before its response. */
const CLOSED_BEFORE_ANSWER = new Set(['ECONNRESET', 'EPIPE']);

/** Node's HTTP parser refused what the upstream sent (llhttp error codes). */
function isHttpParseError(err: NodeJS.ErrnoException): boolean {
  return err.code !== undefined && err.code.startsWith('HPE_');
}

/** A zlib or brotli decoder refused the body (zlib: Z_DATA_ERROR, Z_BUF_ERROR…; brotli: ERR__ERROR_…). */
function isDecodingError(err: NodeJS.ErrnoException): boolean {
  return typeof err.errno === 'number' && err.code !== undefined && (err.code.startsWith('Z_') || err.code.startsWith('ERR__ERROR'));
}

function errorDetail(err: NodeJS.ErrnoException): string {
  return err.code ? `${err.code}${err.message && !err.message.includes(err.code) ? `: ${err.message}` : ''}` : err.message;
}

/** What the client is told when masking refuses a request: 400 for what it carries, 500 when masking broke. */
function maskingRefusal(err: MaskingError): { status: number; code: GatewayErrorCode; message: string } {
  if (err instanceof UnmaskableValueError) return { status: 400, code: 'unmaskable_value', message: err.message };
  return { status: 500, code: 'masking_failed', message: `masking failed: ${err.message}; the request was not forwarded` };
}

function inspectionRefusal(connection: string, what: string): { status: number; code: GatewayErrorCode; message: string } {
  return {
    status: 415,
    code: 'unsupported_media_type',
    message: `connection ${connection} inspects request bodies (masking, content or detectors rules), and this one carries ${what}, which the gateway cannot inspect; send text, or ask an admin to list the type in the connection's passthroughTypes`,
  };
}

/** The request body as read, and what inspecting it found (filled in by Exchange.inspect). */
interface BodyRead {
  method: string;
  contentType: string | undefined;
  body: Buffer;
  /** undefined when the body is read on the worker thread. */
  read: ReadBody | undefined;
  offLoop: OffLoopMasking | undefined;
  facts: RequestFacts;
  masked: InspectedRequest | undefined;
  maskError: MaskingError | undefined;
}

/** What is known of a request before its body is read (a large body is read on the worker thread). */
const NO_FACTS: RequestFacts = { tools: false, stream: false, text: '', all: '' };

function decisionPayload(d: PolicyDecision, method: string, path: string, facts: RequestFacts): PolicyDecisionPayload {
  const p: PolicyDecisionPayload = { protocol: 'http', action: d.action, rule: d.rule, method, path };
  if (d.reason) p['reason'] = d.reason;
  if (facts.model) p['model'] = facts.model;
  if (d.mask) p['mask'] = d.mask;
  if (d.hold) p['hold'] = d.hold;
  return p;
}
