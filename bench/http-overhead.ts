/**
 * HTTP proxy overhead, in one run with alternating targets (docs/BENCHMARKS.md, "HTTP proxy"):
 *
 *   direct   the LLM stand-in upstream itself
 *   bare     bench/bare-proxy.ts in front of it (no auth, policy or recording: the runtime's limit)
 *   gateway  Custody's HTTP proxy in front of it: API-key auth, policy, recording on (every
 *            exchange hash-chained into SQLite), plus one masking rule when the build has a masking
 *            engine
 *   portkey  @portkey-ai/gateway (when installed) in front of it, for scale; JSON only — its
 *            streaming path fails on Node 20 (undici "immutable" headers)
 *
 * Upstream, bare proxy and gateway each run in their own process; this process is the load
 * generator (keep-alive http.Agent). Workloads: POST /chat/completions answering ~1 KiB of JSON,
 * and a streamed chat completion. Reported: p50 latency at 1 connection (sequential) and what each
 * proxy adds over direct; throughput at 8 connections as ratios to bare and to direct; added
 * time-to-first-byte for streams.
 *
 *   floor    (--floor) bench/raw-socket-floor.ts: HTTP relayed between raw sockets, Content-Length
 *            framing only — not a proxy, a measure of what Node's http module costs the others
 *
 *   baseline (--baseline DIR) the gateway of another checkout (e.g. a worktree at an earlier commit),
 *            same config and load: a change against the code before it, in the same run
 *
 *   evidence (--evidence) a second gateway, same config, with evidence leaving the box: a signed
 *            HTTP webhook sink and an archive sealing a segment every `--evidence-every` (default
 *            5s) into a bucket. Both receivers (a webhook and s3rver) run in one more process,
 *            which also measures the sink's lag (receipt time − event time) while the load runs.
 *            Reported: its throughput against the plain gateway's (issue 17's bar: ≥ 0.95), overall
 *            and per round (the two run back to back in each round), the sink lag and what the
 *            archive sealed. The receivers run at nice 19, as they stand in for machines elsewhere, and report their CPU per event. `--evidence-parts sink` or `archive` turns on
 *            only one of the two, to tell their costs apart.
 *
 *   node --import tsx bench/http-overhead.ts [--quick] [--no-masking] [--no-portkey] [--floor] [--baseline DIR] [--evidence [--evidence-every 5s] [--evidence-parts sink,archive]] [--rounds N] [--profile DIR]
 *   (--profile writes the V8 CPU profiles of the bare proxy, the gateway, the evidence gateway and the baseline, one per thread,
 *   under DIR/bare, DIR/gateway, DIR/evidence and DIR/baseline; bench/profile-summary.ts reads one)
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve as resolvePath } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const args = process.argv.slice(2);
const role = args.includes('--role') ? args[args.indexOf('--role') + 1] : undefined;
const arg = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);

// ---------------------------------------------------------------------------------------------
// Child roles

async function runUpstream(): Promise<void> {
  const { startLlmUpstream } = await import('../test/support/llm-upstream');
  const reply = arg('--reply') ?? 'ok';
  // A short streamed answer: time to first byte should not be measured behind a burst of hundreds
  // of events that a real model would spread over seconds.
  const streamReply = 'Yes. The figures hold up, and the short explanation follows in the report.';
  const up = await startLlmUpstream({ record: false, reply, streamReply });
  process.stdout.write(`${JSON.stringify({ url: up.url })}\n`);
}

const TIME_DT = Buffer.from(',"time_dt"');

/**
 * The times of the records in a webhook body, read where they sit (each record's own time is the
 * number just before its time_dt: ocsf.ts writes them in that order) without turning the body into
 * text: this stand-in for a SIEM on another machine shares the cores with the gateway under test.
 */
