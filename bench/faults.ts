/**
 * `npm run bench -- faults` (`node --import tsx bench/faults.ts [--rounds N] [--cycles N]`): the
 * fault-injection runs too long for `npm test`, each checked as the tests check them (what the
 * clients saw acknowledged, against the database and the log; then `custody verify`):
 *
 * - kill -9: `custody serve` killed at a random moment under HTTP and PostgreSQL load together,
 *   `--rounds` times (default 10) over one data dir;
 * - full disk: a 64 MiB tmpfs filled and freed `--cycles` times (default 5) under the same load:
 *   how soon refusals start, how fast they are, how soon exchanges go through once space returns;
 * - frozen, then read-only: the data dir's ext4 frozen for 3 s (fsfreeze, as snapshot backups
 *   do), then turned read-only by the kernel (errors=remount-ro): latency of answers, refusals and
 *   health, and event-loop delay, beside the same figures before the faults.
 * Root only for the last two (mount); they are skipped with the reason elsewhere.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { verifyStore } from '../proxy/audit/verify/store';
import { custody, startServe, writeConfig } from '../test/support/custody-process';
import { gatewayUnderLoad, lostFromLog } from '../test/support/fault-gateway';
import { adminQuery, describeFailures, httpChatLoad, newOutcome, pgInsertLoad } from '../test/support/fault-load';
import { failingExt4, smallTmpfs } from '../test/support/fault-mounts';
import { startLlmUpstream } from '../test/support/llm-upstream';
import { freePort } from '../test/support/ports';
import { UPSTREAM, until } from '../test/integration/pg-harness';

const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
};
const ROUNDS = arg('rounds', 10);
const CYCLES = arg('cycles', 5);
const pct = (xs: number[], p: number) => {
  if (!xs.length) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! * 10) / 10;
};
const loopMs = (h: ReturnType<typeof monitorEventLoopDelay>) => `${Math.round(h.percentile(99) / 1e5) / 10} / ${Math.round(h.max / 1e5) / 10}`;
let failed = false;

function lossLine(l: Awaited<ReturnType<typeof lostFromLog>>): string {
  const lost = l.pgNotInDatabase.length + l.pgWithoutResult.length + l.httpWithoutRequest.length + Math.max(0, l.wholeAcknowledged - l.wholeLogged);
  if (lost) failed = true;
  return `lost: ${l.pgNotInDatabase.length} INSERTs not in the database, ${l.pgWithoutResult.length} without pg.result, ${l.httpWithoutRequest.length} HTTP requests, ${Math.max(0, l.wholeAcknowledged - l.wholeLogged)} whole answers; streams ${l.streamsAcknowledged} acknowledged, ${l.streamsLogged} logged`;
}

const upstream = await startLlmUpstream({ openaiKey: 'sk-disk-faults', record: false });
const table = `custody_benchfaults_${randomBytes(4).toString('hex')}`;
await adminQuery(`CREATE TABLE ${table} (id text PRIMARY KEY)`);
const loadavg = () => spawnSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).stdout.split(' ').slice(0, 3).join(' ');
console.log(`load average at start: ${loadavg()}`);

try {
  // kill -9 under HTTP and PostgreSQL load.
  {
    const dataDir = mkdtempSync(join(tmpdir(), 'custody-benchkill-'));
    const port = await freePort();
    const file = writeConfig(dataDir, {
      dataDir,
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [
        { name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: 'sk-disk-faults' } },
        { name: 'warehouse', kind: 'postgres', upstream: UPSTREAM, listen: `127.0.0.1:${port}` },
      ],
    });
    const httpOut = newOutcome();
    const pgOut = newOutcome();
    let key: string | undefined;
    const started = performance.now();
    for (let round = 0; round < ROUNDS; round++) {
      const gw = await startServe(file);
      key ??= gw.key;
      let stop = false;
      const loads = [
        httpChatLoad({ url: () => `http://${gw.http}/openai/chat/completions`, key: key!, prefix: `kill${round}h`, workers: 3, stop: () => stop, out: httpOut }),
        pgInsertLoad({ port, key: key!, table, prefix: `kill${round}p`, workers: 3, stop: () => stop, out: pgOut }),
      ].map((p, i) => p.then(() => i));
      const before = httpOut.acknowledged.length + pgOut.acknowledged.length;
      await until('load', () => (httpOut.acknowledged.length + pgOut.acknowledged.length >= before + 10 ? true : undefined), 60_000);
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 1000)));
      await gw.kill();
      stop = true;
      await Promise.all(loads);
    }
    const last = await startServe(file);
    await last.stop();
    const l = await lostFromLog(dataDir, table, 'kill\\d+', httpOut, pgOut);
    const v = custody('verify', dataDir);
    if (v.status !== 0) failed = true;
    console.log(`\nkill -9 ×${ROUNDS} (HTTP and PostgreSQL load, 3 + 3 clients): ${Math.round((performance.now() - started) / 1000)} s`);
    console.log(`  acknowledged: ${httpOut.acknowledged.length} HTTP exchanges, ${pgOut.acknowledged.length} INSERTs`);
    console.log(`  ${lossLine(l)}`);
    console.log(`  custody verify: ${v.status === 0 ? 'passed' : `FAILED ${v.stderr}`}`);
    rmSync(dataDir, { recursive: true, force: true });
  }

  // A full disk, filled and freed.
  const disk = smallTmpfs(64);
  if ('skip' in disk) console.log(`\nfull disk: skipped (${disk.skip})`);
  else {
    try {
      const run = await gatewayUnderLoad(disk.dir, upstream, table, 'full');
      const rows: string[] = [];
      for (let cycle = 0; cycle < CYCLES; cycle++) {
        const acked = () => run.httpOut.acknowledged.length + run.pgOut.acknowledged.length;
        const a0 = acked();
        await until('load', () => (acked() >= a0 + 10 ? true : undefined), 60_000);
        run.phase.name = `full${cycle}`;
        const filledAt = performance.now();
        disk.fill();
        await until('a refusal', () => run.http.find((s) => s.phase === `full${cycle}` && s.status === 503), 30_000);
        const toRefusal = performance.now() - filledAt;
        await new Promise((r) => setTimeout(r, 1500));
        const degraded = run.health.some((s) => s.phase === `full${cycle}` && s.h.status === 'degraded');
        disk.free();
        run.phase.name = `freed${cycle}`;
        const freedAt = performance.now();
        const a1 = acked();
        await until('recovery', () => (acked() > a1 ? true : undefined), 30_000);
        const toRecovery = performance.now() - freedAt;
        const refusals = run.http.filter((s) => s.phase === `full${cycle}` && s.status === 503).map((s) => s.ms);
        const resets = run.http.filter((s) => s.phase === `full${cycle}` && s.status === 'error').length;
        const others = run.http.filter((s) => s.phase === `full${cycle}` && s.status !== 503 && s.status !== 200 && s.status !== 'error').length;
        if (!degraded || others) failed = true;
        rows.push(`| ${cycle + 1} | ${Math.round(toRefusal)} | ${refusals.length} | ${pct(refusals, 50)} / ${pct(refusals, 99)} | ${resets} | ${others} | ${degraded ? 'yes' : 'NO'} | ${Math.round(toRecovery)} |`);
      }
      await run.stop();
      await run.gw.stop();
      const l = await lostFromLog(disk.dir, table, 'full', run.httpOut, run.pgOut);
      const v = verifyStore(disk.dir);
      if (!v.ok) failed = true;
      console.log(`\nfull disk (64 MiB tmpfs, filled and freed ${CYCLES} times; 2 HTTP + 2 PostgreSQL clients, health polled every 25 ms):`);
      console.log('| cycle | first 503 after filling, ms | 503s | 503 latency p50 / p99 ms | resets | other failures | health degraded | first acknowledgement after freeing, ms |');
      console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
      for (const r of rows) console.log(r);
      console.log(`  acknowledged: ${run.httpOut.acknowledged.length} HTTP exchanges, ${run.pgOut.acknowledged.length} INSERTs; PostgreSQL refusals: ${describeFailures(run.pgOut)}`);
      console.log(`  ${lossLine(l)}`);
      console.log(`  verify: ${v.ok ? 'passed' : `FAILED ${JSON.stringify(v.failure)}`}`);
    } finally {
      disk.unmount();
    }
  }

  // A failing disk that turns read-only.
  const ro = failingExt4(64);
  if ('skip' in ro) console.log(`\nread-only: skipped (${ro.skip})`);
  else {
    try {
      const run = await gatewayUnderLoad(ro.dir, upstream, table, 'ro');
      const delay = { before: monitorEventLoopDelay({ resolution: 5 }), frozen: monitorEventLoopDelay({ resolution: 5 }), ro: monitorEventLoopDelay({ resolution: 5 }) };
      delay.before.enable();
      await new Promise((r) => setTimeout(r, 3000));
      delay.before.disable();
      // Frozen for 3 s (fsfreeze, as a snapshot backup does), measured for 3.5 s.
      run.phase.name = 'frozen';
      delay.frozen.enable();
      ro.freeze(3000);
      await new Promise((r) => setTimeout(r, 3500));
      delay.frozen.disable();
      run.phase.name = 'thawed';
      await new Promise((r) => setTimeout(r, 2000));
      const synced = { http: run.httpOut.acknowledged.length, pg: run.pgOut.acknowledged.length };
      run.gw.services.store.settle();
      spawnSync('sync', ['-f', ro.dir]);
      run.phase.name = 'ro';
      delay.ro.enable();
      ro.fail();
      await new Promise((r) => setTimeout(r, 3000));
      delay.ro.disable();
      await run.stop();
      await run.gw.stop().catch(() => {});
      const http = (p: string, ok: (s: number | 'error') => boolean) => run.http.filter((s) => s.phase === p && ok(s.status)).map((s) => s.ms);
      const health = (p: string) => run.health.filter((s) => s.phase === p).map((s) => s.ms);
      const cause = run.health.filter((s) => s.phase === 'ro' && s.h.status === 'degraded').at(-1)?.h.store?.cause;
      console.log(`\nfrozen, then read-only (ext4 errors=remount-ro; fsfreeze for 3 s, then trigger_fs_error; 2 HTTP + 2 PostgreSQL clients, health every 25 ms; 3 s before, 3.5 s from the freeze, 3 s read-only):`);
      console.log('| phase | event-loop delay p99 / max ms | HTTP answers: n, p50 / p99 ms | HTTP 503s: n, p50 / p99 ms | health: n, p99 / max ms |');
      console.log('| --- | --- | --- | --- | --- |');
      for (const p of ['before', 'frozen', 'ro'] as const) {
        const ok = http(p, (s) => s === 200);
        const refused = http(p, (s) => s === 503);
        const h = health(p);
        console.log(`| ${{ before: 'before', frozen: 'frozen 3 s (fsfreeze)', ro: 'read-only' }[p]} | ${loopMs(delay[p])} | ${ok.length}, ${pct(ok, 50)} / ${pct(ok, 99)} | ${refused.length}, ${pct(refused, 50)} / ${pct(refused, 99)} | ${h.length}, ${pct(h, 99)} / ${pct(h, 100)} |`);
      }
      console.log(`  health's cause: ${cause ?? 'NONE'}`);
      if (!cause) failed = true;
      ro.repair();
      const l = await lostFromLog(ro.dir, table, 'ro', { ...run.httpOut, acknowledged: run.httpOut.acknowledged.slice(0, synced.http) }, { ...run.pgOut, acknowledged: run.pgOut.acknowledged.slice(0, synced.pg) });
      const v = verifyStore(ro.dir);
      if (!v.ok) failed = true;
      console.log(`  acknowledged before the sync: ${synced.http} HTTP, ${synced.pg} INSERTs; ${lossLine(l)}; after it: ${run.httpOut.acknowledged.length - synced.http} HTTP, ${run.pgOut.acknowledged.length - synced.pg} INSERTs (not asserted)`);
      console.log(`  verify: ${v.ok ? 'passed' : `FAILED ${JSON.stringify(v.failure)}`}`);
    } finally {
      ro.unmount();
    }
  }
} finally {
  await adminQuery(`DROP TABLE IF EXISTS ${table}`);
  await upstream.close();
  console.log(`\nload average at end: ${loadavg()}`);
}
process.exit(failed ? 1 : 0);
