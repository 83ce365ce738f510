/**
 * The audit part inside a running gateway: checkpoints on a timer (also when idle), the integrity
 * status and on-demand verification on the control plane, and background exports with progress on
 * the bus and a download that verifies offline.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Config } from '../../shared/config';
import type { ServerMessage } from '../../shared/messages';
import { listCheckpoints } from '../../proxy/audit/checkpoints';
import { verifyBundle } from '../../proxy/audit/verify/bundle';
import { verifyStore } from '../../proxy/audit/verify/store';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { tempDir } from '../support/tmp';

describe('audit on the control plane', () => {
  let gw: Gateway;
  let dataDir: string;
  let control: string;
  let admin: string;
  const call = async (method: string, path: string, body?: unknown, key = admin) => {
    const r = await fetch(`${control}${path}`, { method, headers: { authorization: `Bearer ${key}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) }, body: body !== undefined ? JSON.stringify(body) : undefined });
    const type = r.headers.get('content-type') ?? '';
    return { status: r.status, body: type.includes('json') ? ((await r.json()) as Record<string, unknown>) : Buffer.from(await r.arrayBuffer()) };
  };

  before(async () => {
    // Not tempDir(): inside before(), its after() hook would remove the dir as soon as the hook ends.
    dataDir = mkdtempSync(join(tmpdir(), 'custody-audit-api-'));
    const config = Config.parse({ listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, audit: { origin: 'custody.test/api', checkpointInterval: '300ms' } });
    gw = await Gateway.start({ config, dataDir, log: silentLogger });
    control = `http://${gw.address('control')}`;
    admin = gw.firstKey!;
  });
  after(async () => {
    await gw?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('signs checkpoints on a timer even when nothing happens', async () => {
    const first = listCheckpoints(gw.services.store).length;
    assert.ok(first >= 1, 'a checkpoint at start');
    // The interval is 300 ms; allow a loaded machine up to 5 s for two more.
    const deadline = Date.now() + 5000;
    while (listCheckpoints(gw.services.store).length < first + 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const later = listCheckpoints(gw.services.store);
    assert.ok(later.length >= first + 2, `idle checkpoints keep coming (${first} → ${later.length})`);
    assert.equal(later.at(-1)!.treeSize, gw.services.store.head().size);
  });

  it('reports integrity status with the signing key and records verifications', async () => {
    const status = await call('GET', '/api/audit/status');
    assert.equal(status.status, 200);
    const s = status.body as Record<string, unknown> & { key: { name: string; fingerprint: string }; lastCheckpoint: { treeSize: number; note: string } };
    assert.equal(s['origin'], 'custody.test/api');
    assert.match(String(s['publicKey']), /^custody\.test\/api\+[0-9a-f]{8}\+/);
    assert.match(String(s['fingerprint']), /^SHA256:/);
    assert.ok(s.lastCheckpoint.note.startsWith('custody.test/api\n'));
    assert.equal(statSync(join(dataDir, 'checkpoint-signing.key')).mode & 0o777, 0o600, 'the signing key is private to its owner');
    assert.equal(s['lastVerification'], null);

    const v = await call('POST', '/api/audit/verify');
    assert.equal(v.status, 200);
    assert.equal((v.body as { ok: boolean }).ok, true);
    const again = (await call('GET', '/api/audit/status')).body as { lastVerification: { ok: boolean; events: number; by: string } };
    assert.equal(again.lastVerification.ok, true);
    assert.ok(again.lastVerification.events >= 2);
    assert.match(again.lastVerification.by, /^key:/);

    assert.equal((await fetch(`${control}/api/audit/status`)).status, 401);
    const { key: userKey } = gw.services.keys.create({ name: 'dev', groups: ['dev'] });
    assert.equal((await call('GET', '/api/audit/status', undefined, userKey)).status, 403);
    assert.equal((await call('POST', '/api/exports', {}, userKey)).status, 403);
  });

  it('runs an export in the background and serves a bundle that verifies offline', async () => {
    const seen: ServerMessage[] = [];
    const done = new Promise<ServerMessage>((resolve) => {
      const stop = gw.services.bus.subscribe((m) => {
        if (m.type.startsWith('export.')) seen.push(m);
        if (m.type === 'export.done' || m.type === 'export.failed') {
          stop();
          resolve(m);
        }
      });
    });
    const started = await call('POST', '/api/exports', { from: 0 });
    assert.equal(started.status, 202);
    const id = String((started.body as { id: string }).id);
    assert.match(id, /^exp_/);
    const end = await done;
    assert.equal(end.type, 'export.done', JSON.stringify(end));
    assert.ok(seen.some((m) => m.type === 'export.progress' && m.id === id));
    const url = (end as { url: string }).url;
    assert.equal(url, `/api/exports/${id}/download`);

    const job = await call('GET', `/api/exports/${id}`);
    assert.equal((job.body as { state: string }).state, 'done');
    const download = await call('GET', url);
    assert.equal(download.status, 200);
    const file = join(tempDir(), 'bundle.tar.gz');
    writeFileSync(file, download.body as Buffer);
    const report = verifyBundle(file);
    assert.equal(report.ok, true, JSON.stringify(report.failure));
    assert.ok(report.events >= 2);
    const recorded = gw.services.store.events(1, 10_000).filter((e) => e.kind === 'export.created');
    assert.equal((recorded.at(-1)!.payload as { id: string }).id, id);

    assert.equal((await call('POST', '/api/exports', { from: 'not a time' })).status, 400);
    assert.equal((await call('POST', '/api/exports', { colour: 'blue' })).status, 400);
    assert.equal((await call('GET', '/api/exports/exp_nope/download')).status, 404);
    assert.equal((await call('GET', '/api/exports/..%2F..%2Fcustody.db/download')).status, 404);
  });

  it('leaves a store that verifies after the gateway stops', async () => {
    await gw.stop();
    const r = verifyStore(dataDir);
    assert.equal(r.ok, true, JSON.stringify(r.failure));
    assert.ok(r.checkpointsChecked >= 3);
  });
});
