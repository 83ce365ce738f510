/**
 * `audit.remoteCommit: sync` (docs/SCALE-OUT.md, "What a host loss can lose"), against the real
 * PostgreSQL server on 127.0.0.1:5432:
 *
 * - HTTP: the upstream looks in the store, from its own handler, for the request it is receiving:
 *   every one is already in `custody_events`. With the store cut off (a TCP relay the test owns)
 *   requests are refused with a 503 that says why, and none reaches the upstream; once the store
 *   answers again they are served, and the store holds the local chain row for row, once each.
 * - PostgreSQL: a statement that counts its own event in the store (the store's database is also
 *   the upstream) finds it; with the store cut off an INSERT is refused with an ERROR saying why,
 *   and the row is not in the database.
 * - SSH: an exec's command, run on the host, finds its own `ssh.request` in the store; with the store
 *   cut off an exec is refused on stderr and does not run.
 * - The default (`async`) is unchanged: with the store cut off an admitted gateway keeps serving.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import pg from 'pg';
import { Config, type ConfigInput } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { freePort } from '../support/ports';
import { localChain, storedChain } from '../support/shared-store-chains';
import { run } from '../support/ssh-box';
import { startSshd } from '../support/sshd';
import { startRelay } from '../support/tcp-relay';
import { until } from '../support/until';
import { tempDir } from '../support/tmp';

const databases: TestDatabase[] = [];
after(async () => {
  for (const d of databases) await d.drop();
});

/** A store reached through a relay the test can cut, and a gateway on it. */
async function setup(name: string, config: (storeUrl: string, db: TestDatabase) => ConfigInput) {
  const db = await createTestDatabase('custody_test_scale_commit');
  databases.push(db);
  const sql = await db.client();
  const port = await freePort();
  const relay = await startRelay(port);
  const dir = join(tempDir('custody-scale-commit-'), name);
  const url = db.url.replace('127.0.0.1:5432', `127.0.0.1:${port}`);
  const gw = await Gateway.start({ config: Config.parse(config(url, db)), dataDir: dir, log: silentLogger });
  const id = await until('enrolled', async () => (await sql.query<{ id: string }>("SELECT id FROM custody_gateways WHERE status = 'enrolled'").catch(() => ({ rows: [] as { id: string }[] }))).rows[0]?.id);
  const stop = async () => {
    await gw.stop();
    await relay.close();
  };
  return { db, sql, relay, gw, id, dir, stop };
}

/** An upstream that, on each request, counts the `http.request` events for its path in the store (`sql()`) before it answers. */
async function probingUpstream(storeUrl: () => string): Promise<{ url: string; seen: Map<string, number>; close(): Promise<void> }> {
  const seen = new Map<string, number>();
  let pool: pg.Pool | undefined;
  const server: Server = createServer((req, res) => {
    const path = req.url!;
    void (pool ??= new pg.Pool({ connectionString: storeUrl(), max: 4 }))
      .query<{ n: number }>("SELECT count(*)::int AS n FROM custody_events WHERE kind = 'http.request' AND payload LIKE $1", [`%"path":"${path}"%`])
      .then((r) => {
        seen.set(path, r.rows[0]!.n);
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ path }));
      })
      .catch((err: Error) => res.writeHead(500).end(err.message));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, close: async () => {
      await new Promise<void>((r) => server.close(() => r()));
      await pool?.end();
    },
  };
}

