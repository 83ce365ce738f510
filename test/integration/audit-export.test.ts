/**
 * Evidence bundles: `custody export` writes one, `custody verify` checks it with the data dir gone,
 * a filtered one verifies through its inclusion proofs, and a tampered one fails at the right seq.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Config } from '../../shared/config';
import { openAuditTrail } from '../../proxy/audit/checkpoints';
import { AuditStore } from '../../proxy/audit/store';
import { readTar, writeTarGz } from '../../proxy/audit/tar';
import { main } from '../../proxy/cli';
import { tempDir } from '../support/tmp';

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, { out: (t) => (out += t), err: (t) => (err += t) });
  return { code, out, err };
}

const T0 = Date.parse('2026-03-01T10:00:00Z');

/** A data dir with traffic on two connections, a login, a hold and its approval, masking and a checkpoint. */
async function seed(): Promise<string> {
  const dir = tempDir('custody-export-');
  const store = AuditStore.open(dir);
  const trail = openAuditTrail(store, dir, Config.parse({ audit: { origin: 'custody.test/export' } }));
  const at = (m: number) => T0 + m * 60_000;
  store.append({ kind: 'auth.login', actor: 'oidc#alice', payload: { method: 'oidc', actorName: 'alice@example.com', source: '127.0.0.1' }, time: at(0) });
  store.append({ kind: 'auth.failure', actor: 'unknown', payload: { method: 'api-key', reason: 'unknown', source: '127.0.0.2' }, time: at(1) });
  for (let i = 0; i < 6; i++) {
    store.append({ kind: 'http.request', session: 'h1', actor: 'oidc#alice', connection: 'openai', payload: { method: 'POST', path: '/chat/completions', model: 'gpt-4o', actorName: 'alice@example.com', body: { messages: [{ role: 'user', content: `card [CREDIT_CARD] ${i}` }] } }, spans: [{ type: 'CREDIT_CARD', start: 5, end: 18, rule: 'pii', path: '/body/messages/0/content' }], time: at(2 + i) });
    store.append({ kind: 'http.response', session: 'h1', actor: 'oidc#alice', connection: 'openai', payload: { status: 200, usage: { prompt_tokens: 10, completion_tokens: 5 } }, time: at(2 + i) + 500 });
  }
  store.append({ kind: 'pg.statement', session: 'p1', actor: 'key:bob', connection: 'warehouse', payload: { protocol: 'postgres', sql: 'DROP TABLE users', classes: ['ddl', 'drop'], tables: ['users'], actorName: 'bob', decision: { action: 'hold', rule: 'hold-destructive-sql', reason: null } }, time: at(20) });
  store.append({ kind: 'hold.created', session: 'p1', actor: 'key:bob', connection: 'warehouse', payload: { id: 'hold_1', rule: 'hold-destructive-sql' }, time: at(20) });
  store.append({ kind: 'hold.resolved', session: 'p1', actor: 'oidc#carol', connection: 'warehouse', payload: { id: 'hold_1', state: 'approved', reason: 'ticket 42', decidedBy: ['carol'], rule: 'hold-destructive-sql', requester: 'key:bob', protocol: 'postgres' }, time: at(21) });
  store.append({ kind: 'pg.statement', session: 'p1', actor: 'key:bob', connection: 'warehouse', payload: { protocol: 'postgres', sql: "SELECT * FROM users WHERE email = '[EMAIL]'", classes: ['select'], tables: ['users'], decision: { action: 'allow', rule: null, reason: null } }, spans: [{ type: 'EMAIL', start: 34, end: 41, rule: 'pii' }], time: at(22) });
  await trail.checkpoints.write(at(23));
  store.append({ kind: 'http.request', session: 'h2', actor: 'oidc#alice', connection: 'openai', payload: { method: 'POST', path: '/chat/completions', model: 'gpt-4o', body: 'x'.repeat(10_000) }, time: at(40) });
  store.close();
  return dir;
}

async function rewriteBundle(src: string, dst: string, change: (files: Map<string, Buffer>) => void): Promise<void> {
  const files = readTar(readFileSync(src));
  change(files);
  await writeTarGz(dst, [...files].map(([name, data]) => ({ name, data, size: data.length })));
}

