/**
 * The control plane's WebSocket, `/api/events` (RFC 6455, through the `ws` package): pushes the
 * typed ServerMessages of shared/messages.ts from the EventBus to each signed-in client allowed to
 * see them.
 *
 * Upgrade: the client is signed in by the console session cookie or by `Authorization: Bearer`
 * (API key or OIDC token). A browser always sends `Origin`; it must be this control plane's own
 * origin, or a page elsewhere could ride the user's cookie (cross-site WebSocket hijacking). A
 * request without `Origin` is a non-browser client and must use Bearer.
 *
 * Messages: `hello` first (its `seq` is the bus position at connect time; everything later arrives
 * live; with a shared store, so do the other gateways' session messages, for those who may see sessions). Hold messages go to those who may decide the hold (its approver groups, admins), to its
 * requester, and to reviewers (read-only — they read every hold over REST as well); session and
 * export messages to reviewers and admins; configuration changes to all.
 * A reconnecting client sends `{type: "resume", epoch, after}` and receives what it missed, or a
 * `resync` when the bus can no longer replay it (gateway restarted, or the gap left the buffer).
 *
 * Keepalive: a ping every `pingMs`; a client that has not answered the previous ping is dropped.
 * At each ping the credential is checked again: a signed-out session or a revoked key closes the
 * socket (code 4401). A client that does not keep up (over `maxBufferedBytes` queued) is dropped
 * and resumes when it reconnects.
 */
import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';
import type { AuthFailureDetails } from '../../shared/events';
import { hasRole, type Identity } from '../../shared/identity';
import type { ClientMessage, ServerMessage } from '../../shared/messages';
import { holdVisibleTo } from '../approvals/hold-queue';
import { AuthError, credentialFrom } from '../identity/authenticator';
import { parseCookies, SESSION_COOKIE } from '../identity/console-sessions';
import type { GatewayServices } from '../services';

export const EVENTS_PATH = '/api/events';

/** Close code for a client whose sign-in ended (outside the IANA range; 4000–4999 is private use). */
export const CLOSE_SIGNED_OUT = 4401;

/**
 * Same-origin check for browser requests: `Origin` must name the host the request was sent to
 * (`Host`), over http or https. Absent `Origin` is a non-browser client and passes here.
 */
export function originAllowed(req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  const host = req.headers.host;
  if (!host) return false;
  try {
    const u = new URL(origin);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.host === host.toLowerCase();
  } catch {
    return false;
  }
}

/** Which messages an identity receives. Every message kind is decided here (see `satisfies never`). */
export function messageVisibleTo(identity: Identity, msg: ServerMessage): boolean {
  switch (msg.type) {
    case 'hello':
    case 'resync':
    case 'policy.updated':
    case 'masking.updated':
    case 'connections.updated':
      return true;
    case 'hold.created':
    case 'hold.updated':
    case 'hold.resolved':
      // Reviewers read every hold over REST too; they see them live, read-only.
      return holdVisibleTo(identity, msg.hold) || hasRole(identity, 'reviewer');
    case 'session.started':
    case 'session.event':
    case 'session.ended':
    case 'export.progress':
    case 'export.done':
    case 'export.failed':
      return hasRole(identity, 'reviewer');
    default:
      msg satisfies never;
      return false;
  }
}

interface Client {
  ws: WebSocket;
  identity: Identity;
  /** Console session id (cookie) or the bearer credential, to check again at each ping. */
  cookie?: string;
  bearer?: string;
  /** Bus sequence at hello: messages after it are delivered live. */
  liveFrom: number;
  alive: boolean;
}

export interface EventsSocketOptions {
  pingMs?: number;
  maxBufferedBytes?: number;
}

export interface EventsSocket {
  readonly clients: number;
  close(): Promise<void>;
}

