/**
 * Audit store benchmark (docs/BENCHMARKS.md, "Audit store"), all in one run:
 *
 *   append    events/s through AuditStore.appendMany (batches of 1,000 events, one commit each, as a
 *             busy gateway's batching writer does), into a fresh store; baseline: a bare
 *             better-sqlite3 INSERT of equivalent rows into the same schema, same run (SQLite's own
 *             limit on this machine); also append() with one commit per event, for reference
 *   merkle    RFC 6962 root over 1,000,000 leaves (MerkleTree, every level kept)
 *   verify    time to verify a store of 1,000,000 events: one thread (verifyStore) and worker threads
 *             (verifyStoreParallel, what `custody verify` uses)
 *
 *   node --import tsx bench/audit.ts [--events 1000000] [--appends 200000]
 *
 * Bars (DESIGN.md): ≥ 50,000 events/s appended; 1,000,000 events verified in ≤ 10 s.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Config } from '../shared/config';
import type { AuditEventInput } from '../shared/events';
import { openAuditTrail } from '../proxy/audit/checkpoints';
import { MerkleTree } from '../proxy/audit/merkle';
import { MIGRATIONS } from '../proxy/audit/migrations';
import { AuditStore } from '../proxy/audit/store';
import { verifyStore } from '../proxy/audit/verify/store';
import { verifyStoreParallel } from '../proxy/audit/verify-runner';

const args = process.argv.slice(2);
const num = (name: string, fallback: number) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback);
const TOTAL = num('--events', 1_000_000);
const APPENDS = num('--appends', 200_000);
const BATCH = 1000;

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

/**
 * A realistic mix: LLM requests and responses, SQL statements, 1% masked, 0.5% large (stored
 * deflated); eight clients at a time, each session 400 events long, interleaved.
 */
function event(i: number): AuditEventInput {
  const session = `ses_${Math.floor(i / 3200)}_${i % 8}`;
  const actor = `key:${(i % 8).toString(36)}`;
  switch (i % 4) {
    case 0:
      return {
        kind: 'http.request',
        session,
        actor,
        connection: 'openai',
        payload: { method: 'POST', path: '/chat/completions', model: 'gpt-4o', bytes: 412, actorName: `user${i % 8}@example.com`, body: { model: 'gpt-4o', messages: [{ role: 'user', content: `Summarise ticket #${i} for [EMAIL] please` }] } },
        spans: i % 100 === 0 ? [{ type: 'EMAIL', start: 25, end: 32, rule: 'pii', path: '/body/messages/0/content' }] : undefined,
      };
    case 1:
      return {
        kind: 'http.response',
        session,
        actor,
        connection: 'openai',
        payload: { status: 200, duration: 812, usage: { prompt_tokens: 31, completion_tokens: 58 }, body: i % 200 === 1 ? 'long answer '.repeat(600) : `The ticket ${i} asks for a refund.` },
      };
    case 2:
      return { kind: 'pg.statement', session, actor, connection: 'warehouse', payload: { n: i, protocol: 'simple', sql: `SELECT id, total FROM orders WHERE customer_id = ${i % 9973}`, classes: ['select'], tables: ['orders'], decision: { action: 'allow', rule: null, reason: null } } };
    default:
      return { kind: 'pg.result', session, actor, connection: 'warehouse', payload: { n: i, rows: 3, tag: 'SELECT 3', duration: 2 } };
  }
}

