/**
 * The control plane's message bus: every message gets the next sequence number and is kept in a
 * ring buffer, so a WebSocket client that reconnects with `{type: "resume", epoch, after}` gets
 * exactly what it missed (or a `resync` when the gap fell out of the buffer or the gateway restarted).
 */
import { randomUUID } from 'node:crypto';
import type { ServerMessage, ServerMessageBody } from '../../shared/messages';

type Subscriber = (msg: ServerMessage) => void;

export class EventBus {
  readonly epoch = randomUUID();
  private seq = 0;
  private ring: ServerMessage[] = [];
  private subscribers = new Set<Subscriber>();

  constructor(private readonly capacity = 10_000) {}

  publish(body: ServerMessageBody): ServerMessage {
    const msg = { ...body, seq: ++this.seq, epoch: this.epoch, at: Date.now() } as ServerMessage;
    this.ring.push(msg);
    // Trim in bulk (amortized O(1)): dropping one message per publish would move the whole buffer each time.
    if (this.ring.length >= 2 * this.capacity) this.ring.splice(0, this.ring.length - this.capacity);
    for (const s of this.subscribers) s(msg);
    return msg;
  }

  subscribe(fn: Subscriber): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  /** Messages after `after` in this epoch; null when they can no longer all be replayed. */
  since(epoch: string, after: number): ServerMessage[] | null {
    if (epoch !== this.epoch) return null;
    if (after >= this.seq) return [];
    const first = this.ring[0];
    if (!first || first.seq > after + 1) return null;
    return this.ring.slice(after + 1 - first.seq);
  }

  get lastSeq(): number {
    return this.seq;
  }
}
