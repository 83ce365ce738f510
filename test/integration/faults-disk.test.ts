// Fault injection on the disk under the data dir, with HTTP and PostgreSQL load flowing:
//  - a full disk (a small tmpfs, filled by another writer): the gateway fails closed (503, and a
//    PostgreSQL error, saying why), health says `degraded` with the cause, and it recovers once
//    space returns;
//  - a disk that fails and turns read-only (ext4 on a loop device, errors=remount-ro, with the
//    kernel's trigger_fs_error): what needs the store fails fast with the reason, what does not
//    (health) keeps answering at once, the event loop does not stall (monitorEventLoopDelay);
//  - a disk frozen for 2 s (fsfreeze): a todo, the gateway stops for the freeze today.
// In both, every exchange a client saw complete is in the log afterwards and the log verifies.
// Root only (mount); skipped with the reason elsewhere.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { after, before, describe, it } from 'node:test';
import { verifyStore } from '../../proxy/audit/verify/store';
import { adminQuery, describeFailures, type LoadOutcome } from '../support/fault-load';
import { gatewayUnderLoad, lostFromLog } from '../support/fault-gateway';
import { failingExt4, smallTmpfs } from '../support/fault-mounts';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { until } from './pg-harness';

/** Streams acknowledged and stream responses logged, per case (for the stream test). */
const streamGaps: { acknowledged: number; logged: number }[] = [];

/** Every acknowledged INSERT is in the database with its pg.result logged; every acknowledged HTTP exchange has its request and a response logged; the log verifies. */
async function assertNothingLost(dataDir: string, table: string, prefix: string, httpOut: LoadOutcome, pgOut: LoadOutcome): Promise<string> {
  const l = await lostFromLog(dataDir, table, prefix, httpOut, pgOut);
  assert.deepEqual(l.pgNotInDatabase, [], 'acknowledged INSERTs missing from the database');
  assert.deepEqual(l.pgWithoutResult, [], 'acknowledged INSERTs without their pg.result in the log');
  assert.deepEqual(l.httpWithoutRequest, [], 'acknowledged HTTP exchanges without their request in the log');
  assert.ok(l.wholeLogged >= l.wholeAcknowledged, `${l.wholeAcknowledged} whole HTTP answers acknowledged, ${l.wholeLogged} responses logged`);
  // A stream's response and events are journaled before their bytes go out: counted per case, and
  // checked by the stream test below.
  streamGaps.push({ acknowledged: l.streamsAcknowledged, logged: l.streamsLogged });
  const v = verifyStore(dataDir);
  assert.equal(v.ok, true, JSON.stringify(v.failure));
  return `${httpOut.acknowledged.length} HTTP exchanges (${l.streamsAcknowledged} streams, ${l.streamsLogged} stream responses logged) and ${pgOut.acknowledged.length} INSERTs acknowledged; no whole answer or INSERT missing from the log`;
}

/**
 * How much slower than before a fault a latency may be. The bar on an idle machine is 100 ms; this
 * process also hosts the clients, whose refused requests come back sooner so they do more work per
 * second, on 2 shared cores — a store that blocks the event loop costs seconds (the frozen case).
 */
const MARGIN_MS = 250;

const loopMs = (h: ReturnType<typeof monitorEventLoopDelay>) => ({ p99: Math.round(h.percentile(99) / 1e4) / 100, max: Math.round(h.max / 1e4) / 100 });
const max = (xs: number[]) => Math.round(Math.max(0, ...xs) * 10) / 10;

