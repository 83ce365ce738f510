/**
 * The group part of an evidence bundle (bundle-format.ts, GroupSection): every chain of the shared
 * store, its signed checkpoints, the combined checkpoints with their cosignatures, and the gateway
 * rows with their signed enrolment requests, read in one snapshot, so that `custody verify BUNDLE`
 * checks every chain from the bundle alone, as `custody verify --store` checks the store.
 *
 * Each chain is cut where something signed commits to it: its own newest signed checkpoint, or the
 * newest combined checkpoint, whichever reaches further, or an event another chain cites from
 * within its cut. Its hashes 1..cut go in group-hashes.bin
 * (every root and link verifies from them); its rows in group-events.jsonl are all of them without
 * a filter, else the filter's and the ones that say who may sign (GROUP_TRUST_KINDS).
 *
 * The group log's witnesses travel with it (docs/SCALE-OUT.md, "Witnesses of the combined
 * checkpoints"): group-log.bin holds the leaf of every combined checkpoint in the snapshot (a
 * filtered bundle carries only some of them, yet a witness cosigned the whole log), and
 * group-witness-cosignatures.jsonl every witness cosignature in the same snapshot. A witness
 * cosigns a head only once its combined checkpoints are in the store, so in one snapshot each
 * cosigned size is within the log the bundle carries, unless combined checkpoints were deleted
 * from the store: then the bundle says so, as `verify --store` does.
 *
 * From the same snapshot it returns what the exporter needs for the bundle's report, OCSF records
 * and holds over every chain (GroupExport): which rows are carried only for trust, and the holds
 * of every gateway in the window.
 *
 * Runs on the console worker (team-worker.ts) for the console's exports, in the CLI's own process
 * for `custody export`.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import type { HoldView } from '../../../shared/holds';
import { type BundleFilter, GROUP_TRUST_KINDS, type GroupChain, type GroupExport, groupEventLine } from '../bundle-format';
import { HASH_SIZE } from '../merkle';
import { parseNote } from '../signed-note';
import { allCombined, parseCombinedText } from './combined-checkpoint';
import { groupId, listGateways } from './enrolment';
import { groupLogLeaf } from './group-log';
import { readGroupWitnessRows } from '../verify/combined';
import { citesOthers, eventRefs, PG_EVENT_COLUMNS, type PgEventRow } from './schema';

const HASH_PAGE = 50_000;
const ROW_PAGE = 2_000;

/**
 * The SQL that selects a chain's rows for the filter (as export.ts selects the local ones) and the
 * rows that say who may sign (`where`), the filter's alone (`selected`), and their arguments after $1–$3.
 */
function filterSql(f: BundleFilter): { where: string; selected: string; args: unknown[] } {
  const where: string[] = [];
  const args: unknown[] = [];
  const arg = (v: unknown) => `$${args.push(v) + 3}`;
  if (f.from !== undefined) where.push(`time >= ${arg(f.from)}`);
  if (f.to !== undefined) where.push(`time <= ${arg(f.to)}`);
  if (f.connection) where.push(`connection = ${arg(f.connection)}`);
  if (f.user) {
    const u = arg(f.user);
    // The user's own events (by subject or display name) and everything in their sessions on that chain.
    where.push(`(actor = ${u} OR actor IN (SELECT actor FROM custody_sessions WHERE actor_name = ${u}) OR session IN (SELECT id FROM custody_sessions s WHERE s.gateway = $1 AND (s.actor = ${u} OR s.actor_name = ${u})))`);
  }
  if (!where.length) return { where: 'true', selected: 'true', args };
  const selected = `(${where.join(' AND ')})`;
  return { where: `(${selected} OR kind = ANY(${arg([...GROUP_TRUST_KINDS])}))`, selected, args };
}

function writeLines(fd: number, lines: string[]): void {
  if (lines.length) writeSync(fd, `${lines.join('\n')}\n`);
}

/** Holds created in the window (and matching the user/connection filter), as export.ts selects the local ones. */
function holdInFilter(f: BundleFilter, createdAt: number, view: HoldView): boolean {
  if (f.from !== undefined && createdAt < f.from) return false;
  if (f.to !== undefined && createdAt > f.to) return false;
  if (f.connection && view.connection !== f.connection) return false;
  if (f.user && view.requester !== f.user) return false;
  return true;
}

/**
 * Writes the group files into `dir` from one REPEATABLE READ snapshot of the store; returns the
 * manifest's `group` and, from the same snapshot, what the report, OCSF records and holds need.
 */
