/**
 * PostgreSQL proxy throughput, in one run with alternating targets (docs/BENCHMARKS.md,
 * "PostgreSQL proxy"): `pgbench -S` (select-only, simple protocol) with 4 clients against
 *
 *   direct       the server at 127.0.0.1:5432
 *   passthrough  bench/tcp-pass-through.ts (a bare Node TCP pipe: the runtime's limit)
 *   pgbouncer    Debian's PgBouncer, session pooling (the peer), run as the postgres user
 *   gateway      Custody's PostgreSQL listener: API-key login, every statement classified with the
 *                PostgreSQL parser, decided by policy, recorded (hash-chained into SQLite) before it
 *                is forwarded, results and the first rows recorded, one masking rule active
 *   gateway-no-audit-writes  diagnostic only: the same gateway with its SQLite commits skipped in
 *                this process (events are built, never written), to show what recording costs; no
 *                configuration can turn recording off
 *
 * Each round runs every target for the same time; rounds repeat the alternation so drift on the
 * shared machine hits every target alike. Reported: median TPS per target and the ratios, with the
 * bar gateway ≥ 0.7 × passthrough, the CPU time the proxy process spent per transaction (less
 * sensitive than TPS to the other load on the machine), and then, with one client, the latency a
 * statement sees through each target (pgbench's latency average) and what each adds over direct.
 * TLS is off everywhere (PGSSLMODE=disable) so every target does the same work on the wire.
 *
 * With `--baseline DIR` (another checkout of this repository, e.g. a worktree at an earlier
 * commit), that checkout's gateway runs beside this one as the target `gateway-baseline`, same
 * config, same rounds: the same-run comparison of a change against the code before it.
 *
 *   node --import tsx bench/postgres.ts [--seconds 10] [--rounds 3] [--clients 4] [--baseline DIR]
 *   (npm run bench -- postgres)
 */
import { execFile, type ChildProcess, spawn } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Config } from '../shared/config';
import { Gateway } from '../proxy/gateway';
import { silentLogger } from '../proxy/log';
import { SessionAuditWriter } from '../proxy/audit/session-writer';
import { startTcpPassThrough } from './tcp-pass-through';

/** Diagnostic switch (this process only): while true, the proxies' session writers acknowledge without writing (only PostgreSQL traffic runs here). */
let skipAuditWrites = false;
const realFlush = SessionAuditWriter.prototype.flush;
SessionAuditWriter.prototype.flush = function (this: SessionAuditWriter) {
  if (!skipAuditWrites) return realFlush.call(this);
  const self = this as unknown as { scheduled: boolean; queue: unknown[]; commits: { done(err: null): void }[]; timer?: NodeJS.Timeout };
  self.scheduled = false;
  if (self.timer) clearTimeout(self.timer);
  self.timer = undefined;
  const commits = self.commits;
  self.commits = [];
  self.queue = [];
  for (const c of commits) c.done(null);
};

const run = promisify(execFile);
const args = process.argv.slice(2);
const num = (name: string, dflt: number) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : dflt);
const SECONDS = num('--seconds', 10);
const ROUNDS = num('--rounds', 3);
const CLIENTS = num('--clients', 4);
const DB = 'custody_bench';
const UPSTREAM = { host: '127.0.0.1', port: 5432, user: 'postgres' };

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

async function psql(sql: string, db = 'postgres'): Promise<string> {
  const { stdout } = await run('psql', ['-h', UPSTREAM.host, '-p', String(UPSTREAM.port), '-U', UPSTREAM.user, '-d', db, '-X', '-Atc', sql]);
  return stdout.trim();
}

/** CPU time this process (where the pass-through and the gateway run) spent per transaction, by target. */
const cpuPerTx = new Map<string, number[]>();
/** pgbench's "latency average" (ms) with one client, by target. */
const latencyMs = new Map<string, number[]>();
/** Targets that run inside this process (their CPU time is this process's). */
const IN_PROCESS = new Set(['passthrough', 'gateway', 'gateway-no-audit-writes', 'gateway-baseline']);
const BASELINE = args.includes('--baseline') ? args[args.indexOf('--baseline') + 1] : undefined;
/** Clients of the pgbench runs now going: CLIENTS for throughput, 1 for latency. */
let phaseClients = CLIENTS;