describe('the disk under the data dir', () => {
  let upstream: LlmUpstream;
  const table = `custody_disk_${randomBytes(4).toString('hex')}`;
  before(async () => {
    upstream = await startLlmUpstream({ openaiKey: 'sk-disk-faults', record: false });
    await adminQuery(`CREATE TABLE ${table} (id text PRIMARY KEY)`);
  });
  after(async () => {
    await upstream?.close();
    await adminQuery(`DROP TABLE IF EXISTS ${table}`);
  });

  it('full: fails closed with the reason, health degraded, recovers when space returns, loses nothing acknowledged', async (t) => {
    const disk = smallTmpfs(48);
    if ('skip' in disk) return t.skip(disk.skip);
    try {
      const run = await gatewayUnderLoad(disk.dir, upstream, table, 'full');
      try {
        await until('load before the disk fills', () => (run.httpOut.acknowledged.length >= 5 && run.pgOut.acknowledged.length >= 5 ? true : undefined), 30_000);
        run.phase.name = 'full';
        const filled = disk.fill();
        await until('a refusal while the disk is full', () => (run.http.some((s) => s.phase === 'full' && s.status === 503) ? true : undefined), 20_000);
        await new Promise((r) => setTimeout(r, 1000));
        const pgDuring = run.pgOut.failures.size;
        disk.free();
        run.phase.name = 'after';
        const freedAt = performance.now();
        const ackedBefore = run.httpOut.acknowledged.length + run.pgOut.acknowledged.length;
        await until('exchanges acknowledged again once space returned', () => (run.httpOut.acknowledged.length + run.pgOut.acknowledged.length >= ackedBefore + 10 ? true : undefined), 20_000);
        const recoveredMs = performance.now() - freedAt;
        await until('health ok again', () => (run.health.at(-1)?.h.status === 'ok' ? true : undefined), 20_000);
        await run.stop();

        const full = run.http.filter((s) => s.phase === 'full');
        const refusals = full.filter((s) => s.status === 503);
        for (const r of refusals) assert.match(r.body, /store_unavailable/);
        assert.ok(refusals.some((r) => /no space|ENOSPC|SQLITE_FULL|disk is full|full/i.test(r.body)), `a refusal says the disk is full: ${refusals[0]?.body}`);
        // A request journaled before the disk filled whose answer then could not be: the connection
        // is reset (the client must not take the outcome as known), never a 500 or an answer.
        assert.deepEqual(full.filter((s) => s.status !== 503 && s.status !== 200 && s.status !== 'error').map((s) => `${s.status} ${s.body.slice(0, 80)}`), [], 'no other failure while full');
        const resets = full.filter((s) => s.status === 'error').length;
        assert.ok(pgDuring > 0, `PostgreSQL clients were refused while the disk was full (${describeFailures(run.pgOut)})`);
        assert.match(describeFailures(run.pgOut), /audit|record|store/i, 'the PostgreSQL error says why');
        const degraded = run.health.find((s) => s.phase === 'full' && s.h.status === 'degraded');
        assert.ok(degraded, `health said degraded while the disk was full: ${JSON.stringify(run.health.filter((s) => s.phase === 'full').slice(-2))}`);
        assert.match(degraded.h.store?.cause ?? '', /space|full|ENOSPC/i);
        const last = run.http.slice(-5);
        assert.ok(last.every((s) => s.status === 200), `after space returned: ${JSON.stringify(last.map((s) => s.status))}`);
        await run.gw.stop();
        const summary = await assertNothingLost(disk.dir, table, 'full', run.httpOut, run.pgOut);
        console.log(`full disk (tmpfs 48 MiB, ${filled} bytes of filler): ${refusals.length} HTTP refusals (503), ${resets} resets, ${pgDuring} kinds of PostgreSQL refusal; recovered ${Math.round(recoveredMs)} ms after space returned; ${summary}`);
      } finally {
        await run.stop();
        await run.gw.stop().catch(() => {});
      }
    } finally {
      disk.unmount();
    }
  });

  it('failing and read-only: store-bound requests fail fast with the reason, health answers at once and says degraded, the event loop does not stall', async (t) => {
    const disk = failingExt4(64);
    if ('skip' in disk) return t.skip(disk.skip);
    try {
      const run = await gatewayUnderLoad(disk.dir, upstream, table, 'ro');
      const delay = { before: monitorEventLoopDelay({ resolution: 5 }), ro: monitorEventLoopDelay({ resolution: 5 }) };
      try {
        delay.before.enable();
        await until('load before the disk fails', () => (run.httpOut.acknowledged.length >= 5 && run.pgOut.acknowledged.length >= 5 ? true : undefined), 30_000);
        await new Promise((r) => setTimeout(r, 500));
        delay.before.disable();
        // What was acknowledged up to here is on the disk (a failing disk loses what it had not
        // written yet, as a power cut does: docs/AUDIT.md); acknowledged later, it is reported.
        const synced = { http: run.httpOut.acknowledged.length, pg: run.pgOut.acknowledged.length };
        run.gw.services.store.settle();
        spawnSync('sync', ['-f', disk.dir]);
        const durable = { http: run.httpOut.acknowledged.slice(0, synced.http), pg: run.pgOut.acknowledged.slice(0, synced.pg) };
        run.phase.name = 'ro';
        delay.ro.enable();
        disk.fail();
        await new Promise((r) => setTimeout(r, 3000));
        delay.ro.disable();
        await run.stop();

        const ro = run.http.filter((s) => s.phase === 'ro');
        const roLate = ro.slice(Math.floor(ro.length / 4));
        const refusals = roLate.filter((s) => s.status === 503);
        assert.ok(roLate.length > 0 && refusals.length === roLate.length, `every HTTP request refused on a read-only store: ${JSON.stringify([...new Set(roLate.map((s) => s.status))])}`);
        assert.ok(refusals.some((r) => /read-only|readonly|EROFS/i.test(r.body)), `a refusal says the store is read-only: ${refusals[0]?.body}`);
        const before = run.http.filter((s) => s.phase === 'before');
        assert.ok(max(refusals.map((s) => s.ms)) < max(before.map((s) => s.ms)) + MARGIN_MS, `refusals took up to ${max(refusals.map((s) => s.ms))} ms (answers before: ${max(before.map((s) => s.ms))} ms)`);
        assert.match(describeFailures(run.pgOut), /audit|record|store/i, 'the PostgreSQL error says why');
        const roHealth = run.health.filter((s) => s.phase === 'ro');
        const degraded = roHealth.find((s) => s.h.status === 'degraded');
        assert.ok(degraded, `health said degraded: ${JSON.stringify(roHealth.slice(-2))}`);
        assert.match(degraded.h.store?.cause ?? '', /read-only|readonly|EROFS/i);
        const healthBefore = run.health.filter((s) => s.phase === 'before');
        assert.ok(max(roHealth.map((s) => s.ms)) < max(healthBefore.map((s) => s.ms)) + MARGIN_MS, `health took up to ${max(roHealth.map((s) => s.ms))} ms`);
        assert.ok(loopMs(delay.ro).max < loopMs(delay.before).max + MARGIN_MS, `event-loop delay: ${JSON.stringify(loopMs(delay.ro))} read-only, ${JSON.stringify(loopMs(delay.before))} before`);
        await run.gw.stop().catch(() => {});
        disk.repair();
        const summary = await assertNothingLost(disk.dir, table, 'ro', { ...run.httpOut, acknowledged: durable.http }, { ...run.pgOut, acknowledged: durable.pg });
        console.log(
          `read-only store (ext4 remount-ro): ${refusals.length} HTTP refusals, max ${max(refusals.map((s) => s.ms))} ms; health max ${max(roHealth.map((s) => s.ms))} ms; event loop ${JSON.stringify(loopMs(delay.ro))} vs ${JSON.stringify(loopMs(delay.before))} before; ${summary}; acknowledged after the sync: ${run.httpOut.acknowledged.length - synced.http} HTTP, ${run.pgOut.acknowledged.length - synced.pg} PostgreSQL`,
        );
      } finally {
        await run.stop();
        await run.gw.stop().catch(() => {});
      }
    } finally {
      disk.unmount();
    }
  });

  it(
    'frozen for 2 s (fsfreeze, as a snapshot backup does): health and store-bound requests are not held up, the event loop does not stall',
    { todo: 'issue 16, item 2: the journal append is a write(2) on the event loop, and a write to a frozen filesystem waits until it thaws, so the whole gateway stops for the freeze' },
    async (t) => {
      const disk = failingExt4(64);
      if ('skip' in disk) return t.skip(disk.skip);
      try {
        const run = await gatewayUnderLoad(disk.dir, upstream, table, 'frz');
        const delay = { before: monitorEventLoopDelay({ resolution: 5 }), frozen: monitorEventLoopDelay({ resolution: 5 }) };
        try {
          delay.before.enable();
          await until('load before the freeze', () => (run.httpOut.acknowledged.length >= 5 ? true : undefined), 30_000);
          await new Promise((r) => setTimeout(r, 500));
          delay.before.disable();
          run.phase.name = 'frozen';
          delay.frozen.enable();
          disk.freeze(2000);
          await new Promise((r) => setTimeout(r, 2500));
          delay.frozen.disable();
          run.phase.name = 'after';
          await until('exchanges after the thaw', () => (run.http.some((s) => s.phase === 'after' && s.status === 200) ? true : undefined), 20_000);
          await run.stop();
          const frozen = run.http.filter((s) => s.phase === 'frozen');
          const before = run.http.filter((s) => s.phase === 'before');
          const health = { frozen: max(run.health.filter((s) => s.phase === 'frozen').map((s) => s.ms)), before: max(run.health.filter((s) => s.phase === 'before').map((s) => s.ms)) };
          console.log(`frozen disk (2 s): event loop ${JSON.stringify(loopMs(delay.frozen))} vs ${JSON.stringify(loopMs(delay.before))} before; HTTP max ${max(frozen.map((s) => s.ms))} ms vs ${max(before.map((s) => s.ms))}; health max ${health.frozen} ms vs ${health.before}`);
          await run.gw.stop();
          await assertNothingLost(disk.dir, table, 'frz', run.httpOut, run.pgOut);
          assert.ok(health.frozen < health.before + MARGIN_MS, `health took up to ${health.frozen} ms while the disk was frozen (${health.before} before)`);
          assert.ok(loopMs(delay.frozen).max < loopMs(delay.before).max + MARGIN_MS, `event-loop delay ${JSON.stringify(loopMs(delay.frozen))} frozen, ${JSON.stringify(loopMs(delay.before))} before`);
        } finally {
          await run.stop();
          await run.gw.stop().catch(() => {});
        }
      } finally {
        disk.unmount();
      }
    },
  );

  it('every stream a client saw end is in the log', () => {
    for (const g of streamGaps) assert.ok(g.logged >= g.acknowledged, `${g.acknowledged} streams acknowledged, ${g.logged} logged`);
  });
});
