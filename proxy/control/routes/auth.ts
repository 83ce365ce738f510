/**
 * Console sign-in (see proxy/identity/console-login.ts for the methods):
 *
 *   GET  /api/auth/providers          public: which sign-in options this gateway offers
 *   POST /api/auth/key                public: {key} → console session cookie
 *   GET  /api/auth/oidc/start         public: ?issuer=<id>&next=<path> → 302 to the IdP (code + PKCE)
 *   GET  /api/auth/oidc/callback      public: the IdP's redirect → session cookie, then `next`
 *   POST /api/auth/logout             ends the cookie session
 *   GET  /login?token=…               the local login link (handled by server.ts through handleLoginLink)
 *
 * The session cookie is `HttpOnly; SameSite=Strict; Path=/` (plus `Secure` behind https). Every
 * sign-in, sign-out and failure is recorded: `auth.login`, `auth.logout`, `auth.failure`.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AuthFailureDetails, AuthLoginPayload, AuthLogoutPayload } from '../../../shared/events';
import type { Identity } from '../../../shared/identity';
import { AuthError } from '../../identity/authenticator';
import { safeNext } from '../../identity/console-login';
import { parseCookies, SESSION_COOKIE } from '../../identity/console-sessions';
import type { GatewayServices } from '../../services';
import { HANDLED, HttpError, type Router, sendJson } from '../router';

const OIDC_STATE_COOKIE = 'custody_oidc_state';
const SESSION_TTL_MS = 12 * 3_600_000;

function isHttps(req: IncomingMessage): boolean {
  return (req.socket as { encrypted?: boolean }).encrypted === true || String(req.headers['x-forwarded-proto'] ?? '').split(',')[0]?.trim() === 'https';
}

export function sourceOf(req: IncomingMessage): string {
  return req.socket.remoteAddress ?? 'unknown';
}

function cookie(name: string, value: string, opts: { maxAgeSec: number; sameSite: 'Strict' | 'Lax'; path: string; secure: boolean }): string {
  return `${name}=${encodeURIComponent(value)}; Path=${opts.path}; Max-Age=${opts.maxAgeSec}; HttpOnly; SameSite=${opts.sameSite}${opts.secure ? '; Secure' : ''}`;
}

function sessionCookie(req: IncomingMessage, id: string, expiresAt: number): string {
  return cookie(SESSION_COOKIE, id, { maxAgeSec: Math.max(1, Math.floor((expiresAt - Date.now()) / 1000)), sameSite: 'Strict', path: '/', secure: isHttps(req) });
}

function clearCookie(req: IncomingMessage, name: string, path: string, sameSite: 'Strict' | 'Lax'): string {
  return cookie(name, '', { maxAgeSec: 0, sameSite, path, secure: isHttps(req) });
}

/** This control plane's origin as the browser sees it (for the OIDC redirect URI). */
function ownOrigin(req: IncomingMessage): string {
  const host = req.headers.host;
  if (!host || !/^[A-Za-z0-9.\-[\]:]+$/.test(host)) throw new HttpError(400, 'bad_request', 'missing or invalid Host header');
  return `${isHttps(req) ? 'https' : 'http'}://${host}`;
}

/**
 * Starts a console session for `identity` and records the login. Returns the Set-Cookie value.
 * The session ends when the credential that made it does (token `exp`, key expiry), if sooner.
 */