describe('audit.remoteCommit: sync', () => {
  it('HTTP: every request is in the store when the upstream receives it; with the store cut, 503 saying why and nothing forwarded', async () => {
    let storeUrl = '';
    const upstream = await probingUpstream(() => storeUrl);
    const t = await setup('http-sync', (url) => ({
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'probe', kind: 'http', upstream: upstream.url }],
      store: { url },
      audit: { remoteCommit: 'sync' },
    }));
    storeUrl = t.db.url;
    try {
      const send = (path: string) => fetch(`http://${t.gw.address('http')}/probe/${path}`, { headers: { authorization: `Bearer ${t.gw.firstKey}` } });

      // Four clients at once, 15 requests each: every one found by the upstream in the store.
      const paths: string[] = [];
      await Promise.all(
        Array.from({ length: 4 }, async (_, w) => {
          for (let i = 0; i < 15; i++) {
            const path = `sync-${w}-${i}`;
            const r = await send(path);
            assert.equal(r.status, 200, await r.text());
            paths.push(`/${path}`);
          }
        }),
      );
      assert.equal(upstream.seen.size, 60);
      const missing = paths.filter((p) => upstream.seen.get(p) !== 1);
      assert.deepEqual(missing, [], 'each request was in the store, once, when the upstream received it');

      // The store cut off: refused, saying why, and the upstream sees nothing.
      await t.relay.cut();
      const before = upstream.seen.size;
      for (let i = 0; i < 3; i++) {
        const r = await send(`cut-${i}`);
        const body = await r.text();
        assert.equal(r.status, 503, body);
        assert.match(body, /store_unavailable/);
        assert.match(body, /remoteCommit is sync and the shared store has not committed the events/);
        assert.match(body, /so it was not forwarded/);
      }
      assert.equal(upstream.seen.size, before, 'nothing reached the upstream while the store was cut off');
      const h = (await (await fetch(`http://${t.gw.address('control')}/api/health`)).json()) as { sharedStore: { lagEvents: number } };
      assert.ok(h.sharedStore.lagEvents > 0, 'the refused requests are recorded locally and wait to be shipped');

      // The store back: served again, and the store holds the local chain, row for row, once each.
      await t.relay.restore();
      let attempt = 0;
      const served = await until('served again', async () => {
        const path = `after-${attempt++}`;
        return (await send(path)).status === 200 && path;
      });
      assert.equal(upstream.seen.get(`/${served}`), 1);
      t.gw.services.store.settle();
      await until('caught up', async () => (await storedChain(t.sql, t.id)).length >= localChain(t.dir).length);
      const stored = (await storedChain(t.sql, t.id)).map(({ seq, kind, hash }) => ({ seq, kind, hash }));
      assert.deepEqual(stored, localChain(t.dir).slice(0, stored.length));
      assert.equal(new Set(stored.map((r) => r.seq)).size, stored.length);
      for (let i = 0; i < 3; i++) {
        const n = (await t.sql.query<{ n: number }>("SELECT count(*)::int AS n FROM custody_events WHERE kind = 'http.request' AND payload LIKE $1", [`%"path":"/cut-${i}"%`])).rows[0]!.n;
        assert.equal(n, 1, `the refused request cut-${i} is in the chain, shipped once the store returned`);
      }
    } finally {
      await t.stop();
      await upstream.close();
    }
  });

  it('PostgreSQL: a statement finds its own event in the store; with the store cut, an INSERT is refused with an ERROR and not run', async () => {
    const listen = await freePort();
    const t = await setup('pg-sync', (url, db) => ({
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'warehouse', kind: 'postgres', upstream: db.url, listen: `127.0.0.1:${listen}` }],
      store: { url },
      audit: { remoteCommit: 'sync' },
    }));
    await t.sql.query('CREATE TABLE commit_probe (id text PRIMARY KEY)');
    const client = new pg.Client({ host: '127.0.0.1', port: listen, user: 'tester', password: t.gw.firstKey, database: t.db.name });
    client.on('error', () => {});
    try {
      await client.connect();
      for (let i = 0; i < 10; i++) {
        const marker = `marker-${i}-${Date.now()}`;
        const r = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM custody_events WHERE kind = 'pg.statement' AND payload LIKE '%${marker}%'`);
        assert.equal(r.rows[0]!.n, 1, `statement ${i} found its own event in the store when it ran`);
      }
      await t.relay.cut();
      await assert.rejects(client.query("INSERT INTO commit_probe (id) VALUES ('during-cut')"), (err: Error) => {
        assert.match(err.message, /statement refused: the audit log cannot record it .*remoteCommit is sync and the shared store has not committed the events/);
        return true;
      });
      const rows = await t.sql.query("SELECT id FROM commit_probe WHERE id = 'during-cut'");
      assert.equal(rows.rowCount, 0, 'the refused INSERT did not run');
      await t.relay.restore();
      await until('statements run again', async () => (await client.query("INSERT INTO commit_probe (id) VALUES ('after') ON CONFLICT DO NOTHING").catch(() => undefined))?.command === 'INSERT');
      assert.equal((await t.sql.query("SELECT id FROM commit_probe WHERE id = 'after'")).rowCount, 1);
    } finally {
      await client.end().catch(() => {});
      await t.stop();
    }
  });
});

describe('audit.remoteCommit: sync, SSH', () => {
  it('an exec runs on the host only once its request is in the store; with the store cut, refused on stderr and not run', async () => {
    const sshd = await startSshd();
    const t = await setup('ssh-sync', (url) => ({
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'box', kind: 'ssh', upstream: `ssh://${sshd.user}@127.0.0.1:${sshd.port}`, secret: { value: sshd.clientKey }, listen: '127.0.0.1:0' }],
      policies: [{ name: 'anything', match: { connections: ['box'] }, action: 'allow' }],
      store: { url },
      audit: { remoteCommit: 'sync' },
    }));
    const port = t.gw.address('ssh:box').split(':').pop()!;
    const opts = ['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'PreferredAuthentications=keyboard-interactive,password'];
    const ssh = (command: string) => run('sshpass', ['-p', t.gw.firstKey!, 'ssh', '-p', port, ...opts, 'me@127.0.0.1', command]);
    const marker = join(sshd.dir, 'ran-during-cut');
    try {
      for (let i = 0; i < 3; i++) {
        // The command, run on the host, counts its own request in the store (psql straight to the database).
        const probe = `probe-${i}-${Date.now()}`;
        const r = await ssh(`psql -X -tA -h 127.0.0.1 -U postgres -d ${t.db.name} -c "SELECT count(*) FROM custody_events WHERE kind = 'ssh.request' AND payload LIKE '%${probe}%'"`);
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout.trim(), '1', `exec ${i} found its own ssh.request in the store when it ran`);
      }
      await t.relay.cut();
      const refused = await ssh(`touch ${marker}`);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /could not record this request in the shared store, so it was not run: .*remoteCommit is sync/);
      assert.equal(existsSync(marker), false, 'the refused command did not run on the host');
      await t.relay.restore();
      await until('execs run again', async () => ((await ssh('true')).code === 0 ? true : undefined));
    } finally {
      await t.stop();
      await sshd.close();
    }
  });
});

