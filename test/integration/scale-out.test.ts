/**
 * Several gateways on one PostgreSQL store (docs/SCALE-OUT.md), against the real server on
 * 127.0.0.1:5432: the first gateway enrols itself and ships its chain exactly as recorded; a
 * second one serves nothing (HTTP 503, PostgreSQL FATAL) until `custody gateways approve` run
 * against the first records the approval; `custody verify --store` passes on the intact store and
 * names the chain and seq of a modified row, of rows deleted from a chain's tail, and of a chain
 * whose key nobody approved. Gateways run in this process; the CLI runs as the real command.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import pg from 'pg';
import { Config } from '../../shared/config';
import { CheckpointSigner, KEY_NAME_META, keyFingerprint } from '../../proxy/audit/checkpoint-signer';
import { shipAll } from '../../proxy/audit/shared-store/shipping';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { writeConfig, custodyAsync as custody } from '../support/custody-process';
import { startEchoUpstream, type EchoUpstream } from '../support/echo-upstream';
import { createTestDatabase, PG_ADMIN_URL, type TestDatabase } from '../support/pg-database';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';

interface Member {
  gw: Gateway;
  dir: string;
  configFile: string;
  id: string;
  http: string;
}

let db: TestDatabase;
let sql: pg.Client;
let echo: EchoUpstream;
const running: Gateway[] = [];
const databases: TestDatabase[] = [];
/** Data dirs live under one folder made (and removed) at the file's level. */
const root = tempDir('custody-scale-');
let dirs = 0;

async function useDatabase(): Promise<void> {
  db = await createTestDatabase('custody_test_scale');
  databases.push(db);
  sql = await db.client();
}

async function startMember(): Promise<Member> {
  const dir = join(root, `gw${++dirs}`);
  mkdirSync(dir);
  const raw = {
    dataDir: dir,
    listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
    connections: [
      { name: 'echo', kind: 'http', upstream: echo.url },
      { name: 'warehouse', kind: 'postgres', upstream: PG_ADMIN_URL, listen: '127.0.0.1:0', tls: { mode: 'disable' } },
    ],
    store: { url: db.url },
  };
  const configFile = writeConfig(dir, raw);
  const gw = await Gateway.start({ config: Config.parse(raw), dataDir: dir, configFile, log: silentLogger });
  running.push(gw);
  return { gw, dir, configFile, id: keyFingerprint(gw.services.audit!.trail.signer.publicKey), http: `http://${gw.address('http')}` };
}

async function statusOf(id: string): Promise<string | undefined> {
  return (await sql.query<{ status: string }>('SELECT status FROM custody_gateways WHERE id = $1', [id]).catch(() => ({ rows: [] }))).rows[0]?.status;
}

async function get(m: Member, path: string, key = m.gw.firstKey!): Promise<{ status: number; body: string }> {
  const r = await fetch(`${m.http}/echo/${path}`, { headers: { authorization: `Bearer ${key}` } });
  return { status: r.status, body: await r.text() };
}

interface ChainRow {
  seq: number;
  kind: string;
  payload: string | null;
  payload_hash: string;
  prev_hash: string;
  hash: string;
}

function localChain(dir: string): ChainRow[] {
  const local = new Database(join(dir, 'custody.db'), { readonly: true });
  try {
    return (local.prepare('SELECT seq, kind, payload, encoding, payload_hash, prev_hash, hash FROM events ORDER BY seq').all() as (ChainRow & { encoding: string; payload: Buffer | string | null })[]).map(
      ({ encoding, ...r }) => ({ ...r, payload: encoding === 'json' ? String(r.payload) : r.payload === null ? null : 'deflated' }),
    );
  } finally {
    local.close();
  }
}

async function storedChain(id: string): Promise<ChainRow[]> {
  return (await sql.query<ChainRow & { seq: string }>('SELECT seq, kind, payload, payload_hash, prev_hash, hash FROM custody_events WHERE gateway = $1 ORDER BY seq', [id])).rows.map((r) => ({ ...r, seq: Number(r.seq) }));
}

