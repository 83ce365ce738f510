/**
 * Sequence bookkeeping for the control-plane WebSocket (shared/messages.ts, proxy/control/
 * events-socket.ts). Every server message has a `seq` within an `epoch` (one gateway run). A client
 * sees only the messages meant for it, so gaps in `seq` are normal. On reconnect the client sends
 * `{type: "resume", epoch, after}`: the gateway sends `hello` (its `seq` is the bus position at
 * connect time), replays what was missed (seq ≤ hello's) and delivers newer messages live — so a
 * replayed message may arrive after a newer live one. Messages are therefore de-duplicated by
 * `seq`, not by a single cursor. A `resync` (or a new epoch) means the console reloads its lists.
 */
import type { ClientMessage } from '../../shared/messages';

export type SeqVerdict = 'apply' | 'duplicate' | 'resync';

const REMEMBER = 4096;

export class SeqTracker {
  epoch: string | undefined;
  /** Highest seq applied (or announced by the first hello): where a resume continues from. */
  last = 0;
  private seen = new Set<number>();

  accept(msg: { seq: number; epoch: string; type: string }): SeqVerdict {
    if (msg.type === 'resync') {
      this.reset(msg.epoch, msg.seq);
      return 'resync';
    }
    if (this.epoch !== msg.epoch) {
      // First message ever, or the gateway restarted: anything held from before may be stale.
      const first = this.epoch === undefined;
      this.reset(msg.epoch, msg.type === 'hello' ? msg.seq : 0);
      if (msg.type !== 'hello') this.mark(msg.seq);
      return first ? 'apply' : 'resync';
    }
    // Same run, reconnected: hello only announces where live delivery starts; the replay fills the gap.
    if (msg.type === 'hello') return 'apply';
    if (this.seen.has(msg.seq) || msg.seq <= this.floor) return 'duplicate';
    this.mark(msg.seq);
    return 'apply';
  }

  /** What to send after (re)connecting: resume when we have a cursor. */
  resumeMessage(): ClientMessage | undefined {
    return this.epoch ? { type: 'resume', epoch: this.epoch, after: this.last } : undefined;
  }

  /** Messages at or below this were covered by the first hello of the epoch (never replayed to us). */
  private floor = 0;

  private reset(epoch: string, seq: number): void {
    this.epoch = epoch;
    this.last = seq;
    this.floor = seq;
    this.seen.clear();
  }

  private mark(seq: number): void {
    this.seen.add(seq);
    if (seq > this.last) this.last = seq;
    if (this.seen.size > REMEMBER) {
      const oldest = Math.min(...this.seen);
      this.seen.delete(oldest);
      if (oldest > this.floor) this.floor = oldest;
    }
  }
}

/** Reconnect delay: 0.5 s, 1 s, 2 s … capped at 10 s, with ±20 % jitter from `rand` (0..1). */
export function backoff(attempt: number, rand = 0.5): number {
  const base = Math.min(10_000, 500 * 2 ** Math.max(0, attempt));
  return Math.round(base * (0.8 + 0.4 * rand));
}
