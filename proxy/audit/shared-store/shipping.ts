/**
 * Shipping one gateway's chain to the shared store: the events exactly as the local SQLite store
 * holds them (seq, time, kind, …, payload hash, previous hash, hash) and its signed checkpoints,
 * after a durable cursor (`shipped_seq`, `shipped_hash`, the last checkpoint shipped) kept in the
 * gateway's row and moved in the same transaction as the rows it covers. The row is locked for
 * the transaction, so two shippers of one chain (the gateway's worker and `custody gateways
 * approve`) take turns and neither leaves a gap.
 *
 * The cursor never moves back: rows deleted from the store after they were shipped are not
 * shipped again (verify reports them), and a local chain that no longer continues what was shipped
 * stops shipping with the reason.
 *
 * Payload retention reaches the store: a batch that carries a `retention.run` also purges the
 * store's copy of this chain by that run's rule, in the same transaction, so the store never shows
 * a run without its purge. Rows purged locally before they were shipped go as purged.
 */
import type Database from 'better-sqlite3';
import type pg from 'pg';
import { recordedRun, RETENTION_PURGE_WHERE } from '../retention';
import { type EventRow, storedPayloadText } from '../store';
import { EVENTS_CHANNEL } from './schema';
import { indexShippedSessions } from './session-index';

/** Events per transaction. */
export const SHIP_BATCH = 2000;

export interface ShipCursor {
  seq: number;
  hash: string;
  cpTime: number;
  cpSize: number;
}

export interface ShipResult {
  /** Events shipped by this call. */
  events: number;
  checkpoints: number;
  /** The cursor after it. */
  cursor: ShipCursor;
  /** Shipped rows whose payloads this call purged in the store, for the `retention.run` events it shipped. */
  purged: number;
  /** The local chain's head when it looked. */
  localSeq: number;
  /** The store's copy did not end where the cursor says it was shipped to (before this call's rows). */
  tampered?: { shippedSeq: number; shippedHash: string; foundSeq: number; foundHash: string; message: string };
}

export class ShipRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ShipRefusedError';
  }
}

/** The local chain's last seq and the number of checkpoints (what shipping compares against). */
export function localHead(db: Database.Database): { seq: number; checkpoints: number } {
  const seq = (db.prepare('SELECT max(seq) AS n FROM events').get() as { n: number | null }).n ?? 0;
  const checkpoints = (db.prepare('SELECT count(*) AS n FROM checkpoints').get() as { n: number }).n;
  return { seq, checkpoints };
}

/**
 * Ships up to `limit` events after the store's cursor for `gateway`, and the local checkpoints they
 * complete, in one transaction. Throws ShipRefusedError when the gateway has no row in the store
 * or its local chain no longer continues the shipped one; other errors are the store's.
 */
