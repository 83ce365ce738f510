/**
 * A control-plane WebSocket client for tests and benchmarks: connects to `/api/events` with a
 * Bearer credential or a session cookie, keeps every message, and waits for the ones asked for.
 */
import WebSocket from 'ws';
import type { ClientMessage, ServerMessage } from '../../shared/messages';

export class EventsClient {
  readonly messages: ServerMessage[] = [];
  private waiters: { pred: (m: ServerMessage) => boolean; resolve: (m: ServerMessage) => void }[] = [];
  /** Called with each message as it arrives (with its arrival time), for latency measurements. */
  onMessage?: (m: ServerMessage, at: number) => void;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const at = performance.now();
      const m = JSON.parse(String(data)) as ServerMessage;
      this.messages.push(m);
      this.onMessage?.(m, at);
      this.waiters = this.waiters.filter((w) => {
        if (!w.pred(m)) return true;
        w.resolve(m);
        return false;
      });
    });
  }

  /** Opens the socket; resolves after the server's `hello`. */
  static async connect(control: string, auth: { bearer?: string; cookie?: string; origin?: string }): Promise<EventsClient> {
    const headers: Record<string, string> = {};
    if (auth.bearer) headers['authorization'] = `Bearer ${auth.bearer}`;
    if (auth.cookie) headers['cookie'] = auth.cookie;
    if (auth.origin) headers['origin'] = auth.origin;
    const ws = new WebSocket(`${control.replace(/^http/, 'ws')}/api/events`, { headers });
    const client = new EventsClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('unexpected-response', (_req, res) => reject(new Error(`WebSocket upgrade refused: HTTP ${res.statusCode}`)));
      ws.once('error', reject);
      ws.once('open', () => resolve());
    });
    await client.next((m) => m.type === 'hello');
    return client;
  }

  /** The first message (already received or still to come) that matches. */
  next<T extends ServerMessage>(pred: (m: ServerMessage) => boolean, timeoutMs = 5000): Promise<T> {
    const have = this.messages.find(pred);
    if (have) return Promise.resolve(have as T);
    return this.waitNew(pred, timeoutMs);
  }

  /** The next message from now on that matches. */
  waitNew<T extends ServerMessage>(pred: (m: ServerMessage) => boolean, timeoutMs = 5000): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('timed out waiting for a WebSocket message')), timeoutMs);
      this.waiters.push({
        pred,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m as T);
        },
      });
    });
  }

  send(msg: ClientMessage): void {
    this.ws.send(JSON.stringify(msg));
  }

  /** Highest sequence number received so far (hello included). */
  get lastSeq(): number {
    return this.messages.reduce((max, m) => Math.max(max, m.seq), 0);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.ws.readyState === WebSocket.CLOSED) return resolve();
      this.ws.once('close', () => resolve());
      this.ws.close();
    });
  }
}
