/** Worker-thread entry: a consistency proof over the store's event hashes, off the gateway's event loop. */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { consistencyProofFromStore } from './proof';

const { file, first, second } = workerData as { file: string; first: number; second: number };
try {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    parentPort!.postMessage({ type: 'proof', proof: consistencyProofFromStore(db, first, second).map((p) => p.toString('base64')) });
  } finally {
    db.close();
  }
} catch (err) {
  parentPort!.postMessage({ type: 'error', message: err instanceof Error ? err.message : String(err) });
}
