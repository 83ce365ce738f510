// CUSTODY_TEST_STORE=postgres: what NODE_OPTIONS makes every process the tests start load
// (test/support/pg-store.ts). Plain JavaScript, so a worker thread, which NODE_OPTIONS reaches
// too, loads no TypeScript: a worker that its parent waits on synchronously (recheck's checkSync)
// never answers when it must. Only a `custody` process joins the run.
import { isMainThread } from 'node:worker_threads';

if (isMainThread && /[\\/](bin[\\/]custody\.mjs|proxy[\\/]entry\.ts)$/.test(process.argv[1] ?? '')) await import('./pg-store.ts');
