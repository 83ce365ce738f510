/**
 * `npm run bench -- sink-cost` (`node --import tsx bench/sink-cost.ts [--events N] [--rate R]`): what a SIEM
 * sink costs per event on its own thread, measured by that thread's CPU time (from
 * /proc/self/task, the thread found by its lowered nice value), so the figure depends little on
 * what else the machine runs. Events like the HTTP proxy's (a chat completion's request and its 1 KiB
 * response) go through the real store, with its commit thread, to a signed webhook sink whose
 * receiver runs in another process. Two phases in one run:
 *
 * - live: the sink delivers while the events are appended, at a gateway's pace (`--rate`), in the
 *   batches that pace makes;
 * - catch-up: the receiver answers 503 while the events are appended, then comes back, and the
 *   sink delivers the backlog in full batches, as after an outage.
 *
 * Prints the sink thread's CPU µs per event in each phase, and the whole process's.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { AuditStore } from '../proxy/audit/store';
import { startSinks } from '../proxy/audit/sinks';
import { Config } from '../shared/config';
import type { AuditEventInput } from '../shared/events';

const arg = (name: string) => (process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined);
const PAIRS = Number(arg('--events') ?? 40_000) / 2;
const RATE = Number(arg('--rate') ?? 5000);
const TICK_US = 1e6 / 100; // USER_HZ: /proc reports CPU time in ticks of 10 ms
const content = 'The quarterly figures show steady growth in every region, with costs held flat. '.repeat(12).slice(0, 900);

function pair(i: number): AuditEventInput[] {
  const session = `ses_bench${i % 8}`;
  return [
    { kind: 'http.request', session, actor: 'key:bench', connection: 'openai', payload: { method: 'POST', path: '/chat/completions', model: 'gpt-4o', body: { model: 'gpt-4o', messages: [{ role: 'user', content: `Say something short (${i}).` }] }, headers: { 'content-type': 'application/json' } } },
    {
      kind: 'http.response',
      session,
      actor: 'key:bench',
      connection: 'openai',
      payload: {
        status: 200,
        duration: 1.5,
        bytes: 1400,
        headers: { 'content-type': 'application/json', 'x-request-id': `req_${i}` },
        body: { id: `chatcmpl-${i}`, object: 'chat.completion', model: 'gpt-4o', choices: [{ index: 0, finish_reason: 'stop', message: { role: 'assistant', content } }], usage: { prompt_tokens: 13, completion_tokens: 225, total_tokens: 238 } },
      },
    },
  ];
}

/** CPU ticks of each thread of this process at a lowered priority (the sink thread), by thread id. */
function lowPriorityTicks(): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    const f = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ');
    if (Number(f[16]) >= 10) out.set(tid, Number(f[11]) + Number(f[12]));
  }
  return out;
}

async function receiver(): Promise<{ proc: ChildProcess; url: string; count(): Promise<[number, number]>; set(mode: 'down' | 'up'): Promise<void> }> {
  const proc = spawn(
    process.execPath,
    [
      '-e',
      `let n = 0, batches = 0, down = false; require('node:http').createServer((req, res) => { const c = []; req.on('data', (d) => c.push(d)); req.on('end', () => {
         if (req.method === 'GET') return res.end(JSON.stringify([n, batches]));
         if (req.url === '/down' || req.url === '/up') { down = req.url === '/down'; return res.end(); }
         if (down) return res.writeHead(503).end();
         batches++;
         n += (Buffer.concat(c).toString('latin1').match(/"time":\\d+,"time_dt"/g) ?? []).length;
         res.writeHead(204).end(); }); }).listen(0, '127.0.0.1', function () { console.log(this.address().port); });`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const port = await new Promise<string>((resolve) => createInterface({ input: proc.stdout! }).once('line', resolve));
  const url = `http://127.0.0.1:${port}`;
  return { proc, url, count: async () => (await (await fetch(url)).json()) as [number, number], set: async (mode) => void (await fetch(`${url}/${mode}`, { method: 'POST' })).text() };
}

async function phase(name: 'live' | 'catch-up'): Promise<{ sinkUs: number; processUs: number; events: number; batches: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'custody-bench-sink-'));
  const rx = await receiver();
  const store = AuditStore.open(dir, { commitThread: true });
  const config = Config.parse({ audit: { origin: 'custody.bench/sink', sinks: [{ name: 'hook', kind: 'http', url: `${rx.url}/hook`, secret: 'bench-hmac-secret' }] } });
  // At RATE events a second, as a busy gateway records them (the HTTP benchmark's gateway records
  // about 7,000 a second on two cores), in batches of one event-loop turn every 5 ms.
  const append = async () => {
    const start = performance.now();
    for (let i = 0; i < PAIRS; ) {
      const due = Math.min(PAIRS, Math.floor(((performance.now() - start) / 1000) * (RATE / 2)) + 1);
      for (; i < due; i++) store.appendMany(pair(i));
      await new Promise((r) => setTimeout(r, 5));
    }
    store.settle();
  };
  try {
    // One event delivered first, so the thread has loaded its code and opened its connection
    // before it is measured.
    store.appendMany(pair(-1).slice(0, 1));
    const sinks = startSinks(store, config, 'custody.bench/sink', 'bench');
    while ((await rx.count())[0] < 1) await new Promise((r) => setTimeout(r, 20));
    if (name === 'catch-up') {
      // The receiver is down while the events are appended: the sink backs off, then delivers the backlog.
      await rx.set('down');
      await append();
      await rx.set('up');
    }
    const [, batches0] = await rx.count();
    const ticks0 = lowPriorityTicks();
    const cpu0 = process.cpuUsage();
    if (name === 'live') await append();
    const events = store.head().size - 1;
    let got: [number, number];
    while ((got = await rx.count())[0] < events + 1) await new Promise((r) => setTimeout(r, 50));
    const ticks1 = lowPriorityTicks();
    const cpu = process.cpuUsage(cpu0);
    sinks.stop();
    let ticks = 0;
    for (const [tid, t] of ticks1) ticks += t - (ticks0.get(tid) ?? 0);
    return { sinkUs: (ticks * TICK_US) / events, processUs: (cpu.user + cpu.system) / events, events, batches: got[1] - batches0 };
  } finally {
    store.close();
    rx.proc.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

const live = await phase('live');
const catchUp = await phase('catch-up');
console.log(`SIEM sink cost, ${live.events} events (chat completions' requests and 1 KiB responses) appended at ${RATE}/s, signed webhook`);
console.log('| phase | sink thread CPU µs/event | whole process CPU µs/event | batches |');
console.log('|---|---|---|---|');
console.log(`| live | ${live.sinkUs.toFixed(1)} | ${live.processUs.toFixed(1)} (appending included) | ${live.batches} |`);
console.log(`| catch-up after an outage | ${catchUp.sinkUs.toFixed(1)} | ${catchUp.processUs.toFixed(1)} | ${catchUp.batches} |`);
console.log(`live / catch-up (sink thread): ${(live.sinkUs / catchUp.sinkUs).toFixed(2)}`);
