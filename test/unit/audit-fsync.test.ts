// audit.fsync: batch — each journaled batch reaches the disk (fdatasync on the journal file) before
// it counts as recorded, and a sync that fails refuses the batch (fail closed). Counted at the
// system-call boundary: node:fs's fdatasyncSync is wrapped for the test.
import assert from 'node:assert/strict';
import fs, { readlinkSync } from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import { after, describe, it } from 'node:test';
import type { AuditEventInput } from '../../shared/events';
import { Config } from '../../shared/config';
import { AuditStore, StoreUnavailableError } from '../../proxy/audit/store';
import { verifyStore } from '../../proxy/audit/verify/store';
import { tempDir } from '../support/tmp';

const ev = (n: number): AuditEventInput => ({ kind: 'http.request', session: 'ses_f', actor: 'key:alice', connection: 'openai', payload: { n } });
const append = (store: AuditStore, inputs: AuditEventInput[]) => new Promise<StoreUnavailableError | null>((resolve) => store.appendAsync(inputs, resolve));

const original = fs.fdatasyncSync;
/** Journal files synced, in order; `fail` makes the next sync throw EIO. */
const synced: string[] = [];
let fail = false;
fs.fdatasyncSync = (fd: number) => {
  const path = readlinkSync(`/proc/self/fd/${fd}`);
  if (fail) {
    fail = false;
    throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
  }
  synced.push(path);
  original(fd);
};
syncBuiltinESMExports();
after(() => {
  fs.fdatasyncSync = original;
  syncBuiltinESMExports();
});

describe('audit.fsync', () => {
  it('is none by default and accepts batch; anything else is a config error', () => {
    assert.equal(Config.parse({}).audit.fsync, 'none');
    assert.equal(Config.parse({ audit: { fsync: 'batch' } }).audit.fsync, 'batch');
    assert.throws(() => Config.parse({ audit: { fsync: 'always' } }), /fsync/);
  });

  it('without it, journaled batches are not synced', async () => {
    synced.length = 0;
    const store = AuditStore.open(tempDir(), { commitThread: true });
    for (let i = 1; i <= 5; i++) assert.equal(await append(store, [ev(i)]), null);
    store.close();
    assert.deepEqual(synced, []);
  });

  it('with batch, each batch is synced to the journal file before it is acknowledged, and a failed sync refuses the batch', async () => {
    synced.length = 0;
    const dir = tempDir();
    const store = AuditStore.open(dir, { commitThread: true, fsync: 'batch' });
    let before = 0;
    for (let i = 1; i <= 5; i++) {
      const acked = append(store, [ev(i), ev(i + 100)]);
      // The sync happens in the append call itself, before its acknowledgement can arrive.
      assert.equal(synced.length, before + 1, `batch ${i} was synced as it was journaled`);
      before = synced.length;
      assert.equal(await acked, null);
    }
    assert.ok(synced.every((p) => p.includes('journal')), `only journal files are synced: ${synced.join(', ')}`);
    fail = true;
    const refused = await append(store, [ev(99)]);
    assert.ok(refused instanceof StoreUnavailableError, 'a batch whose sync failed is not recorded');
    assert.match(refused.message, /EIO/);
    assert.equal(await append(store, [ev(7)]), null, 'the next batch, synced, is recorded');
    await store.settle();
    const rows = store.db.prepare("SELECT payload FROM events WHERE kind = 'http.request' ORDER BY seq").all() as { payload: string }[];
    assert.equal(rows.length, 11);
    store.close();
    // Reopened (the journal replayed), the log holds what was acknowledged and verifies.
    const again = AuditStore.open(dir);
    const seen = (again.db.prepare("SELECT payload FROM events WHERE kind = 'http.request' ORDER BY seq").all() as { payload: string }[]).map((r) => (JSON.parse(r.payload) as { n: number }).n);
    again.close();
    assert.deepEqual(seen, [1, 101, 2, 102, 3, 103, 4, 104, 5, 105, 7]);
    const report = verifyStore(dir);
    assert.equal(report.ok, true, JSON.stringify(report.failure));
  });
});
