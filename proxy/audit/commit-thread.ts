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
  /** Journaled lines (journal.ts's text, already chained), up to journal line `jseq`: commit them soon (`now`: at once, someone waits on it). */
  | { op: 'fold'; id: number; text: string; jseq: number; reload?: boolean; now?: boolean }
  /** Answered once everything before it is; also writes the session index. */
  | { op: 'sync'; id: number }
  | { op: 'pragma'; id: number; sql: string }
  /** A read on the worker's connection, answered with its rows (the gateway's thread never waits on it). */
  | { op: 'query'; id: number; sql: string; params: unknown[] }
  /** A state-table write on the worker's connection, after everything before it (write-behind). */
  | { op: 'exec'; id: number; sql: string; params: unknown[] }
  /**
   * State-table writes and the events that record them, in one transaction after everything before
   * it (holds and votes): both happen or neither. The events come chained; the worker keeps their
   * places unless another writer came between.
   */
  | { op: 'write'; id: number; statements: StateWrite[]; events: PreparedEvent[]; reload?: boolean }
  | { op: 'close'; id: number };

/** One statement on a state table, with its parameters. */
export interface StateWrite {
  sql: string;
  params: unknown[];
}

/** A request before it is numbered. */
type Unnumbered<T> = T extends unknown ? Omit<T, 'id'> : never;

/**
 * `final: false`: a journaled batch's commit failed and will be retried (the answer comes later).
 * `rechained`: how many folded events had to be given another place in the chain than the one they
 * were journaled with (another connection appended in between).
 */
export type CommitReply = { id: number; ok: true; appended?: AppendedEvent[]; rechained?: number; rows?: unknown[] } | { id: number; ok: false; final: boolean; message: string; code?: string };

/**
 * The shared words between the threads: [SIGNAL] counts the worker's replies (a blocked call
 * waits on it); [BUSY] is 1 while the worker's commits find the file locked by another connection
 * (SQLITE_BUSY), so the gateway's thread knows without asking, and never waits on a locked store.
 */
export const SIGNAL = 0;
export const BUSY = 1;