function recordTimes(body: Buffer, each: (time: number) => void): void {
  for (let at = body.indexOf(TIME_DT); at >= 0; at = body.indexOf(TIME_DT, at + TIME_DT.length)) {
    let t = 0;
    let scale = 1;
    for (let i = at - 1; i >= 0 && body[i]! >= 0x30 && body[i]! <= 0x39; i--, scale *= 10) t += (body[i]! - 0x30) * scale;
    each(t);
  }
}

/** The receivers of the evidence gateway: s3rver and a webhook that keeps the sink's lag, with GET /stats. */
async function runEvidenceReceivers(): Promise<void> {
  // The receivers stand in for a SIEM and a bucket on other machines: at the lowest priority they
  // take as little as they can of the cores the proxies under test use (their own waiting counts in
  // the lag measured, and /stats says how much CPU they used per event).
  const { setPriority } = await import('node:os');
  setPriority(19);
  const { default: S3rver } = await import('s3rver');
  const { createServer } = await import('node:http');
  const dir = mkdtempSync(join(tmpdir(), 'custody-bench-s3-'));
  const s3 = new S3rver({ port: 0, address: '127.0.0.1', silent: true, directory: dir, configureBuckets: [{ name: 'bench', configs: [] }] });
  const { port: s3Port } = await s3.run();
  const lags: number[] = [];
  let events = 0;
  let cpuFrom = process.cpuUsage();
  const hook = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.method === 'GET' && req.url === '/stats') {
        const sorted = [...lags].sort((a, b) => a - b);
        const at = (q: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! : null);
        const cpu = process.cpuUsage(cpuFrom);
        res.end(JSON.stringify({ events, p50: at(0.5), p99: at(0.99), max: sorted.at(-1) ?? null, cpuUsPerEvent: lags.length ? (cpu.user + cpu.system) / lags.length : null }));
        lags.length = 0;
        cpuFrom = process.cpuUsage();
        return;
      }
      const now = Date.now();
      recordTimes(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks), (time) => {
        events++;
        lags.push(now - time);
      });
      res.end('{}');
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  process.stdout.write(`${JSON.stringify({ s3: `http://127.0.0.1:${s3Port}`, hook: `http://127.0.0.1:${(hook.address() as { port: number }).port}` })}\n`);
  process.on('SIGTERM', () => {
    void s3.close().then(() => {
      rmSync(dir, { recursive: true, force: true });
      process.exit(0);
    });
  });
}

