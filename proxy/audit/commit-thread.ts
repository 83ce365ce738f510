/**
 * The audit store's commit thread, seen from the gateway's thread.
 *
 * A commit (SQLite writing WAL frames for each row and its index pages, locking) blocks whichever
 * thread runs it. With a commit thread the gateway's event loop records an event in the journal
 * (journal.ts), already chained, and the worker (commit-worker.ts) folds the journaled lines into
 * SQLite on a second core a moment later.
 *
 * Two ways in, one order: `queue` hands over journaled lines as the journal's own text (answered
 * through `onFolded`, only to report the fold's outcome); `call` blocks until the worker answers
 * (appends that must return their committed event, pragmas, syncs). Both go through one port, so
 * the worker sees them in the order they were made. A blocked call wakes on a shared counter
 * (Atomics.wait) and takes the answers off the port itself (receiveMessageOnPort); answers to
 * earlier folds found on the way are settled in order.
 *
 * If the worker dies, every waiting and later request fails (the store refuses: fail closed).
 */
import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from 'node:worker_threads';
import { workerSource } from '../worker-source';
import type { AppendedEvent, PreparedEvent } from './chain-writer';

export type CommitRequest =
  /** Events to chain and commit now; the caller waits for the answer. */
  | { op: 'append'; id: number; events: PreparedEvent[]; reload?: boolean }
  /** Journaled lines (journal.ts's text, already chained), up to journal line `jseq`: commit them soon. */
  | { op: 'fold'; id: number; text: string; jseq: number; reload?: boolean }
  /** Answered once everything before it is; also writes the session index. */
  | { op: 'sync'; id: number }
  | { op: 'pragma'; id: number; sql: string }
  | { op: 'close'; id: number };

/** A request before it is numbered. */
type Unnumbered<T> = T extends unknown ? Omit<T, 'id'> : never;

/**
 * `final: false`: a journaled batch's commit failed and will be retried (the answer comes later).
 * `rechained`: how many folded events had to be given another place in the chain than the one they
 * were journaled with (another connection appended in between).
 */
export type CommitReply = { id: number; ok: true; appended?: AppendedEvent[]; rechained?: number } | { id: number; ok: false; final: boolean; message: string; code?: string };

/** What waits for an answer: `settled` runs as the answer is taken (it must not call back into the thread). */
interface Waiter {
  settled(reply: CommitReply): void;
}

/** How long journaled batches gather before they are sent, and how many events send them sooner. */
const POST_MS = 5;
const POST_EVENTS = 512;
/** How long a blocking call waits for the worker before it gives up (the store then refuses). */
const CALL_TIMEOUT_MS = 10_000;

export class CommitThreadError extends Error {
  code?: string;
  constructor(message: string, code?: string) {
    super(message);
    this.name = 'CommitThreadError';
    this.code = code;
  }
}

