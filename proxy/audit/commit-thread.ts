/**
 * The audit store's commit thread, seen from the gateway's thread.
 *
 * A commit (SQLite writing WAL frames, locking, hashing the chain) is the most expensive step on
 * the proxy's request path, and it blocks whichever thread runs it. With a commit thread the
 * gateway's event loop only prepares each event (canonical JSON of its payload) and posts it; the
 * worker (commit-worker.ts) hashes, inserts and commits on a second core, and answers. The proxy
 * still forwards a request only after the answer says its event is committed.
 *
 * Two ways to append, one order: `append` answers through a callback (the proxies' hot path);
 * `call` blocks until the worker answers (everything that needs `append` to return the event, as
 * the in-thread store does). Both go through one port, so the worker sees them in the order they
 * were made. A blocked call wakes on a shared counter (Atomics.wait) and takes the answers off the
 * port itself (receiveMessageOnPort); answers to earlier callback appends found on the way are
 * settled in order, their callbacks deferred to a microtask so no caller is re-entered.
 *
 * If the worker dies, every waiting and later append fails (the store refuses: fail closed).
 */
import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from 'node:worker_threads';
import { workerSource } from '../worker-source';
import type { AppendedEvent, PreparedEvent } from './chain-writer';

export type CommitRequest =
  /** `jseq`: the batch is journaled, up to that journal line (see journal.ts). */
  | { op: 'append'; id: number; events: PreparedEvent[]; reload?: boolean; jseq?: number }
  /** Answered once everything before it is; also writes the session index. */
  | { op: 'sync'; id: number }
  | { op: 'pragma'; id: number; sql: string }
  | { op: 'close'; id: number };

/** A request before it is numbered. */
type Unnumbered<T> = T extends unknown ? Omit<T, 'id'> : never;

/** `final: false`: a journaled batch's commit failed and will be retried (the answer comes later). */
export type CommitReply = { id: number; ok: true; appended?: AppendedEvent[] } | { id: number; ok: false; final: boolean; message: string; code?: string };

/** What waits for an answer: `settled` runs as the answer is taken, `then` after it (maybe deferred). */
interface Waiter {
  settled(reply: CommitReply): void;
  then?: () => void;
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
  /** Journaled batches waiting to be sent (see `queue`). */
  private outbox: { events: PreparedEvent[]; parts: { n: number; settled: (reply: CommitReply) => void }[]; jseq: number; reload: boolean } | undefined;
  private outboxTimer: NodeJS.Timeout | undefined;

  private constructor(
    private readonly worker: Worker,
    private readonly port: MessagePort,
    private readonly signal: Int32Array,
  ) {
    port.on('message', (r: CommitReply) => this.take(r, false));
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

  /**
   * Appends `events` (journaled up to `jseq`, if given); `settled` runs with the chain's answer
   * once they are committed, or with the failure when they cannot be (for journaled batches only
   * when the thread is gone: until then they are retried).
   */
  private append(events: PreparedEvent[], opts: { reload: boolean; jseq?: number }, settled: (reply: CommitReply) => void, then?: () => void): void {
    const id = this.nextId++;
    if (this.dead) {
      const r: CommitReply = { id, ok: false, final: true, message: this.dead.message };
      queueMicrotask(() => {
        settled(r);
        then?.();
      });
      return;
    }
    if (this.waiting.size === 0) this.port.ref();
    this.waiting.set(id, { settled, then });
    this.port.postMessage({ op: 'append', id, events, reload: opts.reload, jseq: opts.jseq } satisfies CommitRequest);
  }

  /**
   * Like `append` for journaled batches, which need no prompt answer: batches queued within
   * POST_MS go to the worker as one message (one wake-up of the thread, one answer), each
   * `settled` receiving its own part of the answer.
   */
  queue(events: PreparedEvent[], opts: { reload: boolean; jseq: number }, settled: (reply: CommitReply) => void): void {
    const o = (this.outbox ??= { events: [], parts: [], jseq: 0, reload: false });
    for (const e of events) o.events.push(e);
    o.parts.push({ n: events.length, settled });
    o.jseq = opts.jseq;
    o.reload ||= opts.reload;
    if (o.events.length >= POST_EVENTS) this.post();
    else this.outboxTimer ??= setTimeout(this.post, POST_MS);
  }

  /** Sends the queued batches now. */
  private readonly post = (): void => {
    clearTimeout(this.outboxTimer);
    this.outboxTimer = undefined;
    const o = this.outbox;
    if (!o) return;
    this.outbox = undefined;
    this.append(o.events, { reload: o.reload, jseq: o.jseq }, (reply) => {
      if (!reply.ok) {
        for (const p of o.parts) p.settled(reply);
        return;
      }
      let i = 0;
      for (const p of o.parts) {
        p.settled({ id: reply.id, ok: true, appended: reply.appended!.slice(i, i + p.n) });
        i += p.n;
      }
    });
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
        this.take(r, true);
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

  private take(r: CommitReply, fromCall: boolean): void {
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
    if (w.then) {
      if (fromCall) queueMicrotask(w.then);
      else w.then();
    }
  }

  private die(err: Error): void {
    if (this.dead) return;
    this.dead = err;
    const waiting = [...this.waiting.entries()];
    this.waiting.clear();
    for (const [id, w] of waiting) {
      w.settled({ id, ok: false, final: true, message: err.message });
      if (w.then) queueMicrotask(w.then);
    }
  }
}
