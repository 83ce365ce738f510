/**
 * Group commit for the HTTP proxy's audit events. Every exchange must be in the log before it is
 * forwarded, but a commit per event is the most expensive thing on the request path. So events
 * queued during one turn of the event loop are committed together, in order, in one transaction
 * (`appendAsync`, on the store's commit thread) at the end of that turn (setImmediate): a request
 * waits for its batch (`commit`),
 * responses and stream chunks ride along with the next one (`defer`). Under load many exchanges
 * share a commit; a lone request waits only for the current turn to end.
 */
import type { AuditEventInput } from '../../shared/events';
import type { EventLog } from '../audit/store';

interface Pending {
  events: AuditEventInput[];
  resolve?: () => void;
  reject?: (err: unknown) => void;
  onFail?: (err: unknown) => void;
}

export class GroupCommitWriter {
  private queue: Pending[] = [];
  private scheduled = false;

  constructor(private readonly store: Pick<EventLog, 'appendAsync'>) {}

  /** Resolves once `events` are committed; rejects (StoreUnavailableError) when the batch failed. */
  commit(events: AuditEventInput[]): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ events, resolve, reject });
      this.schedule();
    });
  }

  /** Queues `events` for the next batch; `onFail` runs if that batch cannot be written. */
  defer(events: AuditEventInput[], onFail?: (err: unknown) => void): void {
    this.queue.push({ events, onFail });
    this.schedule();
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  /** Sends everything queued now to the store as one append (also used at shutdown). */
  flush(): void {
    this.scheduled = false;
    const batch = this.queue;
    if (!batch.length) return;
    this.queue = [];
    const events = batch.length === 1 ? batch[0]!.events : batch.flatMap((p) => p.events);
    this.store.appendAsync(events, (failure) => {
      for (const p of batch) {
        if (failure === null) p.resolve?.();
        else {
          p.reject?.(failure);
          p.onFail?.(failure);
        }
      }
    });
  }

  get pending(): number {
    return this.queue.length;
  }
}
