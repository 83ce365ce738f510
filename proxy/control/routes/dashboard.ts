/**
 * `GET /api/dashboard?from&to&buckets` — counts over time for the console's dashboard: requests
 * (HTTP exchanges and SQL statements), holds by outcome, masked values (and by detector type),
 * policy denials and rule hits. Computed from the events, sessions and holds tables on each call
 * (indexed by time), so the figures always agree with the audit log. With a shared store, the
 * other gateways' counts are read from their shipped events on the console worker and added
 * (team-dashboard.ts), with each gateway's share.
 */
import type { TeamDashboard } from '../../audit/shared-store/team-dashboard';
import { type AuditStore, rowToEvent } from '../../audit/store';
import type { GatewayServices } from '../../services';
import type { DashboardBucket, DashboardData } from '../../../shared/dashboard';
import { HttpError, type Router, timeParam } from '../router';

const DAY = 86_400_000;
const MAX_BUCKETS = 500;
/** How many rules "Top rules" lists (all are counted: a rule's count may come from several gateways). */
const TOP_RULES = 20;

export async function dashboard(store: AuditStore, from: number, to: number, buckets: number): Promise<DashboardData> {
  // On the commit thread's connection (after what is journaled before): the aggregates scan the
  // range, and the gateway's thread, which the proxies share, must not wait for them.
  const all = <T>(sql: string, params?: Record<string, number>) => store.readAsync<T>(sql, params ? [params] : []);
  const bucketMs = Math.max(1000, Math.ceil((to - from) / buckets));
  const n = Math.ceil((to - from) / bucketMs);
  const series: DashboardBucket[] = Array.from({ length: n }, (_, i) => ({ t: from + i * bucketMs, requests: 0, holdsApproved: 0, holdsDenied: 0, holdsExpired: 0, masked: 0, denied: 0, hits: 0 }));
  const args = { from, to, b: bucketMs };
  // Bound numbers may arrive as REAL; the bucket index is always a whole number in range.
  const bucket = (i: number) => series[Math.max(0, Math.min(n - 1, Math.floor(i)))]!;

  for (const r of await all<{ i: number; c: number }>(`SELECT CAST((time - @from) / @b AS INTEGER) AS i, count(*) AS c FROM events WHERE time >= @from AND time < @to AND kind IN ('http.request', 'pg.statement') GROUP BY i`, args))
    bucket(r.i).requests += r.c;

  for (const r of await all<{ i: number; c: number }>(`SELECT CAST((time - @from) / @b AS INTEGER) AS i, sum(json_array_length(spans)) AS c FROM events WHERE time >= @from AND time < @to AND spans IS NOT NULL GROUP BY i`, args))
    bucket(r.i).masked += r.c ?? 0;

  // Policy decisions are small, so always stored as JSON text (never deflated).
  for (const r of await all<{ i: number; action: string; c: number }>(
    `SELECT CAST((time - @from) / @b AS INTEGER) AS i, json_extract(payload, '$.action') AS action, count(*) AS c FROM events
     WHERE time >= @from AND time < @to AND kind = 'policy.decision' AND encoding = 'json' AND json_extract(payload, '$.rule') IS NOT NULL
     GROUP BY i, action`,
    args,
  )) {
    bucket(r.i).hits += r.c;
    if (r.action === 'deny') bucket(r.i).denied += r.c;
  }

  const holdTotals = { pending: 0, approved: 0, denied: 0, expired: 0, abandoned: 0 };
  const holdRows = await all<{ state: string; at: number | null }>(`SELECT state, resolved_at AS at FROM holds WHERE (resolved_at >= @from AND resolved_at < @to) OR state = 'pending'`, { from, to });
  const outcomes: { state: string; at: number }[] = [];
  let pending = 0;
  if (holdRows.length || (await all<{ n: number }>('SELECT count(*) AS n FROM holds'))[0]!.n > 0) {
    for (const r of holdRows) {
      if (r.state === 'pending') pending++;
      else if (r.at !== null) outcomes.push({ state: r.state, at: r.at });
    }
  } else {
    // A gateway that records holds only as events: read the outcomes from the log.
    const rows = await all<Parameters<typeof rowToEvent>[0]>(`SELECT * FROM events WHERE time >= @from AND time < @to AND kind = 'hold.resolved'`, { from, to });
    for (const row of rows) {
      const p = (rowToEvent(row).payload ?? {}) as Record<string, unknown>;
      const hold = (p['hold'] && typeof p['hold'] === 'object' ? p['hold'] : p) as Record<string, unknown>;
      if (typeof hold['state'] === 'string') outcomes.push({ state: hold['state'], at: row.time });
    }
  }
  holdTotals.pending = pending;
  for (const o of outcomes) {
    const b = bucket(Math.floor((o.at - from) / bucketMs));
    if (o.state === 'approved') {
      b.holdsApproved++;
      holdTotals.approved++;
    } else if (o.state === 'denied') {
      b.holdsDenied++;
      holdTotals.denied++;
    } else if (o.state === 'expired') {
      b.holdsExpired++;
      holdTotals.expired++;
    } else if (o.state === 'abandoned' || o.state === 'cancelled') holdTotals.abandoned++;
  }

  // json_each has a column named `type` of its own: group by the extracted detector type explicitly.
  const maskedByType = (
    await all<{ detector: string | null; n: number }>(
      `SELECT json_extract(j.value, '$.type') AS detector, count(*) AS n FROM events, json_each(events.spans) AS j
       WHERE events.time >= @from AND events.time < @to AND events.spans IS NOT NULL
       GROUP BY json_extract(j.value, '$.type') ORDER BY n DESC, detector`,
      { from, to },
    )
  ).map((r) => ({ type: r.detector as string, count: r.n }));

  const policyHits = await all<{ rule: string; action: string; count: number }>(
    `SELECT json_extract(payload, '$.rule') AS rule, json_extract(payload, '$.action') AS action, count(*) AS count FROM events
     WHERE time >= @from AND time < @to AND kind = 'policy.decision' AND encoding = 'json' AND json_extract(payload, '$.rule') IS NOT NULL
     GROUP BY rule, action ORDER BY count DESC`,
    { from, to },
  );

  const sessions = (await all<{ n: number }>('SELECT count(*) AS n FROM sessions WHERE last_event_at >= @from AND started_at < @to', { from, to }))[0]!.n;
  const sum = (k: keyof DashboardBucket) => series.reduce((a, b) => a + b[k], 0);
  return {
    from,
    to,
    bucketMs,
    series,
    maskedByType: maskedByType.filter((m) => typeof m.type === 'string'),
    policyHits,
    totals: { sessions, requests: sum('requests'), masked: sum('masked'), denied: sum('denied'), holds: holdTotals },
  };
}

