/**
 * The archiver's worker thread, seen from the gateway's thread. Building a segment's events and
 * proofs, uploading it, downloading it again and verifying what came back all run on one worker
 * (archive-worker.ts), started on first use and kept while segments keep coming: a thread per step
 * would cost more to start than the step itself at a short `every`. It ends after a minute without
 * work, and at `close`. Signing and packing stay with the caller, which holds the key.
 *
 * Where no worker can start (an in-memory store, a bundle without the worker), the same steps run
 * on the caller's thread.
 */
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import { type WorkerSource, workerSource } from '../../worker-source';
import { verifyBundle } from '../verify/bundle';
import type { VerifyReport } from '../verify/checks';
import type { LockMode, S3Location, S3ObjectStore } from './object-store';
import { type SegmentEvents, writeSegmentEvents } from './segment';

export interface ArchiveWorkerData {
  file: string;
  location: S3Location;
}

type Lock = { mode: LockMode; retainUntil: Date };
export type ArchiveRequest =
  | { id: number; op: 'segment'; firstSeq: number; lastSeq: number; stage: string; range?: string[] }
  | { id: number; op: 'put'; key: string; file: string; lock?: Lock }
  | { id: number; op: 'get'; key: string; file: string }
  | { id: number; op: 'verify'; file: string; expectedKey: string; witnessKeys: string[] };
type Unnumbered<T> = T extends unknown ? Omit<T, 'id'> : never;
type Reply = { id: number; ok: true; result: unknown } | { id: number; ok: false; message: string; code?: string };

const IDLE_MS = 60_000;

export class ArchiveThread {
  private readonly src: WorkerSource | undefined;
  private worker?: Worker;
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private idle?: NodeJS.Timeout;
  private closed = false;
  /** Aborts what runs on the caller's thread (no worker) at `close`. */
  private readonly abort = new AbortController();

  constructor(
    private readonly db: Database.Database,
    private readonly objects: S3ObjectStore,
  ) {
    this.src = db.memory ? undefined : workerSource(import.meta.url, './archive-worker');
  }

  /** A segment's events, proofs and hashes, written under `stage`, continuing the compact range `range` of the segment before (segment.ts). */
  segment(firstSeq: number, lastSeq: number, stage: string, range?: string[]): Promise<SegmentEvents> {
    if (!this.src) return Promise.resolve().then(() => writeSegmentEvents(this.db, firstSeq, lastSeq, stage, range));
    return this.request({ op: 'segment', firstSeq, lastSeq, stage, ...(range ? { range } : {}) }) as Promise<SegmentEvents>;
  }

  put(key: string, file: string, lock?: Lock): Promise<{ versionId?: string }> {
    if (!this.src) return this.objects.putFile(key, file, { lock, signal: this.abort.signal });
    return this.request({ op: 'put', key, file, ...(lock ? { lock } : {}) }) as Promise<{ versionId?: string }>;
  }

  get(key: string, file: string): Promise<number> {
    if (!this.src) return this.objects.getToFile(key, file, this.abort.signal);
    return this.request({ op: 'get', key, file }) as Promise<number>;
  }

  /** Verifies a bundle file as `custody verify --key … --witness-key …` would. */
  verify(file: string, expectedKey: string, witnessKeys: string[] = []): Promise<VerifyReport> {
    if (!this.src) return Promise.resolve().then(() => verifyBundle(file, { expectedKey, witnessKeys }));
    return this.request({ op: 'verify', file, expectedKey, witnessKeys }) as Promise<VerifyReport>;
  }

  /** Ends the thread; what is under way fails. */
  close(): void {
    this.closed = true;
    this.abort.abort();
    this.end(new Error('the archiver stopped'));
  }

  private request(req: Unnumbered<ArchiveRequest>): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('the archiver stopped'));
    clearTimeout(this.idle);
    const w = (this.worker ??= this.spawn(this.src!));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      w.postMessage({ ...req, id });
    });
  }

  private spawn(src: WorkerSource): Worker {
    const workerData: ArchiveWorkerData = { file: this.db.name, location: this.objects.location };
    const w = new Worker(src.entry, { ...src.options, workerData });
    w.unref();
    w.on('message', (r: Reply) => {
      const waiter = this.waiting.get(r.id);
      if (!waiter) return;
      this.waiting.delete(r.id);
      if (r.ok) waiter.resolve(r.result);
      else waiter.reject(Object.assign(new Error(r.message), r.code ? { code: r.code } : {}));
      if (!this.waiting.size) {
        this.idle = setTimeout(() => this.end(), IDLE_MS);
        this.idle.unref();
      }
    });
    w.on('error', (err) => this.worker === w && this.end(err));
    w.on('exit', (code) => this.worker === w && this.end(new Error(`the archive worker exited with code ${code}`)));
    return w;
  }

  private end(err?: Error): void {
    clearTimeout(this.idle);
    const w = this.worker;
    this.worker = undefined;
    void w?.terminate();
    for (const waiter of this.waiting.values()) waiter.reject(err ?? new Error('the archive worker ended'));
    this.waiting.clear();
  }
}