export async function writeGroupChains(client: pg.ClientBase, dir: string, opts: { filter: BundleFilter; store: string }): Promise<GroupExport> {
  const { filter } = opts;
  const full = !Object.values(filter).some((v) => v !== undefined && v !== null && v !== '');
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  try {
    const group = await groupId(client);
    if (!group) throw new Error(`${opts.store} has no group yet`);
    const gateways = await listGateways(client);
    const window = filter.from !== undefined || filter.to !== undefined ? { from: filter.from, to: filter.to } : undefined;
    const combined = await allCombined(client, window);

    // Where each chain is cut: the furthest its own signed checkpoints or the newest combined checkpoint reach.
    const cut = new Map<string, number>();
    const reach = (id: string, size: number) => cut.set(id, Math.max(cut.get(id) ?? 0, size));
    for (const r of (await client.query<{ gateway: string; size: string }>('SELECT gateway, max(tree_size) AS size FROM custody_checkpoints GROUP BY gateway')).rows) reach(r.gateway, Number(r.size));
    const newest = combined[combined.length - 1];
    if (newest) {
      try {
        for (const h of parseCombinedText(parseNote(newest.note).text).heads) reach(h.gateway, h.size);
      } catch {
        // an unreadable combined checkpoint commits to nothing; verify names it
      }
    }
    for (const r of (await client.query<{ gateway: string }>('SELECT DISTINCT gateway FROM custody_events')).rows) reach(r.gateway, 0);
    // A chain's newest retention run explains the payloads purged before it (in the store too, when
    // the run was shipped): the cut reaches it, or the bundle would hold purged rows without their run.
    for (const r of (await client.query<{ gateway: string; seq: string }>("SELECT gateway, max(seq) AS seq FROM custody_events WHERE kind = 'retention.run' GROUP BY gateway")).rows) reach(r.gateway, Number(r.seq));
    // A row inside a cut that cites another chain's event (a vote on another gateway's hold, …)
    // commits to that event's hash, and so to its chain up to it: that chain reaches at least there
    // (a vote exported at once might otherwise cite an event past the newest combined checkpoint).
    const scanned = new Map<string, number>();
    for (let grew = true; grew; ) {
      grew = false;
      for (const [gateway, until] of cut) {
        const from = scanned.get(gateway) ?? 0;
        if (until <= from) continue;
        scanned.set(gateway, until);
        const citing = await client.query<{ kind: string; payload: string | null }>(`SELECT kind, payload FROM custody_events WHERE gateway = $1 AND seq > $2 AND seq <= $3 AND kind LIKE 'hold.%' AND payload LIKE '%"refs"%'`, [gateway, from, until]);
        for (const r of citing.rows) {
          if (!citesOthers(r)) continue;
          for (const ref of eventRefs(r.payload!)) {
            if (!cut.has(ref.gateway) || !Number.isSafeInteger(ref.seq) || ref.seq <= cut.get(ref.gateway)!) continue;
            cut.set(ref.gateway, ref.seq);
            grew = true;
          }
        }
      }
    }
    const names = new Map(gateways.map((g) => [g.id, g.name]));
    const ids = [...cut.keys()].sort();

    const chains: GroupChain[] = [];
    const carriedOnly: string[] = [];
    const hashesFd = openSync(join(dir, 'group-hashes.bin'), 'w', 0o600);
    const eventsFd = openSync(join(dir, 'group-events.jsonl'), 'w', 0o600);
    try {
      const { where, selected, args } = filterSql(filter);
      for (const gateway of ids) {
        // Hashes 1..cut, stopping at the first missing row (verify then names the seq the signed checkpoints miss).
        let size = 0;
        const until = cut.get(gateway)!;
        while (size < until) {
          const rows = (await client.query<{ seq: string; hash: string }>('SELECT seq, hash FROM custody_events WHERE gateway = $1 AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4', [gateway, size, until, HASH_PAGE])).rows;
          const buf = Buffer.alloc(rows.length * HASH_SIZE);
          let n = 0;
          for (const r of rows) {
            if (Number(r.seq) !== size + n + 1) break;
            buf.write(r.hash, n * HASH_SIZE, HASH_SIZE, 'hex');
            n++;
          }
          if (n) writeSync(hashesFd, buf.subarray(0, n * HASH_SIZE));
          size += n;
          if (n < rows.length || rows.length < HASH_PAGE) break;
        }
        let events = 0;
        for (let after = 0; after < size; ) {
          const rows = (
            await client.query<PgEventRow & { selected: boolean }>(`SELECT ${PG_EVENT_COLUMNS}, ${selected} AS selected FROM custody_events WHERE gateway = $1 AND seq > $2 AND seq <= $3 AND ${where} ORDER BY seq LIMIT ${ROW_PAGE}`, [
              gateway,
              after,
              size,
              ...args,
            ])
          ).rows;
          for (const r of rows) if (!r.selected) carriedOnly.push(`${gateway} ${Number(r.seq)}`);
          writeLines(
            eventsFd,
            rows.map((r) =>
              groupEventLine(gateway, {
                seq: Number(r.seq),
                time: Number(r.time),
                kind: r.kind,
                session: r.session,
                actor: r.actor,
                connection: r.connection,
                payloadText: r.purged || r.payload === null ? 'null' : r.payload,
                spansText: r.spans ?? '[]',
                purged: r.purged,
                payloadHash: r.payload_hash,
                prevHash: r.prev_hash,
                hash: r.hash,
              }),
            ),
          );
          events += rows.length;
          if (rows.length < ROW_PAGE) break;
          after = Number(rows[rows.length - 1]!.seq);
        }
        chains.push({ gateway, name: names.get(gateway) ?? '', size, events });
      }
    } finally {
      closeSync(hashesFd);
      closeSync(eventsFd);
    }

    const checkpoints = (
      await client.query<{ gateway: string; tree_size: string; time: string; root_hash: string; note: string }>('SELECT gateway, tree_size, time, root_hash, note FROM custody_checkpoints ORDER BY gateway, tree_size, time')
    ).rows.map((r) => JSON.stringify({ gateway: r.gateway, treeSize: Number(r.tree_size), time: Number(r.time), rootHash: r.root_hash, note: r.note }));
    writeFile(dir, 'group-checkpoints.jsonl', checkpoints);
    // The compact ranges a gateway keeps to cosign the next checkpoint are not evidence: left out.
    writeFile(
      dir,
      'group-combined.jsonl',
      combined.map(({ ranges: _ranges, ...row }) => JSON.stringify(row)),
    );
    writeFile(dir, 'group-gateways.json', [JSON.stringify(gateways, null, 2)]);
    const groupLog = await writeGroupLog(client, dir);
    writeFile(
      dir,
      'group-witness-cosignatures.jsonl',
      (await readGroupWitnessRows(client)).map((r) => JSON.stringify(r)),
    );
    // Every gateway's holds, each once, as its owner last wrote it (the votes cast on any gateway in it).
    const holds: GroupExport['holds'] = [];
    const inWindow: unknown[] = [];
    const bounds = [filter.from !== undefined ? `created_at >= $${inWindow.push(filter.from)}` : '', filter.to !== undefined ? `created_at <= $${inWindow.push(filter.to)}` : ''].filter(Boolean);
    const holdRows = await client.query<{ gateway: string; view: string; created_at: string }>(`SELECT gateway, view, created_at FROM custody_holds ${bounds.length ? `WHERE ${bounds.join(' AND ')}` : ''} ORDER BY created_at, id`, inWindow);
    for (const r of holdRows.rows) {
      let view: HoldView;
      try {
        view = JSON.parse(r.view) as HoldView;
      } catch {
        continue; // an unreadable row says nothing about a hold; the chains' hold.* events still do
      }
      if (holdInFilter(filter, Number(r.created_at), view)) holds.push({ gateway: r.gateway, view });
    }
    await client.query('COMMIT');
    return { section: { store: opts.store, group, chains, combined: combined.length, full, groupLog }, carriedOnly, holds };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/** group-log.bin: the leaf of every combined checkpoint in the snapshot, oldest first; returns how many. */
async function writeGroupLog(client: pg.ClientBase, dir: string): Promise<number> {
  const fd = openSync(join(dir, 'group-log.bin'), 'w', 0o600);
  let n = 0;
  try {
    for (let after = -1; ; ) {
      const rows = (await client.query<{ interval_start: string; note: string }>('SELECT interval_start, note FROM custody_combined_checkpoints WHERE interval_start > $1 ORDER BY interval_start LIMIT $2', [after, HASH_PAGE])).rows;
      if (rows.length) writeSync(fd, Buffer.concat(rows.map((r) => groupLogLeaf(r.note))));
      n += rows.length;
      if (rows.length < HASH_PAGE) return n;
      after = Number(rows[rows.length - 1]!.interval_start);
    }
  } finally {
    closeSync(fd);
  }
}

function writeFile(dir: string, name: string, lines: string[]): void {
  const fd = openSync(join(dir, name), 'w', 0o600);
  try {
    writeLines(fd, lines);
  } finally {
    closeSync(fd);
  }
}