function signIn(s: GatewayServices, req: IncomingMessage, identity: Identity, method: string, extra: Pick<AuthLoginPayload, 'keyId' | 'issuer' | 'refreshable'> = {}, refreshable = false): { cookie: string; expiresAt: number; sessionId: string } {
  // Every session belongs to a person (the IdP code flow builds its identity from the ID token).
  if (!identity.person) {
    const subject = identity.subject;
    try {
      identity = s.auth.withPerson(identity, () => `first sign-in: ${subject}`);
    } catch (err) {
      if (err instanceof AuthError) throw new HttpError(403, 'locked', err.message);
      throw err;
    }
  }
  // A session with a refresh token may outlive one access token (each request re-checks it, and
  // refreshes it near its end); any other ends with its credential.
  const ttlMs = refreshable ? SESSION_TTL_MS : Math.min(SESSION_TTL_MS, (identity.credentialExpiresAt ?? Infinity) - Date.now());
  if (ttlMs <= 0) throw new HttpError(401, 'unauthenticated', 'the credential has expired');
  const session = s.consoleSessions.create(identity, ttlMs);
  s.store.append({
    kind: 'auth.login',
    actor: identity.subject,
    payload: { method, actorName: identity.name, via: identity.via, person: identity.person, groups: identity.groups, roles: identity.roles, source: sourceOf(req), userAgent: req.headers['user-agent'], expiresAt: session.expiresAt, ...extra } satisfies AuthLoginPayload,
  });
  s.users.seen(identity);
  return { cookie: sessionCookie(req, session.id, session.expiresAt), expiresAt: session.expiresAt, sessionId: session.id };
}

/** Records a failed attempt; throws 429 when the source or the credential is over its limit. */
function failed(s: GatewayServices, req: IncomingMessage, method: string, err: unknown, extra: Pick<AuthFailureDetails, 'keyId' | 'issuer'> = {}, credential?: string): void {
  const code = err instanceof AuthError ? err.code : 'error';
  const message = err instanceof Error ? err.message : String(err);
  if (!s.login.failures.record(sourceOf(req), { method, reason: code, message, userAgent: req.headers['user-agent'], ...extra } satisfies AuthFailureDetails, { credential })) {
    throw new HttpError(429, 'too_many_attempts', 'too many failed sign-in attempts from this address; wait a minute');
  }
}

function redirect(res: ServerResponse, location: string, headers: Record<string, string | string[]> = {}): typeof HANDLED {
  res.writeHead(303, { location, 'cache-control': 'no-store', ...headers });
  res.end();
  return HANDLED;
}

function loginError(message: string): string {
  return `/login?error=${encodeURIComponent(message)}`;
}

/**
 * `GET /login?token=…`: the local login link. A valid token signs the browser in as the local
 * user and redirects to the console (dropping the token from the address bar); an invalid one
 * is recorded and sent back to the login page with an error.
 */
export function handleLoginLink(s: GatewayServices, req: IncomingMessage, res: ServerResponse, url: URL): void {
  // Only a navigation uses the link up: a HEAD or other probe must not spend a single-use link.
  if (req.method !== 'GET') {
    sendJson(res, 405, { error: { code: 'method_not_allowed', message: 'open the login link with GET (a browser navigation)' } }, { allow: 'GET' });
    return;
  }
  // The link is checked before any throttling: failures from this address (a page elsewhere
  // firing bad links through the browser) never lock out a valid link.
  const r = s.login.redeemLoginLink(url.searchParams.get('token'));
  if (!r.ok) {
    const why = {
      unknown: 'This login link is not valid. Run `custody login-link` for a new one.',
      used: 'This login link has already been used; each link signs in once. Run `custody login-link` for a new one.',
      expired: 'This login link has expired (links last 10 minutes). Run `custody login-link` for a new one.',
    }[r.reason];
    try {
      failed(s, req, 'local-link', new AuthError(r.reason === 'used' ? 'revoked' : r.reason === 'expired' ? 'expired' : 'unknown', why));
    } catch (err) {
      if (err instanceof HttpError) {
        sendJson(res, err.status, { error: { code: err.code, message: err.message } });
        return;
      }
      throw err;
    }
    redirect(res, loginError(why));
    return;
  }
  const { cookie: c } = signIn(s, req, r.identity, 'local-link');
  redirect(res, safeNext(url.searchParams.get('next')), { 'set-cookie': c });
}

/** An HTML hop for after the IdP redirect: a same-site navigation, so the Strict cookie is sent. */
function continuePage(res: ServerResponse, next: string, cookies: string[]): typeof HANDLED {
  const href = next.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
  const body = `<!doctype html><meta charset="utf-8"><meta http-equiv="refresh" content="0;url=${href}"><title>Signed in</title><p>Signed in. <a href="${href}">Continue to the console</a>.</p>\n`;
  res.writeHead(200, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
    'referrer-policy': 'no-referrer',
    'set-cookie': cookies,
  });
  res.end(body);
  return HANDLED;
}

