/**
 * The worker-thread verifier must reach exactly the verdict of the single-thread one, including for
 * damage right at the seams between the ranges the workers split the log into.
 */
import assert from 'node:assert/strict';
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { Config } from '../../shared/config';
import { openAuditTrail } from '../../proxy/audit/checkpoints';
import { AuditStore } from '../../proxy/audit/store';
import { verifyStore } from '../../proxy/audit/verify/store';
import { verifyStoreParallel } from '../../proxy/audit/verify-runner';
import { tempDir } from '../support/tmp';

const N = 3000; // events after the key announcement; 3 workers take seq 1–1024, 1025–2048, 2049–3001
const WORKERS = 3;

async function seed(): Promise<string> {
  const dir = tempDir('custody-parallel-');
  const store = AuditStore.open(dir);
  const trail = openAuditTrail(store, dir, Config.parse({ audit: { origin: 'custody.test/parallel' } }));
  for (let i = 0; i < N; i++) {
    store.append({ kind: 'http.request', session: `s${i % 7}`, actor: 'key:a', connection: 'openai', payload: { n: i, text: i % 250 === 0 ? 'y'.repeat(9000) : 'short' } });
    // checkpoints inside a range and exactly at a range's end
    if (store.head().size === 1000 || store.head().size === 2048) await trail.checkpoints.write();
  }
  await trail.checkpoints.write();
  store.close();
  return dir;
}

const base = await seed();

function tampered(sql: string[]): string {
  const dir = tempDir('custody-parallel-t-');
  cpSync(base, dir, { recursive: true });
  const db = new Database(join(dir, 'custody.db'));
  for (const s of sql) db.prepare(s).run();
  db.close();
  return dir;
}

/** Same verdict from one pass and from three stitched ranges (in worker threads when `threads`). */
async function same(dir: string, threads = false): Promise<{ seq?: number; problem?: string }> {
  const one = verifyStore(dir);
  const many = await verifyStoreParallel(dir, { workers: WORKERS, minEvents: 0, inThread: !threads });
  assert.deepEqual({ ok: many.ok, failure: many.failure, root: many.rootHash, events: many.events }, { ok: one.ok, failure: one.failure, root: one.rootHash, events: one.events });
  return { seq: one.failure?.seq, problem: one.failure?.problem };
}

describe('parallel verification', () => {
  it('agrees on an intact store, in worker threads too', async () => {
    assert.deepEqual(await same(base), { seq: undefined, problem: undefined });
    assert.deepEqual(await same(base, true), { seq: undefined, problem: undefined });
  });

  it('agrees on damage at a seam when the ranges run in worker threads', async () => {
    assert.deepEqual(await same(tampered(['DELETE FROM events WHERE seq = 1025']), true), { seq: 1025, problem: 'deleted' });
  });

  const cases: [string, string[], number, string][] = [
    ['a deleted first row of the second range', ['DELETE FROM events WHERE seq = 1025'], 1025, 'deleted'],
    ['a whole deleted range', ['DELETE FROM events WHERE seq BETWEEN 1025 AND 2048'], 1025, 'deleted'],
    ['a modified payload on a seam', ["UPDATE events SET payload = replace(payload, 'short', 'shorT') WHERE seq = 2049"], 2049, 'modified'],
    ['a modified compressed payload', ['UPDATE events SET payload = zeroblob(20) WHERE seq = 1252'], 1252, 'modified'],
    ['a changed field on the last row of a range', ["UPDATE events SET actor = 'key:m' WHERE seq = 1024"], 1024, 'modified'],
    ['rows swapped across a seam', ['UPDATE events SET seq = -1 WHERE seq = 1024', 'UPDATE events SET seq = 1024 WHERE seq = 1025', 'UPDATE events SET seq = 1025 WHERE seq = -1'], 1024, 'reordered'],
    ['a checkpoint at a seam that no longer matches', ["UPDATE checkpoints SET root_hash = (CASE WHEN substr(root_hash, 1, 2) = '00' THEN 'ff' ELSE '00' END) || substr(root_hash, 3) WHERE tree_size = 2048"], 2048, 'signature-invalid'],
    ['a truncated tail', ['DELETE FROM events WHERE seq > 2500'], 2501, 'truncated'],
  ];
  for (const [name, sql, seq, problem] of cases) {
    it(`agrees on ${name}`, async () => {
      assert.deepEqual(await same(tampered(sql)), { seq, problem });
    });
  }
});
