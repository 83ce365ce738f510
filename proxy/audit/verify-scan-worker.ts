/** Worker-thread entry: checks one seq range of the store (see scanRange) and returns what it found. */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { scanRange } from './verify/store';

const { file, from, to, wanted } = workerData as { file: string; from: number; to: number; wanted: number[] };
try {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    const scan = scanRange(db, from, to, new Set(wanted), (done) => parentPort!.postMessage({ type: 'progress', done }));
    parentPort!.postMessage({ type: 'scan', scan });
  } finally {
    db.close();
  }
} catch (err) {
  parentPort!.postMessage({ type: 'error', message: err instanceof Error ? err.message : String(err) });
}
