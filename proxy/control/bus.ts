/**
 * The control plane's message bus: every message gets the next sequence number and is kept in a
 * ring buffer, so a WebSocket client that reconnects with `{type: "resume", epoch, after}` gets
 * exactly what it missed (or a `resync` when the gap fell out of the buffer or the gateway restarted).
 */
import { randomUUID } from 'node:crypto';
import type { AuditEvent } from '../../shared/events';
import type { ServerMessage, ServerMessageBody } from '../../shared/messages';

type Subscriber = (msg: ServerMessage) => void;

export class EventBus {
  readonly epoch = randomUUID();
  private seq = 0;
  private ring: ServerMessage[] = [];
  private subscribers = new Set<Subscriber>();

  /**
   * `keep` may store a message in the resume buffer in a lighter form (a recorded event without
   * its payload: the store has it), and `restore` turns it back when a client resumes (undefined:
   * it cannot, and the client resyncs). Holding ten thousand full payloads cost the gateway more
   * in garbage collection than recording them did.
   */
  constructor(
    private readonly capacity = 10_000,
    private readonly light?: { keep(msg: ServerMessage): ServerMessage; restore(msg: ServerMessage): ServerMessage | undefined },
  ) {}

  publish(body: ServerMessageBody): ServerMessage {
    const msg = { ...body, seq: ++this.seq, epoch: this.epoch, at: Date.now() } as ServerMessage;
    this.ring.push(this.light ? this.light.keep(msg) : msg);
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
    const kept = this.ring.slice(after + 1 - first.seq);
    if (!this.light) return kept;
    const out: ServerMessage[] = [];
    for (const m of kept) {
      const full = this.light.restore(m);
      if (!full) return null;
      out.push(full);
    }
    return out;
  }

  get lastSeq(): number {
    return this.seq;
  }
}

/**
 * The gateway's `light` option for the bus: recorded events wait in the resume buffer without
 * their payloads, and a resuming client gets them from the store (`event(seq)`).
 */
export function sessionEventsFromStore(store: { event(seq: number): AuditEvent | undefined }): NonNullable<ConstructorParameters<typeof EventBus>[1]> {
  return {
    keep: (m) => (m.type === 'session.event' ? { ...m, event: { ...m.event, payload: null, spans: [] } } : m),
    restore: (m) => {
      if (m.type !== 'session.event') return m;
      const event = store.event(m.event.seq);
      return event && { ...m, event };
    },
  };
}