/** What waits for an answer: `settled` runs as the answer is taken (it must not call back into the thread). */
interface Waiter {
  settled(reply: CommitReply): void;
  /** performance.now() when it was sent: how far behind the worker is. */
  sentAt: number;
  /** A read or a state write: its success says nothing about whether the journal's folds succeed. */
  aside?: boolean;
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
  /** Date.now() when `failure` was first reported (cleared with it). */
  failingSince: number | undefined;
  /** Date.now() when this thread first saw the worker report the file locked. */
  private busySince: number | undefined;
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
    const signal = new Int32Array(new SharedArrayBuffer(8));
    const worker = new Worker(src.entry, { ...src.options, workerData: { path, port: port2, signal }, transferList: [port2] });
    return new CommitThread(worker, port1, signal);
  }

  /** Sends `req` to the worker; `settled` runs with its answer (or the failure, once the thread is gone). */
  private send(req: Unnumbered<CommitRequest>, settled: (reply: CommitReply) => void, aside = false): void {
    const id = this.nextId++;
    if (this.dead) {
      const r: CommitReply = { id, ok: false, final: true, message: this.dead.message };
      queueMicrotask(() => settled(r));
      return;
    }
    if (this.waiting.size === 0) this.port.ref();
    this.waiting.set(id, { settled, sentAt: performance.now(), aside });
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

  /** Sends the queued lines now, to be folded at once (a remote commit waits on their fold). */
  sendQueued(): void {
    this.post(true);
  }

  /** Sends the queued lines now. */
  private readonly post = (now = false): void => {
    clearTimeout(this.outboxTimer);
    this.outboxTimer = undefined;
    const o = this.outbox;
    if (!o) return;
    this.outbox = undefined;
    this.send({ op: 'fold', text: o.text, jseq: o.jseq, reload: o.reload, ...(now ? { now } : {}) }, (reply) => this.folded?.(reply, o.jseq));
  };

  /**
   * Sends `req` (after anything queued) and answers with the worker's reply, asynchronously: for
   * reads and write-behind writes the gateway's thread must not wait for.
   */
  request(req: Unnumbered<CommitRequest>): Promise<CommitReply> {
    this.post();
    return new Promise((resolve) => this.send(req, resolve, true));
  }

  /**
   * Sends `req` (after anything queued) and blocks until the worker answers it; throws
   * CommitThreadError when it cannot. With `unlessBusy`, gives up at once (code `SQLITE_BUSY`,
   * the thread lives on, the late answer is dropped) when the worker reports the file locked:
   * a locked store never holds the gateway's thread for longer than the worker takes to notice
   * (its busy timeout, BUSY_TIMEOUT_MS in commit-worker.ts).
   */
  call(req: Unnumbered<CommitRequest>, opts: { unlessBusy?: boolean } = {}): CommitReply {
    this.post();
    if (this.dead) throw this.dead;
    if (opts.unlessBusy && this.busy) throw this.busyError();
    const id = this.nextId++;
    this.port.postMessage({ ...req, id } as CommitRequest);
    const deadline = Date.now() + CALL_TIMEOUT_MS;
    for (;;) {
      const seen = Atomics.load(this.signal, SIGNAL);
      const m = receiveMessageOnPort(this.port);
      if (m) {
        const r = m.message as CommitReply;
        if (r.id === id) return r;
        this.take(r);
        if (this.dead) throw this.dead;
        continue;
      }
      if (opts.unlessBusy && this.busy) throw this.busyError();
      const left = deadline - Date.now();
      if (left <= 0) {
        this.die(new CommitThreadError(`the audit commit thread did not answer within ${CALL_TIMEOUT_MS / 1000} s`));
        throw this.dead!;
      }
      Atomics.wait(this.signal, SIGNAL, seen, left);
    }
  }

  /**
   * Waits until everything sent so far is answered (and the session index written); gives up at
   * once, throwing CommitThreadError (`SQLITE_BUSY`), while another connection holds the file locked.
   */
  drain(): void {
    this.call({ op: 'sync' }, { unlessBusy: true });
  }

  /** True while the worker's commits find the database locked by another connection. */
  get busy(): boolean {
    const busy = Atomics.load(this.signal, BUSY) === 1;
    if (!busy) this.busySince = undefined;
    else this.busySince ??= Date.now();
    return busy;
  }

  private busyError(): CommitThreadError {
    return new CommitThreadError(`the audit database is locked by another connection (for ${Date.now() - (this.busySince ?? Date.now())} ms)`, 'SQLITE_BUSY');
  }

  /**
   * How the database is doing, without asking it: `failed` (the thread is gone), `degraded` (the
   * fold fails, the file is locked, or the worker is behind by more than a second), or `ok`.
   */
  health(): { state: 'ok' | 'degraded' | 'failed'; cause?: string; since?: number; behindMs?: number } {
    if (this.dead) return { state: 'failed', cause: this.dead.message };
    let oldest = Infinity;
    for (const w of this.waiting.values()) if (w.sentAt < oldest) oldest = w.sentAt;
    const behindMs = oldest === Infinity ? 0 : Math.round(performance.now() - oldest);
    if (this.failure !== undefined) return { state: 'degraded', cause: `the audit database cannot be written (${this.failure}); recorded traffic is refused (503) until it can`, since: this.failingSince, behindMs };
    if (this.busy) return { state: 'degraded', cause: 'the audit database is locked by another connection; events are journaled and written when it is released', since: this.busySince, behindMs };
    if (behindMs > 1000) return { state: 'degraded', cause: `the audit database is slow: writes are ${behindMs} ms behind the journal`, behindMs };
    return { state: 'ok', behindMs };
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
      this.failingSince ??= Date.now();
      return;
    }
    if (r.ok && !w.aside) {
      this.failure = undefined;
      this.failingSince = undefined;
    }
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
