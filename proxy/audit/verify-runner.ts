/**
 * Runs verification off the caller's thread: a whole store verification in one worker thread (what
 * the gateway's console asks for), or a store's row pass split into seq ranges across worker
 * threads and stitched here (what `custody verify` uses). Workers load as worker-source.ts finds
 * them; where they cannot, the same work runs inline. Verifying a million events takes seconds; a
 * gateway should keep proxying meanwhile.
 */
import { existsSync, statSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { type WorkerSource, workerSource } from '../worker-source';
import { verifyBundle } from './verify/bundle';
import { VerifyInputError, type VerifyOptions, type VerifyReport } from './verify/checks';
import { concludeStore, openStoreForVerification, type RangeScan, scanRange, scanWholeStore, verifyStore } from './verify/store';

/**
 * Runs `scanRange` for each range in its own worker thread; undefined when workers cannot load
 * this code (the caller then verifies in one thread). A worker's own failure rejects.
 */
export async function scanInWorkers(file: string, ranges: [number, number][], wanted: number[], onProgress?: (done: number) => void): Promise<RangeScan[] | undefined> {
  const src = workerSource(import.meta.url, './verify-scan-worker');
  if (!src) return undefined;
  const done = ranges.map(() => 0);
  const workers: Worker[] = [];
  try {
    return await Promise.all(
      ranges.map(
        ([from, to], i) =>
          new Promise<RangeScan>((resolve, reject) => {
            const worker = new Worker(src.entry, { ...src.options, workerData: { file, from, to, wanted: wanted.filter((w) => w >= from && w <= to) } });
            workers.push(worker);
            worker.on('message', (m: { type: string; done?: number; scan?: RangeScan; message?: string }) => {
              if (m.type === 'progress') {
                done[i] = m.done!;
                onProgress?.(done.reduce((a, b) => a + b, 0));
              } else if (m.type === 'scan') resolve(m.scan!);
              else if (m.type === 'error') reject(new Error(m.message));
            });
            worker.on('error', reject);
            worker.on('exit', (code) => reject(new Error(`verification worker exited with code ${code}`)));
          }),
      ),
    );
  } finally {
    for (const w of workers) void w.terminate();
  }
}

/**
 * Runs one worker to completion: resolves with the payload of its `resultType` message, rejects on
 * its `error` message, a crash or an exit; other messages go to `onMessage`.
 */
export function runWorkerOnce<T>(src: WorkerSource, workerData: unknown, resultType: string, pick: (m: Record<string, unknown>) => T, onMessage?: (m: Record<string, unknown>) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const worker = new Worker(src.entry, { ...src.options, workerData });
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      fn();
      void worker.terminate();
    };
    worker.on('message', (m: Record<string, unknown>) => {
      if (m['type'] === resultType) settle(() => resolve(pick(m)));
      else if (m['type'] === 'error') settle(() => reject(new Error(String(m['message']))));
      else onMessage?.(m);
    });
    worker.on('error', (err) => settle(() => reject(err)));
    worker.on('exit', (code) => settle(() => reject(new Error(`${resultType} worker exited with code ${code}`))));
  });
}

export async function runVerification(dataDir: string, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const src = workerSource(import.meta.url, './verify-worker');
  if (!src) return verifyStore(dataDir, opts);
  return runWorkerOnce(src, { dataDir, since: opts.since, expectedKey: opts.expectedKey }, 'report', (m) => m['report'] as VerifyReport, (m) => {
    if (m['type'] === 'progress') opts.onProgress?.(m['done'] as number, m['total'] as number);
  });
}

export interface ParallelOptions extends VerifyOptions {
  /** Worker threads (default: the machine's parallelism, at most 8). */
  workers?: number;
  /** Below this many events the store is verified in one pass on this thread (default 100,000). */
  minEvents?: number;
  /** Scan the same ranges one after another on this thread (deterministic, for tests of the stitching). */
  inThread?: boolean;
}

/** Verifies a bundle file in a worker thread (inline where workers cannot load). */
export async function runBundleVerification(path: string, opts: Pick<VerifyOptions, 'expectedKey'> = {}): Promise<VerifyReport> {
  const src = workerSource(import.meta.url, './verify-worker');
  if (!src) return verifyBundle(path, opts);
  return runWorkerOnce(src, { bundle: path, expectedKey: opts.expectedKey }, 'report', (m) => m['report'] as VerifyReport);
}

/**
 * Verifies a store with the row pass split into seq ranges, each checked in its own worker thread
 * (each opening the file read-only); the ranges are stitched and the tree built here. Small stores,
 * or where workers cannot load, are verified in one pass on this thread.
 */
export async function verifyStoreParallel(dataDir: string, opts: ParallelOptions = {}): Promise<VerifyReport> {
  const s = openStoreForVerification(dataDir, opts);
  try {
    const { total, maxSeq, wanted } = s;
    const workers = Math.max(1, Math.min(opts.workers ?? availableParallelism(), 8));
    if (workers < 2 || total < (opts.minEvents ?? 100_000)) return concludeStore(s, scanWholeStore(s));
    // Ranges of 2^k seqs starting at multiples of 2^k: each range's subtrees are nodes of the
    // whole tree, so stitching needs O(log n) hashes, not one per event. Events appended after
    // `maxSeq` was read are left to the next verification.
    let block = 1;
    while (block < Math.ceil(maxSeq / workers)) block *= 2;
    const ranges: [number, number][] = [];
    for (let start = 1; start <= maxSeq; start += block) ranges.push([start, Math.min(start + block - 1, maxSeq)]);
    const scans = opts.inThread
      ? ranges.map(([from, to]) => scanRange(s.db, from, to, wanted))
      : await scanInWorkers(s.file, ranges, [...wanted], opts.onProgress && ((done) => opts.onProgress!(done, total)));
    if (!scans) return concludeStore(s, scanWholeStore(s));
    opts.onProgress?.(scans.reduce((sum, x) => sum + x.count, 0), total);
    return concludeStore(s, scans);
  } finally {
    s.db.close();
  }
}

/** A data dir (its rows checked in parallel) or an exported bundle. */
export async function verifyPathParallel(path: string, opts: VerifyOptions = {}): Promise<VerifyReport> {
  if (!existsSync(path)) throw new VerifyInputError(`${path}: no such file or directory`);
  if (statSync(path).isDirectory() && !existsSync(join(path, 'manifest.json'))) return verifyStoreParallel(path, opts);
  return verifyBundle(path, opts);
}
