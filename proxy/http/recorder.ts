/**
 * Batches a stream's events into the store: one commit per `intervalMs` (appendMany) instead of one
 * per token, and always a final flush when the stream ends. A failed flush is reported once; the
 * caller ends the stream (fail closed).
 */
import type { AuditEventInput } from '../../shared/events';
import type { EventLog } from '../audit/store';

export class BatchedRecorder {
  private queue: AuditEventInput[] = [];
  private timer: NodeJS.Timeout | undefined;
  private failed = false;

  constructor(
    private readonly store: Pick<EventLog, 'appendMany'>,
    private readonly onFailure: (err: unknown) => void,
    private readonly intervalMs = 50,
  ) {}

  add(event: AuditEventInput): void {
    if (this.failed) return;
    this.queue.push(event);
    this.timer ??= setTimeout(() => this.flush(), this.intervalMs);
  }

  /** Writes what is queued now. Returns false when the store refused (then or earlier). */
  flush(): boolean {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.failed) return false;
    if (!this.queue.length) return true;
    const batch = this.queue;
    this.queue = [];
    try {
      this.store.appendMany(batch);
      return true;
    } catch (err) {
      this.failed = true;
      this.onFailure(err);
      return false;
    }
  }

  get hasFailed(): boolean {
    return this.failed;
  }
}
