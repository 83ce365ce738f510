/**
 * The main process's subscription to the control plane's WebSocket (`/api/events`, messages in
 * shared/messages.ts), so approvers are notified while the window is closed. Reconnects with
 * backoff; on reconnect it sends `{type: "resume", epoch, after}` so nothing is missed, and asks
 * its owner to re-read the pending holds whenever continuity is lost (first connect, a new gateway
 * epoch, a `resync`, a gap in sequence numbers).
 */
import WebSocket from 'ws';
import type { HoldView } from '../shared/holds';
import type { Identity } from '../shared/identity';
import type { ClientMessage, ServerMessage } from '../shared/messages';
import type { Approver, HoldNotifier } from './notifications';

export type Headers = Record<string, string>;
export type SyncReason = 'first-connect' | 'new-epoch' | 'resync' | 'gap';
export type EventsStatus = { status: 'connecting' } | { status: 'open' } | { status: 'closed'; detail: string; retryInMs: number | null };

export interface ControlPlaneEventsOptions {
  /** Control-plane origin, e.g. `http://127.0.0.1:7420`. */
  origin: string;
  /** Credentials for each connection attempt: `authorization: Bearer …` or a session `cookie`. */
  headers: () => Headers | Promise<Headers>;
  onMessage(msg: ServerMessage): void;
  /** Continuity was lost or never existed: re-read current state (pending holds). */
  onSync?(reason: SyncReason): void;
  onStatus?(status: EventsStatus): void;
  /** The control plane refused the credential (HTTP 401/403 on upgrade). */
  onRefused?(status: number): void;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Application-level ping interval (keeps idle NAT/proxies from dropping the socket). */
  pingMs?: number;
}

export function eventsUrl(origin: string): string {
  const u = new URL('/api/events', origin);
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.toString();
}

function isServerMessage(v: unknown): v is ServerMessage {
  const m = v as Partial<ServerMessage> | null;
  return typeof m === 'object' && m !== null && typeof m.type === 'string' && typeof m.seq === 'number' && typeof m.epoch === 'string';
}

export class ControlPlaneEvents {
  private ws: WebSocket | undefined;
  private epoch: string | undefined;
  private lastSeq = 0;
  private failures = 0;
  private stopped = true;
  private retryTimer: NodeJS.Timeout | undefined;
  private pingTimer: NodeJS.Timeout | undefined;
  private readonly initialBackoffMs: number;
  private readonly maxBackoffMs: number;

  constructor(private readonly o: ControlPlaneEventsOptions) {
    this.initialBackoffMs = o.initialBackoffMs ?? 500;
    this.maxBackoffMs = o.maxBackoffMs ?? 15_000;
  }

  /** Where a reconnect resumes from. */
  get position(): { epoch: string | undefined; seq: number } {
    return { epoch: this.epoch, seq: this.lastSeq };
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    this.ws?.close(1000, 'client stopping');
    this.ws?.terminate();
    this.ws = undefined;
  }

  private send(msg: ClientMessage): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    this.o.onStatus?.({ status: 'connecting' });
    let headers: Headers;
    try {
      headers = await this.o.headers();
    } catch (err) {
      this.retry(`no credentials: ${(err as Error).message}`);
      return;
    }
    if (this.stopped) return;
    const ws = new WebSocket(eventsUrl(this.o.origin), { headers, handshakeTimeout: 10_000, maxPayload: 16 * 1024 * 1024 });
    this.ws = ws;
    let failure = 'connection closed';
    let refused = false;
    ws.on('unexpected-response', (_req, res) => {
      refused = true;
      failure = `the control plane refused the event stream (HTTP ${res.statusCode})`;
      if (res.statusCode === 401 || res.statusCode === 403) this.o.onRefused?.(res.statusCode);
      res.resume();
      ws.terminate();
    });
    ws.on('error', (err) => {
      if (!refused) failure = err.message;
    });
    ws.on('open', () => {
      this.failures = 0;
      this.o.onStatus?.({ status: 'open' });
      if (this.epoch) this.send({ type: 'resume', epoch: this.epoch, after: this.lastSeq });
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.send({ type: 'ping' }), this.o.pingMs ?? 25_000);
      this.pingTimer.unref?.();
    });
    ws.on('message', (data) => {
      let msg: unknown;
      try {
        msg = JSON.parse(String(data));
      } catch {
        return; // not ours to interpret
      }
      if (isServerMessage(msg)) this.receive(msg);
    });
    ws.on('close', (code, reason) => {
      clearInterval(this.pingTimer);
      if (this.ws !== ws) return;
      this.ws = undefined;
      this.retry(code === 1000 || code === 1005 ? failure : `${failure} (${code}${reason.length ? ` ${String(reason)}` : ''})`);
    });
  }

  private receive(msg: ServerMessage): void {
    if (msg.type === 'hello' && msg.epoch === this.epoch) {
      // A reconnect's greeting: the resume we sent brings what was missed, so the position stays.
      this.o.onMessage(msg);
      return;
    }
    if (msg.epoch !== this.epoch) {
      const reason: SyncReason = this.epoch === undefined ? 'first-connect' : 'new-epoch';
      this.epoch = msg.epoch;
      this.lastSeq = msg.seq;
      this.o.onSync?.(reason);
      this.o.onMessage(msg);
      return;
    }
    if (msg.seq <= this.lastSeq) return; // already seen (replayed on resume)
    const gap = msg.seq > this.lastSeq + 1;
    this.lastSeq = msg.seq;
    if (msg.type === 'resync') this.o.onSync?.('resync');
    else if (gap) this.o.onSync?.('gap');
    this.o.onMessage(msg);
  }

  private retry(detail: string): void {
    if (this.stopped) return;
    this.failures++;
    const inMs = Math.min(this.maxBackoffMs, this.initialBackoffMs * 2 ** (this.failures - 1));
    this.o.onStatus?.({ status: 'closed', detail, retryInMs: inMs });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.connect(), inMs);
  }
}

