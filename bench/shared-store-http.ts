/**
 * `npm run bench -- shared-store-http` (`node --import tsx bench/shared-store-http.ts [--quick]`):
 * the HTTP proxy on a shared PostgreSQL store (docs/SCALE-OUT.md; figures in docs/BENCHMARKS.md,
 * "Shared store: HTTP"). In one run, with the LLM stand-in upstream of bench/http-overhead.ts, on
 * fresh databases on the local server (127.0.0.1:5432, dropped at the end):
 *
 *   direct   the upstream itself
 *   async    a gateway on its own store, `audit.remoteCommit: async` (the default)
 *   sync     a gateway on its own store, `audit.remoteCommit: sync`
 *   A, A+B   two gateways on one store (B approved by A): 8 connections on A alone, then 4 on A
 *            and 4 on B at once (their sum)
 *
 * Reported, alternating the order each round: p50/p99 latency at 1 connection and what each adds
 * over direct; throughput at 8 connections; sync / async and (A+B) / A from the same rounds. While
 * the async gateway runs at 8 connections its `/api/health` is sampled every 20 ms for the
 * unshipped tail (`sharedStore.lagEvents`: events in its local chain that the store does not hold
 * yet): p50, p99 and max. Each gateway and the upstream run in their own process; this process is
 * the load generator. The machine's cores are shared by all of them and by PostgreSQL, so the
 * figures show what each mode costs here, not a ceiling.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { fileURLToPath, pathToFileURL } from 'node:url';
import pg from 'pg';
import { CHAT, type Child, once, percentile, startChild } from './http-overhead';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const args = process.argv.slice(2);
const arg = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
const ADMIN = process.env['CUSTODY_BENCH_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** Child role: a gateway on the store `--store`, with `--remote-commit`; prints its addresses, key, id and config file. */
async function runGateway(): Promise<void> {
  const { Config } = await import('../shared/config');
  const { Gateway } = await import('../proxy/gateway');
  const { silentLogger } = await import('../proxy/log');
  const dataDir = mkdtempSync(join(tmpdir(), 'custody-bench-commit-'));
  const input = {
    dataDir,
    listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
    connections: [{ name: 'bench', kind: 'openai', upstream: `${arg('--upstream')!}/v1`, secret: { value: 'sk-bench-upstream-secret' } }],
    store: { url: arg('--store')! },
    audit: { remoteCommit: arg('--remote-commit') ?? 'async' },
  };
  // The same settings in a file, for `custody gateways approve --config`.
  const file = join(dataDir, 'custody.yaml');
  writeFileSync(file, JSON.stringify(input));
  const gw = await Gateway.start({ config: Config.parse(input), dataDir, log: silentLogger });
  const id = gw.services.sharedStore!.identity.id;
  process.stdout.write(`${JSON.stringify({ url: `http://${gw.address('http')}/bench`, control: `http://${gw.address('control')}`, key: gw.firstKey, id, file })}\n`);
  process.on('SIGTERM', () => {
    void gw.stop().then(() => {
      rmSync(dataDir, { recursive: true, force: true });
      process.exit(0);
    });
  });
}

interface Target {
  name: string;
  base: string;
  key?: string;
}

const headersOf = (t: Target): Record<string, string> => (t.key ? { authorization: `Bearer ${t.key}` } : {});

async function health(control: string): Promise<{ phase?: string; lagEvents: number; state: string; cause?: string }> {
  const h = (await (await fetch(`${control}/api/health`)).json()) as { sharedStore?: { phase: string; lagEvents: number; state: string; cause?: string } };
  return h.sharedStore ?? { lagEvents: 0, state: 'none' };
}

/** Waits until `t` answers 200 (a pending gateway answers 503 until it is approved). */
async function ready(t: Target): Promise<void> {
  const agent = new Agent();
  for (let i = 0; ; i++) {
    const r = await once(agent, `${t.base}/chat/completions`, CHAT, headersOf(t)).catch(() => undefined);
    if (r?.status === 200) break;
    if (i > 600) throw new Error(`${t.name} does not serve (HTTP ${r?.status ?? 'error'})`);
    await new Promise((res) => setTimeout(res, 100));
  }
  agent.destroy();
}

async function sequential(t: Target, n: number, into: number[]): Promise<void> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  for (let i = 0; i < n; i++) {
    const x = await once(agent, `${t.base}/chat/completions`, CHAT, headersOf(t));
    if (x.status !== 200) throw new Error(`${t.name}: HTTP ${x.status}`);
    into.push(x.total);
  }
  agent.destroy();
}

