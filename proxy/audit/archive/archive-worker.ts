/**
 * Worker-thread entry: the archiver's heavy steps (archive-thread.ts), on one thread kept for as
 * long as the archiver works: a segment's events and proofs from the store (read-only), the upload
 * and the download of the packed segment, and the read-back verification.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { lowerThreadPriority } from '../../worker-source';
import { verifyBundle } from '../verify/bundle';
import { type ArchiveRequest, type ArchiveWorkerData } from './archive-thread';
import { S3ObjectStore } from './object-store';
import { writeSegmentEvents } from './segment';

// The lowest priority: evidence waits for idle cores rather than take them from the proxies.
lowerThreadPriority(19);
const data = workerData as ArchiveWorkerData;
const objects = new S3ObjectStore(data.location);
let db: Database.Database | undefined;

async function run(req: ArchiveRequest): Promise<unknown> {
  switch (req.op) {
    case 'segment':
      db ??= new Database(data.file, { readonly: true, fileMustExist: true });
      return writeSegmentEvents(db, req.firstSeq, req.lastSeq, req.stage, req.range);
    case 'put':
      return objects.putFile(req.key, req.file, { lock: req.lock });
    case 'get':
      return objects.getToFile(req.key, req.file);
    case 'verify':
      return verifyBundle(req.file, { expectedKey: req.expectedKey, witnessKeys: req.witnessKeys });
  }
}

parentPort!.on('message', (req: ArchiveRequest) => {
  run(req).then(
    (result) => parentPort!.postMessage({ id: req.id, ok: true, result }),
    (err: unknown) => parentPort!.postMessage({ id: req.id, ok: false, message: err instanceof Error ? err.message : String(err), code: (err as { code?: string }).code }),
  );
});
