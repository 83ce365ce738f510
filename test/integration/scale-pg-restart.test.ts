/**
 * Three `custody serve` processes on one shared store, driven at once by the OpenAI SDK and psql,
 * while the store's PostgreSQL server crashes and comes back (docs/SCALE-OUT.md, "Failure"). The
 * store is a server of the test's own (test/support/pg-cluster.ts), so it can be killed without
 * touching the machine's server on 5432, which holds the psql connection's upstream database.
 *
 * - While the store is down, each gateway keeps serving until it has not heard from the store for
 *   `store.staleAfter` (2 s here), then refuses new requests saying why (HTTP 503, a statement
 *   ERROR); what it refused never reached the upstream.
 * - Once the store is back, every gateway serves again by itself, with no restart or manual step.
 * - Nothing acknowledged is lost: every answered request and every statement psql saw succeed is
 *   in its gateway's chain in the store, and each chain there is row for row the gateway's own.
 * - Holds work across gateways after the restart (the LISTEN connection came back): a request held
 *   on A shows on C, is approved there, and is released on A.
 * - `custody verify --store` passes on the three chains.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import OpenAI from 'openai';
import pg from 'pg';
import type { HealthResponse } from '../../shared/api';
import type { HoldView } from '../../shared/holds';
import { type CustodyServe, custody, startServe, writeConfig } from '../support/custody-process';
import { startLlmUpstream, type LlmUpstream } from '../support/llm-upstream';
import { startPgCluster, type PgCluster } from '../support/pg-cluster';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { freePort } from '../support/ports';
import { localChain, storedChain } from '../support/shared-store-chains';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';

const root = tempDir('custody-scale-pgrestart-');
const STALE = /has not heard from the shared store/;
let cluster: PgCluster;
let llm: LlmUpstream;
let upstreamDb: TestDatabase;
let store: pg.Client;
const serving: CustodyServe[] = [];

interface Member {
  name: string;
  dir: string;
  file: string;
  pgPort: number;
  gw?: CustodyServe;
  id?: string;
  key?: string;
}
const members: Member[] = [];

function cli(m: Member, ...args: string[]): string {
  const r = custody(...args, '--config', m.file);
  assert.equal(r.status, 0, `custody ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
}

async function setUp(name: string): Promise<Member> {
  const dir = join(root, name);
  mkdirSync(dir);
  const pgPort = await freePort();
  const file = writeConfig(dir, {
    dataDir: dir,
    listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
    connections: [
      { name: 'openai', kind: 'openai', upstream: `${llm.url}/v1`, secret: { value: 'sk-upstream-openai-0123456789' } },
      { name: 'warehouse', kind: 'postgres', upstream: upstreamDb.url, listen: `127.0.0.1:${pgPort}` },
    ],
    policies: [{ name: 'sign-off', match: { connections: ['openai'], content: 'needs sign-off' }, action: 'hold', hold: { approvers: ['ops'], min: 1, timeout: '2m' } }],
    store: { url: cluster.url('custody'), staleAfter: '2s' },
  });
  const m: Member = { name, dir, file, pgPort };
  members.push(m);
  return m;
}

const openai = (m: Member) => new OpenAI({ baseURL: `http://${m.gw!.http}/openai`, apiKey: m.key!, maxRetries: 0, timeout: 20_000 });
/** The ids of the gateways in the store with that status (none before the first gateway made the tables). */
const rows = async (status: string) => (await store.query<{ id: string }>('SELECT id FROM custody_gateways WHERE status = $1', [status]).catch(() => ({ rows: [] as { id: string }[] }))).rows.map((r) => r.id);
const health = async (m: Member) => (await (await fetch(`http://${m.gw!.control}/api/health`)).json()) as HealthResponse;

before(async () => {
  cluster = await startPgCluster();
  const admin = new pg.Client({ connectionString: cluster.url() });
  await admin.connect();
  await admin.query('CREATE DATABASE custody');
  await admin.end();
  store = new pg.Client({ connectionString: cluster.url('custody') });
  store.on('error', () => {});
  llm = await startLlmUpstream();
  upstreamDb = await createTestDatabase('custody_test_pgrestart');
  const u = await upstreamDb.client();
  await u.query('CREATE TABLE tickets (id text PRIMARY KEY)');
});

