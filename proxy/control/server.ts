/**
 * The control plane: REST under /api/…, the WebSocket at /api/events (see events-socket.ts), and
 * the console's static files. Every /api route except those marked public needs a signed-in user:
 * a console session cookie, or `Authorization: Bearer` with an API key or OIDC token.
 */
import { createReadStream, existsSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AuthFailureDetails } from '../../shared/events';
import { hasRole, type Identity } from '../../shared/identity';
import { AuthError, credentialFrom } from '../identity/authenticator';
import { parseCookies, SESSION_COOKIE } from '../identity/console-sessions';
import type { GatewayServices } from '../services';
import { attachEventsSocket, originAllowed } from './events-socket';
import { HANDLED, HttpError, readBody, Router, sendJson } from './router';
import { handleLoginLink, sourceOf } from './routes/auth';
import { registerSessionRoutes } from './routes/sessions';
import { wrongPortAnswer } from './wrong-port';
import { closeServer, listen, splitHostPort } from '../net';

const JSON_LIMIT = 2 * 1024 * 1024;

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.json': 'application/json',
  '.map': 'application/json',
  '.woff2': 'font/woff2',
};

/** Where the built console lives (dist/renderer), found relative to this file or the bundle. */
export function consoleDir(): string {
  const here = fileURLToPath(new URL('.', import.meta.url));
  for (const dir of [resolve(here, '../../dist/renderer'), resolve(here, '../renderer'), resolve(here, 'renderer')]) {
    if (existsSync(join(dir, 'index.html'))) return dir;
  }
  return resolve(here, '../../dist/renderer');
}

export interface ControlPlane {
  server: Server;
  router: Router;
  address: string;
  /** Resolves the signed-in identity of a request (cookie or bearer), or undefined. */
  identify(req: IncomingMessage): Promise<Identity | undefined>;
  close(): Promise<void>;
}

export type RouteModule = (router: Router, services: GatewayServices) => void;

