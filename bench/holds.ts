/**
 * Holds (docs/BENCHMARKS.md, "Holds"): how fast an approver hears about a held request, and what
 * 1,000 requests waiting at once cost.
 *
 *   gateway   Custody in its own process: an `openai` connection to the LLM stand-in, a hold rule
 *             on prompts containing HOLD-ME (approvers: ops), recording on. The approver is signed
 *             in on the control-plane WebSocket with a Bearer API key.
 *   bare      the runtime's limit, also in its own process: a Node HTTP server that, on each
 *             request, pushes one WebSocket message (ws package) to its listener — no auth, policy,
 *             recording or persistence.
 *
 * This process is the client (keep-alive http.Agent) and the approver (WebSocket). Latency is from
 * just before the request is written to the moment the approver's WebSocket message arrives, on the
 * same clock. Sequential holds are approved over REST one by one (so decision → answer is measured
 * too); then 1,000 requests are sent at once and held together, with the gateway's memory before,
 * during and after, and all of them approved at 16 decisions in flight.
 *
 *   node --import tsx bench/holds.ts [--quick]
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { Agent, createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import WebSocket, { WebSocketServer } from 'ws';
import type { ServerMessage } from '../shared/messages';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const args = process.argv.slice(2);
const role = args.includes('--role') ? args[args.indexOf('--role') + 1] : undefined;
const arg = (name: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);

// ---------------------------------------------------------------------------------------------
// Child roles

function memory(): { rss: number; heapUsed: number } {
  (globalThis as { gc?: () => void }).gc?.();
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed };
}

/** Answers `mem` lines on stdin with the process's memory, one JSON line each. */
function answerMemoryQueries(): void {
  createInterface({ input: process.stdin }).on('line', (line) => {
    if (line.trim() === 'mem') process.stdout.write(`${JSON.stringify({ mem: memory() })}\n`);
  });
}

async function runGateway(): Promise<void> {
  const { Config } = await import('../shared/config');
  const { Gateway } = await import('../proxy/gateway');
  const { silentLogger } = await import('../proxy/log');
  const dataDir = mkdtempSync(join(tmpdir(), 'custody-bench-holds-'));
  const gw = await Gateway.start({
    config: Config.parse({
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'llm', kind: 'openai', upstream: `${arg('--upstream')}/v1`, secret: { value: 'sk-bench' } }],
      policies: [{ name: 'hold-me', match: { connections: ['llm'], content: 'HOLD-ME' }, action: 'hold', hold: { approvers: ['ops'], timeout: '10m' } }],
    }),
    dataDir,
    log: silentLogger,
  });
  const requester = gw.services.keys.create({ name: 'agent', groups: ['engineering'] }).key;
  const approver = gw.services.keys.create({ name: 'approver', groups: ['ops'] }).key;
  process.stdout.write(`${JSON.stringify({ http: `http://${gw.address('http')}/llm`, control: `http://${gw.address('control')}`, requester, approver })}\n`);
  answerMemoryQueries();
  process.on('SIGTERM', () => {
    void gw.stop().then(() => {
      rmSync(dataDir, { recursive: true, force: true });
      process.exit(0);
    });
  });
}

