/**
 * The LLM/HTTP proxy (DESIGN.md, "HTTP routing"): `http://<listen.http>/<connection>/<rest>` is
 * forwarded to `<upstream>/<rest>` with the client's Custody credential replaced by the
 * connection's secret.
 *
 * Per exchange, in order: route → authenticate → read the body (limit) → mask the request →
 * policy → record `http.request` (+ `session.start`, `policy.decision`) BEFORE forwarding, fail
 * closed with 503 when the store cannot write → hold / deny / forward → relay the response (event
 * by event for text/event-stream, masked when a rule applies) → record it.
 */
import { createServer, type IncomingMessage, request as httpRequest, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { parseDuration } from '../../shared/config';
import type { AuditEventInput, MaskSpan } from '../../shared/events';
import type { Identity } from '../../shared/identity';
import { StoreUnavailableError } from '../audit/store';
import { closeServer, type Listener, listen, splitHostPort } from '../net';
import { AuthError, credentialFrom } from '../identity/authenticator';
import { UnmaskableValueError } from '../masking/request';
import { type ConnectionMasker, type MaskedBody, MaskingError, type SseEvent, type StreamChunkResult, type StreamMasker } from '../masking/types';
import type { PolicyDecision } from '../policy/types';
import type { GatewayServices } from '../services';
import { bodyForLog, canDecode, contentEncodingOf, decodeBody, readRequestBody, responseDecoder } from './bodies';
import { policyValue, type ReadBody, readRequest } from './request-body';
import { type InspectedRequest, inspectRequest, queryText } from './request-inspection';
import { errorBody, errorEvent, type ErrorStyle, errorStyleFor, GatewayError, type GatewayErrorCode } from './errors';
import { clientResponseHeaders, recordedHeaders, upstreamRequestHeaders } from './headers';
import { describeRequest, holdSummary, type RequestFacts } from '../policy/llm-request';
import { canonicalPath, methodOverride } from './path';
import { StreamRecorder } from './recorder';
import { SILENT, SilenceWatch } from './silence-watch';
import { type HttpSession, HttpSessionTracker, validSessionLabel } from './sessions';
import { serializeSseEvent, SseParser } from './sse';
import { UpstreamTable, type UpstreamRoute } from './upstreams';
import { GroupCommitWriter } from './writer';

/** Non-streamed responses up to this size (declared by content-length) are relayed in one write. */
const BUFFER_SMALL_RESPONSES = 256 * 1024;
/** Stream events relayed within this window are recorded as one `http.chunk` event. */
const STREAM_BATCH_MS = 50;
/** How long close() lets in-flight exchanges (streams, holds) finish before cutting them. */
const DRAIN_GRACE_MS = 10_000;
/** A stream's headers wait at most this long for its first event to travel with. */
const HEADERS_ALONE_MS = 2;

/** The proxy listener; connections (and their secrets) are read once, when it starts. */
export type HttpProxy = Listener;

const AUTH_CODES: Record<string, GatewayErrorCode> = {
  missing: 'missing_api_key',
  expired: 'expired_api_key',
  revoked: 'revoked_api_key',
};

const round1 = (ms: number) => Math.round(ms * 10) / 10;

/** Starts the HTTP proxy on `listen.http`. */
export async function startHttpProxy(s: GatewayServices): Promise<HttpProxy> {
  const upstreams = new UpstreamTable(s.config.connections);
  const sessions = new HttpSessionTracker(parseDuration(s.config.limits.sessionIdle));
  let closing = false;

  const writer = new GroupCommitWriter(s.store);
  const connectTimeout = parseDuration(s.config.limits.upstreamConnectTimeout);
  const idle = s.config.limits.upstreamIdleTimeout;
  const silence = new SilenceWatch(parseDuration(idle), () => upstreams.agents(), `the upstream sent nothing for ${idle} (limits.upstreamIdleTimeout)`);
  const ctx: ProxyContext = { s, upstreams, sessions, writer, connectTimeout, silence, isClosing: () => closing };
  const server = createServer({ noDelay: true }, (req, res) => {
    handleExchange(ctx, req, res).catch((err: unknown) => internalError(ctx, res, err));
  });
  server.on('connection', (socket: Socket) => socket.setNoDelay(true));
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (socket.writable && err.code !== 'ECONNRESET') socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    else socket.destroy();
  });

  // End sessions that went idle, so the console shows them as finished.
  const sweepEvery = Math.max(1000, Math.min(60_000, parseDuration(s.config.limits.sessionIdle)));
  const sweep = setInterval(() => endSessions(ctx, sessions.takeIdle(Date.now()), 'idle'), sweepEvery);
  sweep.unref();

  const [host, port] = splitHostPort(s.config.listen.http);
  try {
    await listen(server, host, port);
  } catch (err) {
    clearInterval(sweep);
    silence.close();
    upstreams.destroy();
    throw err;
  }
  const addr = server.address() as AddressInfo;
  const address = `${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  s.log.info(`http proxy listening on ${address} (${s.config.connections.filter((c) => c.kind !== 'postgres').length} connections)`);

  let closed: Promise<void> | undefined;
  return {
    name: 'http',
    address,
    close() {
      closed ??= (async () => {
        closing = true;
        clearInterval(sweep);
        // Keep-alive connections whose exchange finishes while draining are closed as they go idle.
        const idleCloser = setInterval(() => server.closeIdleConnections(), 50);
        await closeServer(server, DRAIN_GRACE_MS);
        clearInterval(idleCloser);
        silence.close();
        writer.flush();
        endSessions(ctx, sessions.takeAll(), 'shutdown');
        upstreams.destroy();
      })();
      return closed;
    },
  };
}

interface ProxyContext {
  s: GatewayServices;
  upstreams: UpstreamTable;
  sessions: HttpSessionTracker;
  writer: GroupCommitWriter;
  /** limits.upstreamConnectTimeout, in ms. */
  connectTimeout: number;
  /** Gives up on upstreams silent for limits.upstreamIdleTimeout. */
  silence: SilenceWatch;
  isClosing(): boolean;
}

function endSessions(ctx: ProxyContext, ended: HttpSession[], reason: 'idle' | 'shutdown' | 'replaced'): void {
  if (!ended.length) return;
  const now = Date.now();
  try {
    ctx.s.store.appendMany(
      ended.map((x) => ({ kind: 'session.end' as const, session: x.id, actor: x.identity.subject, connection: x.connection, payload: { protocol: 'http', reason, lastActivityAt: x.lastAt }, time: now })),
    );
  } catch (err) {
    ctx.s.log.warn(`http proxy: could not record the end of ${ended.length} session(s): ${(err as Error).message}`);
    return;
  }
  for (const x of ended) {
    const summary = ctx.s.store.session(x.id);
    if (summary) ctx.s.bus.publish({ type: 'session.ended', session: summary });
  }
}

/** Sends a provider-shaped error (when the response has not started) and says whether it did. */
function sendError(res: ServerResponse, style: ErrorStyle, status: number, code: GatewayErrorCode, message: string, extra?: OutgoingHttpHeaders): boolean {
  if (res.headersSent || res.destroyed) return false;
  const body = JSON.stringify(errorBody(style, status, code, message));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-custody-error': code, ...extra });
  res.end(body);
  return true;
}

function internalError(ctx: ProxyContext, res: ServerResponse, err: unknown): void {
  ctx.s.log.error(`http proxy: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  if (!sendError(res, 'openai', 500, 'internal_error', 'the gateway failed to handle this request; it was not forwarded')) res.destroy();
}

