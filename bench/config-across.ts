/**
 * `npm run bench -- config-across` (`node --import tsx bench/config-across.ts [--quick] [--trials N]`):
 * how fast a key revocation, a person lock and a policy change made on one gateway are enforced by
 * another on the same shared store (docs/SCALE-OUT.md, "One configuration, never stale").
 *
 * Two `custody serve` processes, A and B, on a fresh database on the local PostgreSQL server
 * (127.0.0.1:5432), an HTTP connection to a local upstream. This process is the client. For each
 * trial it makes the thing on A (a key; a person and a key of hers; nothing for a policy), waits
 * until B lets a request through with it, then, on this process's clock (performance.now):
 *
 * - revocation: `POST /api/keys/:id/revoke` sent to A → B first answers 401 for that key;
 * - lock: `POST /api/persons/:id/lock` sent to A → B first answers 401 for her key made on B;
 * - policy: `PUT /api/policies` (a deny rule for `/blocked*`, then none, alternately) sent to A →
 *   B first answers 403 (or 200 again) for a request to `/blocked…`.
 *
 * B is probed every 5 ms (one request at a time), so each figure is the time to B's first
 * answer that shows the change, within ~5 ms plus one request (its duration is printed as the
 * floor). Prints p50 / p99 / max of each.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { type CustodyServe, writeConfig } from '../test/support/custody-process';
import { cli, fmt, onFreshStore, startStorePair, until } from './store-pair';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const TRIALS = args.includes('--trials') ? Number(args[args.indexOf('--trials') + 1]) : quick ? 10 : 50;

const DENY = { name: 'no-blocked', match: { connections: ['echo'], paths: ['/blocked*'] }, action: 'deny', reason: 'bench' };


async function main(): Promise<void> {
  await onFreshStore('custody_bench_config', async ({ root, echo, db, serving }) => {
      const member = (name: string) => {
        const dir = join(root, name);
        mkdirSync(dir);
        const file = writeConfig(dir, { dataDir: dir, listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, connections: [{ name: 'echo', kind: 'http', upstream: echo.url }], store: { url: db.url } });
        return { file, admin: cli(file, 'keys', 'create', '--name', 'admin', '--groups', 'admin') };
      };
      const a = member('a');
      const b = member('b');
      const { gwA, gwB } = await startStorePair(db, a.file, b.file, serving);
      const poll = (what: string, fn: () => Promise<boolean>, ms?: number) => until(what, fn, 5, ms);
      /** The duration of each probe of B: the floor under the figures. */
      const probes: number[] = [];
      const probe = async (gw: CustodyServe, key: string, path = 'plain') => {
        const t0 = performance.now();
        const r = await fetch(`http://${gw.http}/echo/${path}`, { headers: { authorization: `Bearer ${key}` } });
        await r.arrayBuffer();
        if (gw === gwB) probes.push(performance.now() - t0);
        return r.status;
      };
      await poll('B serving', async () => (await probe(gwB, b.admin)) === 200);
      const api = async <T>(gw: CustodyServe, key: string, method: string, path: string, body?: unknown): Promise<T> => {
        const r = await fetch(`http://${gw.control}${path}`, { method, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
        if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
        return (await r.json()) as T;
      };
      /** From `act()` on A until B first answers `status` to `probeB()`, in ms. */
      const timed = async (act: () => Promise<unknown>, probeB: () => Promise<number>, status: number) => {
        const t0 = performance.now();
        const acted = act();
        await poll('B to enforce the change', async () => (await probeB()) === status, 30_000);
        const ms = performance.now() - t0;
        await acted;
        return ms;
      };

      const revocation: number[] = [];
      const lock: number[] = [];
      const policy: number[] = [];
      for (let i = -3; i < TRIALS; i++) {
        // A key made on A, working on B, revoked on A.
        const k = await api<{ key: string; id: string }>(gwA, a.admin, 'POST', '/api/keys', { name: `bench-${i + 3}` });
        await poll('the key works on B', async () => (await probe(gwB, k.key)) === 200);
        const r = await timed(() => api(gwA, a.admin, 'POST', `/api/keys/${k.id}/revoke`), () => probe(gwB, k.key), 401);
        // A person made on A with a key made on B, locked on A.
        const p = await api<{ id: string }>(gwA, a.admin, 'POST', '/api/persons', { name: `Person ${i + 3}` });
        await poll('the person on B', async () => (await api<{ persons: { id: string }[] }>(gwB, b.admin, 'GET', '/api/persons')).persons.some((x) => x.id === p.id));
        const pk = await api<{ key: string }>(gwB, b.admin, 'POST', '/api/keys', { name: `person-${i + 3}`, owner: p.id });
        if ((await probe(gwB, pk.key)) !== 200) throw new Error('her key does not work on B');
        const l = await timed(() => api(gwA, a.admin, 'POST', `/api/persons/${p.id}/lock`), () => probe(gwB, pk.key), 401);
        // A deny rule saved on A when B lets `/blocked…` through; no rules when it denies it.
        const blocked = `blocked-${i + 3}`;
        const want = (await probe(gwB, b.admin, blocked)) === 200 ? 403 : 200;
        const rules = want === 403 ? [DENY] : [];
        const pol = await timed(() => api(gwA, a.admin, 'PUT', '/api/policies', { rules }), () => probe(gwB, b.admin, blocked), want);
        if (i < 0) continue; // warm-up
        revocation.push(r);
        lock.push(l);
        policy.push(pol);
      }
      console.log(`configuration across gateways, ${TRIALS} trials each, one at a time (after 3 warm-up); B probed every 5 ms`);
      console.log(`  key revoked on A -> B refuses the key (401)             ${fmt(revocation)}`);
      console.log(`  person locked on A -> B refuses her key made on B (401)  ${fmt(lock)}`);
      console.log(`  policy saved on A -> B enforces it (403 / 200)          ${fmt(policy)}`);
      console.log(`  one probe request through B (the floor)                  ${fmt(probes)}`);
  });
}

await main();
