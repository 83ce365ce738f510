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
 * Runs on the console worker (team-worker.ts) for the console's exports, in the CLI's own process
 * for `custody export`.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type pg from 'pg';
import { type BundleFilter, GROUP_TRUST_KINDS, type GroupChain, type GroupSection, groupEventLine } from '../bundle-format';
import { HASH_SIZE } from '../merkle';
import { parseNote } from '../signed-note';
import { allCombined, parseCombinedText } from './combined-checkpoint';
import { groupId, listGateways } from './enrolment';
import { citesOthers, eventRefs, PG_EVENT_COLUMNS, type PgEventRow } from './schema';

const HASH_PAGE = 50_000;
const ROW_PAGE = 2_000;

/** The SQL that selects a chain's rows for the filter (as export.ts selects the local ones), and its arguments after $1–$3. */
function filterSql(f: BundleFilter): { where: string; args: unknown[] } {
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
  if (!where.length) return { where: 'true', args };
  return { where: `((${where.join(' AND ')}) OR kind = ANY(${arg([...GROUP_TRUST_KINDS])}))`, args };
}

function writeLines(fd: number, lines: string[]): void {
  if (lines.length) writeSync(fd, `${lines.join('\n')}\n`);
}

/** Writes the group files into `dir` from one REPEATABLE READ snapshot of the store; returns the manifest's `group`. */
export async function writeGroupChains(client: pg.ClientBase, dir: string, opts: { filter: BundleFilter; store: string }): Promise<GroupSection> {
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
    const hashesFd = openSync(join(dir, 'group-hashes.bin'), 'w', 0o600);
    const eventsFd = openSync(join(dir, 'group-events.jsonl'), 'w', 0o600);
    try {
      const { where, args } = filterSql(filter);
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
          const rows = (await client.query<PgEventRow>(`SELECT ${PG_EVENT_COLUMNS} FROM custody_events WHERE gateway = $1 AND seq > $2 AND seq <= $3 AND ${where} ORDER BY seq LIMIT ${ROW_PAGE}`, [gateway, after, size, ...args])).rows;
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
    await client.query('COMMIT');
    return { store: opts.store, group, chains, combined: combined.length, full };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
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
