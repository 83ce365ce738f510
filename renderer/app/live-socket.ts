/**
 * The live feed: one WebSocket to `/api/events` (shared/messages.ts). Messages are applied in `seq`
 * order; after a drop the socket reconnects with backoff and resumes from the last `seq`; a `resync`
 * (or a gateway restart) reloads the lists from the REST API so nothing is missed.
 */
import type { ServerMessage } from '../../shared/messages';
import { backoff, SeqTracker } from '../lib/live';
import { authStore, inboxStore, sessionsStore, uiStore } from './context';

type Listener = (msg: ServerMessage) => void;

const listeners = new Set<Listener>();
const tracker = new SeqTracker();
let socket: WebSocket | undefined;
let attempt = 0;
let timer: ReturnType<typeof setTimeout> | undefined;
let ping: ReturnType<typeof setInterval> | undefined;
let stopped = true;

/** Subscribes to every applied message (pages use it for export progress, policy updates…). */
export function onMessage(fn: Listener): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function dispatch(msg: ServerMessage): void {
  switch (msg.type) {
    case 'hold.created':
    case 'hold.updated':
    case 'hold.resolved':
      inboxStore.getState().apply(msg);
      break;
    case 'session.started':
    case 'session.ended':
      sessionsStore.getState().sessionChanged(msg.session);
      break;
    case 'session.event':
      sessionsStore.getState().eventArrived(msg.event, msg.gateway);
      break;
    case 'hello':
    case 'policy.updated':
    case 'masking.updated':
    case 'connections.updated':
    case 'export.progress':
    case 'export.done':
    case 'export.failed':
    case 'resync':
      break;
    default:
      msg satisfies never;
  }
  for (const l of listeners) l(msg);
}

function resync(): void {
  void inboxStore.getState().load();
  if (inboxStore.getState().historyLoaded) void inboxStore.getState().loadHistory();
  sessionsStore.getState().reload();
}

function connect(): void {
  if (stopped) return;
  uiStore.getState().setLive('connecting');
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/events`;
  const ws = new WebSocket(url);
  socket = ws;
  ws.onopen = () => {
    attempt = 0;
    uiStore.getState().setLive('live');
    authStore.getState().setOffline(false);
    const resume = tracker.resumeMessage();
    if (resume) ws.send(JSON.stringify(resume));
    ping = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify({ type: 'ping' })), 25_000);
  };
  ws.onmessage = (ev) => {
    let msg: ServerMessage;
    try {
      msg = JSON.parse(String(ev.data)) as ServerMessage;
    } catch {
      return;
    }
    if (typeof msg.seq !== 'number') return void dispatch(msg);
    const verdict = tracker.accept(msg);
    if (verdict === 'duplicate') return;
    if (verdict === 'resync') resync();
    if (msg.type !== 'resync') dispatch(msg);
  };
  ws.onclose = () => {
    if (ping) clearInterval(ping);
    if (socket !== ws) return;
    socket = undefined;
    uiStore.getState().setLive('offline');
    if (stopped) return;
    // Closed (signed out: 4401; refused upgrade or network: 1006): if the sign-in is gone the login
    // page says so; otherwise reconnect with backoff and resume.
    void authStore
      .getState()
      .recheck()
      .then(() => {
        if (!stopped && authStore.getState().status === 'signed-in') timer = setTimeout(connect, backoff(attempt++, Math.random()));
      });
  };
}

export function startLive(): void {
  if (!stopped) return;
  stopped = false;
  connect();
}

export function stopLive(): void {
  stopped = true;
  if (timer) clearTimeout(timer);
  if (ping) clearInterval(ping);
  socket?.close();
  socket = undefined;
}
