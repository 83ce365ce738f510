/**
 * Every gateway's sessions in the shared store (docs/SCALE-OUT.md, "Sessions of every gateway"):
 *
 * - `custody_sessions` is each chain's session index, counted exactly as the SQLite index counts
 *   (chain-writer.ts, `countInSession`). The shipper adds what a batch changes in the transaction
 *   that ships the batch's events (`indexShippedSessions`), so the index moves with the cursor and
 *   counts every shipped event once.
 * - the console of any gateway lists the other gateways' sessions from it and replays them from
 *   their shipped events (`custody_events`, indexed by session), with their masked spans, on the
 *   console worker (team-worker.ts), never on the proxies' thread.
 */
import type pg from 'pg';
import type { AuditEvent, MaskSpan, SessionFilter, SessionSummary } from '../../../shared/events';
import { countInSession, newSessionDelta, type PreparedEvent, type SessionDelta } from '../chain-writer';
import type { EventRow } from '../store';
import { PG_EVENT_COLUMNS, payloadIntact, type PgEventRow, rowChainHash } from './schema';

/** A shipped row as the index reads it (shipping.ts's batch): the payload as canonical JSON, or null once purged. */
export type ShippedRow = Pick<EventRow, 'seq' | 'time' | 'kind' | 'session' | 'actor' | 'connection' | 'spans'> & { payload: string | null };

/**
 * Payload fields the index reads, parsed only for the kinds that carry them: who and which protocol
 * (`session.start`, every session's first event), and the decisions counted as denials.
 */