async function runGateway(): Promise<void> {
  const upstream = arg('--upstream')!;
  const { Config } = await import('../shared/config');
  const { Gateway } = await import('../proxy/gateway');
  const { silentLogger } = await import('../proxy/log');
  const dataDir = mkdtempSync(join(tmpdir(), 'custody-bench-'));
  const parts = (arg('--evidence-parts') ?? 'sink,archive').split(',');
  const s3 = parts.includes('archive') ? arg('--s3') : undefined;
  const hook = parts.includes('sink') ? arg('--hook') : undefined;
  const base = {
    listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
    connections: [{ name: 'bench', kind: 'openai', upstream: `${upstream}/v1`, secret: { value: 'sk-bench-upstream-secret' } }],
    audit: {
      sinks: hook ? [{ name: 'bench-hook', kind: 'http', url: hook, secret: 'bench-hmac-secret' }] : [],
      // s3rver's built-in key pair.
      ...(s3 ? { archive: { s3: { bucket: 'bench', prefix: 'gw', endpoint: s3, credentials: { accessKeyId: { value: 'S3RVER' }, secretAccessKey: { value: 'S3RVER' } } }, every: arg('--evidence-every') ?? '5s' } } : {}),
    },
  };
  let gw;
  let masking = 'one rule (credit_card, us_ssn, email; scope client+upstream+log)';
  try {
    if (args.includes('--no-masking')) throw new Error('masking turned off with --no-masking');
    gw = await Gateway.start({
      config: Config.parse({ ...base, masking: [{ id: 'pii', detectors: ['credit_card', 'us_ssn', 'email'], scope: ['client', 'upstream', 'log'], connections: ['bench'] }] }),
      dataDir,
      log: silentLogger,
    });
  } catch (err) {
    masking = `off (${(err as Error).message})`;
    gw = await Gateway.start({ config: Config.parse(base), dataDir, log: silentLogger });
  }
  process.stdout.write(`${JSON.stringify({ url: `http://${gw.address('http')}/bench`, control: `http://${gw.address('control')}`, key: gw.firstKey, masking })}\n`);
  process.on('SIGTERM', () => {
    void gw.stop().then(() => {
      rmSync(dataDir, { recursive: true, force: true });
      process.exit(0);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Load generator

interface Target {
  name: 'direct' | 'bare' | 'floor' | 'gateway' | 'evidence' | 'baseline' | 'portkey';
  /** Base URL the OpenAI-style paths are appended to (…/chat/completions). */
  base: string;
  headers?: Record<string, string>;
}

export interface Child {
  proc: ChildProcess;
  info: Record<string, string>;
}

export function startChild(file: string, childArgs: string[], nodeArgs: string[] = []): Promise<Child> {
  const proc = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', file, ...childArgs], { stdio: ['ignore', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: proc.stdout! });
    lines.once('line', (line) => resolve({ proc, info: JSON.parse(line) as Record<string, string> }));
    proc.once('exit', (code) => reject(new Error(`${file} exited with ${code} before it was ready`)));
  });
}

export const KEY_HEADER: Record<string, string> = {};

/** One request; resolves with total time and time to the first body byte, in ms. */
export function once(agent: Agent, url: string, body: string, extra?: Record<string, string>): Promise<{ total: number; ttfb: number; bytes: number; status: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let ttfb = 0;
    let bytes = 0;
    const req = request(url, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...KEY_HEADER, ...extra } }, (res) => {
      res.on('data', (c: Buffer) => {
        if (!bytes) ttfb = performance.now() - t0;
        bytes += c.length;
      });
      res.on('end', () => resolve({ total: performance.now() - t0, ttfb, bytes, status: res.statusCode ?? 0 }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

export function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

export const CHAT = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Say something short.' }] });
const STREAM = JSON.stringify({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'Say something short.' }] });

async function sequential(targets: Target[], body: string, perRound: number, rounds: number): Promise<Map<string, { total: number[]; ttfb: number[] }>> {
  const out = new Map(targets.map((t) => [t.name, { total: [] as number[], ttfb: [] as number[] }]));
  const agents = new Map(targets.map((t) => [t.name, new Agent({ keepAlive: true, maxSockets: 1 })]));
  for (let r = 0; r < rounds; r++) {
    // alternate the order each round so no target always runs first
    const order = r % 2 ? [...targets].reverse() : targets;
    for (const t of order) {
      const agent = agents.get(t.name)!;
      const m = out.get(t.name)!;
      for (let i = 0; i < perRound; i++) {
        const x = await once(agent, `${t.base}/chat/completions`, body, t.headers);
        if (x.status !== 200) throw new Error(`${t.name}: HTTP ${x.status}`);
        m.total.push(x.total);
        m.ttfb.push(x.ttfb);
      }
    }
  }
  for (const a of agents.values()) a.destroy();
  return out;
}

async function throughput(
  targets: Target[],
  connections: number,
  seconds: number,
  rounds: number,
  pids: Record<string, number | undefined>,
): Promise<{ rps: Map<string, number>; perRound: Map<string, number[]>; cpuPerRequest: Map<string, number | undefined>; mainCpuPerRequest: Map<string, number | undefined> }> {
  const done = new Map(targets.map((t) => [t.name, 0]));
  const perRound = new Map(targets.map((t) => [t.name, [] as number[]]));
  const time = new Map(targets.map((t) => [t.name, 0]));
  const cpu = new Map<string, number | undefined>(targets.map((t) => [t.name, pids[t.name] ? 0 : undefined]));
  const mainCpu = new Map<string, number | undefined>(targets.map((t) => [t.name, pids[t.name] ? 0 : undefined]));
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 ? [...targets].reverse() : targets;
    for (const t of order) {
      const agent = new Agent({ keepAlive: true, maxSockets: connections });
      const until = performance.now() + seconds * 1000;
      let n = 0;
      const cpu0 = cpuMs(pids[t.name]);
      const main0 = cpuMs(pids[t.name], true);
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: connections }, async () => {
          while (performance.now() < until) {
            const x = await once(agent, `${t.base}/chat/completions`, CHAT, t.headers);
            if (x.status !== 200) throw new Error(`${t.name}: HTTP ${x.status}`);
            n++;
          }
        }),
      );
      time.set(t.name, time.get(t.name)! + (performance.now() - t0) / 1000);
      perRound.get(t.name)!.push(n / ((performance.now() - t0) / 1000));
      done.set(t.name, done.get(t.name)! + n);
      const cpu1 = cpuMs(pids[t.name]);
      const main1 = cpuMs(pids[t.name], true);
      if (cpu0 !== undefined && cpu1 !== undefined) cpu.set(t.name, cpu.get(t.name)! + cpu1 - cpu0);
      if (main0 !== undefined && main1 !== undefined) mainCpu.set(t.name, mainCpu.get(t.name)! + main1 - main0);
      agent.destroy();
    }
  }
  return {
    rps: new Map(targets.map((t) => [t.name, done.get(t.name)! / time.get(t.name)!])),
    perRound,
    cpuPerRequest: new Map(targets.map((t) => [t.name, cpu.get(t.name) === undefined ? undefined : cpu.get(t.name)! / done.get(t.name)!])),
    mainCpuPerRequest: new Map(targets.map((t) => [t.name, mainCpu.get(t.name) === undefined ? undefined : mainCpu.get(t.name)! / done.get(t.name)!])),
  };
}

/**
 * CPU time (user + system, ms) a process has used so far — or, with `mainThread`, its main thread
 * (the event loop) alone — from /proc; undefined where there is none.
 */
function cpuMs(pid: number | undefined, mainThread = false): number | undefined {
  if (!pid) return undefined;
  try {
    const fields = readFileSync(mainThread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime + stime, in USER_HZ (100 on Linux)
  } catch {
    return undefined;
  }
}

async function startPortkey(upstream: string): Promise<{ proc: ChildProcess; target: Target } | undefined> {
  const entry = join(HERE, '../node_modules/@portkey-ai/gateway/build/start-server.js');
  if (!existsSync(entry)) return undefined;
  const port = 20000 + Math.floor(Math.random() * 20000);
  const proc = spawn(process.execPath, [entry, `--port=${port}`, '--headless'], { stdio: ['ignore', 'ignore', 'ignore'] });
  const target: Target = { name: 'portkey', base: `http://127.0.0.1:${port}/v1`, headers: { 'x-portkey-provider': 'openai', 'x-portkey-custom-host': `${upstream}/v1` } };
  for (let i = 0; i < 100; i++) {
    await new Promise((r) => setTimeout(r, 100));
    try {
      if ((await once(new Agent(), `${target.base}/chat/completions`, CHAT, target.headers)).status === 200) return { proc, target };
    } catch {
      // not listening yet
    }
  }
  proc.kill('SIGTERM');
  return undefined;
}

async function main(): Promise<void> {
  const quick = args.includes('--quick');
  const stops: ChildProcess[] = [];
  const cleanup = () => {
    for (const p of stops) p.kill('SIGTERM');
  };
  process.on('exit', cleanup);
  try {
    // Size the reply so a non-streamed answer is ~1 KiB of JSON.
    const probe = await startChild(join(HERE, 'http-overhead.ts'), ['--role', 'upstream', '--reply', '']);
    const empty = (await once(new Agent({ keepAlive: false }), `${probe.info['url']}/v1/chat/completions`, CHAT)).bytes;
    probe.proc.kill('SIGTERM');
    // Prose, as a model answers (a run of one letter would be an adversarial input for detectors).
    const prose = 'The quarterly report shows steady growth across regions, with costs held flat and margins improving. ';
    const reply = prose.repeat(20).slice(0, Math.max(1, 1024 - empty)).trimEnd();

    const upstream = await startChild(join(HERE, 'http-overhead.ts'), ['--role', 'upstream', '--reply', reply]);
    stops.push(upstream.proc);
    const profileDir = arg('--profile');
    const profile = (name: string) => (profileDir ? ['--cpu-prof', `--cpu-prof-dir=${join(profileDir, name)}`] : []);
    const bare = await startChild(join(HERE, 'bare-proxy.ts'), ['--upstream', upstream.info['url']!], profile('bare'));
    stops.push(bare.proc);
    const gateway = await startChild(
      join(HERE, 'http-overhead.ts'),
      ['--role', 'gateway', '--upstream', upstream.info['url']!, ...(args.includes('--no-masking') ? ['--no-masking'] : [])],
      profile('gateway'),
    );
    stops.push(gateway.proc);
    const floor = args.includes('--floor') ? await startChild(join(HERE, 'raw-socket-floor.ts'), ['--upstream', upstream.info['url']!]) : undefined;
    if (floor) stops.push(floor.proc);
    const baselineDir = arg('--baseline');
    const baseline = baselineDir
      ? await startChild(resolvePath(baselineDir, 'bench/http-overhead.ts'), ['--role', 'gateway', '--upstream', upstream.info['url']!, ...(args.includes('--no-masking') ? ['--no-masking'] : [])], profile('baseline'))
      : undefined;
    if (baseline) stops.push(baseline.proc);
    const receivers = args.includes('--evidence') ? await startChild(join(HERE, 'http-overhead.ts'), ['--role', 'evidence-receivers']) : undefined;
    if (receivers) stops.push(receivers.proc);
    const evidence = receivers
      ? await startChild(join(HERE, 'http-overhead.ts'), [
          '--role',
          'gateway',
          '--upstream',
          upstream.info['url']!,
          '--s3',
          receivers.info['s3']!,
          '--hook',
          `${receivers.info['hook']!}/events`,
          ...(arg('--evidence-every') ? ['--evidence-every', arg('--evidence-every')!] : []),
          ...(arg('--evidence-parts') ? ['--evidence-parts', arg('--evidence-parts')!] : []),
          ...(args.includes('--no-masking') ? ['--no-masking'] : []),
        ], profile('evidence'))
      : undefined;
    if (evidence) stops.push(evidence.proc);
    const portkey = args.includes('--no-portkey') ? undefined : await startPortkey(upstream.info['url']!);
    if (portkey) stops.push(portkey.proc);
    // Every target gets the same Authorization header; only the gateway checks it.
    KEY_HEADER['authorization'] = `Bearer ${gateway.info['key']}`;
    const streamTargets: Target[] = [
      { name: 'direct', base: `${upstream.info['url']}/v1` },
      { name: 'bare', base: `${bare.info['url']}/v1` },
      { name: 'gateway', base: gateway.info['url']! },
    ];
    if (baseline) streamTargets.push({ name: 'baseline', base: baseline.info['url']!, headers: { authorization: `Bearer ${baseline.info['key']}` } });
    if (evidence) streamTargets.push({ name: 'evidence', base: evidence.info['url']!, headers: { authorization: `Bearer ${evidence.info['key']}` } });
    const targets = [...streamTargets, ...(floor ? [{ name: 'floor' as const, base: `${floor.info['url']}/v1` }] : []), ...(portkey ? [portkey.target] : [])];
    const pids: Record<string, number | undefined> = { bare: bare.proc.pid, gateway: gateway.proc.pid, evidence: evidence?.proc.pid, baseline: baseline?.proc.pid, floor: floor?.proc.pid, portkey: portkey?.proc.pid };
    const size = (await once(new Agent(), `${streamTargets[2]!.base}/chat/completions`, CHAT)).bytes;

    process.stderr.write('warming up…\n');
    await sequential(targets, CHAT, quick ? 100 : 300, 1);
    await throughput(targets, 8, 0.5, 1, pids);

    process.stderr.write('sequential latency (1 connection)…\n');
    const lat = await sequential(targets, CHAT, quick ? 100 : 300, quick ? 4 : 8);
    // Lag measured from here: the sink's backlog from the warm-up and latency rounds is drained first.
    const sinkStats = async () => (receivers ? ((await (await fetch(`${receivers.info['hook']!}/stats`)).json()) as { events: number; p50: number | null; p99: number | null; max: number | null; cpuUsPerEvent: number | null }) : undefined);
    await sinkStats();
    process.stderr.write('throughput (8 connections)…\n');
    const rounds = Number(arg('--rounds') ?? (quick ? 2 : 5));
    const { rps: tput, perRound, cpuPerRequest, mainCpuPerRequest } = await throughput(targets, 8, quick ? 1 : 2, rounds, pids);
    const lagAtLoad = await sinkStats();
    process.stderr.write('streams (time to first byte)…\n');
    await sequential(streamTargets, STREAM, 50, 1);
    const streams = await sequential(streamTargets, STREAM, quick ? 50 : 100, quick ? 4 : 8);

    const p50 = (name: string) => percentile(lat.get(name)!.total, 50);
    const p99 = (name: string) => percentile(lat.get(name)!.total, 99);
    const ttfb50 = (name: string) => percentile(streams.get(name)!.ttfb, 50);
    const ttfb99 = (name: string) => percentile(streams.get(name)!.ttfb, 99);
    const rps = (name: string) => tput.get(name)!;
    const f = (x: number, d = 3) => x.toFixed(d);
    const cpu = (name: string) => (cpuPerRequest.get(name) === undefined ? '—' : f(cpuPerRequest.get(name)! * 1000, 0));
    const row = (label: string, name: string) => [
      label,
      f(p50(name)),
      f(p99(name)),
      name === 'direct' ? '—' : `+${f(p50(name) - p50('direct'))}`,
      f(rps(name), 0),
      f(rps(name) / rps('direct'), 2),
      name === 'direct' ? '—' : f(rps(name) / rps('bare'), 2),
      cpu(name),
      streams.has(name) ? f(ttfb50(name)) : 'n/a',
      streams.has(name) && name !== 'direct' ? `+${f(ttfb50(name) - ttfb50('direct'))}` : name === 'direct' ? '—' : 'n/a',
    ];
    const rows = [row('direct', 'direct'), row('bare pass-through', 'bare'), row('Custody gateway', 'gateway')];
    if (floor) rows.splice(2, 0, row('raw-socket floor (not a proxy)', 'floor'));
    if (evidence) rows.push(row(`Custody gateway, ${(arg('--evidence-parts') ?? 'sink,archive').replace(',', ' + ')} on`, 'evidence'));
    if (baseline) rows.push(row(`gateway at ${baselineDir}`, 'baseline'));
    if (portkey) rows.push(row('@portkey-ai/gateway 1.15.2', 'portkey'));
    const header = ['target', 'p50 ms (1 conn)', 'p99 ms', 'added p50 ms', 'req/s (8 conns)', '× direct', '× bare', 'proxy CPU µs/req', 'stream TTFB p50 ms', 'added TTFB ms'];
    const table = [header, header.map(() => '---'), ...rows].map((r) => `| ${r.join(' | ')} |`).join('\n');
    const added = p50('gateway') - p50('direct');
    const addedTtfb = ttfb50('gateway') - ttfb50('direct');
    const ratio = rps('gateway') / rps('bare');
    console.log(`\nHTTP proxy overhead — ${size}-byte JSON responses (POST /chat/completions); ${streams.get('direct')!.total.length} streamed chat completions per target; gateway masking: ${gateway.info['masking']}\n`);
    console.log(table);
    console.log(`\nstream TTFB p99 ms: direct ${f(ttfb99('direct'))}, bare ${f(ttfb99('bare'))}, gateway ${f(ttfb99('gateway'))}${portkey ? '; portkey: streaming fails on Node 20 (TypeError: immutable), not measured' : ''}`);
    const split = (name: string) => {
      const all = cpuPerRequest.get(name);
      const main = mainCpuPerRequest.get(name);
      return all === undefined || main === undefined ? undefined : `${name} ${f(main * 1000, 0)} + ${f((all - main) * 1000, 0)}`;
    };
    console.log(`\nproxy CPU µs/req, event loop (main thread) + other threads: ${Object.keys(pids).map(split).filter(Boolean).join(', ')}`);
    if (evidence && lagAtLoad) {
      type Health = { audit: { sinks: { backlog: number }[]; archive: { archivedThrough: number; behind: number; lastSegment: { index: number } | null; failures: number } | null } };
      const h = (await (await fetch(`${evidence.info['control']!}/api/health`)).json()) as Health;
      const ratioEvidence = rps('evidence') / rps('gateway');
      // Each round runs the two back to back (gateway then evidence, or the reverse): their ratio
      // within a round is the least disturbed by load that comes and goes on a shared machine.
      const roundRatios = perRound.get('evidence')!.map((e, i) => e / perRound.get('gateway')![i]!);
      const median = [...roundRatios].sort((a, b) => a - b)[Math.floor(roundRatios.length / 2)]!;
      console.log(
        `\nevidence on / off: throughput ${f(ratioEvidence, 3)} (≥ 0.95: ${ratioEvidence >= 0.95 ? 'met' : 'NOT met'}); per round ${roundRatios.map((r) => f(r, 2)).join(' ')}, median ${f(median, 3)}; sink lag during the throughput run (${lagAtLoad.events} events delivered): p50 ${lagAtLoad.p50 ?? '—'} ms, p99 ${lagAtLoad.p99 ?? '—'} ms, max ${lagAtLoad.max ?? '—'} ms; receivers' CPU ${lagAtLoad.cpuUsPerEvent === null ? '—' : f(lagAtLoad.cpuUsPerEvent, 1)} µs/event; sink backlog now ${h.audit.sinks[0]?.backlog ?? '—'} events; archive: ${h.audit.archive ? `${h.audit.archive.lastSegment?.index ?? 0} segments sealed, through seq ${h.audit.archive.archivedThrough}, ${h.audit.archive.behind} events behind, ${h.audit.archive.failures} failures` : 'off'}`,
      );
    }
    if (baseline) console.log(`\ngateway / baseline (${baselineDir}): throughput ${f(rps('gateway') / rps('baseline'), 3)}, CPU µs/req ${cpu('gateway')} vs ${cpu('baseline')}`);
    console.log(`\nbars: added p50 ${f(added)} ms (≤ 1 ms: ${added <= 1 ? 'met' : 'NOT met'}); throughput ${f(ratio, 2)} × bare (≥ 0.7: ${ratio >= 0.7 ? 'met' : 'NOT met'}); added TTFB ${f(addedTtfb)} ms (≤ 2 ms: ${addedTtfb <= 2 ? 'met' : 'NOT met'})`);
  } finally {
    cleanup();
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const run = role === 'upstream' ? runUpstream : role === 'gateway' ? runGateway : role === 'evidence-receivers' ? runEvidenceReceivers : main;
  run().catch((err: unknown) => {
    console.error(err instanceof Error ? err.stack : err);
    process.exit(1);
  });
}