/** Requests/s with `conns` connections spread over `targets` for `seconds`, all at once; `during` runs meanwhile. */
async function load(targets: Target[], conns: number, seconds: number, during?: (stop: () => boolean) => Promise<void>): Promise<number> {
  const until = performance.now() + seconds * 1000;
  let n = 0;
  const agents = targets.map(() => new Agent({ keepAlive: true, maxSockets: conns }));
  const t0 = performance.now();
  const sampling = during?.(() => performance.now() >= until);
  await Promise.all(
    Array.from({ length: conns }, async (_, c) => {
      const i = c % targets.length;
      const t = targets[i]!;
      while (performance.now() < until) {
        const x = await once(agents[i]!, `${t.base}/chat/completions`, CHAT, headersOf(t));
        if (x.status !== 200) throw new Error(`${t.name}: HTTP ${x.status}`);
        n++;
      }
    }),
  );
  const rps = n / ((performance.now() - t0) / 1000);
  await sampling;
  for (const a of agents) a.destroy();
  return rps;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const f = (x: number, d = 3) => x.toFixed(d);

async function main(): Promise<void> {
  const quick = args.includes('--quick');
  const rounds = Number(arg('--rounds') ?? (quick ? 2 : 5));
  const perRound = quick ? 100 : 300;
  const seconds = quick ? 1.5 : 3;
  const admin = new pg.Client({ connectionString: ADMIN });
  await admin.connect();
  const dbs: string[] = [];
  const children: Child[] = [];
  const newStore = async () => {
    const name = `custody_bench_commit_${randomBytes(5).toString('hex')}`;
    await admin.query(`CREATE DATABASE ${name}`);
    dbs.push(name);
    return ADMIN.replace(/\/[^/]*$/, `/${name}`);
  };
  const child = async (file: string, childArgs: string[]) => {
    const c = await startChild(file, childArgs);
    children.push(c);
    return c;
  };
  try {
    const upstream = await child(join(HERE, 'http-overhead.ts'), ['--role', 'upstream', '--reply', 'The quarterly report shows steady growth across regions, with costs held flat. '.repeat(10)]);
    const up = upstream.info['url']!;
    const gateway = (store: string, mode: string) => child(join(HERE, 'shared-store-http.ts'), ['--role', 'gateway', '--upstream', up, '--store', store, '--remote-commit', mode]);
    const asyncGw = await gateway(await newStore(), 'async');
    const syncGw = await gateway(await newStore(), 'sync');
    const shared = await newStore();
    const gwA = await gateway(shared, 'async');
    const target = (name: string, c: Child): Target => ({ name, base: c.info['url']!, key: c.info['key']! });
    const direct: Target = { name: 'direct', base: `${up}/v1` };
    const tAsync = target('async', asyncGw);
    const tSync = target('sync', syncGw);
    const tA = target('A', gwA);
    await ready(tA); // A enrolled first, so B is the one waiting for approval
    const gwB = await gateway(shared, 'async');
    const tB = target('B', gwB);
    const approved = await promisify(execFile)(process.execPath, [join(HERE, '../bin/custody.mjs'), 'gateways', 'approve', gwB.info['id']!, '--config', gwA.info['file']!], { encoding: 'utf8' });
    process.stderr.write(approved.stdout);
    for (const t of [direct, tAsync, tSync, tA, tB]) await ready(t);

    process.stderr.write('warming up…\n');
    for (const t of [direct, tAsync, tSync, tA, tB]) await sequential(t, 100, []);
    await load([tAsync], 8, 0.5);
    await load([tSync], 8, 0.5);

    const lat = new Map<string, number[]>([direct, tAsync, tSync].map((t) => [t.name, []]));
    const rps = new Map<string, number[]>(['direct', 'async', 'sync', 'A', 'A+B'].map((n) => [n, []]));
    const lags: number[] = [];
    const lagAt = (stop: () => boolean) =>
      (async () => {
        while (!stop()) {
          lags.push((await health(asyncGw.info['control']!)).lagEvents);
          await new Promise((r) => setTimeout(r, 20));
        }
      })();
    for (let r = 0; r < rounds; r++) {
      process.stderr.write(`round ${r + 1} of ${rounds}…\n`);
      const order = r % 2 ? [tSync, tAsync, direct] : [direct, tAsync, tSync];
      for (const t of order) await sequential(t, perRound, lat.get(t.name)!);
      for (const t of order) rps.get(t.name)!.push(await load([t], 8, seconds, t === tAsync ? lagAt : undefined));
      const two = r % 2 ? ['A+B', 'A'] : ['A', 'A+B'];
      for (const n of two) rps.get(n)!.push(await load(n === 'A' ? [tA] : [tA, tB], 8, seconds));
    }
    const tails = await Promise.all([asyncGw, syncGw, gwA, gwB].map((c) => health(c.info['control']!)));

    const p50 = (n: string) => percentile(lat.get(n)!, 50);
    const p99 = (n: string) => percentile(lat.get(n)!, 99);
    const med = (n: string) => median(rps.get(n)!);
    const perRoundRatio = (a: string, b: string) => rps.get(a)!.map((x, i) => x / rps.get(b)![i]!);
    console.log(`\nHTTP on a shared PostgreSQL store — ${rounds} rounds; latency ${perRound} sequential requests per target per round; throughput ${seconds} s at 8 connections per target per round (medians)\n`);
    console.log('| target | p50 ms (1 conn) | p99 ms | added p50 ms | req/s (8 conns) |');
    console.log('| --- | --- | --- | --- | --- |');
    for (const n of ['direct', 'async', 'sync']) console.log(`| ${n === 'direct' ? 'direct' : `gateway, remoteCommit: ${n}`} | ${f(p50(n))} | ${f(p99(n))} | ${n === 'direct' ? '—' : `+${f(p50(n) - p50('direct'))}`} | ${f(med(n), 0)} |`);
    console.log(`| one gateway (A) on a shared store | | | | ${f(med('A'), 0)} |`);
    console.log(`| two gateways (A + B, 4 connections each) on it | | | | ${f(med('A+B'), 0)} |`);
    const syncRatios = perRoundRatio('sync', 'async');
    const twoRatios = perRoundRatio('A+B', 'A');
    console.log(`\nsync / async throughput per round: ${syncRatios.map((x) => f(x, 2)).join(' ')} (median ${f(median(syncRatios), 2)}); added p50 of sync over async: ${f(p50('sync') - p50('async'))} ms`);
    console.log(`two gateways / one, throughput per round: ${twoRatios.map((x) => f(x, 2)).join(' ')} (median ${f(median(twoRatios), 2)})`);
    const eps = med('async') * 2; // http.request + http.response per exchange, at least
    console.log(
      `unshipped tail of the async gateway at 8 connections (${lags.length} samples, every 20 ms): p50 ${percentile(lags, 50)} events, p99 ${percentile(lags, 99)}, max ${Math.max(...lags)} (at ~${f(eps, 0)} events/s: p50 ≈ ${f((percentile(lags, 50) / eps) * 1000, 0)} ms, max ≈ ${f((Math.max(...lags) / eps) * 1000, 0)} ms of traffic)`,
    );
    console.log(`lag after the load (async, sync, A, B): ${tails.map((h) => `${h.lagEvents} (${h.state})`).join(', ')}`);
  } finally {
    for (const c of children.reverse()) c.proc.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 1500));
    for (const name of dbs) await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await admin.end();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  (arg('--role') === 'gateway' ? runGateway : main)().catch((err: unknown) => {
    console.error(err instanceof Error ? err.stack : err);
    process.exit(1);
  });
}
