/**
 * Sealing an archive segment continues the compact range the segment before ended with: the tree,
 * the inclusion proofs and the consistency proof cost the segment's own events plus O(log n),
 * however long the log before it. Checked by the hashing work each seal reports (not wall time,
 * which the shared machine makes noisy), and by verifying the packed segments as an auditor would.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Config } from '../../shared/config';
import { openAuditTrail } from '../../proxy/audit/checkpoints';
import { packSegment, writeSegmentEvents } from '../../proxy/audit/archive/segment';
import { AuditStore } from '../../proxy/audit/store';
import { verifyBundle } from '../../proxy/audit/verify/bundle';
import { tempDir } from '../support/tmp';

async function setup() {
  const dir = tempDir('custody-segment-');
  const store = AuditStore.open(dir);
  const trail = openAuditTrail(store, dir, Config.parse({ audit: { origin: 'custody.test/segment' } }));
  const append = (count: number) => {
    for (let done = 0; done < count; done += 1000) {
      store.appendMany(Array.from({ length: Math.min(1000, count - done) }, (_, i) => ({ kind: 'http.request' as const, session: `s${i % 4}`, actor: 'key:alice', connection: 'openai', payload: { n: done + i } })));
    }
  };
  let stages = 0;
  const stage = () => {
    const s = join(dir, `stage-${stages++}`);
    mkdirSync(s);
    return s;
  };
  return { dir, store, trail, append, stage };
}

/** Seals `before` events as one segment, then `size` more as the next; returns the second's hashing work and the verified report. */
async function sealAfter(before: number, size: number) {
  const { store, trail, append, stage } = await setup();
  append(before);
  const first = writeSegmentEvents(store.db, 1, store.head().size, stage());
  const from = store.head().size + 1;
  append(size);
  const cp = await trail.checkpoints.write();
  const s = stage();
  const built = writeSegmentEvents(store.db, from, cp.treeSize, s, first.range);
  // The same segment without the stored range, rebuilt from every event before it: the same files.
  const slow = stage();
  const rebuilt = writeSegmentEvents(store.db, from, cp.treeSize, slow);
  for (const f of ['events.jsonl', 'proofs.jsonl', 'consistency.jsonl']) assert.ok(readFileSync(join(s, f)).equals(readFileSync(join(slow, f))), `${f} is the same either way`);
  assert.deepEqual(built.range, rebuilt.range);
  assert.ok(rebuilt.treeHashes > before, 'the slow path hashes the whole log');
  const packed = await packSegment(
    s,
    {
      index: 2,
      firstSeq: from,
      lastSeq: cp.treeSize,
      previous: { treeSize: from - 1, rootHash: first.rootHash, lastHash: first.lastHash },
      checkpoint: cp,
      sealedAt: Date.now(),
      events: built,
      cosignatures: [],
    },
    trail.signer,
  );
  const report = verifyBundle(packed.file, { expectedKey: trail.signer.info().fingerprint });
  store.close();
  return { built, report, from, to: cp.treeSize };
}

describe('archive segments', () => {
  it('a segment sealed after N earlier events verifies, and sealing it hashes as much after 100 events as after 40,000', async () => {
    const small = await sealAfter(100, 300);
    const large = await sealAfter(40_000, 300);
    for (const r of [small, large]) {
      assert.equal(r.report.ok, true, r.report.failure?.message);
      assert.deepEqual([r.report.segment?.firstSeq, r.report.segment?.lastSeq, r.report.events], [r.from, r.to, r.to - r.from + 1]);
    }
    // The segment's own leaves and nodes (~2 per event) plus a few per level of the tree before it.
    const events = large.to - large.from + 1;
    assert.ok(large.built.treeHashes < 3 * events, `${large.built.treeHashes} hashes for a segment of ${events} events`);
    assert.ok(Math.abs(large.built.treeHashes - small.built.treeHashes) <= 2 * 17, `${small.built.treeHashes} hashes after 100 events, ${large.built.treeHashes} after 40,000`);
  });

  it('refuses a stored compact range that does not fit the tree it claims to end', async () => {
    const { store, append, stage } = await setup();
    append(10);
    const first = writeSegmentEvents(store.db, 1, 6, stage());
    assert.throws(() => writeSegmentEvents(store.db, 8, 10, stage(), first.range), /the stored compact range of the tree of 7 events is malformed/);
    store.close();
  });
});