function rawBaseline(dir: string, inputs: AuditEventInput[]): number {
  const db = new Database(join(dir, 'raw.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec(MIGRATIONS[0]!.sql);
  const insert = db.prepare('INSERT INTO events (seq, time, kind, session, actor, connection, payload, encoding, spans, payload_hash, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)');
  const hash = randomBytes(32).toString('hex');
  const rows = inputs.map((e, i) => [i + 1, Date.now(), e.kind, e.session ?? null, e.actor ?? null, e.connection ?? null, JSON.stringify(e.payload), 'json', null, hash, hash, hash] as const);
  const tx = db.transaction((from: number) => {
    for (let i = from; i < Math.min(from + BATCH, rows.length); i++) insert.run(...rows[i]!);
  });
  const t = performance.now();
  for (let i = 0; i < rows.length; i += BATCH) tx(i);
  const ms = performance.now() - t;
  db.close();
  return (rows.length / ms) * 1000;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'custody-bench-audit-'));
  try {
    console.log(`audit store benchmark: ${fmt(APPENDS)} timed appends, verification of ${fmt(TOTAL)} events`);
    const inputs = Array.from({ length: APPENDS }, (_, i) => event(i));

    // Appends: the gateway path against bare SQLite, alternating so load changes hit both.
    const rawRates: number[] = [];
    const storeRates: number[] = [];
    const storeCpuRates: number[] = [];
    for (let round = 0; round < 3; round++) {
      const rdir = mkdtempSync(join(dir, 'raw-'));
      rawRates.push(rawBaseline(rdir, inputs));
      const sdir = mkdtempSync(join(dir, 'store-'));
      const store = AuditStore.open(sdir);
      const c0 = process.cpuUsage();
      const t = performance.now();
      for (let i = 0; i < inputs.length; i += BATCH) store.appendMany(inputs.slice(i, i + BATCH));
      storeRates.push((inputs.length / (performance.now() - t)) * 1000);
      const c1 = process.cpuUsage(c0);
      storeCpuRates.push((inputs.length / ((c1.user + c1.system) / 1000)) * 1000);
      store.close();
      rmSync(rdir, { recursive: true, force: true });
      rmSync(sdir, { recursive: true, force: true });
    }
    const best = (xs: number[]) => Math.max(...xs);
    const single = (() => {
      const sdir = mkdtempSync(join(dir, 'single-'));
      const store = AuditStore.open(sdir);
      const n = 20_000;
      const t = performance.now();
      for (let i = 0; i < n; i++) store.append(inputs[i]!);
      const rate = (n / (performance.now() - t)) * 1000;
      store.close();
      return rate;
    })();
    console.log(`append (appendMany, ${BATCH}/commit): ${fmt(best(storeRates))} events/s   [runs: ${storeRates.map(fmt).join(', ')}]`);
    console.log(`bare SQLite INSERT, same rows:        ${fmt(best(rawRates))} rows/s   [runs: ${rawRates.map(fmt).join(', ')}]`);
    console.log(`ratio store / bare SQLite:            ${(best(storeRates) / best(rawRates)).toFixed(2)}`);
    console.log(`append per CPU-second (appendMany):   ${fmt(best(storeCpuRates))} events`);
    console.log(`append (one commit per event):        ${fmt(single)} events/s`);

    // Merkle root over a million leaves.
    const leaves = randomBytes(32 * 1_000_000);
    let t = performance.now();
    MerkleTree.fromEventHashes(leaves).root();
    console.log(`Merkle root, 1,000,000 leaves:        ${secs(performance.now() - t)}`);

    // A store of TOTAL events with a signed checkpoint, then verified.
    const vdir = join(dir, 'verify');
    const store = AuditStore.open(vdir);
    const trail = openAuditTrail(store, vdir, Config.parse({ audit: { origin: 'bench.custody/audit' } }));
    t = performance.now();
    for (let i = store.head().size; i < TOTAL; i += 5000) store.appendMany(Array.from({ length: Math.min(5000, TOTAL - i) }, (_, j) => event(i + j)));
    await trail.checkpoints.write();
    store.close();
    console.log(`(filled ${fmt(TOTAL)} events in ${secs(performance.now() - t)})`);
    // Baseline: reading the same rows with nothing checked (SQLite's own floor), same run.
    const cpu = () => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    };
    let c = cpu();
    t = performance.now();
    const db = new Database(join(vdir, 'custody.db'), { readonly: true });
    let rows = 0;
    for (const _ of db.prepare('SELECT seq, time, kind, session, actor, connection, payload, encoding, spans, payload_hash, prev_hash, hash FROM events ORDER BY seq').raw().iterate()) rows++;
    db.close();
    const scanMs = performance.now() - t;
    const scanCpu = cpu() - c;
    c = cpu();
    t = performance.now();
    const one = verifyStore(vdir);
    const oneMs = performance.now() - t;
    const oneCpu = cpu() - c;
    c = cpu();
    t = performance.now();
    const many = await verifyStoreParallel(vdir);
    const manyMs = performance.now() - t;
    const manyCpu = cpu() - c;
    if (!one.ok || !many.ok || one.rootHash !== many.rootHash) throw new Error(`verification disagreed: ${JSON.stringify([one.failure, many.failure])}`);
    console.log(`bare row scan, ${fmt(rows)} rows:      ${secs(scanMs)} wall, ${secs(scanCpu)} CPU`);
    console.log(`verify ${fmt(one.events)} events, one thread:      ${secs(oneMs)} wall, ${secs(oneCpu)} CPU (${(oneMs / scanMs).toFixed(2)} × the bare scan)`);
    console.log(`verify ${fmt(many.events)} events, worker threads: ${secs(manyMs)} wall, ${secs(manyCpu)} CPU in all threads (${(manyMs / scanMs).toFixed(2)} × the bare scan)`);
    const appendOk = best(storeRates) >= 50_000;
    const verifyOk = Math.min(oneMs, manyMs) <= 10_000;
    console.log(`bars: append ≥ 50,000/s ${appendOk ? 'met' : 'NOT met'}; verify 1,000,000 ≤ 10 s ${verifyOk ? 'met' : 'NOT met'}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
