/**
 * Runs a store verification in a worker thread when the worker entry can be loaded (the TypeScript
 * sources under tsx, as `custody` and the tests run), else inline. Verifying a million events takes
 * seconds; a gateway should keep proxying meanwhile.
 */
import { Worker } from 'node:worker_threads';
import { type RangeScan, verifyStore, type VerifyOptions, type VerifyReport } from './verify';

function workerSource(file: string): { code: string } | undefined {
  const self = import.meta.url;
  if (!self.endsWith('.ts')) return undefined; // bundled build: no separate worker file to load
  let tsxApi: string;
  try {
    tsxApi = import.meta.resolve('tsx/esm/api');
  } catch {
    return undefined;
  }
  const entry = new URL(file, self).href;
  return { code: `import(${JSON.stringify(tsxApi)}).then(({ register }) => { register(); return import(${JSON.stringify(entry)}); });` };
}

/**
 * Runs `scanRange` for each range in its own worker thread; undefined when workers cannot load
 * this code (the caller then verifies in one thread). A worker's own failure rejects.
 */
export async function scanInWorkers(file: string, ranges: [number, number][], wanted: number[], onProgress?: (done: number) => void): Promise<RangeScan[] | undefined> {
  const src = workerSource('./verify-scan-worker.ts');
  if (!src) return undefined;
  const done = ranges.map(() => 0);
  const workers: Worker[] = [];
  try {
    return await Promise.all(
      ranges.map(
        ([from, to], i) =>
          new Promise<RangeScan>((resolve, reject) => {
            const worker = new Worker(src.code, { eval: true, workerData: { file, from, to, wanted: wanted.filter((w) => w >= from && w <= to) } });
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

export async function runVerification(dataDir: string, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const src = workerSource('./verify-worker.ts');
  if (!src) return verifyStore(dataDir, opts);
  return new Promise<VerifyReport>((resolve, reject) => {
    const worker = new Worker(src.code, { eval: true, workerData: { dataDir, since: opts.since, expectedKey: opts.expectedKey } });
    let settled = false;
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      fn();
      void worker.terminate();
    };
    worker.on('message', (m: { type: string; done?: number; total?: number; report?: VerifyReport; message?: string }) => {
      if (m.type === 'progress') opts.onProgress?.(m.done!, m.total!);
      else if (m.type === 'report') settle(() => resolve(m.report!));
      else if (m.type === 'error') settle(() => reject(new Error(m.message)));
    });
    worker.on('error', (err) => settle(() => reject(err)));
    worker.on('exit', (code) => settle(() => reject(new Error(`verification worker exited with code ${code}`))));
  });
}
