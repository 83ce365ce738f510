/**
 * Server-Sent Events codec (WHATWG HTML §9.2 "Server-sent events", event stream interpretation).
 * Pure: bytes in, events out. Network chunks may split an event anywhere — inside a line, between
 * CR and LF, inside a UTF-8 character — so lines are cut at the byte level (CR and LF never occur
 * inside a multi-byte UTF-8 sequence) and decoded only once complete.
 */
import type { SseEvent } from '../masking/types';

const LF = 0x0a;
const CR = 0x0d;

export class SseParser {
  /** Bytes of an unterminated line carried over from the previous chunk. */
  private tail: Buffer | null = null;
  /** The previous chunk ended in CR: a leading LF of the next chunk belongs to that line break. */
  private pendingCr = false;
  private atStart = true;
  private data: string[] = [];
  private eventType: string | undefined;
  private id: string | undefined;
  private retry: number | undefined;
  /** Comment lines seen (`: keep-alive`); they carry no event. */
  comments = 0;
  /** Bytes pushed so far. */
  private received = 0;
  /**
   * Stream offset just past the last blank line (the end of an event or of a comment block): the
   * bytes before it hold whole events only, so a relay may pass them on as they are.
   */
  boundary = 0;

  /** Feeds one network chunk; returns the events it completed, in order. */
  push(chunk: Buffer): SseEvent[] {
    const out: SseEvent[] = [];
    let buf = chunk;
    let start = 0;
    // Where buf[0] sits in the stream (a carried-over tail comes before the chunk).
    let at = this.received;
    this.received += chunk.length;
    if (this.pendingCr) {
      this.pendingCr = false;
      if (buf.length && buf[0] === LF) start = 1;
    }
    if (this.tail) {
      // (no CR was pending: a line cut after its CR leaves no tail)
      at -= this.tail.length;
      buf = Buffer.concat([this.tail, start ? buf.subarray(start) : buf]);
      start = 0;
      this.tail = null;
    }
    let nextCr = buf.indexOf(CR, start);
    while (start < buf.length) {
      const nextLf = buf.indexOf(LF, start);
      if (nextCr !== -1 && nextCr < start) nextCr = buf.indexOf(CR, start);
      let end: number;
      let after: number;
      if (nextCr !== -1 && (nextLf === -1 || nextCr < nextLf)) {
        end = nextCr;
        if (nextCr + 1 < buf.length) after = buf[nextCr + 1] === LF ? nextCr + 2 : nextCr + 1;
        else {
          after = nextCr + 1;
          this.pendingCr = true;
        }
      } else if (nextLf !== -1) {
        end = nextLf;
        after = nextLf + 1;
      } else break;
      this.line(buf.toString('utf8', start, end), out);
      if (end === start) this.boundary = at + after;
      start = after;
    }
    if (start < buf.length) this.tail = buf.subarray(start);
    return out;
  }

  /**
   * The stream ended. Per the spec an event without its terminating blank line is discarded;
   * returns whether such an incomplete event (or line) was pending.
   */
  end(): { incomplete: boolean } {
    const incomplete = this.tail !== null || this.data.length > 0 || this.eventType !== undefined;
    this.tail = null;
    this.data = [];
    this.eventType = undefined;
    return { incomplete };
  }

  private line(text: string, out: SseEvent[]): void {
    if (this.atStart) {
      this.atStart = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (text === '') {
      if (this.data.length) {
        const e: SseEvent = { data: this.data.length === 1 ? this.data[0]! : this.data.join('\n') };
        if (this.eventType !== undefined) e.event = this.eventType;
        if (this.id !== undefined) e.id = this.id;
        if (this.retry !== undefined) e.retry = this.retry;
        out.push(e);
      }
      this.data = [];
      this.eventType = undefined;
      this.id = undefined;
      this.retry = undefined;
      return;
    }
    if (text.charCodeAt(0) === 0x3a /* : */) {
      this.comments++;
      return;
    }
    const colon = text.indexOf(':');
    const field = colon === -1 ? text : text.slice(0, colon);
    let value = colon === -1 ? '' : text.slice(colon + 1);
    if (value.charCodeAt(0) === 0x20) value = value.slice(1);
    switch (field) {
      case 'data':
        this.data.push(value);
        break;
      case 'event':
        this.eventType = value;
        break;
      case 'id':
        if (!value.includes('\0')) this.id = value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // unknown fields are ignored
    }
  }
}

/** Encodes one event in the form the providers use: `event:` line, then `data:` lines, then a blank line. */
export function serializeSseEvent(e: SseEvent): string {
  let s = '';
  if (e.event !== undefined) s += `event: ${e.event}\n`;
  if (e.id !== undefined) s += `id: ${e.id}\n`;
  if (e.retry !== undefined) s += `retry: ${e.retry}\n`;
  const data = e.data;
  if (data.indexOf('\n') === -1 && data.indexOf('\r') === -1) s += `data: ${data}\n`;
  else for (const line of data.split(/\r\n|\r|\n/)) s += `data: ${line}\n`;
  return `${s}\n`;
}
