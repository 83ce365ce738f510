/**
 * Batches a stream's events: handed to the group-commit writer at most every `intervalMs` instead of
 * once per token, and always a final flush when the stream ends. A failed write is reported once;
 * the caller ends the stream (fail closed).
 */
import type { AuditEventInput } from '../../shared/events';
import type { GroupCommitWriter } from './writer';

export class BatchedRecorder {
  private queue: AuditEventInput[] = [];
  private timer: NodeJS.Timeout | undefined;
  private failed = false;

  constructor(
    private readonly writer: Pick<GroupCommitWriter, 'defer'>,
    private readonly onFailure: (err: unknown) => void,
    private readonly intervalMs = 50,
  ) {}

  add(event: AuditEventInput): void {
    if (this.failed) return;
    this.queue.push(event);
    this.timer ??= setTimeout(() => this.flush(), this.intervalMs);
  }

  /** Hands what is queued to the writer now (committed at the end of this event-loop turn). */
  flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    if (this.failed || !this.queue.length) return;
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
}
