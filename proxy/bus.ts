/**
 * The gateway's event bus: the hold queue, the audit service and the policy and masking versions
 * publish on it; the control plane's WebSocket and the desktop app read it. It sits at the bottom of
 * the gateway, beside the log, so the parts that publish do not import the console API's folder.
 *
 * Every message gets the next sequence number and is kept in a
 * ring buffer, so a WebSocket client that reconnects with `{type: "resume", epoch, after}` gets
 * exactly what it missed (or a `resync` when the gap fell out of the buffer or the gateway restarted).
 */
import { randomUUID } from 'node:crypto';
import type { AuditEvent } from '../shared/events';
import type { ServerMessage, ServerMessageBody } from '../shared/messages';

type Subscriber = (msg: ServerMessage) => void;

/**
 * How the resume buffer may keep a message as one number instead of the message (a recorded event
 * by its seq: the store has it), and get it back when a client resumes. Every recorded event is
 * published; holding ten thousand of them as objects cost the gateway more in garbage collection
 * than recording them did.
 */
export interface CompactForm {
  /** The number that stands for `body`, or undefined to keep the message itself. */
  compact(body: ServerMessageBody): number | undefined;
  /** The message `n` stood for; undefined when it cannot be given back (the client resyncs). */
  restore(n: number): ServerMessageBody | undefined;
}

export class EventBus {
  readonly epoch = randomUUID();
  private seq = 0;
  /** The resume buffer, indexed by seq modulo capacity: a message, or its number and time. */
  private readonly kept: (ServerMessage | undefined)[];
  private readonly numbers: Float64Array;
  private readonly times: Float64Array;
  private subscribers = new Set<Subscriber>();

  constructor(
    private readonly capacity = 10_000,
    private readonly form?: CompactForm,
  ) {
    this.kept = new Array<ServerMessage | undefined>(capacity);
    this.numbers = new Float64Array(capacity);
    this.times = new Float64Array(capacity);
  }

  /** Numbers `body`, keeps it for resumes and hands it to every subscriber; returns its seq. */
  publish(body: ServerMessageBody): number {
    const seq = ++this.seq;
    const at = Date.now();
    const i = seq % this.capacity;
    const n = this.form?.compact(body);
    // Built only when someone holds it: most recorded events are published with nobody listening.
    const msg = n === undefined || this.subscribers.size ? ({ ...body, seq, epoch: this.epoch, at } as ServerMessage) : undefined;
    this.kept[i] = n === undefined ? msg : undefined;
    if (n !== undefined) {
      this.numbers[i] = n;
      this.times[i] = at;
    }
    if (msg) for (const s of this.subscribers) s(msg);
    return seq;
  }

  subscribe(fn: Subscriber): () => void {
    this.subscribers.add(fn);
    return () => this.subscribers.delete(fn);
  }

  /** Messages after `after` in this epoch; null when they can no longer all be replayed. */
  since(epoch: string, after: number): ServerMessage[] | null {
    if (epoch !== this.epoch) return null;
    if (after >= this.seq) return [];
    if (after + 1 <= this.seq - this.capacity) return null;
    const out: ServerMessage[] = [];
    for (let seq = after + 1; seq <= this.seq; seq++) {
      const i = seq % this.capacity;
      const m = this.kept[i];
      if (m) {
        out.push(m);
        continue;
      }
      const body = this.form?.restore(this.numbers[i]!);
      if (!body) return null;
      out.push({ ...body, seq, epoch: this.epoch, at: this.times[i]! } as ServerMessage);
    }
    return out;
  }

  get lastSeq(): number {
    return this.seq;
  }
}

/**
 * The gateway's compact form: recorded events by their seq, given back from the store. Another
 * gateway's events (shared store) are not in this store: they are kept as they are.
 */
export function sessionEventsFromStore(store: { event(seq: number): AuditEvent | undefined }): CompactForm {
  return {
    compact: (b) => (b.type === 'session.event' && b.gateway === undefined ? b.event.seq : undefined),
    restore: (seq) => {
      const event = store.event(seq);
      return event && { type: 'session.event', event };
    },
  };
}