after(async () => {
  for (const gw of serving.splice(0)) await gw.kill();
  await store?.end().catch(() => {});
  await llm?.close();
  await upstreamDb?.drop();
  await cluster?.destroy();
});

describe('three gateways on one store whose PostgreSQL server crashes and restarts mid-traffic', () => {
  it('fail closed with a reason while it is away, resume by themselves, lose nothing acknowledged, and verify', async () => {
    const [a, b, c] = [await setUp('a'), await setUp('b'), await setUp('c')];
    cli(c, 'persons', 'create', 'Carol', '--id', 'person_carol');
    const carol = cli(c, 'keys', 'create', '--name', 'carol', '--owner', 'person_carol', '--groups', 'ops');

    a.gw = await startServe(a.file);
    serving.push(a.gw);
    a.key = a.gw.key;
    await store.connect();
    a.id = await until('A enrolled', async () => (await rows('enrolled'))[0]);
    for (const m of [b, c]) {
      m.gw = await startServe(m.file);
      serving.push(m.gw);
      m.key = a.key; // keys are shared through the store: a joining gateway makes no first key of its own
      m.id = await until(`${m.name} pending`, async () => (await rows('pending'))[0]);
      cli(a, 'gateways', 'approve', m.id);
      await until(`${m.name} serving`, async () => (await openai(m).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: `${m.name} joined` }] }).catch(() => undefined))?.choices.length === 1);
    }

    // Traffic on all three: OpenAI SDK clients in a loop on each, psql on B (a statement every 20 ms).
    const acknowledged = new Map<string, string[]>(members.map((m) => [m.name, []]));
    const refused = new Map<string, { text: string; at: number }[]>(members.map((m) => [m.name, []]));
    const other: string[] = [];
    let stopAt = Number.POSITIVE_INFINITY;
    const drive = async (m: Member) => {
      const client = openai(m);
      for (let i = 0; Date.now() < stopAt; i++) {
        const text = `ticket ${m.name}-${i}`;
        try {
          await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: text }] });
          acknowledged.get(m.name)!.push(text);
        } catch (err) {
          const e = err as { status?: number; message: string };
          if (e.status === 503 && STALE.test(e.message)) refused.get(m.name)!.push({ text, at: Date.now() });
          else other.push(`${m.name}: ${e.status ?? ''} ${e.message}`);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    };
    const script = join(root, 'tickets.sql');
    writeFileSync(script, Array.from({ length: 500 }, (_, i) => `INSERT INTO tickets VALUES ('psql-${i}') RETURNING id;\nSELECT pg_sleep(0.02);\n`).join(''));
    const psql = promisify(execFile)('psql', ['-X', '-q', '-tA', '-h', '127.0.0.1', '-p', String(b.pgPort), '-U', 'tester', '-d', upstreamDb.name, '-f', script], {
      encoding: 'utf8',
      env: { ...process.env, PGPASSWORD: b.key!, PGCONNECT_TIMEOUT: '10' },
      timeout: 120_000,
    }).catch((err: { stdout?: string; stderr?: string }) => ({ stdout: err.stdout ?? '', stderr: err.stderr ?? '' }));
    const loops = members.map(drive);

    await new Promise((r) => setTimeout(r, 1500));
    const crashedAt = Date.now();
    await cluster.stop('immediate');
    // Down for longer than staleAfter: every gateway must start refusing, saying why.
    await until('every gateway refusing', async () => members.every((m) => refused.get(m.name)!.length > 0), 20_000);
    await cluster.start();
    const restartedAt = Date.now();
    await until('every gateway serving again', async () => members.every((m) => acknowledged.get(m.name)!.length > 0 && refused.get(m.name)!.every((r) => r.at < Date.now() - 500) && Date.now() - restartedAt > 1500), 30_000);
    const servedAgain = new Map(members.map((m) => [m.name, acknowledged.get(m.name)!.length]));
    await new Promise((r) => setTimeout(r, 1500));
    stopAt = Date.now();
    await Promise.all(loops);
    const { stdout: psqlOut, stderr: psqlErr } = await psql;

    assert.deepEqual(other, [], 'no request failed for any other reason');
    for (const m of members) {
      assert.ok(acknowledged.get(m.name)!.length > servedAgain.get(m.name)! - 1, `${m.name} answered requests after the store returned`);
      assert.ok(refused.get(m.name)!.every((r) => r.at > crashedAt), `${m.name} refused only while the store was away`);
    }
    const upstreamSaw = new Set(llm.requests.map((r) => JSON.stringify(r.json)));
    for (const m of members) for (const r of refused.get(m.name)!) assert.ok(![...upstreamSaw].some((s) => s.includes(`"${r.text}"`)), `${r.text}, refused, never reached the upstream`);
    const psqlAcked = psqlOut.split('\n').filter((l) => l.startsWith('psql-'));
    assert.ok(psqlAcked.length > 20, `psql ran statements: ${psqlAcked.length}; ${psqlErr.slice(0, 300)}`);
    assert.match(psqlErr, /statement refused: .*has not heard from the shared store/, 'psql saw statements refused with the reason');
    const inTable = new Set((await (await upstreamDb.client()).query<{ id: string }>('SELECT id FROM tickets')).rows.map((r) => r.id));
    assert.deepEqual([...inTable].sort(), [...psqlAcked].sort(), 'the table holds exactly the INSERTs psql saw succeed: none of the refused ones ran');

    // Holds across gateways after the restart: held on A, seen and approved on C, released on A.
    const held = openai(a).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'this transfer needs sign-off' }] });
    held.catch(() => {});
    const pendingOnC = async () => ((await (await fetch(`http://${c.gw!.control}/api/holds?state=pending`, { headers: { authorization: `Bearer ${carol}` } })).json()) as { holds: HoldView[] }).holds;
    const hold = await until('the hold on C', async () => (await pendingOnC()).find((h) => h.summary.includes('needs sign-off')), 10_000);
    const decided = await fetch(`http://${c.gw!.control}/api/holds/${hold.id}/decision`, { method: 'POST', headers: { authorization: `Bearer ${carol}`, 'content-type': 'application/json' }, body: JSON.stringify({ decision: 'approve', reason: 'fine' }) });
    assert.equal(decided.status, 200, await decided.text());
    assert.equal((await held).choices.length, 1, 'the held request was released on A');
    assert.equal(llm.requests.filter((r) => JSON.stringify(r.json).includes('needs sign-off')).length, 1);

    // Everything each gateway acknowledged is in the store, and each chain there is its own, row for row.
    for (const m of members) await until(`${m.name} shipped`, async () => (await health(m)).sharedStore?.lagEvents === 0);
    for (const gw of serving.splice(0)) assert.equal(await gw.stop(), 0);
    // The test's own connection died with the server: a new one.
    const after = new pg.Client({ connectionString: cluster.url('custody') });
    await after.connect();
    for (const m of members) {
      const stored = await storedChain(after, m.id!);
      assert.deepEqual(
        stored.map(({ seq, kind, hash }) => ({ seq, kind, hash })),
        localChain(m.dir),
        `chain of ${m.name}: the store holds the local chain row for row`,
      );
      const requests = stored.filter((r) => r.kind === 'http.request').map((r) => r.payload ?? '');
      const missing = acknowledged.get(m.name)!.filter((text) => !requests.some((p) => p.includes(`"${text}"`)));
      assert.deepEqual(missing, [], `chain of ${m.name}: every acknowledged request is in the store`);
      if (m === b) {
        const statements = stored.filter((r) => r.kind === 'pg.statement').map((r) => r.payload ?? '');
        assert.deepEqual(psqlAcked.filter((id) => !statements.some((p) => p.includes(`'${id}'`))), [], 'every statement psql saw succeed is in the store');
      }
    }
    await after.end();
    const verified = promisify(execFile)(process.execPath, ['bin/custody.mjs', 'verify', '--store', cluster.url('custody')], { encoding: 'utf8', timeout: 120_000 });
    const { stdout } = await verified;
    assert.match(stdout, /3 chains/);
  });
});