export async function shipOnce(client: pg.ClientBase, db: Database.Database, gateway: string, limit = SHIP_BATCH): Promise<ShipResult> {
  const head = localHead(db);
  await client.query('BEGIN');
  try {
    const cur = await client.query<{ shipped_seq: string; shipped_hash: string; shipped_cp_time: string; shipped_cp_size: string }>(
      'SELECT shipped_seq, shipped_hash, shipped_cp_time, shipped_cp_size FROM custody_gateways WHERE id = $1 FOR UPDATE',
      [gateway],
    );
    const c = cur.rows[0];
    if (!c) throw new ShipRefusedError(`the shared store has no row for gateway ${gateway}`);
    const cursor: ShipCursor = { seq: Number(c.shipped_seq), hash: c.shipped_hash, cpTime: Number(c.shipped_cp_time), cpSize: Number(c.shipped_cp_size) };
    // Checked before new rows go in, which would otherwise hide a deleted tail as a gap.
    const tail = await shippedTailProblem(client, gateway, cursor);
    const tampered = tail && { shippedSeq: cursor.seq, shippedHash: cursor.hash, ...tail };
    if (cursor.seq > head.seq) throw new ShipRefusedError(`the shared store holds this gateway's chain up to seq ${cursor.seq}, but the local chain ends at seq ${head.seq}: this data dir is not the one that shipped it`);
    let purged = 0;
    const rows = db.prepare('SELECT seq, time, kind, session, actor, connection, payload, encoding, spans, payload_hash, prev_hash, hash FROM events WHERE seq > ? ORDER BY seq LIMIT ?').all(cursor.seq, limit) as EventRow[];
    if (rows.length) {
      const first = rows[0]!;
      if (first.seq !== cursor.seq + 1 || first.prev_hash !== cursor.hash)
        throw new ShipRefusedError(`the local chain no longer continues what was shipped: seq ${first.seq} does not follow seq ${cursor.seq} (hash ${cursor.hash.slice(0, 12)}…) in the shared store`);
      // One JSON parameter for the batch (JSON.stringify is native and fast; PostgreSQL parses it
      // once), rather than an array literal per column.
      const batch = rows.map((r) => {
        const purged = r.encoding === 'purged';
        return { seq: r.seq, time: r.time, kind: r.kind, session: r.session, actor: r.actor, connection: r.connection, payload: purged ? null : storedPayloadText(r.encoding, r.payload), purged, spans: r.spans, payload_hash: r.payload_hash, prev_hash: r.prev_hash, hash: r.hash };
      });
      await client.query(
        `INSERT INTO custody_events (gateway, seq, time, kind, session, actor, connection, payload, purged, spans, payload_hash, prev_hash, hash)
         SELECT $1, x.* FROM json_to_recordset($2::json) AS x(seq bigint, time bigint, kind text, session text, actor text, connection text, payload text, purged boolean, spans text, payload_hash text, prev_hash text, hash text)
         ON CONFLICT (gateway, seq) DO NOTHING`,
        [gateway, JSON.stringify(batch)],
      );
      // The session index moves with the cursor: each shipped event is counted once.
      await indexShippedSessions(client, gateway, batch);
      for (const r of batch) if (r.kind === 'retention.run' && !r.purged) purged += await purgeForRun(client, gateway, r.seq, r.payload);
      const last = rows[rows.length - 1]!;
      cursor.seq = last.seq;
      cursor.hash = last.hash;
    }
    // Checkpoints go once the rows they cover are here: in the store, a checkpoint larger than its
    // chain always means rows were deleted.
    const cps = db
      .prepare('SELECT tree_size, root_hash, time, note FROM checkpoints WHERE (time > ? OR (time = ? AND tree_size > ?)) AND tree_size <= ? ORDER BY time, tree_size')
      .all(cursor.cpTime, cursor.cpTime, cursor.cpSize, cursor.seq) as { tree_size: number; root_hash: string; time: number; note: string }[];
    for (const cp of cps) {
      await client.query('INSERT INTO custody_checkpoints (gateway, tree_size, time, root_hash, note) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING', [gateway, cp.tree_size, cp.time, cp.root_hash, cp.note]);
      cursor.cpTime = cp.time;
      cursor.cpSize = cp.tree_size;
    }
    await client.query('UPDATE custody_gateways SET shipped_seq = $2, shipped_hash = $3, shipped_cp_time = $4, shipped_cp_size = $5, last_seen = $6 WHERE id = $1', [
      gateway,
      cursor.seq,
      cursor.hash,
      cursor.cpTime,
      cursor.cpSize,
      Date.now(),
    ]);
    // The other gateways' consoles show these sessions live: announced on commit (session-feed.ts).
    if (rows.some((r) => r.session !== null)) await client.query('SELECT pg_notify($1, $2)', [EVENTS_CHANNEL, gateway]);
    await client.query('COMMIT');
    return { events: rows.length, checkpoints: cps.length, purged, cursor, localSeq: head.seq, ...(tampered ? { tampered } : {}) };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/**
 * Purges the store's copy of `gateway`'s chain as the `retention.run` at `seq` purged the local one
 * (runCovers, RETENTION_PURGE_WHERE): payload and spans gone, the row marked purged, its payload
 * hash kept. Only this gateway's rows; a run whose payload cannot be read purges nothing.
 */
async function purgeForRun(client: pg.ClientBase, gateway: string, seq: number, payload: string | null): Promise<number> {
  const run = recordedRun(seq, payload);
  if (!run) return 0;
  const r = await client.query(
    `UPDATE custody_events SET payload = NULL, spans = NULL, purged = true
      WHERE gateway = $1 AND seq < $2 AND time < $3 AND seq <= $4 AND NOT purged AND ${RETENTION_PURGE_WHERE}`,
    [gateway, run.seq, run.cutoff, run.archivedThrough ?? Number.MAX_SAFE_INTEGER],
  );
  return r.rowCount ?? 0;
}

/**
 * Whether the store still ends this gateway's chain where it was shipped to: rows deleted from its
 * tail (or the last one changed) after they were shipped are caught here, at the next round of
 * shipping, rather than only by the next `custody verify`. One indexed read. Returns what is
 * wrong, or undefined.
 */
export async function shippedTailProblem(client: pg.ClientBase, gateway: string, cursor: Pick<ShipCursor, 'seq' | 'hash'>): Promise<{ foundSeq: number; foundHash: string; message: string } | undefined> {
  if (cursor.seq === 0) return undefined;
  const r = (await client.query<{ seq: string; hash: string }>('SELECT seq, hash FROM custody_events WHERE gateway = $1 ORDER BY seq DESC LIMIT 1', [gateway])).rows[0];
  const foundSeq = r ? Number(r.seq) : 0;
  const foundHash = r?.hash ?? '';
  if (foundSeq === cursor.seq && foundHash === cursor.hash) return undefined;
  const message =
    foundSeq < cursor.seq
      ? `the shared store's copy of this gateway's chain ends at seq ${foundSeq}, but seq ${cursor.seq} was shipped: ${cursor.seq - foundSeq} row(s) were deleted from its tail`
      : `the shared store's copy of this gateway's chain no longer ends with the row shipped at seq ${cursor.seq} (hash ${cursor.hash.slice(0, 12)}…; now seq ${foundSeq}, hash ${foundHash.slice(0, 12)}…)`;
  return { foundSeq, foundHash, message };
}

/** Ships until the store has everything the local chain holds now (the CLI, a last ship at stop). */
export async function shipAll(client: pg.ClientBase, db: Database.Database, gateway: string): Promise<ShipResult> {
  let total = 0;
  let cps = 0;
  let purged = 0;
  for (;;) {
    const r = await shipOnce(client, db, gateway);
    total += r.events;
    cps += r.checkpoints;
    purged += r.purged;
    if (r.events < SHIP_BATCH) return { ...r, events: total, checkpoints: cps, purged };
  }
}
