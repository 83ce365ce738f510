/**
 * Records one streamed response, and lets its bytes out only once the events they carry are in the
 * journal. What the relay hands over during one turn of the event loop — SSE events, the bytes that
 * carry them, the response's headers, its end — is one batch: at the end of the turn its events go
 * into the group-commit writer's write (`enlist`, never a timer) as ONE `http.chunk` (each SSE event
 * keeps its own time offset), and once that write is done its bytes are written to the client.
 * Later batches queue behind one still being written, in order. Other events (`http.response`,
 * `http.error`) close the open chunk first, so the log stays in order. When a write fails, the
 * bytes it held and every later batch are dropped, never sent, and the caller ends the stream
 * (fail closed): no byte reaches the client before its event is in the journal.
 */
import type { AuditEventInput, HttpChunkPayload, MaskSpan } from '../../shared/events';
import type { SseEvent } from '../masking/types';
import type { SessionAuditWriter, TurnBatch } from '../audit/session-writer';

/** An SSE event as recorded: the event plus when it was relayed (ms since the request arrived). */
export type RecordedSseEvent = SseEvent & { offset: number };

interface OpenChunk {
  offset: number;
  events: RecordedSseEvent[];
  spans: MaskSpan[];
  counts: Record<string, number>;
}

type EventFactory = (kind: 'http.chunk', payload: HttpChunkPayload, spans?: MaskSpan[]) => AuditEventInput;

/** Relayed bytes whose events are not journaled yet: past this, a relay stops reading its upstream until they are. */
export const MAX_UNJOURNALED_BYTES = 1024 * 1024;

/**
 * Span paths from a stream masker point into the events it returned (`/<i>/data/…`); in the
 * recorded chunk those events sit at `/events/<first + i>`.
 */
export function rebaseSpanPath(path: string | undefined, first: number): string {
  const m = /^\/(\d+)(\/.*)?$/.exec(path ?? '');
  if (!m) return `/events${path ?? ''}`;
  return `/events/${first + Number(m[1])}${m[2] ?? ''}`;
}

/** Where a stream's bytes go, once the events they carry are journaled. */
export interface StreamSink {
  /** Writes the response's headers (`alone`: nothing follows them in this batch, send them now). */
  head(alone: boolean): void;
  write(data: Buffer | string): void;
  end(data?: Buffer | string): void;
}

/** The bytes of one batch, released when its events are journaled. */
interface Output {
  head: boolean;
  parts: (Buffer | string)[];
  bytes: number;
  end: Buffer | string | boolean;
}

const noOutput = (): Output => ({ head: false, parts: [], bytes: 0, end: false });

export class StreamRecorder implements TurnBatch {
  private chunk: OpenChunk | undefined;
  private queue: AuditEventInput[] = [];
  /** What this turn relayed: written once this turn's batch is journaled. */
  private open = noOutput();
  /** Batches handed to the writer, oldest first, waiting for their write. */
  private inFlight: Output[] = [];
  private enlisted = false;
  private failed = false;
  /** Makes this turn's progress event (e.g. `http.body`) when the turn's batch closes. */
  private progressEvent: (() => AuditEventInput) | undefined;
  /** SSE events recorded so far. */
  eventCount = 0;
  /** Bytes relayed whose events are not journaled yet (the relay bounds it). */
  unreleased = 0;

  constructor(
    private readonly writer: Pick<SessionAuditWriter, 'enlist'>,
    private readonly make: EventFactory,
    private readonly onFailure: (err: unknown) => void,
    private readonly sink: StreamSink,
    /** A batch's bytes were written (the relay may read more). */
    private readonly onReleased: () => void = () => {},
  ) {}

  /** Adds relayed SSE events (as recorded, i.e. masked for the log) to the open chunk. */
  events(offset: number, events: SseEvent[], spans: MaskSpan[] = [], counts: Record<string, number> = {}): void {
    if (this.failed || !events.length) return;
    const c = (this.chunk ??= { offset, events: [], spans: [], counts: {} });
    const first = c.events.length;
    for (const e of events) c.events.push({ ...e, offset });
    for (const s of spans) c.spans.push({ ...s, path: rebaseSpanPath(s.path, first) });
    for (const k in counts) c.counts[k] = (c.counts[k] ?? 0) + counts[k]!;
    this.eventCount += events.length;
    this.enlist();
  }

  /** Queues any other event, after the chunk that is open now. */
  add(event: AuditEventInput): void {
    if (this.failed) return;
    this.closeChunk();
    this.queue.push(event);
    this.enlist();
  }

  /**
   * This turn's batch records its progress with the event `make` returns when the batch closes (at
   * the end of the turn, or before the next event added), so it counts everything the turn sent.
   */
  progress(make: () => AuditEventInput): void {
    if (this.failed) return;
    this.progressEvent = make;
    this.enlist();
  }

  /** The response's headers go out with this turn's batch. */
  head(): void {
    if (this.failed) return;
    this.open.head = true;
    this.enlist();
  }

  /**
   * Bytes to relay, after the events of this turn. Bytes that carry no event (a keep-alive) go out
   * at once when nothing waits to be journaled.
   */
  send(data: Buffer | string): void {
    if (this.failed) return;
    if (!this.enlisted && !this.inFlight.length) {
      this.sink.write(data);
      return;
    }
    this.open.parts.push(data);
    const n = typeof data === 'string' ? Buffer.byteLength(data) : data.length;
    this.open.bytes += n;
    this.unreleased += n;
  }

  /** Ends the response (with `data` last) once this turn's batch is journaled. */
  end(data?: Buffer | string): void {
    if (this.failed) return;
    this.open.end = data ?? true;
    this.enlist();
  }

  /** The writer takes this turn's events: one batch. */
  take(): AuditEventInput[] {
    this.enlisted = false;
    this.closeChunk();
    const events = this.queue;
    this.queue = [];
    this.inFlight.push(this.open);
    this.open = noOutput();
    return events;
  }

  /** The oldest batch handed over was written: its bytes go out, or (it failed) nothing more does. */
  written(err: unknown): void {
    const out = this.inFlight.shift();
    if (this.failed || !out) return;
    if (err !== null) {
      this.failed = true;
      this.inFlight = [];
      this.open = noOutput();
      this.unreleased = 0;
      this.onFailure(err);
      return;
    }
    this.unreleased -= out.bytes;
    if (out.head) this.sink.head(out.parts.length === 0 && out.end === false);
    for (const part of out.parts) this.sink.write(part);
    if (out.end !== false) this.sink.end(out.end === true ? undefined : out.end);
    this.onReleased();
  }

  get hasFailed(): boolean {
    return this.failed;
  }

  private enlist(): void {
    if (this.enlisted) return;
    this.enlisted = true;
    this.writer.enlist(this);
  }

  private closeChunk(): void {
    if (this.progressEvent) {
      this.queue.push(this.progressEvent());
      this.progressEvent = undefined;
    }
    const c = this.chunk;
    if (!c) return;
    this.chunk = undefined;
    const payload: HttpChunkPayload = { offset: c.offset, events: c.events };
    if (Object.keys(c.counts).length) payload['masked'] = c.counts;
    this.queue.push(this.make('http.chunk', payload, c.spans));
  }
}
