/**
 * Tampering with a real store file (opened with better-sqlite3 directly, as an attacker with disk
 * access would) and checking that `custody verify` names the first bad seq and what happened.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { cpSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { Config } from '../../shared/config';
import { openAuditTrail } from '../../proxy/audit/checkpoints';
import { runRetention } from '../../proxy/audit/retention';
import { AuditStore } from '../../proxy/audit/store';
import { readTar } from '../../proxy/audit/tar';
import { main } from '../../proxy/cli';
import { rewriteFrom } from '../support/audit-rewrite';
import { tempDir } from '../support/tmp';

const config = Config.parse({ audit: { origin: 'custody.test/tamper' } });

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (t) => (out += t), err: (t) => (err += t) });
  return { code, out, err };
}

/** A data dir with a signing key (its announcement is seq 1), `n` more events and a checkpoint. */
async function seed(n = 30): Promise<string> {
  const dir = tempDir('custody-tamper-');
  const store = AuditStore.open(dir);
  const trail = openAuditTrail(store, dir, config);
  for (let i = 0; i < n; i++) {
    const session = `s${i % 3}`;
    if (i === 10) store.append({ kind: 'http.response', session, actor: 'key:alice', connection: 'openai', payload: { status: 200, body: 'x'.repeat(20_000) + ' big' } });
    else store.append({ kind: 'http.request', session, actor: 'key:alice', connection: 'openai', payload: { method: 'POST', path: '/chat/completions', text: `hello ${i}` }, spans: i % 4 ? [] : [{ type: 'EMAIL', start: 0, end: 5, rule: 'pii' }] });
  }
  await trail.checkpoints.write();
  store.close();
  return dir;
}