describe('audit.remoteCommit: sync, control-plane changes', () => {
  it('a key made or revoked is answered only once the store holds its event and its signed row; with the store cut, 503 saying it is made here only', async (ctx) => {
    const t = await setup('control-sync', (url) => ({
      listen: { control: '127.0.0.1:0' },
      connections: [],
      store: { url },
      audit: { remoteCommit: 'sync' },
    }));
    try {
      const api = (path: string, body: unknown) =>
        fetch(`http://${t.gw.address('control')}${path}`, { method: 'POST', headers: { authorization: `Bearer ${t.gw.firstKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const inStore = async (id: string) => {
        const q = await t.sql.query<{ key: number; signed: number; created: number; revoked: number; changes: number }>(
          `SELECT (SELECT count(*)::int FROM custody_api_keys WHERE id = $1) AS key,
                  (SELECT count(*)::int FROM custody_api_key_signatures WHERE id = $1 AND gateway = $2) AS signed,
                  (SELECT count(*)::int FROM custody_events WHERE gateway = $2 AND kind = 'key.created' AND payload LIKE $3) AS created,
                  (SELECT count(*)::int FROM custody_events WHERE gateway = $2 AND kind = 'key.revoked' AND payload LIKE $3) AS revoked,
                  (SELECT count(*)::int FROM custody_api_key_changes WHERE id = $1 AND gateway = $2) AS changes`,
          [id, t.id, `%"id":"${id}"%`],
        );
        return q.rows[0]!;
      };

      // Each answer comes once the store has the change: looked at the moment the answer arrives.
      const took: number[] = [];
      for (let i = 0; i < 5; i++) {
        let at = performance.now();
        const made = await api('/api/keys', { name: `agent-${i}` });
        took.push(performance.now() - at);
        assert.equal(made.status, 200, await made.clone().text());
        const { id } = (await made.json()) as { id: string };
        assert.deepEqual(await inStore(id), { key: 1, signed: 1, created: 1, revoked: 0, changes: 0 }, `key ${i} is in the store when its creation is answered`);
        at = performance.now();
        const revoked = await api(`/api/keys/${id}/revoke`, {});
        took.push(performance.now() - at);
        assert.equal(revoked.status, 200, await revoked.text());
        assert.deepEqual(await inStore(id), { key: 1, signed: 1, created: 1, revoked: 1, changes: 1 }, `key ${i}'s revocation is in the store when it is answered`);
      }

      ctx.diagnostic(`answers under sync (ms): ${took.map((ms) => ms.toFixed(0)).join(' ')}`);

      // The store cut off: the change is made here and recorded here, and the answer says it is not shared yet.
      await t.relay.cut();
      const made = await api('/api/keys', { name: 'made-while-cut' });
      const body = await made.text();
      assert.equal(made.status, 503, body);
      assert.match(body, /store_unavailable/);
      assert.match(body, /remoteCommit is sync and the shared store has not committed the events/);
      assert.match(body, /The change is made on this gateway; the other gateways of the group may not have it until then/);
      const local = t.gw.services.keys.list().find((k) => k.name === 'made-while-cut');
      assert.ok(local, 'the key exists on this gateway');
      assert.ok(t.gw.services.store.events(1, 100_000).some((e) => e.kind === 'key.created' && (e.payload as { id?: string }).id === local.id), 'and its creation is in this gateway\'s chain');

      // Once the store returns, the change reaches it without being asked again.
      await t.relay.restore();
      await until('the key made while cut reaches the store', async () => {
        const r = await inStore(local.id);
        return r.key === 1 && r.created === 1 ? true : undefined;
      }, 15_000);
    } finally {
      await t.stop();
    }
  });
});

describe('audit.remoteCommit: async (the default)', () => {
  it('is unchanged: with the store cut off an admitted gateway keeps serving and recording locally', async () => {
    const upstream = createServer((req, res) => res.writeHead(200).end(req.url));
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const t = await setup('http-async', (url) => ({
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'echo', kind: 'http', upstream: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` }],
      store: { url },
    }));
    try {
      assert.equal(t.gw.services.config.audit.remoteCommit, 'async');
      const send = async (path: string) => (await fetch(`http://${t.gw.address('http')}/echo/${path}`, { headers: { authorization: `Bearer ${t.gw.firstKey}` } })).status;
      assert.equal(await send('before'), 200);
      await t.relay.cut();
      for (let i = 0; i < 3; i++) assert.equal(await send(`during-${i}`), 200);
    } finally {
      await t.stop();
      await new Promise<void>((r) => upstream.close(() => r()));
    }
  });
});