export async function startControlPlane(
  s: GatewayServices,
  modules: RouteModule[] = [],
  opts: { /** The HTTP proxy's bound address, named to clients that reach the console's port by mistake. */ httpAddress?: () => string | undefined } = {},
): Promise<ControlPlane> {
  const router = new Router();
  // Answered from memory: a locked or slow store shows here as `degraded` with its cause, at once.
  router.get(
    '/api/health',
    () => {
      const store = s.store.health();
      const shared = s.sharedStore?.health();
      const combined = s.combinedCheckpoints?.health();
      return {
        status: store.state === 'ok' && (shared?.state ?? 'ok') === 'ok' && combined?.state !== 'refused' ? 'ok' : 'degraded',
        version: s.version,
        events: s.store.head().size,
        store,
        ...(s.audit ? { audit: s.audit.health() } : {}),
        ...(shared ? { sharedStore: shared } : {}),
        ...(combined ? { combinedCheckpoint: combined } : {}),
      };
    },
    { public: true },
  );
  router.get('/api/me', ({ identity }) => identity!);
  registerSessionRoutes(router, s);
  for (const register of modules) register(router, s);

  const staticRoot = consoleDir();

  async function identify(req: IncomingMessage): Promise<Identity | undefined> {
    const cookie = parseCookies(req.headers.cookie)[SESSION_COOKIE];
    if (cookie) {
      // An IdP session near the end of its access token is refreshed first (groups read again).
      await s.login.refreshSession(cookie, s.consoleSessions);
      const identity = await s.consoleSessions.resolve(cookie);
      if (identity) return identity;
    }
    const credential = credentialFrom(req.headers);
    if (!credential) return undefined;
    return s.auth.authenticate(credential);
  }

  /** A browser navigating to a console page without a session goes to the login page first. */
  async function needsSignIn(req: IncomingMessage, url: URL): Promise<boolean> {
    if ((req.method ?? 'GET') !== 'GET' || url.pathname === '/login' || extname(url.pathname) !== '') return false;
    if (!String(req.headers.accept ?? '').includes('text/html')) return false;
    try {
      return (await identify(req)) === undefined;
    } catch {
      return true;
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://control.invalid');
    if (!url.pathname.startsWith('/api/')) {
      if (url.pathname === '/login' && url.searchParams.has('token')) return handleLoginLink(s, req, res, url);
      const misdirected = wrongPortAnswer(req, url.pathname, s.config, opts.httpAddress?.());
      if (misdirected) {
        res.writeHead(misdirected.status, { 'content-type': 'application/json', 'x-custody-error': 'wrong_port', 'cache-control': 'no-store' }).end(JSON.stringify(misdirected.body));
        return;
      }
      if (await needsSignIn(req, url)) {
        res.writeHead(302, { location: `/login?next=${encodeURIComponent(url.pathname + url.search)}`, 'cache-control': 'no-store' }).end();
        return;
      }
      return serveStatic(staticRoot, url.pathname, res);
    }
    // Cookie sessions are SameSite=Strict; a browser's cross-origin write is refused outright too.
    if (req.method !== 'GET' && req.method !== 'HEAD' && !originAllowed(req)) throw new HttpError(403, 'bad_origin', `Origin ${req.headers.origin} is not this control plane`);
    const m = router.match(req.method ?? 'GET', url.pathname);
    if (!('route' in m)) {
      throw m.methodMismatch ? new HttpError(405, 'method_not_allowed', `${req.method} is not allowed on ${url.pathname}`) : new HttpError(404, 'not_found', `no route ${url.pathname}`);
    }
    const { route, params } = m;
    let identity: Identity | undefined;
    try {
      identity = await identify(req);
    } catch (err) {
      if (!(err instanceof AuthError)) throw err;
      if (!route.options.public) {
        if (!s.login.failures.record(sourceOf(req), { method: 'bearer', path: url.pathname, reason: err.code, message: err.message } satisfies AuthFailureDetails, { credential: s.keys.knownPrefix(credentialFrom(req.headers)) })) {
          throw new HttpError(429, 'too_many_attempts', 'too many failed sign-in attempts from this address; wait a minute');
        }
        throw new HttpError(401, 'unauthenticated', err.message);
      }
    }
    if (!route.options.public) {
      if (!identity) throw new HttpError(401, 'unauthenticated', 'sign in first: open the console login page, or send an API key as a Bearer token');
      if (route.options.role && !hasRole(identity, route.options.role)) throw new HttpError(403, 'forbidden', `this needs the ${route.options.role} role`);
    }
    let parsed: unknown;
    let bodyRead = false;
    // `audit.remoteCommit: sync`: a change answers only once the shared store holds what it recorded.
    const headBefore = req.method !== 'GET' && req.method !== 'HEAD' && s.store.remoteCommit ? s.store.head().size : undefined;
    const result = await route.handler({
      req,
      res,
      params,
      query: url.searchParams,
      url,
      identity,
      async json<T>() {
        if (!bodyRead) {
          bodyRead = true;
          const buf = await readBody(req, JSON_LIMIT);
          try {
            parsed = buf.length ? JSON.parse(buf.toString('utf8')) : undefined;
          } catch (err) {
            throw new HttpError(400, 'invalid_json', `request body is not valid JSON: ${(err as Error).message}`);
          }
        }
        return parsed as T;
      },
    });
    if (result === HANDLED || res.headersSent) return;
    if (headBefore !== undefined && s.store.head().size > headBefore) await sharedCommit();
    if (result === undefined) {
      res.writeHead(204).end();
      return;
    }
    sendJson(res, 200, result);
  }

  /**
   * Under `audit.remoteCommit: sync`, a control-plane change (a key, a revocation, a person, a lock,
   * a policy, a vote) is acknowledged only once the shared store has committed its events and the
   * signed rows the other gateways enforce. When it has not, the answer says the change is made
   * here, recorded in this gateway's log, and not yet shared.
   */
  function sharedCommit(): Promise<void> {
    return new Promise((resolve, reject) =>
      s.store.remoteCommitted(
        (err) => (err ? reject(new HttpError(503, 'store_unavailable', `${err.message}. The change is made on this gateway; the other gateways of the group may not have it until then`)) : resolve()),
        { push: true },
      ),
    );
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (err instanceof HttpError) sendJson(res, err.status, { error: { code: err.code, message: err.message } });
      else {
        s.log.error(`control plane: ${req.method} ${req.url}: ${err instanceof Error ? err.stack : String(err)}`);
        const message = err instanceof Error && err.name === 'StoreUnavailableError' ? err.message : 'internal error';
        sendJson(res, err instanceof Error && err.name === 'StoreUnavailableError' ? 503 : 500, { error: { code: 'internal', message } });
      }
    });
  });
  server.keepAliveTimeout = 5000;
  const events = attachEventsSocket(server, s);
  const [host, port] = splitHostPort(s.config.listen.control);
  await listen(server, host, port);
  const addr = server.address() as AddressInfo;
  return {
    server,
    router,
    address: `${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`,
    identify,
    close: async () => {
      await events.close();
      await closeServer(server);
    },
  };
}

function serveStatic(root: string, pathname: string, res: ServerResponse): void {
  let rel: string;
  try {
    rel = normalize(decodeURIComponent(pathname)).replace(/^([/\\])+/, '');
  } catch {
    rel = '';
  }
  let file = resolve(root, rel);
  if (!file.startsWith(root + sep) && file !== root) file = join(root, 'index.html');
  if (!existsSync(file) || statSync(file).isDirectory()) file = join(root, 'index.html'); // client-side routes
  if (!existsSync(file)) {
    res.writeHead(503, { 'content-type': 'text/plain; charset=utf-8' });
    res.end('The console is not built. Run `npm run build`, then reload.\n');
    return;
  }
  const isHtml = file.endsWith('.html');
  res.writeHead(200, {
    'content-type': MIME[extname(file)] ?? 'application/octet-stream',
    'cache-control': isHtml ? 'no-cache' : 'public, max-age=3600',
    'x-content-type-options': 'nosniff',
    ...(isHtml
      ? {
          'content-security-policy': "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'",
          'x-frame-options': 'DENY',
          'referrer-policy': 'no-referrer',
        }
      : {}),
  });
  createReadStream(file).pipe(res);
}