const BUCKET_COUNTS = ['requests', 'masked', 'hits', 'denied', 'holdsApproved', 'holdsDenied', 'holdsExpired'] as const;

/** This gateway's dashboard with the other gateways' counts added, bucket by bucket, and each gateway's share. */
export function withTeam(data: DashboardData, team: TeamDashboard, self: { id: string; name: string }): DashboardData {
  const n = data.series.length;
  const series = data.series.map((b) => ({ ...b }));
  for (const t of team.buckets) {
    const b = series[Math.max(0, Math.min(n - 1, t.i))]!;
    for (const k of BUCKET_COUNTS) b[k] += t[k];
  }
  const byType = new Map(data.maskedByType.map((m) => [m.type, m.count]));
  for (const m of team.maskedByType) byType.set(m.type, (byType.get(m.type) ?? 0) + m.count);
  const hits = new Map(data.policyHits.map((p) => [`${p.rule}\n${p.action}`, { ...p }]));
  for (const p of team.policyHits) {
    const h = hits.get(`${p.rule}\n${p.action}`);
    if (h) h.count += p.count;
    else hits.set(`${p.rule}\n${p.action}`, { ...p });
  }
  const sum = (k: keyof DashboardBucket) => series.reduce((a, b) => a + b[k], 0);
  const holds = { ...data.totals.holds };
  for (const k of Object.keys(holds) as (keyof typeof holds)[]) holds[k] += team.holds[k];
  const mine = { id: self.id, name: self.name, self: true, sessions: data.totals.sessions, requests: data.totals.requests, masked: data.totals.masked, denied: data.totals.denied };
  return {
    ...data,
    series,
    maskedByType: [...byType].map(([type, count]) => ({ type, count })).sort((a, b) => b.count - a.count || (a.type < b.type ? -1 : 1)),
    policyHits: [...hits.values()].sort((a, b) => b.count - a.count || (a.rule < b.rule ? -1 : a.rule > b.rule ? 1 : 0)),
    totals: { sessions: data.totals.sessions + team.gateways.reduce((a, g) => a + g.sessions, 0), requests: sum('requests'), masked: sum('masked'), denied: sum('denied'), holds },
    gateways: [mine, ...team.gateways.map((g) => ({ ...g, self: false }))],
  };
}

/** Registers `GET /api/dashboard` for any signed-in admin, approver or reviewer (counts only, no payloads). */
export function registerDashboardRoutes(router: Router, s: GatewayServices): void {
  router.get('/api/dashboard', async ({ identity, query }) => {
    if (!identity || !['admin', 'approver', 'reviewer'].some((r) => identity.roles.includes(r as never))) throw new HttpError(403, 'forbidden', 'this needs the reviewer, approver or admin role');
    const to = timeParam(query, 'to') ?? Date.now();
    const from = timeParam(query, 'from') ?? to - DAY;
    if (from >= to) throw new HttpError(400, 'bad_request', 'from must be before to');
    const raw = query.get('buckets');
    const buckets = raw ? Number(raw) : 24;
    if (!Number.isInteger(buckets) || buckets < 1 || buckets > MAX_BUCKETS) throw new HttpError(400, 'bad_request', `buckets must be an integer from 1 to ${MAX_BUCKETS}`);
    let data = await dashboard(s.store, from, to, buckets);
    if (s.team) {
      // With a shared store, every gateway's traffic: the others' from their shipped events.
      const team = await s.team.ask('dashboard', { from, to, bucketMs: data.bucketMs }).catch((err: Error) => err);
      data = team instanceof Error ? { ...data, incomplete: `the other gateways' counts could not be read from the shared store: ${team.message}` } : withTeam(data, team, s.team.identity);
    }
    return { ...data, policyHits: data.policyHits.slice(0, TOP_RULES) };
  });
}