describe('evidence export', () => {
  it('writes a bundle that verifies on its own after the data dir is deleted', async () => {
    const dir = await seed();
    const out = join(tempDir(), 'evidence.tar.gz');
    const r = await cli('export', '--data-dir', dir, '--out', out);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /20 events/);
    const fingerprint = /--key (SHA256:\S+)/.exec(r.out)![1]!;
    const files = readTar(readFileSync(out));
    for (const name of ['manifest.json', 'manifest.note', 'checkpoint.txt', 'public-key.txt', 'events.jsonl', 'ocsf.jsonl', 'proofs.jsonl', 'hashes.bin', 'checkpoints.jsonl', 'consistency.jsonl', 'holds.json', 'policy-versions.json', 'report.html']) {
      assert.ok(files.has(name), `bundle has ${name}`);
    }
    // The export is itself recorded, after the checkpoint the bundle was cut against.
    const store = AuditStore.open(dir);
    const last = store.events(1, 100).at(-1)!;
    assert.equal(last.kind, 'export.created');
    assert.equal((last.payload as { events: number }).events, 20);
    store.close();

    rmSync(dir, { recursive: true, force: true });
    assert.ok(!existsSync(dir));
    const v = await cli('verify', out, '--key', fingerprint);
    assert.equal(v.code, 0, v.err);
    assert.match(v.out, /^OK: bundle .* is intact: 20 events, each proven included in the signed checkpoint of 20 events/);
    const wrongKey = await cli('verify', out, '--key', 'SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA');
    assert.equal(wrongKey.code, 1);
    assert.match(wrongKey.err, /^custody verify: FAILED: key-replaced — /);
  });

  it('maps events to OCSF classes and the report to SOC 2 and ISO 27001 controls', async () => {
    const dir = await seed();
    const out = join(tempDir(), 'evidence.tar.gz');
    assert.equal((await cli('export', '--data-dir', dir, '--out', out)).code, 0);
    const files = readTar(readFileSync(out));
    const ocsf = files.get('ocsf.jsonl')!.toString('utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const byKind = (kind: string) => ocsf.filter((o) => (o['metadata'] as { log_name: string }).log_name === kind);
    const req = byKind('http.request')[0]!;
    assert.equal(req['class_uid'], 6003);
    assert.equal(req['type_uid'], 600301);
    assert.deepEqual((req['metadata'] as { profiles: string[] }).profiles, ['ai_operation']);
    assert.equal((req['ai_model'] as { name: string }).name, 'gpt-4o');
    assert.equal((byKind('http.response')[0]!['message_context'] as { total_tokens: number }).total_tokens, 15);
    const drop = byKind('pg.statement')[0]!;
    assert.equal(drop['class_uid'], 6005);
    assert.equal(drop['type_uid'], 600507);
    assert.equal(byKind('pg.statement')[1]!['type_uid'], 600504);
    assert.equal(byKind('auth.login')[0]!['class_uid'], 3002);
    assert.equal(byKind('auth.login')[0]!['type_uid'], 300201);
    assert.equal(byKind('auth.failure')[0]!['status_id'], 2);
    const grant = byKind('hold.resolved')[0]!;
    assert.equal(grant['class_uid'], 6004);
    assert.equal(grant['type_uid'], 600401);
    for (const o of ocsf) assert.equal(o['type_uid'], (o['class_uid'] as number) * 100 + (o['activity_id'] as number));

    const html = files.get('report.html')!.toString('utf8');
    for (const control of ['CC6.1', 'CC6.2', 'CC6.3', 'CC7.2', 'CC8.1', 'A.5.15', 'A.5.18', 'A.8.2', 'A.8.15', 'A.8.16']) assert.ok(html.includes(`>${control}<`), `report maps ${control}`);
    assert.ok(html.includes('<td>CREDIT_CARD</td><td>6</td>'), 'masking counts');
    assert.ok(html.includes('<td>EMAIL</td><td>1</td>'));
    assert.ok(html.includes('<td>oidc#alice</td><td>alice@example.com</td><td>openai</td><td>7</td><td>0</td><td>2</td>'), 'who accessed what');
    assert.ok(html.includes('hold_1</td><td>approved'), 'hold outcomes');
    assert.ok(html.includes('class="ok">INTACT'), 'integrity status');
    assert.ok(!/<script|src="http|href="http/i.test(html), 'self-contained, no scripts or remote resources');
  });

  it('filters by time, user and connection and still verifies through inclusion proofs', async () => {
    const dir = await seed();
    const out = join(tempDir(), 'warehouse.tar.gz');
    const r = await cli('export', '--data-dir', dir, '--out', out, '--connection', 'warehouse', '--from', '2026-03-01T10:20:00Z', '--to', '2026-03-01T10:30:00Z');
    assert.equal(r.code, 0, r.err);
    const files = readTar(readFileSync(out));
    const events = files.get('events.jsonl')!.toString('utf8').trim().split('\n').map((l) => JSON.parse(l) as { seq: number; connection: string });
    assert.deepEqual(events.map((e) => e.connection), ['warehouse', 'warehouse', 'warehouse', 'warehouse']);
    const v = await cli('verify', out);
    assert.equal(v.code, 0, v.err);
    assert.match(v.out, /4 events \(filtered export\)/);

    const byUser = join(tempDir(), 'alice.tar.gz');
    assert.equal((await cli('export', '--data-dir', dir, '--out', byUser, '--user', 'alice@example.com')).code, 0);
    const aliceEvents = readTar(readFileSync(byUser)).get('events.jsonl')!.toString('utf8').trim().split('\n').map((l) => JSON.parse(l) as { actor: string });
    assert.ok(aliceEvents.length >= 13 && aliceEvents.every((e) => e.actor === 'oidc#alice'));
    assert.equal((await cli('verify', byUser)).code, 0);

    const bad = await cli('export', '--data-dir', dir, '--out', join(tempDir(), 'x.tar.gz'), '--from', 'yesterday-ish');
    assert.equal(bad.code, 1);
    assert.match(bad.err, /^custody export: --from: "yesterday-ish" is not a time/);
    const nowhere = await cli('export', '--data-dir', join(tempDir(), 'none'), '--out', join(tempDir(), 'y.tar.gz'));
    assert.equal(nowhere.code, 1);
    assert.match(nowhere.err, /^custody export: nothing to export: .* has no audit store \(custody\.db\); that data dir is given by --data-dir\. Pass --config FILE .*\n$/);
    assert.equal((await cli('export', '--data-dir', dir)).code, 2, '--out is required');
  });

  it('fails a tampered bundle at the event that was changed', async () => {
    const dir = await seed();
    const out = join(tempDir(), 'evidence.tar.gz');
    assert.equal((await cli('export', '--data-dir', dir, '--out', out)).code, 0);
    const tmp = tempDir();

    const payloadEdit = join(tmp, 'payload.tar.gz');
    await rewriteBundle(out, payloadEdit, (f) => f.set('events.jsonl', Buffer.from(f.get('events.jsonl')!.toString('utf8').replace('card [CREDIT_CARD] 3', 'card [CREDIT_CARD] 4'))));
    let r = await cli('verify', payloadEdit);
    assert.equal(r.code, 1);
    assert.match(r.err, /^custody verify: FAILED at seq 10: modified — its payload does not match/);

    const dropped = join(tmp, 'dropped.tar.gz');
    await rewriteBundle(out, dropped, (f) => {
      const lines = f.get('events.jsonl')!.toString('utf8').trim().split('\n');
      f.set('events.jsonl', Buffer.from(`${lines.filter((_, i) => i !== 6).join('\n')}\n`));
    });
    r = await cli('verify', dropped);
    assert.match(r.err, /^custody verify: FAILED at seq 7: deleted — /);

    const swapped = join(tmp, 'swapped.tar.gz');
    await rewriteBundle(out, swapped, (f) => {
      const lines = f.get('events.jsonl')!.toString('utf8').trim().split('\n');
      [lines[4], lines[5]] = [lines[5]!, lines[4]!];
      f.set('events.jsonl', Buffer.from(`${lines.join('\n')}\n`));
    });
    r = await cli('verify', swapped);
    assert.match(r.err, /^custody verify: FAILED at seq 5: reordered — /);

    const report = join(tmp, 'report.tar.gz');
    await rewriteBundle(out, report, (f) => f.set('report.html', Buffer.from(f.get('report.html')!.toString('utf8').replace('INTACT', 'intact!'))));
    r = await cli('verify', report);
    assert.match(r.err, /^custody verify: FAILED: bundle-modified — report\.html was changed after export/);

    const forgedKey = join(tmp, 'key.tar.gz');
    const other = join(tempDir(), 'other.tar.gz');
    assert.equal((await cli('export', '--data-dir', await seed(), '--out', other)).code, 0);
    await rewriteBundle(out, forgedKey, (f) => f.set('public-key.txt', readTar(readFileSync(other)).get('public-key.txt')!));
    r = await cli('verify', forgedKey);
    assert.match(r.err, /^custody verify: FAILED: key-replaced — /);
  });

  it('proves a later bundle and the live store consistent with an earlier export', async () => {
    const dir = await seed();
    const first = join(tempDir(), 'q1.tar.gz');
    assert.equal((await cli('export', '--data-dir', dir, '--out', first)).code, 0);
    const store = AuditStore.open(dir);
    store.append({ kind: 'http.request', session: 'h3', actor: 'oidc#alice', connection: 'openai', payload: { method: 'POST', path: '/embeddings' } });
    store.close();
    const second = join(tempDir(), 'q2.tar.gz');
    assert.equal((await cli('export', '--data-dir', dir, '--out', second)).code, 0);
    const v = await cli('verify', second, '--since-checkpoint', first);
    assert.equal(v.code, 0, v.err);
    assert.match(v.out, /consistent with the checkpoint of 20 events in /);
    const live = await cli('verify', dir, '--since-checkpoint', first);
    assert.equal(live.code, 0, live.err);
    const json = JSON.parse(readTar(readFileSync(second)).get('consistency.jsonl')!.toString('utf8').trim().split('\n').at(-1)!) as { from: number; to: number; path: string[] };
    assert.equal(json.to, 22);
    assert.ok(json.path.length > 0);
  });

  it('shows the signing key for a data dir and for a bundle', async () => {
    const dir = await seed();
    const r = await cli('verify', '--show-key', dir);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^verifier key: custody\.test\/export\+[0-9a-f]{8}\+[A-Za-z0-9+/]+=*\nfingerprint: {2}SHA256:/);
    const out = join(tempDir(), 'evidence.tar.gz');
    assert.equal((await cli('export', '--data-dir', dir, '--out', out)).code, 0);
    assert.equal((await cli('verify', '--show-key', out)).out, r.out);
  });
});
