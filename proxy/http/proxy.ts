/**
 * The LLM/HTTP proxy listener (DESIGN.md, "HTTP routing"): `http://<listen.http>/<connection>/<rest>`
 * is forwarded to `<upstream>/<rest>` with the client's Custody credential replaced by the
 * connection's secret. This file is the listener's lifecycle: start, the idle-session sweep, and
 * a drained close. Each request goes through:
 *   admission.ts      route → canonical path → authenticate → refuse upgrades and method overrides
 *   exchange.ts       read and mask the body → policy → record BEFORE forwarding → hold / deny / forward
 *   relay-body.ts     the upstream's answer, whole or as it arrives (content-length or chunked)
 *   relay-stream.ts   text/event-stream, event by event (credential scrubbing, masking, batched recording)
 */
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { parseDuration } from '../../shared/config';
import type { SessionEndPayload } from '../../shared/events';
import { HTTP_PACING, SessionAuditWriter } from '../audit/session-writer';
import { closeServer, type Listener, listen, splitHostPort } from '../net';
import type { GatewayServices } from '../services';
import { admitExchange } from './admission';
import type { ProxyContext } from './context';
import { OffLoopMasking } from './off-loop';
import { sendError } from './errors';
import { type HttpSession, HttpSessionTracker } from './sessions';
import { SilenceWatch } from './silence-watch';
import { UpstreamTable } from './upstreams';

/** How long close() lets in-flight exchanges (streams, holds) finish before cutting them. */
const DRAIN_GRACE_MS = 10_000;

/** The proxy listener; connections (and their secrets) are read once, when it starts. */
export type HttpProxy = Listener;

/** Starts the HTTP proxy on `listen.http`. */
export async function startHttpProxy(s: GatewayServices): Promise<HttpProxy> {
  const upstreams = new UpstreamTable(s.config.connections);
  const sessions = new HttpSessionTracker(parseDuration(s.config.limits.sessionIdle));
  let closing = false;

  const writer = new SessionAuditWriter(s.store, HTTP_PACING);
  const connectTimeout = parseDuration(s.config.limits.upstreamConnectTimeout);
  const idle = s.config.limits.upstreamIdleTimeout;
  const silence = new SilenceWatch(parseDuration(idle), () => upstreams.agents(), `the upstream sent nothing for ${idle} (limits.upstreamIdleTimeout)`);
  const offLoop = OffLoopMasking.create(s.masking);
  const ctx: ProxyContext = { s, upstreams, sessions, writer, offLoop, connectTimeout, silence, isClosing: () => closing };
  const server = createServer({ noDelay: true }, (req, res) => {
    admitExchange(ctx, req, res).catch((err: unknown) => internalError(ctx, res, err));
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
    offLoop?.close();
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
        offLoop?.close();
      })();
      return closed;
    },
  };
}

function endSessions(ctx: ProxyContext, ended: HttpSession[], reason: 'idle' | 'shutdown' | 'replaced'): void {
  if (!ended.length) return;
  const now = Date.now();
  try {
    ctx.s.store.appendMany(
      ended.map((x) => ({ kind: 'session.end' as const, session: x.id, actor: x.identity.subject, connection: x.connection, payload: { protocol: 'http', reason, lastActivityAt: x.lastAt } satisfies SessionEndPayload, time: now })),
    );
  } catch (err) {
    ctx.s.log.warn(`http proxy: could not record the end of ${ended.length} session(s): ${(err as Error).message}`);
    return;
  }
  for (const x of ended) {
    const summary = ctx.s.store.liveSession(x.id);
    if (summary) ctx.s.bus.publish({ type: 'session.ended', session: summary });
  }
}

function internalError(ctx: ProxyContext, res: ServerResponse, err: unknown): void {
  ctx.s.log.error(`http proxy: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  if (!sendError(res, 'openai', 500, 'internal_error', 'the gateway failed to handle this request; it was not forwarded')) res.destroy();
}