function clientAddress(req: IncomingMessage): string {
  const a = req.socket.remoteAddress ?? '';
  return a.startsWith('::ffff:') ? a.slice(7) : a;
}

async function handleExchange(ctx: ProxyContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const t0 = performance.now();
  const { s } = ctx;
  if (ctx.isClosing()) res.setHeader('connection', 'close');
  const url = req.url ?? '/';
  if (url.charCodeAt(0) !== 0x2f /* / */) {
    sendError(res, 'openai', 400, 'invalid_path', 'use http://<gateway>/<connection>/<path>; this gateway is not a forward proxy');
    return;
  }
  const q = url.indexOf('?');
  const pathEnd = q === -1 ? url.length : q;
  let nameEnd = url.indexOf('/', 1);
  if (nameEnd === -1 || nameEnd > pathEnd) nameEnd = pathEnd;
  const name = url.slice(1, nameEnd);
  const route = ctx.upstreams.get(name);
  if (!route) {
    const other = name ? ctx.upstreams.otherKind(name) : undefined;
    const message = !name
      ? `no connection in the path: use http://<gateway>/<connection>/<path>, e.g. /openai/chat/completions. This is the HTTP proxy; the console is at http://${s.config.listen.control.replace(/^0\.0\.0\.0:/, '127.0.0.1:')}/`
      : other
        ? `connection "${name}" is a ${other} connection; it has its own listener, not the HTTP proxy`
        : `no connection named "${name}" on this gateway (the first path segment names the connection)`;
    sendError(res, 'openai', 404, 'unknown_connection', message);
    return;
  }
  const kind = route.connection.kind;
  const style = errorStyleFor(kind);
  // Policy matches, and the upstream receives, the canonical path (path.ts); never the raw one.
  const canonical = canonicalPath(url.slice(nameEnd, pathEnd));
  if (!canonical.ok) {
    sendError(res, style, 400, 'invalid_path', `connection ${name}: ${canonical.reason}; the request was not forwarded`);
    return;
  }
  const path = canonical.path;
  const search = url.slice(pathEnd);

  // Identity: API keys are checked synchronously (cached); JWTs through the configured issuers.
  const credential = credentialFrom(req.headers);
  let identity: Identity;
  try {
    identity = credential !== undefined && credential.startsWith('cst_') ? s.auth.authenticateKey(credential) : await s.auth.authenticate(credential);
  } catch (err) {
    if (!(err instanceof AuthError)) throw err;
    req.resume();
    recordAuthFailure(ctx, req, name, path, err, credential);
    sendError(res, style, 401, AUTH_CODES[err.code] ?? 'invalid_api_key', `${err.message} (Custody gateway, connection ${name})`);
    return;
  }

  // A WebSocket (e.g. a realtime API) would carry traffic the gateway cannot record or mask frame by
  // frame: refused, in words, rather than forwarded as a plain request. Other upgrade offers (h2c
  // from `curl --http2`) are ignored, as HTTP/1.1 lets a server do, and the request is served.
  if (req.headers.upgrade !== undefined && /\bwebsocket\b/i.test(req.headers.upgrade)) {
    req.resume();
    const message = `connection ${name}: the gateway does not proxy protocol upgrades (Upgrade: ${req.headers.upgrade}); use the provider's HTTP API through it`;
    ctx.writer.defer([{ kind: 'http.error', actor: identity.subject, connection: name, payload: { phase: 'request', status: 501, code: 'upgrade_unsupported', message, method: req.method, path } }]);
    sendError(res, style, 501, 'upgrade_unsupported', message);
    return;
  }

  // Policy sees the request line's method; a header or parameter asking the upstream to act as
  // another method (or on another URL) would step around it, so it is refused.
  const override = methodOverride(req.headers, search);
  if (override !== undefined) {
    req.resume();
    const message = `connection ${name}: ${override} asks the upstream to treat the request as another method or URL, which the gateway refuses; send the method you mean`;
    ctx.writer.defer([{ kind: 'http.error', actor: identity.subject, connection: name, payload: { phase: 'request', status: 400, code: 'method_override', message, method: req.method, path } }]);
    sendError(res, style, 400, 'method_override', message);
    return;
  }

  const exchange = new Exchange(ctx, req, res, route, identity, path, search, style, t0);
  await exchange.run();
}