async function pgbench(host: string, port: number, user: string, password: string | undefined, target?: string): Promise<number> {
  const env = { ...process.env, PGSSLMODE: 'disable', ...(password ? { PGPASSWORD: password } : {}) };
  const cpu0 = process.cpuUsage();
  const seconds = phaseClients === 1 ? Math.max(2, Math.round(SECONDS / 2)) : SECONDS;
  const { stdout } = await run('pgbench', ['-S', '-n', '-c', String(phaseClients), '-j', String(Math.min(2, phaseClients)), '-T', String(seconds), '-h', host, '-p', String(port), '-U', user, DB], {
    env,
    timeout: (seconds + 60) * 1000,
  });
  const cpu = process.cpuUsage(cpu0);
  const tx = Number(/number of transactions actually processed: (\d+)/.exec(stdout)?.[1] ?? NaN);
  if (phaseClients === 1) {
    const latency = /latency average = ([\d.]+) ms/.exec(stdout);
    if (latency && target) latencyMs.set(target, [...(latencyMs.get(target) ?? []), Number(latency[1])]);
    return tx;
  }
  if (target && IN_PROCESS.has(target) && tx > 0) cpuPerTx.set(target, [...(cpuPerTx.get(target) ?? []), (cpu.user + cpu.system) / tx]);
  const m = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout) ?? /tps = ([\d.]+)/.exec(stdout);
  if (!m) throw new Error(`no tps in pgbench output:\n${stdout}`);
  if (!/number of failed transactions: 0 /.test(stdout) && /number of failed transactions/.test(stdout)) throw new Error(`pgbench reported failures:\n${stdout}`);
  return Number(m[1]);
}