function withDb<T>(dir: string, fn: (db: Database.Database) => T): T {
  const db = new Database(join(dir, 'custody.db'));
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

function expectFailure(r: { code: number; err: string }, seq: number | undefined, problem: string): void {
  assert.equal(r.code, 1, `expected failure, got: ${r.err}`);
  const lines = r.err.trim().split('\n');
  assert.equal(lines.length, 1, `one line on stderr: ${r.err}`);
  assert.match(lines[0]!, new RegExp(`^custody verify: FAILED${seq !== undefined ? ` at seq ${seq}` : ''}: ${problem} — `), r.err);
}


describe('custody verify on a tampered store', () => {
  it('passes an intact store and says what it checked', async () => {
    const dir = await seed();
    const r = await cli('verify', dir);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^OK: .* is intact: 31 events; chain and Merkle tree recomputed; 1 signed checkpoint verified/);
    assert.match(r.out, /fingerprint: SHA256:/);
    const json = JSON.parse((await cli('verify', dir, '--json')).out) as { ok: boolean; treeSize: number; payloadsChecked: number };
    assert.equal(json.ok, true);
    assert.equal(json.treeSize, 31);
    assert.equal(json.payloadsChecked, 31);
  });

  it('finds one changed byte in a payload', async () => {
    const dir = await seed();
    withDb(dir, (db) => {
      const { payload } = db.prepare('SELECT payload FROM events WHERE seq = 6').get() as { payload: string };
      db.prepare('UPDATE events SET payload = ? WHERE seq = 6').run(payload.replace('hello 4', 'hello 5'));
    });
    expectFailure(await cli('verify', dir), 6, 'modified');
  });

  it('finds one changed byte inside a compressed payload', async () => {
    const dir = await seed();
    withDb(dir, (db) => {
      const { payload, encoding } = db.prepare('SELECT payload, encoding FROM events WHERE seq = 12').get() as { payload: Buffer; encoding: string };
      assert.equal(encoding, 'deflate');
      const copy = Buffer.from(payload);
      copy[copy.length >> 1] = copy[copy.length >> 1]! ^ 0x01;
      db.prepare('UPDATE events SET payload = ? WHERE seq = 12').run(copy);
    });
    expectFailure(await cli('verify', dir), 12, 'modified');
  });

  it('finds a changed field even when the payload hash is left alone', async () => {
    const dir = await seed();
    withDb(dir, (db) => db.prepare("UPDATE events SET actor = 'key:mallory' WHERE seq = 9").run());
    expectFailure(await cli('verify', dir), 9, 'modified');
  });

  it('finds a deleted event', async () => {
    const dir = await seed();
    withDb(dir, (db) => db.prepare('DELETE FROM events WHERE seq = 7').run());
    expectFailure(await cli('verify', dir), 7, 'deleted');
  });

  it('finds a deleted event whose gap was closed by renumbering', async () => {
    const dir = await seed();
    withDb(dir, (db) => {
      db.prepare('DELETE FROM events WHERE seq = 7').run();
      db.prepare('UPDATE events SET seq = seq - 1 WHERE seq > 7').run();
    });
    expectFailure(await cli('verify', dir), 7, 'deleted');
  });

  it('finds two swapped events', async () => {
    const dir = await seed();
    withDb(dir, (db) => {
      db.prepare('UPDATE events SET seq = -1 WHERE seq = 5').run();
      db.prepare('UPDATE events SET seq = 5 WHERE seq = 4').run();
      db.prepare('UPDATE events SET seq = 4 WHERE seq = -1').run();
    });
    const r = await cli('verify', dir);
    expectFailure(r, 4, 'reordered');
    assert.match(r.err, /stored at seq 5/);
  });

  it('finds a truncated tail through the signed checkpoint', async () => {
    const dir = await seed();
    withDb(dir, (db) => db.prepare('DELETE FROM events WHERE seq > 25').run());
    const r = await cli('verify', dir);
    expectFailure(r, 26, 'truncated');
    assert.match(r.err, /seq 26–31 are missing/);
  });

  it('finds a replaced signing key', async () => {
    const dir = await seed();
    const { privateKey } = generateKeyPairSync('ed25519');
    writeFileSync(join(dir, 'checkpoint-signing.key'), privateKey.export({ format: 'pem', type: 'pkcs8' }) as string);
    const r = await cli('verify', dir);
    expectFailure(r, 1, 'key-replaced');
    // The gateway, started on the replaced key, refuses nothing but its checkpoints are now foreign.
    const store = AuditStore.open(dir);
    await openAuditTrail(store, dir, config).checkpoints.write();
    store.close();
    expectFailure(await cli('verify', dir), 1, 'key-replaced');
  });

  it('finds a checkpoint whose signed note was altered', async () => {
    const dir = await seed();
    withDb(dir, (db) => {
      const { note } = db.prepare('SELECT note FROM checkpoints').get() as { note: string };
      db.prepare('UPDATE checkpoints SET note = ?').run(note.replace('\n31\n', '\n30\n'));
    });
    expectFailure(await cli('verify', dir), 31, 'signature-invalid');
  });

  it('holds a rewritten history to the checkpoint of an earlier export', async () => {
    const dir = await seed();
    const bundle = join(tempDir(), 'evidence.tar.gz');
    const exported = await cli('export', '--data-dir', dir, '--out', bundle);
    assert.equal(exported.code, 0, exported.err);
    const anchor = join(tempDir(), 'checkpoint.txt');
    writeFileSync(anchor, readTar(await import('node:fs').then((fs) => fs.readFileSync(bundle))).get('checkpoint.txt')!);

    // The attacker rewrites seq 3, recomputes every later hash and re-signs the checkpoints with the key on disk.
    withDb(dir, (db) => {
      rewriteFrom(db, 3, { method: 'POST', path: '/chat/completions', text: 'nothing to see' });
      db.prepare('DELETE FROM checkpoints').run();
    });
    const store = AuditStore.open(dir);
    await openAuditTrail(store, dir, config).checkpoints.write();
    store.close();

    // On its own the store is self-consistent again: only an anchor kept elsewhere shows the rewrite.
    assert.equal((await cli('verify', dir)).code, 0);
    const r = await cli('verify', dir, '--since-checkpoint', bundle);
    expectFailure(r, 3, 'inconsistent');
    const byNote = await cli('verify', dir, '--since-checkpoint', anchor);
    expectFailure(byNote, 31, 'inconsistent');
    assert.match(byNote.err, /history up to seq 31 was rewritten/);
  });

  it('accepts retention purges but not a payload removed by hand', async () => {
    const dir = tempDir('custody-retention-');
    const store = AuditStore.open(dir);
    const trail = openAuditTrail(store, dir, config);
    const old = Date.now() - 3 * 86_400_000;
    for (let i = 0; i < 5; i++) store.append({ kind: 'pg.statement', session: 'p', actor: 'key:bob', connection: 'warehouse', payload: { sql: `select ${i}` }, time: old + i });
    for (let i = 0; i < 3; i++) store.append({ kind: 'pg.statement', session: 'q', actor: 'key:bob', connection: 'warehouse', payload: { sql: `select ${i}` } });
    const run = runRetention(store, '1d');
    assert.equal(run.purged, 5);
    await trail.checkpoints.write();
    store.close();
    const ok = await cli('verify', dir);
    assert.equal(ok.code, 0, ok.err);
    assert.match(ok.out, /5 purged by retention/);
    const copy = tempDir('custody-retention-copy-');
    cpSync(dir, copy, { recursive: true });
    withDb(copy, (db) => db.prepare("UPDATE events SET payload = NULL, spans = NULL, encoding = 'purged' WHERE seq = 8").run());
    const r = await cli('verify', copy);
    expectFailure(r, 8, 'modified');
    assert.match(r.err, /no recorded retention run covers it/);
  });

  it('refuses a path that is neither a store nor a bundle, in one line', async () => {
    const r = await cli('verify', join(tempDir(), 'nothing-here'));
    assert.equal(r.code, 1);
    assert.match(r.err, /^custody verify: .*no such file or directory\n$/);
    const empty = tempDir();
    const r2 = await cli('verify', empty);
    assert.equal(r2.code, 1);
    assert.match(r2.err, /no audit store here/);
  });
});