function recordAuthFailure(ctx: ProxyContext, req: IncomingMessage, connection: string, path: string, err: AuthError, credential: string | undefined): void {
  // Aggregated per source per minute (AuthFailureRecorder): a flood of bad requests becomes one
  // summary event, not one each. The 401 stands whether or not this can be written.
  ctx.s.login.failures.record(
    clientAddress(req),
    { protocol: 'http', reason: err.code, message: err.message, method: req.method, path, clientAddress: clientAddress(req), userAgent: req.headers['user-agent'] },
    { connection, credential: ctx.s.keys.knownPrefix(credential) },
  );
}

/** One request/response exchange through the proxy. */
class Exchange {
  private readonly s: GatewayServices;
  private readonly limits: GatewayServices['config']['limits'];
  private session!: HttpSession;
  private clientGone = false;
  /** Created only when a hold needs a signal (an AbortController per request costs more than it looks). */
  private abort: AbortController | undefined;
  private upstreamReq: (ReturnType<typeof httpRequest> & { [SILENT]?: string }) | undefined;
  private masker: ConnectionMasker | null = null;
  private extraRules: string[] | undefined;
  /** Set once the exchange's outcome is recorded, so no second ending is recorded. */
  private finished = false;
  /** Why the gateway stopped waiting for the upstream to connect, when it did. */
  private connectTimedOut: string | undefined;
  private onClientGone: (() => void) | undefined;