function verify(...args: string[]) {
  return custody('verify', '--store', db.url, ...args);
}

describe('several gateways on one PostgreSQL store', () => {
  let a: Member;
  let b: Member;

  before(async () => {
    await useDatabase();
    echo = await startEchoUpstream();
  });
  after(async () => {
    for (const gw of running) await gw.stop();
    await echo.close();
    for (const d of databases) await d.drop();
  });

  it('the first gateway on an empty store enrols itself and ships its chain exactly as recorded', async () => {
    a = await startMember();
    assert.equal(await until('A enrolled', () => statusOf(a.id)), 'enrolled');
    for (let i = 0; i < 5; i++) assert.equal((await get(a, `a-${i}`)).status, 200);
    a.gw.services.store.settle();
    const local = localChain(a.dir);
    const stored = await until('A shipped', async () => {
      const rows = await storedChain(a.id);
      return rows.length >= local.length && rows;
    });
    assert.deepEqual(stored.slice(0, local.length).map((r) => ({ ...r, payload: r.payload === null || local[r.seq - 1]!.payload !== 'deflated' ? r.payload : 'deflated' })), local, 'every row as the local store holds it');
    assert.ok(stored.some((r) => r.kind === 'http.request' && r.payload!.includes('/a-4')), 'the traffic is in the store');
    const enrolled = stored.find((r) => r.kind === 'gateway.enrolled');
    assert.ok(enrolled && JSON.parse(enrolled.payload!).id === a.id, 'A recorded its enrolment in its own chain');
  });

  it('a second gateway serves nothing until an enrolled gateway approves it, then serves', async () => {
    b = await startMember();
    assert.equal(await until('B pending', () => statusOf(b.id)), 'pending');
    const refused = await get(b, 'b-refused');
    assert.equal(refused.status, 503);
    assert.match(refused.body, /waiting for enrolment/);
    assert.match(refused.body, /custody gateways approve/);
    assert.ok(!echo.requests.some((r) => r.target.includes('b-refused')), 'nothing reached the upstream');
    // The PostgreSQL listener refuses too, in PostgreSQL's words.
    const addr = b.gw.address('postgres:warehouse');
    const client = new pg.Client({ host: '127.0.0.1', port: Number(addr.slice(addr.lastIndexOf(':') + 1)), user: 'postgres', password: b.gw.firstKey, database: 'postgres' });
    client.on('error', () => {});
    await assert.rejects(client.connect(), (err: Error & { code?: string }) => err.code === '57P03' && /waiting for enrolment/.test(err.message));
    await client.end().catch(() => {});
    assert.equal((await storedChain(b.id)).length, 0, 'a pending gateway ships nothing');

    const list = await custody('gateways', 'list', '--config', a.configFile);
    assert.equal(list.status, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`${b.id.replace(/[+/]/g, '\\$&')}\\s+pending`));
    // B cannot approve itself, and a pending gateway cannot approve anyone.
    const self = await custody('gateways', 'approve', b.id, '--config', b.configFile);
    assert.equal(self.status, 1);
    assert.match(self.stderr, /waiting for approval/);

    const approved = await custody('gateways', 'approve', b.id.slice(7, 20), '--config', a.configFile);
    assert.equal(approved.status, 0, approved.stderr);
    await until('B serving', async () => (await get(b, 'b-served')).status === 200);
    assert.ok(echo.requests.some((r) => r.target.includes('b-served')));
    assert.equal(await statusOf(b.id), 'approved');
    const approval = (await storedChain(a.id)).find((r) => r.kind === 'gateway.approved');
    assert.ok(approval, 'the approval is in the approving gateway own chain, in the store');
    assert.equal(JSON.parse(approval.payload!).id, b.id);
    await until('B shipping', async () => (await storedChain(b.id)).some((r) => r.kind === 'http.request' && r.payload!.includes('/b-served')));
  });

  it('verify passes on the intact store, with or without pinned keys', async () => {
    for (const gw of running.splice(0)) await gw.stop();
    const ok = await verify();
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /2 chains/);
    assert.match(ok.stdout, /approved at seq \d+ of SHA256:/);
    const keys = join(a.dir, 'pinned.txt');
    writeFileSync(keys, `# the first gateway\n${a.id}\n`);
    const pinned = await verify('--keys', keys);
    assert.equal(pinned.status, 0, pinned.stderr);
    assert.doesNotMatch(pinned.stdout, /trusted on first use/);
    // Pinning another key: neither chain is trusted.
    writeFileSync(keys, `${keyFingerprint(Buffer.alloc(32, 7))}\n`);
    const other = await verify('--keys', keys);
    assert.equal(other.status, 1);
    assert.match(other.stderr, new RegExp(`unapproved-signer — chain ${a.id.replace(/[+/]/g, '\\$&')}`));
  });

  it('verify names the chain and seq of a modified row', async () => {
    const row = (await storedChain(b.id)).find((r) => r.kind === 'http.request')!;
    await sql.query('UPDATE custody_events SET payload = replace(payload, $3, $4) WHERE gateway = $1 AND seq = $2', [b.id, row.seq, 'b-served', 'b-changed']);
    const r = await verify();
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`modified — chain ${b.id.replace(/[+/]/g, '\\$&')} at seq ${row.seq}: `));
    await sql.query('UPDATE custody_events SET payload = $3 WHERE gateway = $1 AND seq = $2', [b.id, row.seq, row.payload]);
    assert.equal((await verify()).status, 0, 'restored, it verifies again');
  });

  it('verify names rows deleted from the tail of a chain a signed checkpoint covers', async () => {
    const rows = await storedChain(a.id);
    const signed = Number((await sql.query<{ n: string }>('SELECT max(tree_size) AS n FROM custody_checkpoints WHERE gateway = $1', [a.id])).rows[0]!.n);
    // The checkpoint written at stop covers all but the stop record itself.
    assert.ok(signed >= rows.length - 2 && signed <= rows.length, `checkpoint of ${signed} events, chain of ${rows.length}`);
    await sql.query('DELETE FROM custody_events WHERE gateway = $1 AND seq > $2', [a.id, signed - 3]);
    const r = await verify();
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`truncated — chain ${a.id.replace(/[+/]/g, '\\$&')} at seq ${signed - 2}: .*deleted from the tail`));
  });

  it('a chain written to the store by someone without an approval is an unapproved signer', async () => {
    // A fresh store. A second gateway's genuine chain and key, written straight into it (as anyone
    // with write access to the store could), marked approved in the table, with no approval event.
    await useDatabase();
    const c = await startMember();
    assert.equal(await until('C enrolled', () => statusOf(c.id)), 'enrolled');
    const d = await startMember();
    assert.equal(await until('D pending', () => statusOf(d.id)), 'pending');
    for (const gw of running.splice(0)) await gw.stop();
    await sql.query("UPDATE custody_gateways SET status = 'approved' WHERE id = $1", [d.id]);
    const local = new Database(join(d.dir, 'custody.db'));
    const signer = CheckpointSigner.load(d.dir, (local.prepare('SELECT value FROM meta WHERE key = ?').get(KEY_NAME_META) as { value: string }).value)!;
    assert.equal(keyFingerprint(signer.publicKey), d.id);
    await shipAll(sql, local, d.id);
    local.close();
    assert.ok((await storedChain(d.id)).length > 0);
    const r = await verify();
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`unapproved-signer — chain ${d.id.replace(/[+/]/g, '\\$&')} .*no trusted gateway approved it`));
  });
});

