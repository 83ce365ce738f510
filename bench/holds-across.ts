/**
 * `npm run bench -- holds-across` (`node --import tsx bench/holds-across.ts [--quick] [--holds N]`):
 * how fast a hold created on one gateway reaches the approvers of another on the same shared store
 * (docs/SCALE-OUT.md, "Holds across gateways"), and how fast an approval cast there releases the
 * request.
 *
 * Two `custody serve` processes, A and B, on a fresh database on the local PostgreSQL server
 * (127.0.0.1:5432), an HTTP connection to a local upstream, a hold rule on `/held/*`. This process
 * is the client and the approvers: one WebSocket on A's control plane and one on B's, each signed
 * in with an approver's API key. Holds are made one at a time; for each:
 *
 * - A's own push: request written to A → A's WebSocket `hold.created` (the same-run baseline);
 * - propagation: request written to A → B's WebSocket `hold.created` (A records the hold, its hold
 *   worker writes it to the store with NOTIFY, B's worker reads it, B's bus pushes it);
 * - release: the approval POSTed to B → the response to the held request arrives from A.
 *
 * All on this process's clock (performance.now). Prints p50 / p99 / max of each.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { ServerMessage } from '../shared/messages';
import { type CustodyServe, custody, startServe, writeConfig } from '../test/support/custody-process';
import { startEchoUpstream } from '../test/support/echo-upstream';
import { createTestDatabase } from '../test/support/pg-database';
import { EventsClient } from '../test/integration/holds-ws-client';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const HOLDS = args.includes('--holds') ? Number(args[args.indexOf('--holds') + 1]) : quick ? 10 : 50;

function cli(file: string, ...a: string[]): string {
  const r = custody(...a, '--config', file);
  if (r.status !== 0) throw new Error(`custody ${a.join(' ')}: ${r.stderr}`);
  return r.stdout.trim();
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

const fmt = (xs: number[]) => `p50 ${pct(xs, 50).toFixed(1)} ms   p99 ${pct(xs, 99).toFixed(1)} ms   max ${Math.max(...xs).toFixed(1)} ms`;

async function main(): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'custody-bench-holds-across-'));
  const echo = await startEchoUpstream();
  const db = await createTestDatabase('custody_bench_holds');
  const serving: CustodyServe[] = [];
  try {
    const member = (name: string) => {
      const dir = join(root, name);
      mkdirSync(dir);
      const file = writeConfig(dir, {
        dataDir: dir,
        listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
        connections: [{ name: 'echo', kind: 'http', upstream: echo.url }],
        policies: [{ name: 'hold-one', match: { paths: ['/held/*'] }, action: 'hold', hold: { approvers: ['ops'], min: 1, timeout: '2m' } }],
        store: { url: db.url },
      });
      return { file, requester: cli(file, 'keys', 'create', '--name', 'requester', '--groups', 'dev'), approver: cli(file, 'keys', 'create', '--name', 'approver', '--groups', 'ops') };
    };
    const a = member('a');
    const b = member('b');
    const gwA = await startServe(a.file);
    serving.push(gwA);
    const sql = await db.client();
    const until = async (what: string, fn: () => Promise<boolean>) => {
      for (const deadline = Date.now() + 60_000; !(await fn().catch(() => false)); ) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    await until('A enrolled', async () => (await sql.query("SELECT 1 FROM custody_gateways WHERE status = 'enrolled'")).rowCount === 1);
    const gwB = await startServe(b.file);
    serving.push(gwB);
    await until('B pending', async () => (await sql.query("SELECT 1 FROM custody_gateways WHERE status = 'pending'")).rowCount === 1);
    const idB = (await sql.query<{ id: string }>("SELECT id FROM custody_gateways WHERE status = 'pending'")).rows[0]!.id;
    cli(a.file, 'gateways', 'approve', idB);
    await until('B serving', async () => (await fetch(`http://${gwB.http}/echo/plain`, { headers: { authorization: `Bearer ${b.requester}` } })).status === 200);

    const wsA = await EventsClient.connect(`http://${gwA.control}`, { bearer: a.approver });
    const wsB = await EventsClient.connect(`http://${gwB.control}`, { bearer: b.approver });
    const local: number[] = [];
    const across: number[] = [];
    const release: number[] = [];
    const created = (path: string) => (m: ServerMessage) => m.type === 'hold.created' && m.hold.summary.includes(path);
    for (let i = -3; i < HOLDS; i++) {
      const path = `held/bench-${i + 3}`;
      const seenA = new Promise<number>((resolve) => wsA.waitNew(created(path), 10_000).then(() => resolve(performance.now())));
      const seenB = wsB.waitNew<Extract<ServerMessage, { type: 'hold.created' }>>(created(path), 10_000).then((m) => ({ m, at: performance.now() }));
      const t0 = performance.now();
      const response = fetch(`http://${gwA.http}/echo/${path}`, { headers: { authorization: `Bearer ${a.requester}` } });
      const [atA, { m, at: atB }] = await Promise.all([seenA, seenB]);
      const t1 = performance.now();
      const decided = await fetch(`http://${gwB.control}/api/holds/${m.hold.id}/decision`, { method: 'POST', headers: { authorization: `Bearer ${b.approver}`, 'content-type': 'application/json' }, body: JSON.stringify({ decision: 'approve' }) });
      if (decided.status !== 200) throw new Error(`approval on B: ${decided.status} ${await decided.text()}`);
      const res = await response;
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`released request: ${res.status}`);
      const t2 = performance.now();
      if (i < 0) continue; // warm-up
      local.push(atA - t0);
      across.push(atB - t0);
      release.push(t2 - t1);
    }
    await wsA.close();
    await wsB.close();
    console.log(`holds across gateways, ${HOLDS} holds one at a time (after 3 warm-up)`);
    console.log(`  request to A -> A's WebSocket hold.created (local push)    ${fmt(local)}`);
    console.log(`  request to A -> B's WebSocket hold.created (propagation)   ${fmt(across)}`);
    console.log(`  approval POSTed to B -> response from A (release)          ${fmt(release)}`);
    for (const gw of serving.splice(0)) await gw.stop();
  } finally {
    for (const gw of serving) await gw.kill();
    await echo.close();
    await db.drop();
    rmSync(root, { recursive: true, force: true });
  }
}

await main();