async function getJson(origin: string, path: string, headers: Headers): Promise<{ status: number; body: unknown }> {
  const res = await fetch(new URL(path, origin), { headers: { accept: 'application/json', ...headers }, signal: AbortSignal.timeout(10_000) });
  const text = await res.text();
  let body: unknown;
  try {
    body = text ? JSON.parse(text) : undefined;
  } catch {
    body = text;
  }
  return { status: res.status, body };
}

/** The signed-in identity (`GET /api/me`), with groups. */
export async function fetchApprover(origin: string, headers: Headers): Promise<Approver> {
  const { status, body } = await getJson(origin, '/api/me', headers);
  if (status !== 200) throw new Error(`GET /api/me answered ${status}`);
  const me = body as Identity;
  return { subject: me.subject, name: me.name, roles: me.roles, groups: me.groups };
}

/** Pending holds (`GET /api/holds?state=pending`); accepts a bare array or `{holds}`. */
export async function fetchPendingHolds(origin: string, headers: Headers): Promise<HoldView[]> {
  const { status, body } = await getJson(origin, '/api/holds?state=pending', headers);
  if (status !== 200) throw new Error(`GET /api/holds answered ${status}`);
  const list = Array.isArray(body) ? body : (body as { holds?: unknown }).holds;
  if (!Array.isArray(list)) throw new Error('GET /api/holds: unexpected response');
  return list as HoldView[];
}

export interface HoldWatch {
  events: ControlPlaneEvents;
  stop(): void;
  /** Resolves after the next state refresh (tests, and the first badge update). */
  synced(): Promise<void>;
}

/**
 * Connects a HoldNotifier to a control plane: stream messages go to the notifier; whenever
 * continuity is lost, the signed-in identity and the pending holds are read again.
 */
export function watchHolds(opts: {
  origin: string;
  headers: () => Headers | Promise<Headers>;
  notifier: HoldNotifier;
  onStatus?: (s: EventsStatus) => void;
  onRefused?: (status: number) => void;
  log?: (msg: string) => void;
  initialBackoffMs?: number;
}): HoldWatch {
  let waiters: (() => void)[] = [];
  let refreshing: Promise<void> = Promise.resolve();
  const refresh = (reason: SyncReason) => {
    refreshing = refreshing.then(async () => {
      try {
        const headers = await opts.headers();
        opts.notifier.setApprover(await fetchApprover(opts.origin, headers));
        const since = opts.notifier.mark();
        opts.notifier.reset(await fetchPendingHolds(opts.origin, headers), since);
      } catch (err) {
        opts.log?.(`could not refresh holds after ${reason}: ${(err as Error).message}`);
      }
      const w = waiters;
      waiters = [];
      w.forEach((f) => f());
    });
  };
  const events = new ControlPlaneEvents({
    origin: opts.origin,
    headers: opts.headers,
    onMessage: (m) => opts.notifier.handle(m),
    onSync: refresh,
    onStatus: opts.onStatus,
    onRefused: opts.onRefused,
    initialBackoffMs: opts.initialBackoffMs,
  });
  events.start();
  return {
    events,
    stop: () => events.stop(),
    synced: () => new Promise<void>((resolve) => waiters.push(resolve)),
  };
}

/**
 * Credentials for the desktop's own gateway: a fresh single-use login link (from `freshLink`) is
 * redeemed at `/login?token=…` for a console session cookie, which the main process then presents
 * with the control plane's own `Origin` (the events socket takes cookies only with a same-origin
 * Origin). `invalidate()` after a refusal signs in again, with a new link, on the next attempt.
 */
export function consoleSessionCredentials(origin: string, freshLink: () => Promise<string>): { headers: () => Promise<Headers>; invalidate(): void } {
  let cached: Promise<Headers> | undefined;
  const signIn = async (): Promise<Headers> => {
    const res = await fetch(await freshLink(), { redirect: 'manual', signal: AbortSignal.timeout(10_000) });
    await res.body?.cancel();
    const session = res.headers
      .getSetCookie()
      .map((line) => line.split(';')[0]!.trim())
      .find((pair) => pair.startsWith('custody_session=') && pair.length > 'custody_session='.length);
    if (!session) throw new Error(`the console token was not accepted (HTTP ${res.status})`);
    return { cookie: session, origin };
  };
  return {
    headers: () => {
      cached ??= signIn().catch((err: unknown) => {
        cached = undefined;
        throw err;
      });
      return cached;
    },
    invalidate: () => {
      cached = undefined;
    },
  };
}
