/**
 * `audit.remoteCommit: sync` (docs/SCALE-OUT.md, "What a host loss can lose"): a batch the proxies
 * wait for (a request, a statement, a response before its bytes go out) is acknowledged only once
 * the shared store has committed it too, not only the local journal.
 *
 * Nothing here blocks the gateway's thread. The batch is journaled as always; once the commit thread
 * has folded its journal lines into SQLite, the store's worker is asked to ship (shipper-worker.ts:
 * the same cursor, the same transactions, so every row still goes exactly once and in order) and
 * answers when the rows are committed in PostgreSQL. Batches folded together wait on one shipment.
 */

/** The shared store as the audit store sees it (shipper.ts's SharedStoreMember). */
export interface RemoteCommitter {
  /** Why the store cannot take events now (undefined: ask it). */
  remoteRefusal(): string | undefined;
  /**
   * Ships everything committed locally so far; `done` with undefined once the store has committed it, or why not.
   * With `push`, also once the keys, persons and rules changed here are in the store as signed rows
   * (a control-plane change: what the other gateways enforce, not only the log).
   */
  commitRemote(done: (why: string | undefined) => void, push?: boolean): void;
  /** How long a batch waits for the store before it is refused. */
  readonly remoteCommitTimeoutMs: number;
}

interface Waiter {
  /** The batch's last journal line. */
  jseq: number;
  /** Wait for the shared rows of keys, persons and rules too (RemoteCommitter.commitRemote). */
  push: boolean;
  done: (why: string | undefined) => void;
  timer: NodeJS.Timeout | undefined;
  settled: boolean;
}

export class RemoteCommitQueue {
  /** Batches whose journal lines are not folded yet, in journal order. */
  private waiting: Waiter[] = [];
  /** The last journal line the commit thread reported folded. */
  private foldedUpTo = 0;

  constructor(private readonly committer: RemoteCommitter) {}

  /**
   * The batch ending at journal line `jseq` (0, or a line already folded: committed locally) is acknowledged through
   * `done` once the store has committed it (undefined), or refused (why). Refused at once when the
   * store is known not to take it.
   */
  wait(jseq: number, done: (why: string | undefined) => void, push = false): void {
    const refused = this.committer.remoteRefusal();
    if (refused) {
      done(refused);
      return;
    }
    const w: Waiter = { jseq, push, done, timer: undefined, settled: false };
    const ms = this.committer.remoteCommitTimeoutMs;
    w.timer = setTimeout(() => this.settle(w, `the shared store did not confirm the commit within ${ms / 1000} s`), ms);
    if (jseq <= this.foldedUpTo) this.ship([w]);
    else this.waiting.push(w);
  }

  /** Journal lines up to `jseq` are in the local database (`failure` undefined), or will not be. */
  folded(jseq: number, failure?: string): void {
    if (failure === undefined && jseq > this.foldedUpTo) this.foldedUpTo = jseq;
    let n = 0;
    while (n < this.waiting.length && this.waiting[n]!.jseq <= jseq) n++;
    if (n === 0) return;
    const covered = this.waiting.splice(0, n).filter((w) => !w.settled);
    if (failure !== undefined) for (const w of covered) this.settle(w, `the local database could not commit the events (${failure})`);
    else if (covered.length) this.ship(covered);
  }

  /** Waiting batches. */
  get pending(): number {
    return this.waiting.length;
  }

  private ship(covered: Waiter[]): void {
    this.committer.commitRemote(
      (why) => {
        for (const w of covered) this.settle(w, why);
      },
      covered.some((w) => w.push),
    );
  }

  private settle(w: Waiter, why: string | undefined): void {
    if (w.settled) return;
    w.settled = true;
    clearTimeout(w.timer);
    w.done(why);
  }
}
