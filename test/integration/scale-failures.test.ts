/**
 * Failures of a shared store's members and of the store itself (docs/SCALE-OUT.md), against the
 * real PostgreSQL server on 127.0.0.1:5432:
 *
 * - two `custody serve` processes on one store, under traffic; one is killed with SIGKILL and
 *   started again: every request either gateway acknowledged is in the store afterwards, each
 *   chain there is row for row the gateway's own, and `custody verify --store` passes;
 * - the store becomes unreachable under a serving gateway (its connections cut by a TCP relay the
 *   test owns): the gateway keeps serving and recording, its health shows the lag, and once the
 *   store answers again everything it recorded meanwhile arrives;
 * - once it has not heard from the store for `store.staleAfter`, an SSH connection and a
 *   PostgreSQL session it admitted before run nothing more (each exec and statement is a new
 *   request), saying why, and run again once the store answers.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import ssh2 from 'ssh2';
import type { HealthResponse } from '../../shared/api';
import { Config } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { type CustodyServe, custodyAsync as cli, startServe, writeConfig } from '../support/custody-process';
import { startEchoUpstream, type EchoUpstream } from '../support/echo-upstream';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { freePort } from '../support/ports';
import { localChain, storedChain } from '../support/shared-store-chains';
import { startSshd } from '../support/sshd';
import { startRelay } from '../support/tcp-relay';
import { tempDir } from '../support/tmp';

const root = tempDir('custody-scale-fail-');
let echo: EchoUpstream;
const databases: TestDatabase[] = [];

before(async () => {
  echo = await startEchoUpstream();
});
after(async () => {
  await echo.close();
  for (const d of databases) await d.drop();
});

async function until<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn().catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function gatewayIds(sql: pg.Client): Promise<Map<string, string>> {
  return new Map((await sql.query<{ id: string; status: string }>('SELECT id, status FROM custody_gateways ORDER BY requested_at')).rows.map((r) => [r.id, r.status]));
}

describe('a gateway killed with SIGKILL under traffic', () => {
  it('loses nothing it acknowledged: after a restart the store holds every acknowledged request, row for row as recorded', async () => {
    const db = await createTestDatabase('custody_test_scale');
    databases.push(db);
    const sql = await db.client();
    const member = (name: string) => {
      const dir = join(root, name);
      mkdirSync(dir);
      return { dir, file: writeConfig(dir, { dataDir: dir, listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, connections: [{ name: 'echo', kind: 'http', upstream: echo.url }], store: { url: db.url } }) };
    };
    const a = member('a');
    const b = member('b');
    const serving: CustodyServe[] = [];
    try {
      let gwA = await startServe(a.file);
      serving.push(gwA);
      const keyA = gwA.key!;
      const idA = await until('A enrolled', async () => [...(await gatewayIds(sql))].find(([, s]) => s === 'enrolled')?.[0]);
      const gwB = await startServe(b.file);
      serving.push(gwB);
      const keyB = gwB.key!;
      const idB = await until('B pending', async () => [...(await gatewayIds(sql))].find(([, s]) => s === 'pending')?.[0]);
      const approved = await cli('gateways', 'approve', idB, '--config', a.file);
      assert.equal(approved.status, 0, approved.stderr);
      const send = async (gw: CustodyServe, key: string, path: string) => (await fetch(`http://${gw.http}/echo/${path}`, { headers: { authorization: `Bearer ${key}` } })).status;
      await until('B serving', async () => (await send(gwB, keyB, 'b-first')) === 200);

      // Traffic on both; A is killed in the middle of it.
      const acknowledged = new Map<string, string[]>([
        [idA, []],
        [idB, ['b-first']],
      ]);
      const drive = async (gw: CustodyServe, key: string, id: string, prefix: string, stopAt: number) => {
        for (let i = 0; Date.now() < stopAt; i++) {
          const path = `${prefix}-${i}`;
          try {
            if ((await send(gw, key, path)) === 200) acknowledged.get(id)!.push(path);
          } catch {
            return; // the gateway is gone
          }
        }
      };
      const t0 = Date.now();
      const loops = [drive(gwA, keyA, idA, 'a', t0 + 10_000), drive(gwB, keyB, idB, 'b', t0 + 3000)];
      await new Promise((r) => setTimeout(r, 1500));
      await gwA.kill();
      serving.splice(serving.indexOf(gwA), 1);
      await Promise.all(loops);
      assert.ok(acknowledged.get(idA)!.length > 5 && acknowledged.get(idB)!.length > 5, `traffic on both: ${acknowledged.get(idA)!.length} on A, ${acknowledged.get(idB)!.length} on B`);

      gwA = await startServe(a.file);
      serving.push(gwA);
      assert.equal(await send(gwA, keyA, 'a-after-restart'), 200, 'A serves again after its restart, with no approval step');
      acknowledged.get(idA)!.push('a-after-restart');
      for (const gw of serving.splice(0)) assert.equal(await gw.stop(), 0);

      for (const [id, dir] of [
        [idA, a.dir],
        [idB, b.dir],
      ] as const) {
        const stored = await storedChain(sql, id);
        assert.deepEqual(
          stored.map(({ seq, kind, hash }) => ({ seq, kind, hash })),
          localChain(dir),
          `chain ${id}: the store holds the local chain row for row`,
        );
        const requested = new Set(stored.filter((r) => r.kind === 'http.request').map((r) => (JSON.parse(r.payload!) as { path: string }).path));
        const missing = acknowledged.get(id)!.filter((p) => !requested.has(`/${p}`));
        assert.deepEqual(missing, [], `chain ${id}: every acknowledged request is in the store`);
      }
      const verified = await cli('verify', '--store', db.url);
      assert.equal(verified.status, 0, verified.stderr);
      assert.match(verified.stdout, /2 chains/);
    } finally {
      for (const gw of serving) await gw.kill();
    }
  });
});

describe('the shared store unreachable under a serving gateway', () => {
  it('keeps serving and recording, shows the lag in health, and ships everything once the store returns', async () => {
    const db = await createTestDatabase('custody_test_scale');
    databases.push(db);
    const sql = await db.client();
    const port = await freePort();
    const relay = await startRelay(port);
    const dir = join(root, 'outage');
    mkdirSync(dir);
    const url = db.url.replace('127.0.0.1:5432', `127.0.0.1:${port}`);
    const gw = await Gateway.start({
      config: Config.parse({ listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, connections: [{ name: 'echo', kind: 'http', upstream: echo.url }], store: { url } }),
      dataDir: dir,
      log: silentLogger,
    });
    try {
      const health = async () => (await (await fetch(`http://${gw.address('control')}/api/health`)).json()) as HealthResponse;
      const send = async (path: string) => (await fetch(`http://${gw.address('http')}/echo/${path}`, { headers: { authorization: `Bearer ${gw.firstKey}` } })).status;
      const id = await until('enrolled', async () => [...(await gatewayIds(sql))].find(([, s]) => s === 'enrolled')?.[0]);
      // The row is committed a moment before the gateway hears it is admitted.
      await until('serving', async () => (await send('before')) === 200);
      await until('shipped', async () => (await health()).sharedStore!.lagEvents === 0 && (await storedChain(sql, id)).some((r) => r.payload?.includes('/before')));

      await relay.cut();
      for (let i = 0; i < 5; i++) assert.equal(await send(`during-${i}`), 200, 'an admitted gateway keeps serving while the store is away');
      const lagging = await until('the lag in health', async () => {
        const h = (await health()).sharedStore!;
        return h.lagEvents > 0 && h.failingSince !== undefined && h;
      });
      assert.equal(lagging.state, 'degraded');
      assert.match(lagging.cause!, /cannot ship to the shared store/);
      assert.ok(!(await storedChain(sql, id)).some((r) => r.payload?.includes('/during-')), 'nothing reached the store meanwhile');

      await relay.restore();
      await until('caught up', async () => {
        const h = (await health()).sharedStore!;
        return h.lagEvents === 0 && h.state === 'ok';
      });
      gw.services.store.settle();
      const stored = await storedChain(sql, id);
      assert.deepEqual(
        stored.map(({ seq, kind, hash }) => ({ seq, kind, hash })),
        localChain(dir).slice(0, stored.length),
      );
      for (let i = 0; i < 5; i++) assert.ok(stored.some((r) => r.kind === 'http.request' && r.payload!.includes(`/during-${i}`)), `during-${i} arrived`);
    } finally {
      await gw.stop();
      await relay.close();
    }
  });
});

describe('a gateway that has not heard from the store for store.staleAfter', () => {
  it('runs nothing more on the SSH and PostgreSQL connections it admitted before, saying why, and runs again once the store answers', async () => {
    const db = await createTestDatabase('custody_test_scale');
    databases.push(db);
    const sql = await db.client();
    await sql.query('CREATE TABLE stale_probe (id text PRIMARY KEY)');
    const sshd = await startSshd();
    const port = await freePort();
    const relay = await startRelay(port);
    const dir = join(root, 'stale');
    mkdirSync(dir);
    const pgPort = await freePort();
    const gw = await Gateway.start({
      config: Config.parse({
        listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
        connections: [
          { name: 'box', kind: 'ssh', upstream: `ssh://${sshd.user}@127.0.0.1:${sshd.port}`, secret: { value: sshd.clientKey }, listen: '127.0.0.1:0' },
          { name: 'warehouse', kind: 'postgres', upstream: db.url, listen: `127.0.0.1:${pgPort}` },
        ],
        policies: [{ name: 'anything', match: { connections: ['box'] }, action: 'allow' }],
        store: { url: db.url.replace('127.0.0.1:5432', `127.0.0.1:${port}`), staleAfter: '1s' },
      }),
      dataDir: dir,
      log: silentLogger,
    });
    const ssh = new ssh2.Client();
    const client = new pg.Client({ host: '127.0.0.1', port: pgPort, user: 'tester', password: gw.firstKey, database: db.name });
    client.on('error', () => {});
    const exec = (command: string) =>
      new Promise<{ code: number | undefined; stderr: string }>((resolve, reject) =>
        ssh.exec(command, (err, ch) => {
          if (err) return reject(err);
          let stderr = '';
          let code: number | undefined;
          ch.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
          ch.on('exit', (c: number | null) => (code = c ?? undefined));
          ch.on('close', () => resolve({ code, stderr }));
          ch.resume();
        }),
      );
    const marker = join(sshd.dir, 'ran-while-stale');
    try {
      await until('admitted', async () => gw.services.sharedStore?.health().phase === 'admitted' && gw.services.sharedStore.refusal() === undefined);
      await new Promise<void>((resolve, reject) => {
        ssh.once('ready', resolve).once('error', reject);
        ssh.connect({ host: '127.0.0.1', port: Number(gw.address('ssh:box').split(':').pop()), username: 'me', password: gw.firstKey! });
      });
      await client.connect();
      assert.equal((await exec('true')).code, 0);
      await client.query("INSERT INTO stale_probe VALUES ('before')");

      await relay.cut();
      await new Promise((r) => setTimeout(r, 2500));
      const refused = await exec(`touch ${marker}`);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /has not heard from the shared store/);
      assert.equal(existsSync(marker), false, 'the command did not run on the host');
      await assert.rejects(client.query("INSERT INTO stale_probe VALUES ('while-stale')"), /statement refused: .*has not heard from the shared store/);
      assert.equal((await sql.query("SELECT 1 FROM stale_probe WHERE id = 'while-stale'")).rowCount, 0, 'the statement did not run');

      await relay.restore();
      await until('the SSH connection runs again', async () => (await exec('true')).code === 0);
      await until('the PostgreSQL session runs again', async () => (await client.query("INSERT INTO stale_probe VALUES ('after') ON CONFLICT DO NOTHING").catch(() => undefined))?.command === 'INSERT');
      assert.equal((await sql.query("SELECT 1 FROM stale_probe WHERE id = 'after'")).rowCount, 1);
    } finally {
      ssh.end();
      await client.end().catch(() => {});
      await gw.stop();
      await relay.close();
      await sshd.close();
    }
  });
});