async function startPgBouncer(dir: string): Promise<{ port: number; proc: ChildProcess }> {
  const port = await freePort();
  const ini = join(dir, 'pgbouncer.ini');
  writeFileSync(
    ini,
    [
      '[databases]',
      `${DB} = host=${UPSTREAM.host} port=${UPSTREAM.port} dbname=${DB} user=${UPSTREAM.user}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = any',
      'pool_mode = session',
      'max_client_conn = 100',
      'default_pool_size = 20',
      `logfile = ${join(dir, 'pgbouncer.log')}`,
      `pidfile = ${join(dir, 'pgbouncer.pid')}`,
      '',
    ].join('\n'),
  );
  const root = process.getuid?.() === 0;
  if (root) {
    const uid = Number((await run('id', ['-u', 'postgres'])).stdout.trim());
    const gid = Number((await run('id', ['-g', 'postgres'])).stdout.trim());
    chownSync(dir, uid, gid);
    chownSync(ini, uid, gid);
  }
  // PgBouncer refuses to run as root.
  const proc = root ? spawn('runuser', ['-u', 'postgres', '--', 'pgbouncer', ini], { stdio: 'ignore' }) : spawn('pgbouncer', [ini], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    try {
      await run('psql', ['-h', '127.0.0.1', '-p', String(port), '-U', UPSTREAM.user, '-d', DB, '-X', '-Atc', 'select 1'], { env: { ...process.env, PGSSLMODE: 'disable' } });
      return { port, proc };
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  proc.kill();
  throw new Error('pgbouncer did not start (see its log in the temp dir)');
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function main(): Promise<void> {
  // A database this run creates is dropped at the end (the server is shared); one that was there stays.
  const created = !(await psql(`select 1 from pg_database where datname = '${DB}'`));
  if (created) await psql(`create database ${DB}`);
  if (!(await psql("select to_regclass('pgbench_accounts') is not null", DB)).startsWith('t')) {
    await run('pgbench', ['-i', '-s', '1', '-q', '-h', UPSTREAM.host, '-p', String(UPSTREAM.port), '-U', UPSTREAM.user, DB]);
  }
  const dir = mkdtempSync(join(tmpdir(), 'custody-bench-pg-'));
  const pass = await startTcpPassThrough(`${UPSTREAM.host}:${UPSTREAM.port}`);
  const bouncer = await startPgBouncer(dir);
  const dataDir = join(dir, 'gateway');
  const input = {
    listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
    connections: [{ name: 'bench', kind: 'postgres', upstream: `postgres://${UPSTREAM.user}@${UPSTREAM.host}:${UPSTREAM.port}/${DB}`, listen: '127.0.0.1:0', tls: { mode: 'disable' } }],
    masking: [{ id: 'bench-pii', detectors: ['email'], connections: ['bench'] }],
    policies: [{ name: 'hold-destructive', match: { connections: ['bench'], sql: ['drop', 'truncate', 'delete_without_where'] }, action: 'hold', hold: { approvers: ['dba'] } }],
  };
  const gw = await Gateway.start({ config: Config.parse(input), dataDir, log: silentLogger });
  const gwPort = Number(gw.address('postgres:bench').split(':').pop());
  // The other checkout's gateway, built from its own modules (its config schema, its proxies).
  type BaselineGateway = { address(name: string): string; firstKey?: string; stop(): Promise<void> };
  let baseline: BaselineGateway | undefined;
  if (BASELINE) {
    const root = join(process.cwd(), BASELINE);
    const { Gateway: BaseGateway } = (await import(join(root, 'proxy/gateway.ts'))) as { Gateway: { start(o: unknown): Promise<BaselineGateway> } };
    const { Config: BaseConfig } = (await import(join(root, 'shared/config.ts'))) as { Config: { parse(v: unknown): unknown } };
    baseline = await BaseGateway.start({ config: BaseConfig.parse(input), dataDir: join(dir, 'baseline'), log: silentLogger });
  }
  const targets: [string, () => Promise<number>][] = [
    ['direct', () => pgbench(UPSTREAM.host, UPSTREAM.port, UPSTREAM.user, undefined, 'direct')],
    ['passthrough', () => pgbench('127.0.0.1', Number(pass.address.split(':')[1]), UPSTREAM.user, undefined, 'passthrough')],
    ['pgbouncer', () => pgbench('127.0.0.1', bouncer.port, UPSTREAM.user, undefined, 'pgbouncer')],
    ['gateway', () => pgbench('127.0.0.1', gwPort, 'bench', gw.firstKey, 'gateway')],
    ...(baseline
      ? [['gateway-baseline', () => pgbench('127.0.0.1', Number(baseline.address('postgres:bench').split(':').pop()), 'bench', baseline.firstKey, 'gateway-baseline')] as [string, () => Promise<number>]]
      : []),
    [
      'gateway-no-audit-writes',
      async () => {
        skipAuditWrites = true;
        try {
          return await pgbench('127.0.0.1', gwPort, 'bench', gw.firstKey, 'gateway-no-audit-writes');
        } finally {
          skipAuditWrites = false;
        }
      },
    ],
  ];
  const tps = new Map<string, number[]>(targets.map(([n]) => [n, []]));
  const eventsBefore = gw.services.store.head().size;
  try {
    console.log(`pgbench -S -c ${CLIENTS} -j 2 -T ${SECONDS}, ${ROUNDS} rounds, targets alternating; PGSSLMODE=disable`);
    for (let r = 1; r <= ROUNDS; r++) {
      for (const [name, fn] of targets) {
        const v = await fn();
        tps.get(name)!.push(v);
        console.log(`  round ${r}  ${name.padEnd(12)} ${v.toFixed(0).padStart(7)} tps`);
      }
    }
    // Latency: one client, one statement at a time, so each figure is a round trip through the target.
    phaseClients = 1;
    console.log(`pgbench -S -c 1 -T ${Math.max(2, Math.round(SECONDS / 2))}, ${ROUNDS} rounds, targets alternating`);
    for (let r = 1; r <= ROUNDS; r++) {
      for (const [name, fn] of r % 2 ? targets : [...targets].reverse()) {
        await fn();
        console.log(`  round ${r}  ${name.padEnd(12)} ${latencyMs.get(name)!.at(-1)!.toFixed(3).padStart(7)} ms`);
      }
    }
  } finally {
    const recorded = gw.services.store.head().size - eventsBefore;
    await gw.stop();
    await baseline?.stop();
    await pass.close();
    bouncer.proc.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    rmSync(dir, { recursive: true, force: true });
    if (created) await psql(`drop database if exists ${DB} with (force)`);
    console.log(`  gateway recorded ${recorded} audit events during the run`);
  }
  const med = Object.fromEntries([...tps].map(([k, v]) => [k, median(v)])) as Record<string, number>;
  const ratio = (a: string, b: string) => med[a]! / med[b]!;
  console.log('\n| target | median TPS | vs direct | vs pass-through |');
  console.log('|---|---:|---:|---:|');
  for (const [name] of targets) console.log(`| ${name} | ${med[name]!.toFixed(0)} | ${ratio(name, 'direct').toFixed(2)} | ${ratio(name, 'passthrough').toFixed(2)} |`);
  const bar = ratio('gateway', 'passthrough');
  console.log(`\ngateway / pass-through = ${bar.toFixed(2)} (bar ≥ 0.70: ${bar >= 0.7 ? 'met' : 'NOT met'}); gateway / PgBouncer = ${ratio('gateway', 'pgbouncer').toFixed(2)}; gateway / direct = ${ratio('gateway', 'direct').toFixed(2)}`);
  console.log(`diagnostic: gateway without its SQLite writes / pass-through = ${ratio('gateway-no-audit-writes', 'passthrough').toFixed(2)}`);
  if (baseline) console.log(`gateway / gateway-baseline (${BASELINE}) = ${ratio('gateway', 'gateway-baseline').toFixed(3)}`);
  const lat = Object.fromEntries([...latencyMs].map(([k, v]) => [k, median(v)])) as Record<string, number>;
  console.log(
    `latency per statement, 1 client (median of pgbench's average, ms): ${Object.entries(lat)
      .map(([k, v]) => `${k} ${v.toFixed(3)}${k === 'direct' ? '' : ` (+${(v - lat['direct']!).toFixed(3)})`}`)
      .join(', ')}`,
  );
  const cpu = Object.fromEntries([...cpuPerTx].map(([k, v]) => [k, Math.round(median(v))]));
  console.log(`CPU per transaction in the proxy process (median µs): ${Object.entries(cpu).map(([k, v]) => `${k} ${v}`).join(', ')}`);
  console.log(JSON.stringify({ bench: 'postgres', seconds: SECONDS, rounds: ROUNDS, clients: CLIENTS, tps: Object.fromEntries(tps), median: med, cpuUsPerTx: cpu, latencyMs: lat }));
}

main().catch((err: unknown) => {
  console.error(`bench/postgres: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
