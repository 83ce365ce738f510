/**
 * Framing for the PostgreSQL wire protocol: bytes in, whole messages out.
 *
 * Startup-phase packets are `Int32 length, Int32 code, …` (no type byte); every later message is
 * `Byte1 type, Int32 length (counting itself), body`
 * (https://www.postgresql.org/docs/current/protocol-overview.html#PROTOCOL-MESSAGE-CONCEPTS).
 * A message may span many TCP chunks and a chunk may hold many messages, so the buffer emits only
 * whole messages. When no bytes are left over from an earlier chunk, messages are returned as views
 * of the chunk itself (no copy); a message split across chunks is assembled in an accumulator that
 * grows geometrically as bytes arrive (never to the size a length field merely claims).
 *
 * Every message handed out stays valid: the buffer never writes over bytes it has returned.
 */
import { SqlState } from './message-codes';

/** The peer broke the protocol; `sqlState` goes into the ErrorResponse that closes the connection. */
export class ProtocolError extends Error {
  constructor(
    message: string,
    readonly sqlState: string = SqlState.ProtocolViolation,
  ) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export interface RawMessage {
  /** Type byte; 0 for an untyped startup-phase packet. */
  code: number;
  /** The whole message as it came off the wire (type byte and length included). */
  raw: Buffer;
  /** What follows the length field (for startup packets: starting with the Int32 code). */
  body: Buffer;
}

export interface MessageBufferOptions {
  /** Largest length field accepted for typed messages (PostgreSQL's own limit is 1 GiB - 1). */
  maxMessageLength?: number;
  /** Largest startup packet accepted (PostgreSQL: 10000 bytes). */
  maxStartupLength?: number;
  /** Start in the startup phase (untyped packets), as a server does. */
  startup?: boolean;
  /** Names the peer in error messages, e.g. "client". */
  peer?: string;
}

const EMPTY = Buffer.alloc(0);
const MIN_ACCUMULATOR = 1024;

export class MessageBuffer {
  /** While true, the next packet is read as an untyped startup-phase packet. */
  startupPhase: boolean;
  readonly maxMessageLength: number;
  readonly maxStartupLength: number;
  private readonly peer: string;
  /** The chunk being read in place, when nothing was left over before it. */
  private src: Buffer | null = null;
  private srcPos = 0;
  /** Accumulator for bytes carried over between chunks; [start, end) is unread. */
  private acc: Buffer = EMPTY;
  private start = 0;
  private end = 0;

  constructor(options: MessageBufferOptions = {}) {
    this.startupPhase = options.startup ?? false;
    this.maxMessageLength = options.maxMessageLength ?? 256 * 1024 * 1024;
    this.maxStartupLength = options.maxStartupLength ?? 10_000;
    this.peer = options.peer ?? 'peer';
  }

  /** Bytes received and not yet returned as messages. */
  get buffered(): number {
    return (this.src ? this.src.length - this.srcPos : 0) + (this.end - this.start);
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    if (this.src === null && this.start === this.end) {
      this.src = chunk;
      this.srcPos = 0;
      return;
    }
    this.spillSource();
    this.append(chunk);
  }

  /** The next whole message, or null until more bytes arrive. Throws ProtocolError on a bad length. */
  next(): RawMessage | null {
    if (this.src !== null) {
      const m = this.frame(this.src, this.srcPos, this.src.length);
      if (m) {
        this.srcPos += m.raw.length;
        if (this.srcPos === this.src.length) this.src = null;
        return m;
      }
      this.spillSource();
      return null;
    }
    if (this.start === this.end) return null;
    const m = this.frame(this.acc, this.start, this.end);
    if (!m) return null;
    this.start += m.raw.length;
    if (this.start === this.end) {
      // Returned views still point into acc: start a fresh one rather than reuse the memory.
      this.acc = EMPTY;
      this.start = this.end = 0;
    }
    return m;
  }

  /** Removes and returns every byte not yet returned as a message (e.g. to hand over to TLS). */
  drain(): Buffer {
    const parts: Buffer[] = [];
    if (this.end > this.start) parts.push(this.acc.subarray(this.start, this.end));
    if (this.src) parts.push(this.src.subarray(this.srcPos));
    this.src = null;
    this.acc = EMPTY;
    this.start = this.end = 0;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  private spillSource(): void {
    if (this.src === null) return;
    const rest = this.src.subarray(this.srcPos);
    this.src = null;
    this.append(rest);
  }

  private append(data: Buffer): void {
    if (data.length === 0) return;
    if (this.acc.length - this.end < data.length) {
      const unread = this.end - this.start;
      const capacity = Math.max(MIN_ACCUMULATOR, (unread + data.length) * 2);
      const next = Buffer.allocUnsafe(capacity);
      this.acc.copy(next, 0, this.start, this.end);
      this.acc = next;
      this.start = 0;
      this.end = unread;
    }
    data.copy(this.acc, this.end);
    this.end += data.length;
  }

  private frame(buf: Buffer, pos: number, end: number): RawMessage | null {
    const avail = end - pos;
    if (this.startupPhase) {
      if (avail < 4) return null;
      const len = buf.readUInt32BE(pos);
      if (len < 8 || len > this.maxStartupLength)
        throw new ProtocolError(`invalid startup packet length ${len} from ${this.peer} (expected 8 to ${this.maxStartupLength} bytes)`);
      if (avail < len) return null;
      const raw = buf.subarray(pos, pos + len);
      return { code: 0, raw, body: raw.subarray(4) };
    }
    if (avail < 5) return null;
    const len = buf.readUInt32BE(pos + 1);
    if (len < 4) throw new ProtocolError(`invalid message length ${len} from ${this.peer} (a length counts itself, so it is at least 4)`);
    if (len > this.maxMessageLength)
      throw new ProtocolError(`message length ${len} from ${this.peer} exceeds the limit of ${this.maxMessageLength} bytes`, SqlState.ProgramLimitExceeded);
    if (avail < len + 1) return null;
    const raw = buf.subarray(pos, pos + len + 1);
    return { code: buf[pos]!, raw, body: raw.subarray(5) };
  }
}
