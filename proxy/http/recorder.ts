/**
 * Records one streamed response. Stream events are coalesced: everything relayed within
 * `intervalMs` becomes ONE `http.chunk` audit event whose `events` keep each SSE event with its own
 * time offset — so a fast stream costs a few audit events, not one per token, and replay still has
 * every event's timing. Other events (`http.response`, `http.error`) close the open chunk first, so
 * the log stays in order. Batches go to the group-commit writer; a failed write is reported once
 * and the caller ends the stream (fail closed). The final state is always flushed.
 */
import type { AuditEventInput, MaskSpan } from '../../shared/events';
import type { SseEvent } from '../masking/types';
import type { SessionAuditWriter } from '../audit/session-writer';

/** An SSE event as recorded: the event plus when it was relayed (ms since the request arrived). */
export type RecordedSseEvent = SseEvent & { offset: number };

interface OpenChunk {
  offset: number;
  events: RecordedSseEvent[];
  spans: MaskSpan[];
  counts: Record<string, number>;
}

type EventFactory = (kind: AuditEventInput['kind'], payload: unknown, spans?: MaskSpan[]) => AuditEventInput;

/**
 * Span paths from a stream masker point into the events it returned (`/<i>/data/…`); in the
 * recorded chunk those events sit at `/events/<first + i>`.
 */
export function rebaseSpanPath(path: string | undefined, first: number): string {
  const m = /^\/(\d+)(\/.*)?$/.exec(path ?? '');
  if (!m) return `/events${path ?? ''}`;
  return `/events/${first + Number(m[1])}${m[2] ?? ''}`;
}

export class StreamRecorder {
  private chunk: OpenChunk | undefined;
  private queue: AuditEventInput[] = [];
  private timer: NodeJS.Timeout | undefined;
  private failed = false;
  /** SSE events recorded so far. */
  eventCount = 0;

  constructor(
    private readonly writer: Pick<SessionAuditWriter, 'defer'>,
    private readonly make: EventFactory,
    private readonly onFailure: (err: unknown) => void,
    private readonly intervalMs = 50,
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
    this.arm();
  }

  /** Queues any other event, after the chunk that is open now. */
  add(event: AuditEventInput): void {
    if (this.failed) return;
    this.closeChunk();
    this.queue.push(event);
    this.arm();
  }

  /** Hands everything to the writer now (committed at the end of this event-loop turn). */
  flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.failed) return;
    this.closeChunk();
    if (!this.queue.length) return;
    const batch = this.queue;
    this.queue = [];
    this.writer.defer(batch, (err) => {
      if (this.failed) return;
      this.failed = true;
      this.onFailure(err);
    });
  }

  get hasFailed(): boolean {
    return this.failed;
  }

  private arm(): void {
    this.timer ??= setTimeout(() => this.flush(), this.intervalMs);
  }

  private closeChunk(): void {
    const c = this.chunk;
    if (!c) return;
    this.chunk = undefined;
    const payload: Record<string, unknown> = { offset: c.offset, events: c.events };
    if (Object.keys(c.counts).length) payload['masked'] = c.counts;
    this.queue.push(this.make('http.chunk', payload, c.spans));
  }
}
