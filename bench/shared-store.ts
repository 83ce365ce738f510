/**
 * `npm run bench -- shared-store` (`node --import tsx bench/shared-store.ts [--quick]`): what
 * shipping a gateway's chain to a shared PostgreSQL store (docs/SCALE-OUT.md) costs the local
 * append path, and how fast the store keeps up. In one run, alternating, on fresh data dirs:
 *
 * - sqlite only: batches like the HTTP proxy's (a request and a policy decision, ~1.3 KiB) appended
 *   through the real store with its commit thread (`appendAsync`: journal, then the fold), timed
 *   until everything is folded into SQLite;
 * - with shipping: the same, with the gateway's shipper worker enrolled in a fresh database on the
 *   local PostgreSQL server (127.0.0.1:5432) and shipping meanwhile; timed until folded locally,
 *   and until the store holds every event (the shipping rate), sampling the lag as it goes.
 *
 * Prints events/s for each, the ratio with/without shipping, the shipping rate and the largest lag
 * seen (events journaled locally but not yet in the store). Then `custody verify --store`'s check
 * (verify/shared-store.ts) of the last round's store, against `custody verify`'s check of the same
 * chain in that round's SQLite store (kept for it) and a bare scan of the PostgreSQL rows (read page
 * by page the same way, nothing checked). Last, the group part of an evidence bundle cut from that
 * store (shared-store/group-export.ts, the chain under a checkpoint signed for it) and the same
 * checks run on the bundle's files (verify/group-bundle.ts): time and size.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import pg from 'pg';
import { GROUP_BUNDLE_FILES } from '../proxy/audit/bundle-format';
import { openAuditTrail } from '../proxy/audit/checkpoints';
import { CheckpointSigner } from '../proxy/audit/checkpoint-signer';
import { writeGroupChains } from '../proxy/audit/shared-store/group-export';
import { groupBundleSource } from '../proxy/audit/verify/group-bundle';
import { verifyChains } from '../proxy/audit/verify/shared-store';
import { Config } from '../shared/config';
import { PG_EVENT_COLUMNS } from '../proxy/audit/shared-store/schema';
import { SharedStoreMember } from '../proxy/audit/shared-store/shipper';
import { verifySharedStore } from '../proxy/audit/verify/shared-store';
import { verifyStore } from '../proxy/audit/verify/store';
import { AuditStore } from '../proxy/audit/store';
import { silentLogger } from '../proxy/log';
import type { AuditEventInput } from '../shared/events';

const quick = process.argv.includes('--quick');
const BATCHES = quick ? 3000 : 20_000;
const ROUNDS = quick ? 1 : 4;
const ADMIN = process.env['CUSTODY_BENCH_PG_URL'] ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const body = 'Summarise the quarterly figures for the board, in plain words. '.repeat(16);

function batch(i: number): AuditEventInput[] {
  return [
    { kind: 'http.request', session: `ses_${i % 64}`, actor: 'key:bench', connection: 'openai', payload: { method: 'POST', path: '/chat/completions', headers: { 'content-type': 'application/json' }, bytes: body.length, body: { model: 'gpt-4o', messages: [{ role: 'user', content: body }] } } },
    { kind: 'policy.decision', session: `ses_${i % 64}`, actor: 'key:bench', connection: 'openai', payload: { action: 'allow', rule: 'default' } },
  ];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The commit thread started and warm (under tsx its code loads on first use): not part of the timing. */
function warmUp(store: AuditStore): void {
  for (let i = 0; i < 50; i++) store.appendAsync(batch(i), () => {});
  store.settle();
}

/** Appends BATCHES batches, yielding to the event loop every 100 (as the proxies' turns do); resolves once folded. */
async function appendAll(store: AuditStore, onTick?: () => void): Promise<number> {
  const t0 = performance.now();
  for (let i = 0; i < BATCHES; i++) {
    store.appendAsync(batch(i), (err) => {
      if (err) throw err;
    });
    if (i % 100 === 99) {
      onTick?.();
      await sleep(0);
    }
  }
  store.settle();
  return performance.now() - t0;
}