  constructor(
    private readonly ctx: ProxyContext,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly route: UpstreamRoute,
    private readonly identity: Identity,
    private readonly path: string,
    private readonly search: string,
    private readonly style: ErrorStyle,
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

  private get name(): string {
    return this.route.connection.name;
  }

  private elapsed(): number {
    return round1(performance.now() - this.t0);
  }

  private base(kind: AuditEventInput['kind'], payload: unknown, spans?: MaskSpan[]): AuditEventInput {
    const e: AuditEventInput = { kind, session: this.session.id, actor: this.identity.subject, connection: this.name, payload };
    if (spans?.length) e.spans = spans;
    return e;
  }

  /** Records outside the fail-closed path (after the request was recorded); a failure is logged. */
  private record(events: AuditEventInput[]): void {
    this.ctx.writer.defer(events, (err) => {
      this.s.log.error(`http proxy: could not record ${events.map((e) => e.kind).join(', ')} for session ${this.session.id}: ${(err as Error).message}`);
    });
  }

  /**
   * Inside response handlers any masker error, expected (MaskingError) or not, refuses what it was
   * masking — throwing there would take the gateway down. The unexpected ones are logged.
   */
  private unexpectedMaskingError(err: unknown): string {
    if (!(err instanceof MaskingError)) this.s.log.error(`http proxy: masking threw unexpectedly: ${err instanceof Error ? err.stack : String(err)}`);
    return err instanceof Error ? err.message : String(err);
  }

  private fail(status: number, code: GatewayErrorCode, message: string, phase: string): void {
    if (this.finished) return;
    this.finished = true;
    this.record([this.base('http.error', { phase, status, code, message, duration: this.elapsed() })]);
    sendError(this.res, this.style, status, code, message, this.sessionHeader());
  }

  /** The session the exchange was recorded in, on gateway-made answers too (once it has one). */
  private sessionHeader(): OutgoingHttpHeaders | undefined {
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
    // One reading of the body, whatever its headers say (request-body.ts).
    let read: ReadBody;
    try {
      read = readRequest(kind, this.path, contentType, body);
    } catch (err) {
      if (!(err instanceof GatewayError)) throw err;
      this.refuseUnread(method, err);
      return;
    }
    const facts = describeRequest(kind, this.path, policyValue(read));

    // Masking and policy. A masking failure is recorded and refused, never forwarded unmasked.
    let masked: InspectedRequest | undefined;
    let maskError: MaskingError | undefined;
    const connection = this.route.connection;
    const inspect = (extraRules?: string[]) => {
      try {
        masked = inspectRequest(this.masker, read, body, { contentType, search: this.search, headers: req.headers }, {
          inspect: this.masker !== null || s.policy.inspects(this.name),
          passthroughTypes: connection.passthroughTypes,
          extraRules,
        });
      } catch (err) {
        if (!(err instanceof MaskingError)) throw err;
        maskError = err;
      }
    };
    try {
      this.masker = s.masking.forConnection(connection);
    } catch (err) {
      if (!(err instanceof MaskingError)) throw err;
      maskError = err;
    }
    if (maskError === undefined) inspect();
    let decision: PolicyDecision = { action: 'allow' };
    if (maskError === undefined) {
      const query = queryText(this.search);
      try {
        decision = s.policy.evaluate({
          connection: this.name,
          protocol: 'http',
          identity: this.identity,
          http: { method, path: this.path, model: facts.model, tools: facts.tools },
          get text() {
            return query ? `${facts.all}\n${query}` : facts.all;
          },
          detectorHits: masked!.detectorHits,
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
          maskError = err;
        }
        if (maskError !== undefined) {
          // refused below
        } else if (!this.masker) maskError = new MaskingError(`policy rule "${decision.rule}" asks for masking rules ${decision.mask.join(', ')}, but none of them can be applied to connection ${this.name}`);
        else inspect(decision.mask);
      }
    }
    // A body nobody can inspect goes on only to a person (hold) or when its type is let through.
    const uninspectable = maskError === undefined && decision.action !== 'hold' && decision.action !== 'deny' ? masked!.uninspectable : undefined;

    // Record before forwarding (fail closed).
    const now = Date.now();
    const label = validSessionLabel(req.headers['x-custody-session']);
    const resolved = this.ctx.sessions.resolve(this.identity, this.name, label, now);
    this.session = resolved.session;
    const events: AuditEventInput[] = [];
    if (resolved.isNew) {
      if (resolved.replaced) events.push({ kind: 'session.end', session: resolved.replaced.id, actor: this.identity.subject, connection: this.name, payload: { protocol: 'http', reason: 'idle', lastActivityAt: resolved.replaced.lastAt } });
      events.push(
        this.base('session.start', {
          protocol: 'http',
          identity: this.identity.subject,
          actorName: this.identity.name,
          via: this.identity.via,
          groups: this.identity.groups,
          clientAddress: clientAddress(req),
          userAgent: req.headers['user-agent'],
          connection: this.name,
          kind,
          clientSession: label,
        }),
      );
    }
    const requestPayload: Record<string, unknown> = {
      method,
      path: this.path,
      headers: recordedHeaders(masked?.logHeaders ?? req.headers),
      bytes: body.length,
      actorName: this.identity.name,
    };
    if (masked?.logQuery) requestPayload['query'] = masked.logQuery;
    if (facts.model && maskError === undefined) requestPayload['model'] = facts.model; // a refused model name may be what carried PII
    if (facts.stream) requestPayload['stream'] = true;
    let requestSpans: MaskSpan[] | undefined;
    if (maskError !== undefined) requestPayload['bodyOmitted'] = 'masking failed; the body is not recorded unmasked';
    else if (masked) {
      Object.assign(requestPayload, masked.log);
      if (Object.keys(masked.counts).length) requestPayload['masked'] = masked.counts;
      if (masked.spans.length) requestSpans = masked.spans;
    }
    events.push(this.base('http.request', requestPayload, requestSpans));
    if (decision.rule !== undefined) events.push(this.base('policy.decision', decisionPayload(decision, method, this.path, facts)));
    const refusal = maskError !== undefined ? maskingRefusal(maskError) : uninspectable !== undefined ? inspectionRefusal(this.name, uninspectable) : undefined;
    if (refusal) events.push(this.base('http.error', { phase: maskError !== undefined ? 'masking' : 'inspection', ...refusal }));
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
      const summary = s.store.session(this.session.id);
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
      const approved = await this.hold(decision, method, facts, masked);
      if (!approved) return;
    }
    this.forward(method, masked!, requestEncoding !== undefined);
  }

  /** A body the gateway could not read (400, 415): recorded without a session, then answered. */
  private refuseUnread(method: string, err: GatewayError): void {
    this.ctx.writer.defer([
      { kind: 'http.error', actor: this.identity.subject, connection: this.name, payload: { phase: 'request', status: err.status, code: err.code, message: err.message, method, path: this.path, duration: this.elapsed() } },
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
      const clear = () => clearTimeout(timer);
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
  private get upstreamTimedOut(): string | undefined {
    return this.connectTimedOut ?? this.upstreamReq?.[SILENT];
  }

  private onUpstreamError(err: NodeJS.ErrnoException): void {
    if (this.clientGone) {
      this.recordClientGone('upstream');
      return;
    }
    if (this.res.headersSent) return; // mid-response failures are handled by the response relay
    const where = `${this.route.protocol}//${this.route.host}`;
    if (this.upstreamTimedOut !== undefined) {
      this.fail(504, 'upstream_timeout', `connection ${this.name}: the upstream ${where} timed out (${this.upstreamTimedOut})`, 'upstream');
      return;
    }
    const detail = err.code ? `${err.code}${err.message && !err.message.includes(err.code) ? `: ${err.message}` : ''}` : err.message;
    this.fail(502, 'upstream_unavailable', `connection ${this.name}: the upstream ${where} cannot be reached (${detail})`, 'upstream');
  }

  private recordClientGone(phase: string, extra?: Record<string, unknown>): void {
    if (this.finished) return;
    this.finished = true;
    this.record([this.base('http.error', { phase, code: 'client_closed', message: 'client disconnected; the upstream request was aborted', duration: this.elapsed(), ...extra })]);
  }

  private onResponse(upRes: IncomingMessage, tForward: number, method: string): void {
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
    if (isSse) this.relayStream(upRes, source, status, tForward);
    else this.relayBody(upRes, source, status, encoding !== undefined);
  }

  private responseHeaders(upRes: IncomingMessage, bodyRewritten: boolean): OutgoingHttpHeaders {
    const headers = clientResponseHeaders(upRes.headers, bodyRewritten);
    this.route.scrubber?.headers(headers);
    headers['x-custody-session'] = this.session.id;
    if (this.ctx.isClosing()) headers['connection'] = 'close';
    return headers;
  }

  private recordedResponseHeaders(upRes: IncomingMessage): Record<string, string | string[]> {
    const headers = recordedHeaders(upRes.headers);
    return this.route.scrubber ? this.route.scrubber.headers(headers) : headers;
  }

  /** A non-streamed response: relayed as it arrives, or whole when it must be masked or scrubbed. */
  private relayBody(upRes: IncomingMessage, source: Readable, status: number, decoded: boolean): void {
    const { res } = this;
    const max = this.limits.maxResponseBytes;
    const declaredText = upRes.headers['content-length'];
    const declared = declaredText !== undefined ? Number(declaredText) : undefined;
    if (!decoded && declared !== undefined && declared > max) {
      upRes.destroy();
      this.fail(413, 'response_too_large', `connection ${this.name}: the upstream response of ${declared} bytes exceeds the gateway limit of ${max} bytes (limits.maxResponseBytes)`, 'response');
      return;
    }
    // Small bodies are relayed in one write with an exact content-length (also after decoding).
    const whole = this.masker !== null || status >= 400 || (declared !== undefined && declared <= BUFFER_SMALL_RESPONSES);
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    // Relayed in pieces, the secret may straddle two of them: the scrubber holds back a few bytes.
    const scrubbing = whole ? undefined : this.route.scrubber?.bodyStream();
    if (!whole) res.writeHead(status, this.responseHeaders(upRes, decoded || scrubbing !== undefined));
    source.on('data', (chunk: Buffer) => {
      if (tooLarge) return;
      size += chunk.length;
      if (size > max) {
        tooLarge = true;
        upRes.destroy();
        source.destroy();
        const message = `connection ${this.name}: the upstream response exceeds the gateway limit of ${max} bytes (limits.maxResponseBytes)`;
        if (whole) this.fail(413, 'response_too_large', message, 'response');
        else {
          this.finished = true;
          this.record([this.base('http.error', { phase: 'response', status, code: 'response_too_large', message, bytes: size, duration: this.elapsed() })]);
          res.destroy(); // headers are out: cutting the connection is the only honest signal
        }
        return;
      }
      chunks.push(chunk);
      if (whole) return;
      const out = scrubbing ? scrubbing.push(chunk) : chunk;
      if (out.length && !res.write(out) && !source.isPaused()) {
        source.pause();
        res.once('drain', () => source.resume());
      }
    });
    source.once('end', () => {
      if (tooLarge || this.clientGone || this.finished) return;
      let out = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
      const contentType = upRes.headers['content-type'];
      let logged: { body?: unknown; bodyEncoding?: string } | undefined;
      let spans: MaskSpan[] | undefined;
      let counts: Record<string, number> | undefined;
      const scrubber = this.route.scrubber;
      if (whole) {
        if (scrubber) out = scrubber.scrub(out);
        if (this.masker) {
          let m: MaskedBody;
          try {
            m = this.masker.response(this.path, contentType, out, this.extraRules);
          } catch (err) {
            this.fail(500, 'masking_failed', `masking the response failed: ${this.unexpectedMaskingError(err)}; it was not sent`, 'masking');
            return;
          }
          out = m.forward;
          logged = { body: m.log, bodyEncoding: typeof m.log === 'string' ? 'text' : 'json' };
          spans = m.spans;
          if (Object.keys(m.counts).length) counts = m.counts;
        }
        const headers = this.responseHeaders(upRes, true);
        headers['content-length'] = out.length;
        res.writeHead(status, headers);
        res.end(out);
        logged ??= bodyForLog(out, contentType); // parsed for the record after the client has its answer
      } else {
        res.end(scrubbing?.end());
        logged = bodyForLog(scrubber ? scrubber.scrub(out) : out, contentType);
      }
      this.finished = true;
      const payload: Record<string, unknown> = { status, headers: this.recordedResponseHeaders(upRes), bytes: size, duration: this.elapsed(), ...logged };
      if (counts) payload['masked'] = counts;
      this.record([this.base('http.response', payload, spans)]);
    });
    source.once('error', (err) => this.upstreamBroke(err, status, size));
    upRes.once('close', () => {
      if (!upRes.complete && !tooLarge) this.upstreamBroke(new Error('the upstream closed the connection before the response was complete'), status, size);
    });
  }

  private upstreamBroke(err: Error, status: number, bytes: number): void {
    if (this.clientGone) {
      this.recordClientGone('response', { bytes });
      return;
    }
    if (this.finished) return;
    const timedOut = this.upstreamTimedOut;
    const code = timedOut === undefined ? 'upstream_failed' : 'upstream_timeout';
    const message = `connection ${this.name}: the upstream response ${timedOut === undefined ? 'failed' : 'timed out'} midway (${timedOut ?? err.message})`;
    if (!this.res.headersSent) {
      this.fail(timedOut === undefined ? 502 : 504, code, message, 'response');
      return;
    }
    this.finished = true;
    this.record([this.base('http.error', { phase: 'response', status, code, message, bytes, duration: this.elapsed() })]);
    this.res.destroy();
  }

  /**
   * A text/event-stream response, relayed event by event: without masking, bytes are written the
   * moment they arrive; with masking, each parsed event goes through the stream masker and what it
   * releases is written at once. Events are recorded in batches (one commit per STREAM_BATCH_MS).
   */
  private relayStream(upRes: IncomingMessage, source: Readable, status: number, tForward: number): void {
    const { res } = this;
    const max = this.limits.maxResponseBytes;
    const parser = new SseParser();
    let streamMasker: StreamMasker | undefined;
    // The credential is scrubbed first, so the connection's masker (and its spans) see text without it.
    let secretMasker: StreamMasker | undefined;
    try {
      secretMasker = this.route.scrubber?.sseStream();
      streamMasker = this.masker ? this.masker.stream(this.path, this.extraRules) : undefined;
    } catch (err) {
      upRes.destroy();
      this.fail(500, 'masking_failed', `masking the response stream failed: ${this.unexpectedMaskingError(err)}; it was not sent`, 'masking');
      return;
    }
    let size = 0;
    let ended = false;
    const recorder = new StreamRecorder(
      this.ctx.writer,
      (kind, payload, spans) => this.base(kind, payload, spans),
      (err) => {
        this.s.log.error(`http proxy: stream recording failed for session ${this.session.id}: ${(err as Error).message}`);
        endWithError(503, 'store_unavailable', `the gateway can no longer record this stream (${(err as Error).message}); it was cut off`);
      },
      STREAM_BATCH_MS,
    );
    const offset = () => round1(performance.now() - this.t0);

    const headers = this.responseHeaders(upRes, true);
    res.writeHead(status, headers);
    // The headers go out with the first event (one packet, one wake-up for the client) or on their
    // own after HEADERS_ALONE_MS when the upstream is slow to send one — never held longer.
    let headersOut = false;
    const headerTimer = setTimeout(() => {
      if (!headersOut && !res.writableEnded && !res.destroyed) res.flushHeaders();
      headersOut = true;
    }, HEADERS_ALONE_MS);
    recorder.add(this.base('http.response', { status, headers: this.recordedResponseHeaders(upRes), stream: true, ttfb: round1(performance.now() - tForward), duration: this.elapsed() }));

    const write = (data: Buffer | string) => {
      if (!headersOut) {
        headersOut = true;
        clearTimeout(headerTimer);
      }
      if (!res.write(data) && !source.isPaused()) {
        source.pause();
        res.once('drain', () => source.resume());
      }
    };
    const recordChunk = (r: Pick<StreamChunkResult, 'log' | 'spans' | 'counts'>) => {
      if (r.log.length) recorder.events(offset(), r.log, r.spans, r.counts);
    };
    const endWithError = (statusCode: number, code: GatewayErrorCode, message: string) => {
      if (ended) return;
      ended = true;
      this.finished = true;
      upRes.destroy();
      source.destroy();
      if (!this.clientGone && !res.writableEnded) res.end(serializeSseEvent(errorEvent(this.style, statusCode, code, message)));
      recorder.add(this.base('http.error', { phase: 'stream', status: statusCode, code, message, offset: offset(), events: recorder.eventCount, bytes: size }));
      recorder.flush();
    };
    const release = (r: StreamChunkResult) => {
      if (r.forward.length) write(r.forward.length === 1 ? serializeSseEvent(r.forward[0]!) : r.forward.map(serializeSseEvent).join(''));
      recordChunk(r);
    };

    this.onClientGone = () => {
      if (ended) return;
      ended = true;
      this.finished = true;
      source.destroy();
      recorder.add(this.base('http.error', { phase: 'stream', code: 'client_closed', message: 'client disconnected mid-stream; the upstream request was aborted', offset: offset(), events: recorder.eventCount, bytes: size }));
      recorder.flush();
    };

    source.on('data', (chunk: Buffer) => {
      if (ended) return;
      size += chunk.length;
      if (size > max) {
        endWithError(413, 'response_too_large', `connection ${this.name}: the upstream stream exceeds the gateway limit of ${max} bytes (limits.maxResponseBytes); it was cut off`);
        return;
      }
      const comments = parser.comments;
      const events = parser.push(chunk);
      if (!streamMasker && !secretMasker) {
        write(chunk);
        if (events.length) recordChunk({ log: events, spans: [], counts: {} });
        return;
      }
      // Comments are keep-alives: their text is not relayed (it could echo anything), the beat is.
      if (parser.comments > comments) write(':\n\n');
      for (const e of events) {
        try {
          pass(secretMasker ? secretMasker.push(this.route.scrubber!.eventFields(e)) : undefined, e);
        } catch (err) {
          endWithError(500, 'masking_failed', `masking the stream failed: ${this.unexpectedMaskingError(err)}; the rest was not sent`);
          return;
        }
      }
    });
    /** Events the credential scrubber released (or `e` itself without one) go on through the connection's masker. */
    const pass = (scrubbed: StreamChunkResult | undefined, e?: SseEvent) => {
      if (!streamMasker) {
        if (scrubbed) release(scrubbed);
        return;
      }
      for (const ev of scrubbed ? scrubbed.forward : e ? [e] : []) release(streamMasker.push(ev));
    };
    source.once('end', () => {
      if (ended) return;
      const tail = parser.end();
      try {
        if (secretMasker) pass(secretMasker.end());
        if (streamMasker) release(streamMasker.end());
      } catch (err) {
        endWithError(500, 'masking_failed', `masking the end of the stream failed: ${this.unexpectedMaskingError(err)}; the rest was not sent`);
        return;
      }
      ended = true;
      this.finished = true;
      res.end();
      recorder.add(this.base('http.chunk', { offset: offset(), events: [], done: true, totalEvents: recorder.eventCount, bytes: size, incompleteTail: tail.incomplete || undefined, duration: this.elapsed() }));
      recorder.flush();
    });
    const broken = (what: string) => {
      if (this.clientGone || ended) return;
      const timedOut = this.upstreamTimedOut;
      if (timedOut !== undefined) endWithError(504, 'upstream_timeout', `connection ${this.name}: the upstream stream timed out midway (${timedOut}); it was cut off`);
      else endWithError(502, 'upstream_failed', `connection ${this.name}: ${what}`);
    };
    source.once('error', (err) => broken(`the upstream stream failed midway (${err.message})`));
    upRes.once('close', () => {
      if (!upRes.complete) broken('the upstream closed the stream before it was complete');
    });
  }
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

function decisionPayload(d: PolicyDecision, method: string, path: string, facts: RequestFacts): Record<string, unknown> {
  const p: Record<string, unknown> = { protocol: 'http', action: d.action, rule: d.rule, method, path };
  if (d.reason) p['reason'] = d.reason;
  if (facts.model) p['model'] = facts.model;
  if (d.mask) p['mask'] = d.mask;
  if (d.hold) p['hold'] = d.hold;
  return p;
}
