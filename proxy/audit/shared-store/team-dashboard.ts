/**
 * The dashboard's counts over the other gateways' traffic (docs/CONSOLE.md, "Dashboard"), read
 * from their shipped events on the console worker: the same figures the local dashboard reads from
 * this gateway's SQLite file (proxy/control/routes/dashboard.ts), counted the same way — requests
 * are HTTP exchanges and SQL statements, masked values the recorded spans, hits and denials
 * `policy.decision` events naming a rule, hold outcomes `hold.resolved` events — plus the holds
 * still pending in the store's hold table, and the figures per gateway.
 *
 * Every query scans the window through one partial index on time (migration 10), whose predicate
 * each repeats word for word so the planner uses it.
 */
import type pg from 'pg';
import type { DashboardGateway } from '../../../shared/dashboard';
import { DASHBOARD_ROWS } from './schema';

/** One bucket's counts over the other gateways (sparse: buckets without traffic are absent). */
export interface TeamBucket {
  i: number;
  requests: number;
  masked: number;
  hits: number;
  denied: number;
  holdsApproved: number;
  holdsDenied: number;
  holdsExpired: number;
}

export interface TeamDashboard {
  buckets: TeamBucket[];
  maskedByType: { type: string; count: number }[];
  policyHits: { rule: string; action: string; count: number }[];
  holds: { pending: number; approved: number; denied: number; expired: number; abandoned: number };
  /** Every gateway of the group but `self` that has been admitted (pending ones record nothing). */
  gateways: Omit<DashboardGateway, 'self'>[];
}

const n = (v: string | number | null | undefined) => Number(v ?? 0);

/** The dashboard's counts over every gateway's shipped events but `self`'s, in [from, to), in buckets of `bucketMs`. */
export async function teamDashboard(client: pg.ClientBase, self: string, from: number, to: number, bucketMs: number): Promise<TeamDashboard> {
  const window = `gateway <> $1 AND time >= $2 AND time < $3 AND ${DASHBOARD_ROWS}`;
  // A hold's outcome as hold.resolved records it: `state`, or the hold view's under `hold`.
  const state = "coalesce(payload::jsonb #>> '{hold,state}', payload::jsonb ->> 'state')";
  const rows = (
    await client.query<{ gateway: string; i: number; requests: string; masked: string | null; hits: string; denied: string; approved: string; refused: string; expired: string; abandoned: string }>(
      `SELECT gateway, ((time - $2) / $4)::int AS i,
         count(*) FILTER (WHERE kind IN ('http.request', 'pg.statement')) AS requests,
         sum(json_array_length(spans::json)) FILTER (WHERE spans IS NOT NULL) AS masked,
         count(*) FILTER (WHERE kind = 'policy.decision' AND payload IS NOT NULL AND payload::jsonb ->> 'rule' IS NOT NULL) AS hits,
         count(*) FILTER (WHERE kind = 'policy.decision' AND payload IS NOT NULL AND payload::jsonb ->> 'rule' IS NOT NULL AND payload::jsonb ->> 'action' = 'deny') AS denied,
         count(*) FILTER (WHERE kind = 'hold.resolved' AND payload IS NOT NULL AND ${state} = 'approved') AS approved,
         count(*) FILTER (WHERE kind = 'hold.resolved' AND payload IS NOT NULL AND ${state} = 'denied') AS refused,
         count(*) FILTER (WHERE kind = 'hold.resolved' AND payload IS NOT NULL AND ${state} = 'expired') AS expired,
         count(*) FILTER (WHERE kind = 'hold.resolved' AND payload IS NOT NULL AND ${state} IN ('abandoned', 'cancelled')) AS abandoned
       FROM custody_events WHERE ${window}
       GROUP BY gateway, i`,
      [self, from, to, bucketMs],
    )
  ).rows;
  const buckets = new Map<number, TeamBucket>();
  const per = new Map<string, { requests: number; masked: number; denied: number }>();
  const holds = { pending: 0, approved: 0, denied: 0, expired: 0, abandoned: 0 };
  for (const r of rows) {
    const b = buckets.get(r.i) ?? { i: r.i, requests: 0, masked: 0, hits: 0, denied: 0, holdsApproved: 0, holdsDenied: 0, holdsExpired: 0 };
    buckets.set(r.i, b);
    b.requests += n(r.requests);
    b.masked += n(r.masked);
    b.hits += n(r.hits);
    b.denied += n(r.denied);
    b.holdsApproved += n(r.approved);
    b.holdsDenied += n(r.refused);
    b.holdsExpired += n(r.expired);
    holds.approved += n(r.approved);
    holds.denied += n(r.refused);
    holds.expired += n(r.expired);
    holds.abandoned += n(r.abandoned);
    const g = per.get(r.gateway) ?? { requests: 0, masked: 0, denied: 0 };
    per.set(r.gateway, g);
    g.requests += n(r.requests);
    g.masked += n(r.masked);
    g.denied += n(r.denied);
  }
  holds.pending = n((await client.query<{ n: string }>("SELECT count(*) AS n FROM custody_holds WHERE state = 'pending' AND gateway <> $1", [self])).rows[0]?.n);

  const maskedByType = (
    await client.query<{ type: string; count: string }>(
      `SELECT j.value ->> 'type' AS type, count(*) AS count FROM custody_events, json_array_elements(spans::json) AS j
       WHERE ${window} AND spans IS NOT NULL AND j.value ->> 'type' IS NOT NULL
       GROUP BY 1`,
      [self, from, to],
    )
  ).rows.map((r) => ({ type: r.type, count: n(r.count) }));

  const policyHits = (
    await client.query<{ rule: string; action: string; count: string }>(
      `SELECT payload::jsonb ->> 'rule' AS rule, payload::jsonb ->> 'action' AS action, count(*) AS count FROM custody_events
       WHERE ${window} AND kind = 'policy.decision' AND payload IS NOT NULL AND payload::jsonb ->> 'rule' IS NOT NULL
       GROUP BY 1, 2`,
      [self, from, to],
    )
  ).rows.map((r) => ({ rule: r.rule, action: r.action, count: n(r.count) }));

  // Sessions active in the window, per gateway, from the store's session index (as the total counts them).
  const sessions = new Map(
    (await client.query<{ gateway: string; n: string }>('SELECT gateway, count(*) AS n FROM custody_sessions WHERE gateway <> $1 AND last_event_at >= $2 AND started_at < $3 GROUP BY gateway', [self, from, to])).rows.map((r) => [r.gateway, n(r.n)]),
  );
  const members = (await client.query<{ id: string; name: string }>("SELECT id, name FROM custody_gateways WHERE id <> $1 AND status <> 'pending' ORDER BY requested_at, id", [self])).rows;
  const gateways = members.map((m) => ({ id: m.id, name: m.name, sessions: sessions.get(m.id) ?? 0, requests: 0, masked: 0, denied: 0, ...per.get(m.id) }));
  return { buckets: [...buckets.values()], maskedByType, policyHits, holds, gateways };
}