export function registerAuthRoutes(router: Router, s: GatewayServices): void {
  router.get('/api/auth/providers', () => s.login.providers(), { public: true });

  router.post(
    '/api/auth/key',
    async ({ req, res, json }) => {
      const body = await json();
      const key = typeof body?.key === 'string' ? body.key.trim() : '';
      if (!key) throw new HttpError(400, 'bad_request', 'send {"key": "cst_…"}');
      let identity: Identity;
      try {
        identity = await s.auth.authenticate(key);
      } catch (err) {
        if (!(err instanceof AuthError)) throw err;
        failed(s, req, 'api-key', err, { keyId: /^cst_([a-z0-9]{12})_/.exec(key)?.[1] }, s.keys.knownPrefix(key));
        throw new HttpError(401, 'unauthenticated', err.message);
      }
      const { cookie: c, expiresAt } = signIn(s, req, identity, identity.via === 'oidc' ? 'oidc-token' : 'api-key', identity.keyId ? { keyId: identity.keyId } : {});
      sendJson(res, 200, { identity, expiresAt }, { 'set-cookie': c });
      return HANDLED;
    },
    { public: true },
  );

  router.get(
    '/api/auth/oidc/start',
    async ({ req, res, query }) => {
      const issuer = query.get('issuer') ?? '0';
      let begun: { url: string; state: string };
      try {
        begun = await s.login.beginOidc(issuer, `${ownOrigin(req)}/api/auth/oidc/callback`, query.get('next') ?? '/');
      } catch (err) {
        if (err instanceof HttpError) throw err;
        failed(s, req, 'oidc', err, { issuer });
        return redirect(res, loginError(err instanceof Error ? err.message : String(err)));
      }
      // Lax: the IdP's redirect back is a cross-site top-level navigation.
      return redirect(res, begun.url, { 'set-cookie': cookie(OIDC_STATE_COOKIE, begun.state, { maxAgeSec: 600, sameSite: 'Lax', path: '/api/auth/oidc', secure: isHttps(req) }) });
    },
    { public: true },
  );

  router.get(
    '/api/auth/oidc/callback',
    async ({ req, res, url }) => {
      const clearState = clearCookie(req, OIDC_STATE_COOKIE, '/api/auth/oidc', 'Lax');
      let done: Awaited<ReturnType<GatewayServices['login']['completeOidc']>>;
      try {
        const callback = new URL(`${ownOrigin(req)}${url.pathname}${url.search}`);
        done = await s.login.completeOidc(callback, parseCookies(req.headers.cookie)[OIDC_STATE_COOKIE]);
      } catch (err) {
        if (err instanceof HttpError) throw err;
        failed(s, req, 'oidc', err);
        return redirect(res, loginError(err instanceof Error ? err.message : String(err)), { 'set-cookie': clearState });
      }
      const { cookie: c, sessionId } = signIn(s, req, done.identity, 'oidc', { issuer: done.issuer, refreshable: done.refreshToken !== undefined }, done.refreshToken !== undefined);
      if (done.refreshToken) s.login.rememberRefresh(sessionId, done.issuer, done.refreshToken);
      return continuePage(res, done.next, [c, clearState]);
    },
    { public: true },
  );

  router.post(
    '/api/auth/logout',
    async ({ req, res }) => {
      const id = parseCookies(req.headers.cookie)[SESSION_COOKIE];
      const identity = id ? await s.consoleSessions.resolve(id) : undefined;
      if (id) s.consoleSessions.delete(id);
      if (id && identity) {
        s.store.append({ kind: 'auth.logout', actor: identity.subject, payload: { method: 'console', actorName: identity.name, source: sourceOf(req) } satisfies AuthLogoutPayload });
        s.login.loggedOut(id);
      }
      res.writeHead(204, { 'set-cookie': clearCookie(req, SESSION_COOKIE, '/', 'Strict'), 'cache-control': 'no-store' });
      res.end();
      return HANDLED;
    },
    { public: true },
  );
}