async function sqliteOnly(): Promise<{ eps: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'custody-bench-ship-'));
  const store = AuditStore.open(dir, { commitThread: true });
  try {
    warmUp(store);
    const ms = await appendAll(store);
    return { eps: (BATCHES * 2) / (ms / 1000) };
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function withShipping(url: string, keep = false): Promise<{ eps: number; shipEps: number; maxLag: number; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'custody-bench-ship-'));
  const store = AuditStore.open(dir, { commitThread: true });
  const { signer } = CheckpointSigner.loadOrCreate(dir, 'custody/bench');
  const member = await SharedStoreMember.start({ store, signer, config: { url, staleAfter: '5s' }, log: silentLogger });
  try {
    warmUp(store);
    for (let t = Date.now(); member.health().phase !== 'admitted' || member.refusal() !== undefined; ) {
      if (Date.now() - t > 30_000) throw new Error(`not admitted: ${member.health().cause ?? ''}`);
      await sleep(20);
    }
    const before = member.health().shippedSeq;
    let maxLag = 0;
    const sample = () => (maxLag = Math.max(maxLag, member.health().lagEvents));
    const t0 = performance.now();
    const ms = await appendAll(store, sample);
    // The kept round's chain gets a signed checkpoint over all of it, shipped with it (a bundle is cut where one commits).
    if (keep) await openAuditTrail(store, dir, Config.parse({ audit: { origin: 'custody/bench' } })).checkpoints.write();
    const target = store.head().size;
    for (;;) {
      const h = member.health();
      sample();
      if (h.shippedSeq >= target) break;
      if (performance.now() - t0 > 300_000) throw new Error(`shipping stalled at ${h.shippedSeq} of ${target}: ${h.cause ?? ''}`);
      await sleep(2);
    }
    const shipMs = performance.now() - t0;
    if (keep) {
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        while (Number((await c.query<{ n: string | null }>('SELECT max(tree_size) AS n FROM custody_checkpoints')).rows[0]?.n ?? 0) < target - 1) await sleep(20);
      } finally {
        await c.end();
      }
    }
    return { eps: (BATCHES * 2) / (ms / 1000), shipEps: (target - before) / (shipMs / 1000), maxLag, dir };
  } finally {
    await member.stop();
    store.close();
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const k = (n: number) => `${Math.round(n).toLocaleString('en-US')}`;

const admin = new pg.Client({ connectionString: ADMIN });
await admin.connect();
const results: { sqlite: number[]; shipped: number[]; shipEps: number[]; maxLag: number[] } = { sqlite: [], shipped: [], shipEps: [], maxLag: [] };
const dbs: string[] = [];
let lastDir = '';
try {
  for (let r = 0; r < ROUNDS; r++) {
    // Each shipping round on a fresh database: the first gateway enrols, nothing else is there.
    const name = `custody_bench_scale_${randomBytes(5).toString('hex')}`;
    await admin.query(`CREATE DATABASE ${name}`);
    dbs.push(name);
    // Alternating which goes first, so a drift in the machine's load does not favour one.
    const url = ADMIN.replace(/\/[^/]*$/, `/${name}`);
    let s: Awaited<ReturnType<typeof withShipping>>;
    // The last round's data dir is kept: its SQLite store holds the same chain as the last database.
    const keep = r === ROUNDS - 1;
    if (r % 2 === 0) {
      results.sqlite.push((await sqliteOnly()).eps);
      s = await withShipping(url, keep);
    } else {
      s = await withShipping(url, keep);
      results.sqlite.push((await sqliteOnly()).eps);
    }
    results.shipped.push(s.eps);
    results.shipEps.push(s.shipEps);
    results.maxLag.push(s.maxLag);
    if (keep) lastDir = s.dir;
    console.log(`round ${r + 1}: sqlite only ${k(results.sqlite[r]!)} events/s; with shipping ${k(s.eps)} events/s locally, store caught up at ${k(s.shipEps)} events/s, max lag ${k(s.maxLag)} events`);
  }
  // Verify speed on the last round's store: the check against a bare scan of the same rows.
  const last = new pg.Client({ connectionString: ADMIN.replace(/\/[^/]*$/, `/${dbs[dbs.length - 1]}`) });
  await last.connect();
  try {
    const id = (await last.query<{ id: string }>('SELECT id FROM custody_gateways')).rows[0]!.id;
    for (let r = 0; r < 2; r++) {
      let t = performance.now();
      let rows = 0;
      for (let from = 1; ; ) {
        const page = (await last.query<{ seq: string }>(`SELECT ${PG_EVENT_COLUMNS} FROM custody_events WHERE gateway = $1 AND seq >= $2 ORDER BY seq LIMIT 10000`, [id, from])).rows;
        rows += page.length;
        if (page.length < 10_000) break;
        from = Number(page[page.length - 1]!.seq) + 1;
      }
      const scanMs = performance.now() - t;
      t = performance.now();
      const report = await verifySharedStore(last, { store: 'bench' });
      const verifyMs = performance.now() - t;
      if (!report.ok) throw new Error(`verify failed: ${report.failures[0]!.message}`);
      // The same chain in the gateway's own SQLite store, checked by `custody verify --data-dir`.
      t = performance.now();
      const local = verifyStore(lastDir);
      const localMs = performance.now() - t;
      if (!local.ok) throw new Error(`verify of the SQLite store failed: ${local.failure?.message ?? ''}`);
      // The group part of a bundle cut from the same store, and the same checks read from its files.
      const stage = mkdtempSync(join(tmpdir(), 'custody-bench-bundle-'));
      try {
        t = performance.now();
        const section = (await writeGroupChains(last, stage, { filter: {}, store: 'bench' })).section;
        const exportMs = performance.now() - t;
        const files = new Map(GROUP_BUNDLE_FILES.map((f) => [f, readFileSync(join(stage, f))]));
        const bytes = GROUP_BUNDLE_FILES.reduce((n, f) => n + statSync(join(stage, f)).size, 0);
        t = performance.now();
        const fromBundle = await verifyChains(groupBundleSource(files, section).source, { store: 'bundle' });
        const bundleMs = performance.now() - t;
        if (!fromBundle.ok) throw new Error(`verify of the bundle failed: ${fromBundle.failures[0]!.message}`);
        console.log(`bundle round ${r + 1}: the group part of ${k(section.chains[0]!.size)} events written in ${(exportMs / 1000).toFixed(2)} s, ${k(bytes / 1024)} KiB (${k(bytes / section.chains[0]!.size)} bytes/event, uncompressed); verified from its files in ${(bundleMs / 1000).toFixed(2)} s (${k(fromBundle.events / (bundleMs / 1000))} events/s)`);
      } finally {
        rmSync(stage, { recursive: true, force: true });
      }
      console.log(`verify round ${r + 1}: PostgreSQL store: ${k(report.events)} events verified in ${(verifyMs / 1000).toFixed(2)} s (${k(report.events / (verifyMs / 1000))} events/s); SQLite store, same chain: ${k(local.events)} events in ${(localMs / 1000).toFixed(2)} s (${k(local.events / (localMs / 1000))} events/s; PostgreSQL/SQLite time ${(verifyMs / localMs).toFixed(2)}); bare scan of ${k(rows)} PostgreSQL rows ${(scanMs / 1000).toFixed(2)} s (verify/scan ${(verifyMs / scanMs).toFixed(2)})`);
    }
  } finally {
    await last.end();
  }
} finally {
  for (const name of dbs) await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.end();
  if (lastDir) rmSync(lastDir, { recursive: true, force: true });
}
const a = median(results.sqlite);
const b = median(results.shipped);
console.log(`\n${BATCHES * 2} events of ~0.7 KiB per run, ${ROUNDS} round(s), medians:`);
console.log(`  append, sqlite only:        ${k(a)} events/s`);
console.log(`  append, with shipping:      ${k(b)} events/s  (${(b / a).toFixed(2)} × sqlite only)`);
console.log(`  shipping to PostgreSQL:     ${k(median(results.shipEps))} events/s from the first append until the store held the last (${(median(results.shipEps) / a).toFixed(2)} × sqlite-only append)`);
console.log(`  largest lag seen:           ${k(median(results.maxLag))} events journaled but not yet in the store`);