async function runBare(): Promise<void> {
  const wss = new WebSocketServer({ noServer: true });
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const msg = JSON.stringify({ type: 'hold.created', at: Date.now() });
      for (const c of wss.clients) c.send(msg);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  server.on('upgrade', (req, socket, head) => wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req)));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  process.stdout.write(`${JSON.stringify({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` })}\n`);
  answerMemoryQueries();
}

// ---------------------------------------------------------------------------------------------
// Client and approver

interface Child {
  proc: ChildProcess;
  info: Record<string, string>;
  lines: AsyncIterator<string>;
}

async function startChild(childArgs: string[]): Promise<Child> {
  const proc = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', join(HERE, 'holds.ts'), ...childArgs], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
  const first = await Promise.race([
    lines.next(),
    new Promise<never>((_, reject) => proc.once('exit', (code) => reject(new Error(`child ${childArgs.join(' ')} exited with ${code}`)))),
  ]);
  return { proc, info: JSON.parse(first.value as string) as Record<string, string>, lines };
}

async function memoryOf(c: Child): Promise<{ rss: number; heapUsed: number }> {
  c.proc.stdin!.write('mem\n');
  const line = await c.lines.next();
  return (JSON.parse(line.value as string) as { mem: { rss: number; heapUsed: number } }).mem;
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

const fmt = (ms: number) => `${ms.toFixed(2)} ms`;
const mib = (b: number) => `${(b / 1048576).toFixed(1)} MiB`;

/** Sends one chat completion; resolves with the status when the answer arrives. */
function send(agent: Agent, url: string, key: string, content: string): Promise<number> {
  const body = JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content }] });
  return new Promise((resolve, reject) => {
    const req = request(`${url}/chat/completions`, { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), authorization: `Bearer ${key}` } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A WebSocket listener that resolves waiters for `hold.created` by a tag in the summary. */
class Approver {
  private waiting = new Map<string, (v: { at: number; id: string }) => void>();
  private ws!: WebSocket;

  static async connect(url: string, headers: Record<string, string>): Promise<Approver> {
    const a = new Approver();
    a.ws = new WebSocket(url, { headers });
    a.ws.on('message', (data) => {
      const at = performance.now();
      const m = JSON.parse(String(data)) as ServerMessage | { type: 'hold.created'; at: number; tag?: string };
      if (m.type !== 'hold.created') return;
      const tag = 'hold' in m ? (/HOLD-ME ([\w-]+)/.exec(m.hold.summary)?.[1] ?? '') : 'bare';
      const id = 'hold' in m ? m.hold.id : '';
      const w = a.waiting.get(tag);
      if (w) {
        a.waiting.delete(tag);
        w({ at, id });
      }
    });
    await new Promise<void>((resolve, reject) => {
      a.ws.once('open', () => resolve());
      a.ws.once('error', reject);
    });
    return a;
  }

  /** Resolves with the arrival times of the next `n` messages (the bare listener's burst). */
  expectMany(n: number): Promise<number[]> {
    const times: number[] = [];
    return new Promise((resolve) => {
      const onMessage = () => {
        times.push(performance.now());
        if (times.length === n) {
          this.ws.off('message', onMessage);
          resolve(times);
        }
      };
      this.ws.on('message', onMessage);
    });
  }

  expect(tag: string): Promise<{ at: number; id: string }> {
    return new Promise((resolve) => this.waiting.set(tag, resolve));
  }

  close(): void {
    this.ws.close();
  }
}

async function decide(control: string, key: string, id: string): Promise<number> {
  const res = await fetch(`${control}/api/holds/${id}/decision`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ decision: 'approve', reason: 'bench' }),
  });
  await res.arrayBuffer();
  return res.status;
}

async function main(): Promise<void> {
  setTimeout(() => {
    console.error('holds benchmark: no progress for 3 minutes, giving up');
    process.exit(1);
  }, 180_000).unref();
  const quick = args.includes('--quick');
  const sequentialN = quick ? 100 : 400;
  const concurrentN = 1000;
  const { startLlmUpstream } = await import('../test/support/llm-upstream');
  const upstream = await startLlmUpstream({ record: false, reply: 'ok' });
  const children: ChildProcess[] = [];
  process.on('exit', () => children.forEach((p) => p.kill('SIGTERM')));
  const gateway = await startChild(['--role', 'gateway', '--upstream', upstream.url]);
  children.push(gateway.proc);
  const bare = await startChild(['--role', 'bare']);
  children.push(bare.proc);
  const { http, control, requester, approver } = gateway.info as Record<string, string>;

  const approverWs = await Approver.connect(`${control!.replace('http', 'ws')}/api/events`, { authorization: `Bearer ${approver}` });
  const bareWs = await Approver.connect(`${bare.info['url']!.replace('http', 'ws')}/`, {});
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });

  // Warm up both paths (JIT, SQLite statements, sockets).
  for (let i = 0; i < 20; i++) {
    const seen = approverWs.expect(`w${i}`);
    const answered = send(agent, http!, requester!, `HOLD-ME w${i}`);
    await decide(control!, approver!, (await seen).id);
    await answered;
    const b = bareWs.expect('bare');
    await send(agent, bare.info['url']!, '', 'x');
    await b;
  }

  // 1. Sequential: request → approver's WebSocket message, and decision → answer; bare alternated.
  const notify: number[] = [];
  const release: number[] = [];
  const bareNotify: number[] = [];
  for (let i = 0; i < sequentialN; i++) {
    const seen = approverWs.expect(`s${i}`);
    const t0 = performance.now();
    const answered = send(agent, http!, requester!, `HOLD-ME s${i}`);
    const { at, id } = await seen;
    notify.push(at - t0);
    const t1 = performance.now();
    await decide(control!, approver!, id);
    const status = await answered;
    if (status !== 200) throw new Error(`approved request answered ${status}`);
    release.push(performance.now() - t1);

    const b = bareWs.expect('bare');
    const tb = performance.now();
    void send(agent, bare.info['url']!, '', 'x');
    bareNotify.push((await b).at - tb);
  }

  // 2. 1,000 at once: the bare listener first, then the gateway.
  const wide = new Agent({ keepAlive: true, maxSockets: concurrentN + 10 });
  const tbb = performance.now();
  const bareBurst = bareWs.expectMany(concurrentN);
  await Promise.all(Array.from({ length: concurrentN }, () => send(wide, bare.info['url']!, '', 'x')));
  const bareWide = (await bareBurst).map((at) => at - tbb);
  const memBefore = await memoryOf(gateway);
  const tc = performance.now();
  const seenAll = Array.from({ length: concurrentN }, (_, i) => approverWs.expect(`c${i}`));
  const answers = Array.from({ length: concurrentN }, (_, i) => send(wide, http!, requester!, `HOLD-ME c${i}`));
  const notified = await Promise.all(seenAll);
  const allHeld = performance.now() - tc;
  const wideNotify = notified.map((n) => n.at - tc);
  const memHeld = await memoryOf(gateway);
  const health = (await (await fetch(`${control}/api/holds?state=pending&limit=1`, { headers: { authorization: `Bearer ${approver}` } })).json()) as { total: number };
  const td = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < notified.length) {
        const n = notified[next++]!;
        const s = await decide(control!, approver!, n.id);
        if (s !== 200) throw new Error(`decision answered ${s}`);
      }
    }),
  );
  const statuses = await Promise.all(answers);
  const allReleased = performance.now() - td;
  if (statuses.some((s) => s !== 200)) throw new Error(`${statuses.filter((s) => s !== 200).length} approved requests failed`);
  const memAfter = await memoryOf(gateway);

  const p = (xs: number[]) => `p50 ${fmt(percentile(xs, 50))}  p99 ${fmt(percentile(xs, 99))}  max ${fmt(Math.max(...xs))}`;
  console.log(`holds: ${sequentialN} sequential holds, then ${concurrentN} concurrent (${quick ? 'quick' : 'full'} run)`);
  console.log(`  request → approver WebSocket message   gateway ${p(notify)}`);
  console.log(`  request → listener WebSocket message   bare    ${p(bareNotify)}`);
  console.log(`  ratio gateway/bare                     p50 ${(percentile(notify, 50) / percentile(bareNotify, 50)).toFixed(2)}×  p99 ${(percentile(notify, 99) / percentile(bareNotify, 99)).toFixed(2)}×`);
  console.log(`  bar: p99 ≤ 50 ms                       ${percentile(notify, 99) <= 50 ? 'met' : 'NOT met'}`);
  console.log(`  decision (REST) → client's answer      ${p(release)}`);
  console.log(`  ${concurrentN} at once: all held and pushed in ${fmt(allHeld)}; per hold ${p(wideNotify)}`);
  console.log(`  ${concurrentN} at once, bare listener: all pushed in ${fmt(Math.max(...bareWide))}; per request ${p(bareWide)}  (gateway/bare p50 ${(percentile(wideNotify, 50) / percentile(bareWide, 50)).toFixed(1)}×)`);
  console.log(`  pending holds listed by the API        ${health.total}`);
  console.log(`  gateway memory (after GC)              before ${mib(memBefore.rss)} rss / ${mib(memBefore.heapUsed)} heap; ${concurrentN} held ${mib(memHeld.rss)} / ${mib(memHeld.heapUsed)} (+${((memHeld.heapUsed - memBefore.heapUsed) / concurrentN / 1024).toFixed(1)} KiB heap per hold); after ${mib(memAfter.rss)} / ${mib(memAfter.heapUsed)}`);
  console.log(`  approving all ${concurrentN} (16 decisions in flight) until every client had its answer: ${fmt(allReleased)} (${(concurrentN / (allReleased / 1000)).toFixed(0)} holds/s)`);

  approverWs.close();
  bareWs.close();
  agent.destroy();
  wide.destroy();
  gateway.proc.kill('SIGTERM');
  bare.proc.kill('SIGTERM');
  await upstream.close();
  await new Promise((r) => gateway.proc.once('exit', r));
}

if (role === 'gateway') void runGateway();
else if (role === 'bare') void runBare();
else
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
