/**
 * `npm run bench -- journal-append` (`node --import tsx bench/journal-append.ts [--quick]`): how
 * long the gateway's thread spends in a journal append (journal.ts: one write(2) of a batch's
 * lines), the one store call left on the proxies' thread. Batches like the HTTP proxy's (a request
 * and a policy decision, about 1.3 KiB) are appended through the real store (chain places,
 * canonical JSON, the write), one at a time, timed one by one:
 *
 * - idle: nothing else writing to the disk;
 * - idle with `audit.fsync: batch`: each batch also fdatasync'ed (a second store beside the first);
 * - busy disk: a second process writing 1 MiB blocks and fsyncing after each, on the same file
 *   system, the whole time (what a backup or another service does to a shared disk);
 * - locked store: another process holds BEGIN EXCLUSIVE on custody.db, so nothing is folded and
 *   the journal grows (appends stop being taken after REFUSE_AFTER_BUSY_MS; only taken ones count).
 *
 * Prints p50, p99, p99.9 and max per phase, with the baseline (idle) beside each.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { AuditStore } from '../proxy/audit/store';
import type { AuditEventInput } from '../shared/events';

const quick = process.argv.includes('--quick');
const N = quick ? 3000 : 20_000;
const body = 'Summarise the quarterly figures for the board, in plain words. '.repeat(16);

function batch(i: number): AuditEventInput[] {
  return [
    { kind: 'http.request', session: `ses_${i % 64}`, actor: 'key:bench', connection: 'openai', payload: { method: 'POST', path: '/chat/completions', headers: { 'content-type': 'application/json' }, bytes: body.length, body: { model: 'gpt-4o', messages: [{ role: 'user', content: body }] } } },
    { kind: 'policy.decision', session: `ses_${i % 64}`, actor: 'key:bench', connection: 'openai', payload: { action: 'allow', rule: 'default' } },
  ];
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

function run(store: AuditStore, n: number): { taken: number[]; refused: number } {
  const taken: number[] = [];
  let refused = 0;
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    let ok = true;
    store.appendAsync(batch(i), (err) => (ok = err === null));
    const ms = performance.now() - t;
    if (ok) taken.push(ms);
    else refused++;
  }
  return { taken, refused };
}

function child(script: string): Promise<ChildProcess> {
  const proc = spawn(process.execPath, ['-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
  return new Promise((resolve) => proc.stdout!.once('data', () => resolve(proc)));
}

const dir = mkdtempSync(join(tmpdir(), 'custody-bench-journal-'));
try {
  const store = AuditStore.open(dir, { commitThread: true });
  run(store, 500); // warm-up
  const rows: [string, { taken: number[]; refused: number }][] = [];
  rows.push(['idle', run(store, N)]);
  const synced = AuditStore.open(join(dir, 'fsync'), { commitThread: true, fsync: 'batch' });
  run(synced, 200); // warm-up
  rows.push(['idle, audit.fsync: batch (fdatasync per batch)', run(synced, quick ? 1000 : 5000)]);
  synced.close();

  const writer = await child(`
    const fs = require('node:fs');
    const fd = fs.openSync(${JSON.stringify(join(dir, 'noise.bin'))}, 'w');
    const block = Buffer.alloc(1 << 20, 7);
    process.stdout.write('go\\n');
    let n = 0;
    for (;;) { fs.writeSync(fd, block); fs.fsyncSync(fd); if (++n % 256 === 0) fs.ftruncateSync(fd, 0); }`);
  rows.push(['busy disk (1 MiB write + fsync loop beside it)', run(store, N)]);
  writer.kill('SIGKILL');

  const lock = await child(`
    const Database = require('better-sqlite3');
    const db = new Database(${JSON.stringify(join(dir, 'custody.db'))}, { timeout: 10000 });
    db.exec('BEGIN EXCLUSIVE');
    process.stdout.write('locked\\n');
    setInterval(() => {}, 1000);`);
  rows.push(['locked store (BEGIN EXCLUSIVE in another process)', run(store, N)]);
  lock.kill('SIGKILL');
  await new Promise((r) => setTimeout(r, 500));
  store.close();

  const idle = rows[0]![1].taken;
  console.log(`journal append, ${N} batches of 2 events (~${Math.round(JSON.stringify(batch(0)).length / 100) / 10} KiB) per phase, through AuditStore.appendAsync`);
  console.log('| phase | appends taken | p50 µs | p99 µs | p99.9 µs | max ms | p99 × idle |');
  console.log('| --- | --- | --- | --- | --- | --- | --- |');
  for (const [name, r] of rows) {
    const t = r.taken;
    console.log(
      `| ${name} | ${t.length}${r.refused ? ` (${r.refused} refused)` : ''} | ${(pct(t, 50) * 1000).toFixed(0)} | ${(pct(t, 99) * 1000).toFixed(0)} | ${(pct(t, 99.9) * 1000).toFixed(0)} | ${Math.max(...t).toFixed(2)} | ${(pct(t, 99) / pct(idle, 99)).toFixed(2)} |`,
    );
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