export class CommitThread {
  private nextId = 1;
  private readonly waiting = new Map<number, Waiter>();
  private dead: Error | undefined;
  private closed = false;
  /** Why journaled batches cannot be committed right now (the store refuses new traffic meanwhile). */
  failure: string | undefined;
  /** Journaled lines waiting to be sent (see `queue`), and what answers them. */
  private outbox: { text: string; events: number; jseq: number; reload: boolean } | undefined;
  private folded: ((reply: CommitReply, jseq: number) => void) | undefined;
  private outboxTimer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly worker: Worker,
    private readonly port: MessagePort,
    private readonly signal: Int32Array,
  ) {
    port.on('message', (r: CommitReply) => this.take(r));
    port.unref();
    worker.unref();
    worker.on('error', (err) => this.die(new CommitThreadError(`the audit commit thread failed: ${err.message}`)));
    worker.on('exit', (code) => this.die(new CommitThreadError(`the audit commit thread exited (code ${code})`)));
  }

  /** Starts the thread on the store file at `path`; undefined when its code cannot be loaded here. */
  static start(path: string): CommitThread | undefined {
    const src = workerSource(import.meta.url, './commit-worker');
    if (!src) return undefined;
    const { port1, port2 } = new MessageChannel();
    const signal = new Int32Array(new SharedArrayBuffer(4));
    const worker = new Worker(src.entry, { ...src.options, workerData: { path, port: port2, signal }, transferList: [port2] });
    return new CommitThread(worker, port1, signal);
  }

  /** Sends `req` to the worker; `settled` runs with its answer (or the failure, once the thread is gone). */
  private send(req: Unnumbered<CommitRequest>, settled: (reply: CommitReply) => void): void {
    const id = this.nextId++;
    if (this.dead) {
      const r: CommitReply = { id, ok: false, final: true, message: this.dead.message };
      queueMicrotask(() => settled(r));
      return;
    }
    if (this.waiting.size === 0) this.port.ref();
    this.waiting.set(id, { settled });
    this.port.postMessage({ ...req, id } as CommitRequest);
  }

  /** Where answers to journaled lines go: the fold's outcome, and the last journal line it covered. */
  onFolded(fn: (reply: CommitReply, jseq: number) => void): void {
    this.folded = fn;
  }

  /**
   * Queues journaled lines (the text of `Journal.write`, up to line `jseq`) to be committed. Lines
   * queued within POST_MS go to the worker as one string in one message (one wake-up of the
   * thread, nothing for this thread to serialise but the text), answered through `onFolded`.
   */
  queue(text: string, events: number, opts: { reload: boolean; jseq: number }): void {
    const o = (this.outbox ??= { text: '', events: 0, jseq: 0, reload: false });
    o.text += text;
    o.events += events;
    o.jseq = opts.jseq;
    o.reload ||= opts.reload;
    if (o.events >= POST_EVENTS) this.post();
    else this.outboxTimer ??= setTimeout(this.post, POST_MS);
  }

  /** Sends the queued lines now. */
  private readonly post = (): void => {
    clearTimeout(this.outboxTimer);
    this.outboxTimer = undefined;
    const o = this.outbox;
    if (!o) return;
    this.outbox = undefined;
    this.send({ op: 'fold', text: o.text, jseq: o.jseq, reload: o.reload }, (reply) => this.folded?.(reply, o.jseq));
  };

  /** Sends `req` (after anything queued) and blocks until the worker answers it; throws CommitThreadError when it cannot. */
  call(req: Unnumbered<CommitRequest>): CommitReply {
    this.post();
    if (this.dead) throw this.dead;
    const id = this.nextId++;
    this.port.postMessage({ ...req, id } as CommitRequest);
    const deadline = Date.now() + CALL_TIMEOUT_MS;
    for (;;) {
      const seen = Atomics.load(this.signal, 0);
      const m = receiveMessageOnPort(this.port);
      if (m) {
        const r = m.message as CommitReply;
        if (r.id === id) return r;
        this.take(r);
        if (this.dead) throw this.dead;
        continue;
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        this.die(new CommitThreadError(`the audit commit thread did not answer within ${CALL_TIMEOUT_MS / 1000} s`));
        throw this.dead!;
      }
      Atomics.wait(this.signal, 0, seen, left);
    }
  }

  /** Waits until everything sent so far is answered (and the session index written). */
  drain(): void {
    this.call({ op: 'sync' });
  }

  /** Why the thread is gone, once it is (the store refuses appends from then on). */
  get gone(): Error | undefined {
    return this.dead;
  }

  get pending(): number {
    return this.waiting.size + (this.outbox ? 1 : 0);
  }

  /**
   * Commits what is queued, closes the worker's connection and ends the thread. True when
   * everything sent was committed (false: journaled batches remain for the next start).
   */
  close(): boolean {
    if (this.closed) return true;
    try {
      // A thread that died may have left journaled batches uncommitted: keep the journal.
      if (this.dead) return false;
      this.post();
      return this.call({ op: 'close' }).ok;
    } finally {
      this.closed = true;
      this.die(new CommitThreadError('the audit store is closed'));
      this.port.close();
      void this.worker.terminate();
    }
  }

  private take(r: CommitReply): void {
    if (r.id === 0 && !r.ok) {
      // The worker could not open the store.
      this.die(new CommitThreadError(`the audit commit thread could not open the store: ${r.message}`));
      return;
    }
    const w = this.waiting.get(r.id);
    if (!w) return;
    if (!r.ok && !r.final) {
      this.failure = r.message;
      return;
    }
    if (r.ok) this.failure = undefined;
    this.waiting.delete(r.id);
    if (this.waiting.size === 0) this.port.unref();
    w.settled(r);
  }

  private die(err: Error): void {
    if (this.dead) return;
    this.dead = err;
    const waiting = [...this.waiting.entries()];
    this.waiting.clear();
    for (const [id, w] of waiting) w.settled({ id, ok: false, final: true, message: err.message });
  }
}
