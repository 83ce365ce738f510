/**
 * Sequence bookkeeping for the control-plane WebSocket (shared/messages.ts): each server message has
 * a monotonic `seq` within an `epoch` (one gateway run). On reconnect the client sends
 * `{type: "resume", epoch, after}` and the gateway replays what was missed, or sends `resync` when it
 * cannot; then the console reloads its lists from the REST API.
 */
import type { ClientMessage } from '../../shared/messages';

export type SeqVerdict = 'apply' | 'duplicate' | 'resync';

export class SeqTracker {
  epoch: string | undefined;
  last = 0;

  /** Decides what to do with an incoming message and advances the cursor when it is applied. */
  accept(msg: { seq: number; epoch: string; type: string }): SeqVerdict {
    if (msg.type === 'resync') {
      this.epoch = msg.epoch;
      this.last = msg.seq;
      return 'resync';
    }
    if (this.epoch !== msg.epoch) {
      // First message ever, or the gateway restarted: anything we hold may be stale.
      const first = this.epoch === undefined;
      this.epoch = msg.epoch;
      this.last = msg.seq;
      return first ? 'apply' : 'resync';
    }
    if (msg.seq <= this.last) return 'duplicate';
    const gap = msg.seq > this.last + 1 && this.last !== 0;
    this.last = msg.seq;
    return gap ? 'resync' : 'apply';
  }

  /** What to send after (re)connecting: resume when we have a cursor. */
  resumeMessage(): ClientMessage | undefined {
    return this.epoch ? { type: 'resume', epoch: this.epoch, after: this.last } : undefined;
  }
}

/** Reconnect delay: 0.5 s, 1 s, 2 s … capped at 10 s, with ±20 % jitter from `rand` (0..1). */
export function backoff(attempt: number, rand = 0.5): number {
  const base = Math.min(10_000, 500 * 2 ** Math.max(0, attempt));
  return Math.round(base * (0.8 + 0.4 * rand));
}
