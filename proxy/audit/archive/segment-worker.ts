/** Worker-thread entry: writes one archive segment's events and proofs (see segment.ts), off the gateway's event loop. */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { writeSegmentEvents } from './segment';

const { file, firstSeq, lastSeq, stage } = workerData as { file: string; firstSeq: number; lastSeq: number; stage: string };
try {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    parentPort!.postMessage({ type: 'segment', segment: writeSegmentEvents(db, firstSeq, lastSeq, stage) });
  } finally {
    db.close();
  }
} catch (err) {
  parentPort!.postMessage({ type: 'error', message: err instanceof Error ? err.message : String(err) });
}
