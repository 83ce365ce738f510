/**
 * Writes the PostgreSQL proxy's audit events with as few commits as the rules allow. A statement
 * must be in the log before it is forwarded, so `appendNow` commits at once — together with every
 * event deferred before it, in order. Results (pg.result, pg.error) may follow the rows they describe,
 * so `defer` queues them for the next `appendNow` or, at the latest, the next turn of the event loop.
 * If a deferred batch cannot be written, the events stay queued and each owner's `onFail` runs (its
 * session closes: the gateway does not carry traffic it cannot record).
 */
import type { AuditEvent, AuditEventInput } from '../../shared/events';
import type { EventLog } from '../audit/store';

interface Deferred {
  event: AuditEventInput;
  onFail: (err: Error) => void;
}

export class AuditWriter {
  private queue: Deferred[] = [];
  private scheduled = false;

  constructor(private readonly store: Pick<EventLog, 'appendMany'>) {}

  /** Commits `events` (after everything deferred) before returning; throws StoreUnavailableError. */
  appendNow(events: AuditEventInput[]): AuditEvent[] {
    if (this.queue.length === 0) return this.store.appendMany(events);
    const pending = this.queue;
    const written = this.store.appendMany([...pending.map((d) => d.event), ...events]);
    this.queue = [];
    return written.slice(pending.length);
  }

  /** Queues an event to be committed soon, in order with everything else. */
  defer(event: AuditEventInput, onFail: (err: Error) => void): void {
    this.queue.push({ event, onFail });
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Commits what is queued now (also called when a session ends). */
  flush(): void {
    this.scheduled = false;
    if (this.queue.length === 0) return;
    const pending = this.queue;
    try {
      this.store.appendMany(pending.map((d) => d.event));
      this.queue = this.queue.slice(pending.length);
    } catch (err) {
      const seen = new Set<(err: Error) => void>();
      for (const d of pending) {
        if (seen.has(d.onFail)) continue;
        seen.add(d.onFail);
        d.onFail(err as Error);
      }
    }
  }

  get pending(): number {
    return this.queue.length;
  }
}