const STATUS_TEXT: Record<number, string> = { 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found', 429: 'Too Many Requests' };

function reject(socket: Duplex, status: number, reason: string, message: string): void {
  const body = JSON.stringify({ error: { code: reason, message } });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? 'Bad Request'}\r\n` +
      `Content-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

export function attachEventsSocket(server: Server, s: GatewayServices, opts: EventsSocketOptions = {}): EventsSocket {
  const pingMs = opts.pingMs ?? 30_000;
  const maxBuffered = opts.maxBufferedBytes ?? 8 * 1024 * 1024;
  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024, clientTracking: false });
  const clients = new Set<Client>();

  const send = (c: Client, msg: ServerMessage, text?: string) => {
    if (c.ws.readyState !== c.ws.OPEN) return;
    if (c.ws.bufferedAmount > maxBuffered) {
      c.ws.terminate();
      return;
    }
    c.ws.send(text ?? JSON.stringify(msg));
  };

  const unsubscribe = s.bus.subscribe((msg) => {
    let text: string | undefined;
    for (const c of clients) if (messageVisibleTo(c.identity, msg)) send(c, msg, (text ??= JSON.stringify(msg)));
  });
  const offLogout = s.login.onLogout((sessionId) => {
    for (const c of clients) if (c.cookie === sessionId) c.ws.close(CLOSE_SIGNED_OUT, 'signed out');
  });

  const still = async (c: Client): Promise<boolean> => {
    if (c.cookie) {
      // An IdP session is refreshed here too, so a console that only listens keeps its session.
      await s.login.refreshSession(c.cookie, s.consoleSessions);
      return (await s.consoleSessions.resolve(c.cookie)) !== undefined;
    }
    if (c.bearer) {
      try {
        await s.auth.authenticate(c.bearer);
        return true;
      } catch {
        return false;
      }
    }
    return false;
  };

  const timer = setInterval(() => {
    for (const c of clients) {
      if (!c.alive) {
        c.ws.terminate();
        continue;
      }
      c.alive = false;
      c.ws.ping();
      void still(c).then((ok) => {
        if (!ok && c.ws.readyState === c.ws.OPEN) c.ws.close(CLOSE_SIGNED_OUT, 'signed out or credential no longer valid');
      });
    }
  }, pingMs);
  timer.unref();

  function onMessage(c: Client, data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean): void {
    if (isBinary) return;
    let msg: ClientMessage;
    try {
      msg = JSON.parse(Buffer.isBuffer(data) ? data.toString('utf8') : Array.isArray(data) ? Buffer.concat(data).toString('utf8') : Buffer.from(data).toString('utf8')) as ClientMessage;
    } catch {
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    switch (msg.type) {
      case 'resume': {
        const after = Number(msg.after);
        if (typeof msg.epoch !== 'string' || !Number.isInteger(after) || after < 0) return;
        const epoch = msg.epoch;
        // Missed recorded events are read back from the store: once it has folded them, off this thread's wait.
        void s.store.settledRead(() => s.bus.since(epoch, after)).then((missed) => {
          if (missed === null) {
            const reason = epoch !== s.bus.epoch ? 'the gateway restarted; reload the current state' : 'too many messages were missed; reload the current state';
            send(c, { type: 'resync', reason, seq: s.bus.lastSeq, epoch: s.bus.epoch, at: Date.now() });
            return;
          }
          // Messages after `liveFrom` were (or will be) delivered live; replay only the ones before.
          for (const m of missed) if (m.seq <= c.liveFrom && messageVisibleTo(c.identity, m)) send(c, m);
        });
        return;
      }
      case 'ping':
        c.alive = true;
        return;
      default:
        msg satisfies never;
    }
  }

  async function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== EVENTS_PATH) {
      reject(socket, 404, 'not_found', `no WebSocket at ${path}`);
      return;
    }
    if (!originAllowed(req)) {
      reject(socket, 403, 'bad_origin', `Origin ${req.headers.origin} is not this control plane`);
      return;
    }
    const cookie = parseCookies(req.headers.cookie)[SESSION_COOKIE];
    const bearer = credentialFrom(req.headers);
    let identity: Identity | undefined;
    let via: Pick<Client, 'cookie' | 'bearer'> = {};
    if (cookie && req.headers.origin !== undefined) {
      await s.login.refreshSession(cookie, s.consoleSessions);
      identity = await s.consoleSessions.resolve(cookie);
      if (identity) via = { cookie };
    }
    if (!identity && bearer) {
      try {
        identity = await s.auth.authenticate(bearer);
        via = { bearer };
      } catch (err) {
        if (!(err instanceof AuthError)) throw err;
        const underLimit = s.login.failures.record(req.socket.remoteAddress ?? 'unknown', { method: 'bearer', path: EVENTS_PATH, reason: err.code, message: err.message } satisfies AuthFailureDetails, { credential: s.keys.knownPrefix(bearer) });
        reject(socket, underLimit ? 401 : 429, underLimit ? 'unauthenticated' : 'too_many_attempts', err.message);
        return;
      }
    }
    if (!identity) {
      const message =
        cookie && req.headers.origin === undefined ? 'a session cookie is accepted only from a browser (with Origin); send Authorization: Bearer' : 'sign in first (console session) or send an API key or OIDC token as a Bearer token';
      reject(socket, 401, 'unauthenticated', message);
      return;
    }
    const who = identity;
    // With a shared store, the other gateways' sessions are followed while someone may see them;
    // waiting for that here means everything they ship after `hello` reaches this client.
    if (s.team && hasRole(who, 'reviewer')) {
      const watch = s.team.watchSessions();
      socket.once('close', () => watch.release());
      await watch.ready;
      if (socket.destroyed) return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const c: Client = { ws, identity: who, ...via, liveFrom: s.bus.lastSeq, alive: true };
      clients.add(c);
      ws.on('pong', () => (c.alive = true));
      ws.on('message', (data, isBinary) => onMessage(c, data, isBinary));
      ws.on('close', () => clients.delete(c));
      ws.on('error', () => clients.delete(c));
      send(c, {
        type: 'hello',
        user: { subject: who.subject, name: who.name, roles: who.roles },
        gatewayVersion: s.version,
        seq: c.liveFrom,
        epoch: s.bus.epoch,
        at: Date.now(),
      });
    });
  }

  const listener = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    onUpgrade(req, socket, head).catch((err: unknown) => {
      s.log.error(`events socket: upgrade failed: ${err instanceof Error ? err.stack : String(err)}`);
      if (!socket.destroyed) reject(socket, 400, 'internal', 'the WebSocket upgrade failed');
    });
  };
  server.on('upgrade', listener);

  return {
    get clients() {
      return clients.size;
    },
    close: () =>
      new Promise<void>((resolve) => {
        clearInterval(timer);
        unsubscribe();
        offLogout();
        server.off('upgrade', listener);
        wss.close();
        if (clients.size === 0) return resolve();
        // Wait for the closing handshakes, but not for clients that do not answer.
        const deadline = setTimeout(() => {
          for (const c of clients) c.ws.terminate();
          resolve();
        }, 2000);
        deadline.unref();
        for (const c of clients) {
          c.ws.once('close', () => {
            if (clients.size === 0) {
              clearTimeout(deadline);
              resolve();
            }
          });
          c.ws.close(1001, 'gateway stopping');
        }
      }),
  };
}
