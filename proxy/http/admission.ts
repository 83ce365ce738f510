/**
 * The way into an exchange: route the request to its connection (the first path segment),
 * canonicalize the rest of the path (path.ts), authenticate the client, and refuse what the gateway
 * never forwards (protocol upgrades, method overrides). What passes becomes an Exchange.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { AuthFailureDetails, HttpErrorPayload } from '../../shared/events';
import type { Identity } from '../../shared/identity';
import { StoreUnavailableError } from '../audit/store';
import { AuthError, credentialFrom } from '../identity/authenticator';
import type { ProxyContext } from './context';
import { errorStyleFor, type GatewayErrorCode, sendError } from './errors';
import { clientAddress, Exchange } from './exchange';
import { canonicalPath, methodOverride } from './path';

const AUTH_CODES: Record<string, GatewayErrorCode> = {
  missing: 'missing_api_key',
  expired: 'expired_api_key',
  revoked: 'revoked_api_key',
};

/** Handles one request on the proxy listener, from its request line to the end of its exchange. */
export async function admitExchange(ctx: ProxyContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
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
    const unserved = name ? s.unservedConnections?.get(name) : undefined;
    if (unserved !== undefined) {
      req.resume();
      sendError(res, 'openai', 503, 'connection_unavailable', `connection "${name}" is not served on this gateway: ${unserved}; the request was not forwarded`);
      return;
    }
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
  // A gateway the shared store has not admitted serves nothing (docs/SCALE-OUT.md, enrolment).
  const refusal = s.admissionRefusal?.();
  if (refusal !== undefined) {
    req.resume();
    sendError(res, style, 503, 'gateway_not_admitted', `${refusal}; the request was not forwarded`);
    return;
  }
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
    identity = credential !== undefined && credential.startsWith('cst_') && s.keys.indexed(credential) ? s.auth.authenticateKey(credential) : await s.auth.authenticate(credential);
  } catch (err) {
    if (err instanceof StoreUnavailableError) {
      req.resume();
      sendError(res, style, 503, 'store_unavailable', `the gateway cannot check this credential (${err.message}); the request was not forwarded`);
      return;
    }
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
    ctx.writer.defer([{ kind: 'http.error', actor: identity.subject, connection: name, payload: { phase: 'request', status: 501, code: 'upgrade_unsupported', message, method: req.method, path } satisfies HttpErrorPayload }]);
    sendError(res, style, 501, 'upgrade_unsupported', message);
    return;
  }

  // Policy sees the request line's method; a header or parameter asking the upstream to act as
  // another method (or on another URL) would step around it, so it is refused.
  const override = methodOverride(req.headers, search);
  if (override !== undefined) {
    req.resume();
    const message = `connection ${name}: ${override} asks the upstream to treat the request as another method or URL, which the gateway refuses; send the method you mean`;
    ctx.writer.defer([{ kind: 'http.error', actor: identity.subject, connection: name, payload: { phase: 'request', status: 400, code: 'method_override', message, method: req.method, path } satisfies HttpErrorPayload }]);
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
    { protocol: 'http', reason: err.code, message: err.message, method: req.method, path, clientAddress: clientAddress(req), userAgent: req.headers['user-agent'] } satisfies AuthFailureDetails,
    { connection, credential: ctx.s.keys.knownPrefix(credential) },
  );
}
