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
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { ServerMessage } from '../shared/messages';
import { writeConfig } from '../test/support/custody-process';
import { EventsClient } from '../test/integration/holds-ws-client';
import { cli, fmt, onFreshStore, startStorePair, until } from './store-pair';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const HOLDS = args.includes('--holds') ? Number(args[args.indexOf('--holds') + 1]) : quick ? 10 : 50;

async function main(): Promise<void> {
  await onFreshStore('custody_bench_holds', async ({ root, echo, db, serving }) => {
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
      const { gwA, gwB } = await startStorePair(db, a.file, b.file, serving);
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
  });
}

await main();