describe('removing a gateway from the group', () => {
  before(async () => {
    await useDatabase();
    echo = await startEchoUpstream();
  });
  after(async () => {
    for (const gw of running.splice(0)) await gw.stop();
    await echo.close();
    for (const d of databases) await d.drop();
  });

  it('custody gateways remove: the removed gateway refuses saying why, nothing it signs afterwards is trusted, verify names the removal; a row marked removed by hand is no removal', async () => {
    const a = await startMember();
    assert.equal(await until('A enrolled', () => statusOf(a.id)), 'enrolled');
    const b = await startMember();
    assert.equal(await until('B pending', () => statusOf(b.id)), 'pending');
    assert.equal((await custody('gateways', 'approve', b.id, '--config', a.configFile)).status, 0);
    const key = a.gw.firstKey!;
    await until('B serving', async () => (await get(b, 'b-served', key)).status === 200);
    // Keys made on B reach A while B is a member.
    const before = b.gw.services.keys.create({ name: 'made-on-b-before', groups: ['dev'] }).key;
    await until('a key made on B works on A', async () => (await get(a, 'before-key', before)).status === 200, 15_000);

    // Whoever can write to the store can mark a row removed, but that is no removal: no gateway.removed event stands behind it.
    await sql.query("UPDATE custody_gateways SET status = 'removed' WHERE id = $1", [b.id]);
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal((await get(b, 'b-after-forged-mark', key)).status, 200, 'B still serves');
    await sql.query("UPDATE custody_gateways SET status = 'approved' WHERE id = $1", [b.id]);

    const noReason = await custody('gateways', 'remove', b.id, '--config', a.configFile);
    assert.equal(noReason.status, 2);
    assert.match(noReason.stderr, /--reason/);
    const itself = await custody('gateways', 'remove', b.id, '--reason', 'x', '--config', b.configFile);
    assert.equal(itself.status, 1);
    assert.match(itself.stderr, /cannot remove itself/);
    const removed = await custody('gateways', 'remove', b.id.slice(7, 20), '--reason', 'host lost', '--config', a.configFile);
    assert.equal(removed.status, 0, removed.stderr);
    assert.match(removed.stdout, /recorded as gateway.removed at seq \d+/);

    await until('B refusing', async () => (await get(b, 'b-probe', key)).status === 503, 15_000);
    const refused = await get(b, 'b-after-removal', key);
    assert.equal(refused.status, 503);
    assert.match(refused.body, /removed from the group by SHA256:\S+ \(host lost\)/);
    assert.ok(!echo.requests.some((r) => r.target.includes('b-after-removal')), 'nothing reached the upstream');
    assert.equal(await statusOf(b.id), 'removed');
    // A removed gateway approves and removes nobody.
    for (const verb of ['approve', 'remove']) {
      const r = await custody('gateways', verb, a.id, '--reason', 'x', '--config', b.configFile);
      assert.equal(r.status, 1, `${verb}: ${r.stdout}`);
      assert.match(r.stderr, /itself removed/);
    }
    assert.equal(await statusOf(a.id), 'enrolled');
    const list = await custody('gateways', 'list', '--config', a.configFile);
    assert.match(list.stdout, new RegExp(`${b.id.replace(/[+/]/g, '\\$&')}\\s+removed\\s+.*removed by ${a.id.replace(/[+/]/g, '\\$&')}`));

    // A key made on B now is signed by a gateway A no longer trusts: it never works on A.
    const after = b.gw.services.keys.create({ name: 'made-on-b-after', groups: ['dev'] }).key;
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal((await get(a, 'after-key', after)).status, 401, 'a key signed only by the removed gateway is not copied');
    assert.equal((await get(a, 'before-key-still', before)).status, 200, 'keys it vouched for while a member stay');

    for (const gw of running.splice(0)) await gw.stop();
    const ok = await verify();
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, new RegExp(`${b.id.replace(/[+/]/g, '\\$&')} .*removed from the group at seq \\d+ of ${a.id.replace(/[+/]/g, '\\$&')} \\(host lost\\)`));
  });
});