function payloadFields(r: ShippedRow): Record<string, unknown> {
  if (r.payload === null || (r.kind !== 'session.start' && r.kind !== 'policy.decision' && r.kind !== 'hold.resolved')) return {};
  try {
    const p = JSON.parse(r.payload) as unknown;
    return p && typeof p === 'object' ? (p as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

/** The index changes a batch of shipped rows makes, per session, as the SQLite index counts them. */
export function sessionDeltas(rows: readonly ShippedRow[]): SessionDelta[] {
  const deltas = new Map<string, SessionDelta>();
  for (const r of rows) {
    if (!r.session) continue;
    const d = deltas.get(r.session);
    const p = payloadFields(r);
    const decision = r.kind === 'policy.decision' ? p['action'] : r.kind === 'hold.resolved' ? p['state'] : undefined;
    const e: PreparedEvent = {
      kind: r.kind as PreparedEvent['kind'],
      session: r.session,
      actor: r.actor,
      connection: r.connection,
      time: r.time,
      text: '',
      spansText: r.spans,
      masked: r.spans ? (JSON.parse(r.spans) as unknown[]).length : 0,
      actorName: r.kind === 'session.start' && typeof p['actorName'] === 'string' ? p['actorName'] : null,
      decision: typeof decision === 'string' ? decision : null,
      protocol: r.kind === 'session.start' && typeof p['protocol'] === 'string' ? p['protocol'] : null,
    };
    const delta = d ?? newSessionDelta(r.session, e, r.time);
    if (!d) deltas.set(r.session, delta);
    countInSession(delta, e, r.time);
  }
  return [...deltas.values()];
}

/** Adds a shipped batch's session changes to the store's index (in the shipping transaction). */
export async function indexShippedSessions(client: pg.ClientBase, gateway: string, rows: readonly ShippedRow[]): Promise<void> {
  const deltas = sessionDeltas(rows);
  if (!deltas.length) return;
  const batch = deltas.map((d) => ({ id: d.id, connection: d.connection, protocol: d.protocol, actor: d.actor, actor_name: d.actorName, started_at: d.started, last_event_at: d.last, ended_at: d.ended, events: d.events, requests: d.requests, holds: d.holds, masked: d.masked, denied: d.denied, errors: d.errors }));
  await client.query(
    `INSERT INTO custody_sessions (gateway, id, connection, protocol, actor, actor_name, started_at, last_event_at, ended_at, events, requests, holds, masked, denied, errors)
     SELECT $1, x.* FROM json_to_recordset($2::json) AS x(id text, connection text, protocol text, actor text, actor_name text, started_at bigint, last_event_at bigint, ended_at bigint, events bigint, requests bigint, holds bigint, masked bigint, denied bigint, errors bigint)
     ON CONFLICT (gateway, id) DO UPDATE SET
       last_event_at = greatest(custody_sessions.last_event_at, excluded.last_event_at),
       ended_at = coalesce(excluded.ended_at, custody_sessions.ended_at),
       actor_name = coalesce(custody_sessions.actor_name, excluded.actor_name),
       events = custody_sessions.events + excluded.events,
       requests = custody_sessions.requests + excluded.requests,
       holds = custody_sessions.holds + excluded.holds,
       masked = custody_sessions.masked + excluded.masked,
       denied = custody_sessions.denied + excluded.denied,
       errors = custody_sessions.errors + excluded.errors`,
    [gateway, JSON.stringify(batch)],
  );
}

interface SessionIndexRow {
  gateway: string;
  gateway_name: string | null;
  id: string;
  connection: string | null;
  protocol: string;
  actor: string | null;
  actor_name: string | null;
  started_at: string;
  last_event_at: string;
  ended_at: string | null;
  events: string;
  requests: string;
  holds: string;
  masked: string;
  denied: string;
  errors: string;
}

const toSummary = (r: SessionIndexRow): SessionSummary => ({
  id: r.id,
  connection: r.connection,
  protocol: r.protocol as SessionSummary['protocol'],
  actor: r.actor,
  actorName: r.actor_name,
  startedAt: Number(r.started_at),
  lastEventAt: Number(r.last_event_at),
  endedAt: r.ended_at === null ? null : Number(r.ended_at),
  events: Number(r.events),
  requests: Number(r.requests),
  holds: Number(r.holds),
  masked: Number(r.masked),
  denied: Number(r.denied),
  errors: Number(r.errors),
  gateway: r.gateway,
  gatewayName: r.gateway_name ?? r.gateway,
});

const SESSION_COLUMNS = 's.gateway, g.name AS gateway_name, s.id, s.connection, s.protocol, s.actor, s.actor_name, s.started_at, s.last_event_at, s.ended_at, s.events, s.requests, s.holds, s.masked, s.denied, s.errors';

/**
 * The sessions of every gateway but `self` (whose own are in its SQLite index), newest activity
 * first, with the filters of `GET /api/sessions` applied as the SQLite index applies them.
 */
export async function listTeamSessions(client: pg.ClientBase, self: string, filter: SessionFilter, limit: number): Promise<{ total: number; sessions: SessionSummary[] }> {
  const where = ['s.gateway <> $1'];
  const args: unknown[] = [self];
  const arg = (v: unknown) => `$${args.push(v)}`;
  if (filter.user) where.push(`(s.actor = ${arg(filter.user)} OR s.actor_name ILIKE ${arg(`%${filter.user}%`)})`);
  if (filter.connection) where.push(`s.connection = ${arg(filter.connection)}`);
  if (filter.protocol) where.push(`s.protocol = ${arg(filter.protocol)}`);
  if (filter.from !== undefined) where.push(`s.last_event_at >= ${arg(filter.from)}`);
  if (filter.to !== undefined) where.push(`s.started_at <= ${arg(filter.to)}`);
  if (filter.hadHolds) where.push('s.holds > 0');
  if (filter.hadMasking) where.push('s.masked > 0');
  const clause = where.join(' AND ');
  const total = Number((await client.query<{ n: string }>(`SELECT count(*) AS n FROM custody_sessions s WHERE ${clause}`, args)).rows[0]!.n);
  const rows = limit > 0 ? (await client.query<SessionIndexRow>(`SELECT ${SESSION_COLUMNS} FROM custody_sessions s LEFT JOIN custody_gateways g ON g.id = s.gateway WHERE ${clause} ORDER BY s.last_event_at DESC, s.id LIMIT ${arg(limit)}`, args)).rows : [];
  return { total, sessions: rows.map(toSummary) };
}

/** Session `id` as another gateway recorded it (the most recently active, should two have one id). */
export async function teamSession(client: pg.ClientBase, self: string, id: string): Promise<SessionSummary | undefined> {
  const r = (await client.query<SessionIndexRow>(`SELECT ${SESSION_COLUMNS} FROM custody_sessions s LEFT JOIN custody_gateways g ON g.id = s.gateway WHERE s.id = $1 AND s.gateway <> $2 ORDER BY s.last_event_at DESC LIMIT 1`, [id, self])).rows[0];
  return r && toSummary(r);
}

/** Sessions `ids` of `gateway`'s chain, as the store's index has them. */
export async function teamSessionsById(client: pg.ClientBase, gateway: string, ids: readonly string[]): Promise<Map<string, SessionSummary>> {
  const rows = (await client.query<SessionIndexRow>(`SELECT ${SESSION_COLUMNS} FROM custody_sessions s LEFT JOIN custody_gateways g ON g.id = s.gateway WHERE s.gateway = $1 AND s.id = ANY($2)`, [gateway, ids])).rows;
  return new Map(rows.map((r) => [r.id, toSummary(r)]));
}

/** A shipped row as an event of the console's replay, and whether it still matches its hashes. */
export function pgRowToEvent(r: PgEventRow): { event: AuditEvent; intact: boolean } {
  const event: AuditEvent = {
    seq: Number(r.seq),
    time: Number(r.time),
    kind: r.kind as AuditEvent['kind'],
    session: r.session,
    actor: r.actor,
    connection: r.connection,
    payload: r.purged || r.payload === null ? null : (JSON.parse(r.payload) as unknown),
    spans: r.spans ? (JSON.parse(r.spans) as MaskSpan[]) : [],
    payloadHash: r.payload_hash,
    prevHash: r.prev_hash,
    hash: r.hash,
  };
  return { event, intact: payloadIntact(r) && rowChainHash(r.prev_hash, r) === r.hash };
}

/**
 * The events of session `id` in `gateway`'s chain after `after`, in seq order, as shipped; and the
 * seqs of any whose stored row no longer matches its hashes (changed in the store).
 */
export async function teamSessionEvents(client: pg.ClientBase, gateway: string, id: string, after: number, limit: number): Promise<{ events: AuditEvent[]; altered: number[] }> {
  const rows = (await client.query<PgEventRow>(`SELECT ${PG_EVENT_COLUMNS} FROM custody_events WHERE session = $1 AND gateway = $2 AND seq > $3 ORDER BY seq LIMIT $4`, [id, gateway, after, limit])).rows;
  const events: AuditEvent[] = [];
  const altered: number[] = [];
  for (const r of rows) {
    const { event, intact } = pgRowToEvent(r);
    events.push(event);
    if (!intact) altered.push(event.seq);
  }
  return { events, altered };
}

/** The holds of session `id` in `gateway`'s chain, as the store has them, with where each `hold.created` sits. */
export async function teamSessionHolds(client: pg.ClientBase, gateway: string, id: string): Promise<{ view: string; createdSeq: number }[]> {
  const rows = (await client.query<{ view: string; created_seq: string }>("SELECT view, created_seq FROM custody_holds WHERE gateway = $1 AND (view::jsonb ->> 'session') = $2", [gateway, id])).rows;
  return rows.map((r) => ({ view: r.view, createdSeq: Number(r.created_seq) }));
}
