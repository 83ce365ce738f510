/**
 * Runs a store verification in a worker thread when the worker entry can be loaded (see
 * worker-source.ts), else inline. Verifying a million events takes
 * seconds; a gateway should keep proxying meanwhile.
 */
import { Worker } from 'node:worker_threads';
import { type WorkerSource, workerSource } from '../worker-source';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { type RangeScan, verifyBundle, VerifyInputError, verifyStore, verifyStoreInRanges, type VerifyOptions, type VerifyReport } from './verify';

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

/**
 * Verifies a store with the row pass split across worker threads (see verifyStoreInRanges); what
 * `custody verify` uses.
 */
export function verifyStoreParallel(dataDir: string, opts: Parameters<typeof verifyStoreInRanges>[2] = {}): Promise<VerifyReport> {
  return verifyStoreInRanges(dataDir, scanInWorkers, opts);
}

/** A data dir (its rows checked in parallel) or an exported bundle. */
export async function verifyPathParallel(path: string, opts: VerifyOptions = {}): Promise<VerifyReport> {
  if (!existsSync(path)) throw new VerifyInputError(`${path}: no such file or directory`);
  if (statSync(path).isDirectory() && !existsSync(join(path, 'manifest.json'))) return verifyStoreParallel(path, opts);
  return verifyBundle(path, opts);
}
