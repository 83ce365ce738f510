/**
 * Policy dry-run: replays the requests recorded in the store (`http.request` and `pg.statement`
 * events) through a candidate rule set and compares the result with what the gateway decided then
 * (the decision recorded with each request — inside a `pg.statement`, or the `policy.decision` event
 * that follows the request; none recorded means no rule matched and the request was allowed).
 *
 * Replay works from what the log holds, so it sees what an auditor sees:
 * - the identity's groups come from the session's `session.start` event (or, failing that, the
 *   user directory and the API key's groups);
 * - request text is the recorded text, which is masked: a `content` regex that looks for a value a
 *   masking rule redacts sees the redaction, not the value;
 * - detector hits are taken from the masked spans recorded with the request (detector type names,
 *   lower-cased: CREDIT_CARD → credit_card);
 * - SQL statements use their recorded classes, or are classified again when a classifier is given.
 */
import { randomBytes } from 'node:crypto';
import type { ChangedRequest, DryRunReport, Outcome } from '../../shared/api';
import type { Config, Connection, ConnectionKind, PolicyAction, PolicyRule, SqlClass } from '../../shared/config';
import { type AuditEvent, readSessionStart } from '../../shared/events';
import type { Identity } from '../../shared/identity';
import { type AuditStore, rowToEvent } from '../audit/store';
import { describeRequest, queryText } from './llm-request';
import { rolesFor } from '../identity/authenticator';
import { createMaskingEngine } from '../masking/engine';
import { PolicyEngine } from './engine';
import type { PolicyInput } from './types';

export interface DryRunOptions {
  from?: number;
  to?: number;
  /** Connection kinds by name, to read recorded LLM bodies the way the proxy did. */
  connections: { name: string; kind: ConnectionKind }[];
  /** Re-classifies SQL that was recorded without classes. */
  classifySql?: (sql: string) => { classes: SqlClass[]; tables: string[] };
  /** Role mapping for identities (`identity.roles`). */
  roles?: { admin: string[]; approver: string[]; reviewer: string[] };
  /** At most this many changed requests listed per session (default 5). */
  examplesPerSession?: number;
  /** At most this many changed sessions listed (default 200); counts always cover everything. */
  maxSessions?: number;
  /**
   * The candidate's masking rules: for a connection, a counter of the values they would mask in a
   * recorded text (null when no rule applies there). Without it, masking is judged from the record.
   */
  masking?: (connection: string) => ((text: string) => number) | null;
}

const OUTCOME: Record<PolicyAction, Outcome> = { allow: 'allowed', hold: 'held', deny: 'denied', mask: 'masked' };
const zero = (): Record<Outcome, number> => ({ allowed: 0, held: 0, denied: 0, masked: 0 });

interface SessionInfo {
  groups?: string[];
  name?: string;
  via?: Identity['via'];
  requests: number;
  changed: number;
  connection: string | null;
  actor: string | null;
  actorName: string | null;
  examples: ChangedRequest[];
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

export function dryRun(store: AuditStore, rules: PolicyRule[], opts: DryRunOptions): DryRunReport {
  // The rows are read below straight from the database: wait for what is journaled to be folded in.
  store.settle();
  const engine = new PolicyEngine(rules);
  const kinds = new Map(opts.connections.map((c) => [c.name, c.kind] as const));
  const roles = opts.roles ?? { admin: ['admin'], approver: ['approver'], reviewer: ['reviewer'] };
  const perSession = opts.examplesPerSession ?? 5;
  const report: DryRunReport = {
    from: opts.from ?? null,
    to: opts.to ?? null,
    requests: 0,
    sessions: 0,
    candidate: zero(),
    recorded: zero(),
    transitions: {},
    changedRequests: 0,
    changedSessions: 0,
    byRule: {},
    partial: 0,
    maskedValues: { recorded: 0, candidate: 0 },
    changed: [],
  };
  const sessions = new Map<string, SessionInfo>();
  const sessionStart = store.db.prepare("SELECT * FROM events WHERE session = ? AND kind = 'session.start' ORDER BY seq LIMIT 1");
  const userRow = store.db.prepare('SELECT name, groups FROM users WHERE subject = ?');
  const keyRow = store.db.prepare('SELECT name, groups FROM api_keys WHERE id = ?');

  const infoFor = (e: AuditEvent): SessionInfo => {
    const id = e.session ?? `(no session) ${e.actor}`;
    let info = sessions.get(id);
    if (info) return info;
    info = { requests: 0, changed: 0, connection: e.connection, actor: e.actor, actorName: null, examples: [] };
    const startRow = e.session ? (sessionStart.get(e.session) as Parameters<typeof rowToEvent>[0] | undefined) : undefined;
    const start = startRow ? rowToEvent(startRow) : undefined;
    // Every version of session.start names the groups, the person and how they signed in (shared/events.ts).
    const facts = start ? readSessionStart(start.payload) : undefined;
    if (facts?.groups) info.groups = facts.groups;
    if (facts?.actorName) info.actorName = facts.actorName;
    if (facts?.via) info.via = facts.via;
    if (!info.groups && e.actor) {
      const u = userRow.get(e.actor) as { name: string; groups: string } | undefined;
      const k = !u && e.actor.startsWith('key:') ? (keyRow.get(e.actor.slice(4)) as { name: string; groups: string } | undefined) : undefined;
      const found = u ?? k;
      if (found) {
        info.groups = JSON.parse(found.groups) as string[];
        info.actorName ??= found.name;
      }
    }
    sessions.set(id, info);
    return info;
  };

  // Walk requests and decisions in log order; a request's decision is the next policy.decision in its session.
  const where: string[] = ["kind IN ('http.request', 'pg.statement', 'policy.decision', 'http.response', 'http.chunk', 'pg.result')"];
  const counters = new Map<string, ((text: string) => number) | null>();
  /** Values the candidate's masking would mask in this event's recorded text (already-masked ones excluded: they read as [TYPE]). */
  const newlyMasked = (e: AuditEvent): number => {
    if (!opts.masking || !e.connection) return 0;
    let count = counters.get(e.connection);
    if (count === undefined) counters.set(e.connection, (count = opts.masking(e.connection)));
    if (!count) return 0;
    let n = 0;
    for (const text of stringsOf(e.payload)) n += count(text);
    return n;
  };
  const args: number[] = [];
  if (opts.from !== undefined) {
    where.push('time >= ?');
    args.push(opts.from);
  }
  if (opts.to !== undefined) {
    where.push('time <= ?');
    args.push(opts.to);
  }
  const open = new Map<string, { e: AuditEvent; candidate: Outcome; candidateRule?: string; summary: string; info: SessionInfo }>();

  const settle = (key: string, decided: Outcome, recordedRule?: string) => {
    const o = open.get(key);
    if (!o) return;
    open.delete(key);
    const recorded = decided === 'allowed' && o.e.spans.length > 0 ? 'masked' : decided;
    report.recorded[recorded]++;
    if (recorded === o.candidate) return;
    report.changedRequests++;
    const t = `${recorded}→${o.candidate}`;
    report.transitions[t] = (report.transitions[t] ?? 0) + 1;
    o.info.changed++;
    if (o.info.examples.length < perSession)
      o.info.examples.push({ seq: o.e.seq, time: o.e.time, summary: o.summary, recorded, ...(recordedRule ? { recordedRule } : {}), candidate: o.candidate, ...(o.candidateRule ? { candidateRule: o.candidateRule } : {}) });
  };

  for (const row of store.db.prepare(`SELECT * FROM events WHERE ${where.join(' AND ')} ORDER BY seq`).iterate(...args) as IterableIterator<Parameters<typeof rowToEvent>[0]>) {
    const e = rowToEvent(row);
    const key = e.session ?? `(no session) ${e.actor}`;
    const p = isObj(e.payload) ? e.payload : {};
    const found = newlyMasked(e);
    report.maskedValues.recorded += e.spans.length;
    report.maskedValues.candidate += e.spans.length + found;
    if (e.kind === 'http.response' || e.kind === 'http.chunk' || e.kind === 'pg.result') continue;
    if (e.kind === 'policy.decision') {
      const action = p['action'];
      if (typeof action === 'string' && action in OUTCOME) settle(key, OUTCOME[action as PolicyAction], typeof p['rule'] === 'string' ? p['rule'] : undefined);
      continue;
    }
    // A previous request in this session without a decision event matched no rule: allowed.
    settle(key, 'allowed');
    const info = infoFor(e);
    info.requests++;
    report.requests++;
    const built = inputFor(e, p, info, kinds, roles, opts.classifySql);
    if (built.partial) report.partial++;
    const d = engine.evaluate(built.input);
    // An allowed request whose values are masked on the way is "masked", as recorded and as candidate.
    const candidate = d.action === 'allow' && (e.spans.length > 0 || found > 0) ? 'masked' : OUTCOME[d.action];
    report.candidate[candidate]++;
    if (d.rule) report.byRule[d.rule] = (report.byRule[d.rule] ?? 0) + 1;
    open.set(key, { e, candidate, candidateRule: d.rule, summary: built.summary, info });
    // The PostgreSQL proxy records the decision inside the statement event; a later policy.decision then finds nothing open.
    const embedded = isObj(p['decision']) ? p['decision'] : undefined;
    if (embedded && typeof embedded['action'] === 'string' && embedded['action'] in OUTCOME) {
      settle(key, OUTCOME[embedded['action'] as PolicyAction], typeof embedded['rule'] === 'string' ? embedded['rule'] : undefined);
    }
  }
  for (const key of [...open.keys()]) settle(key, 'allowed');

  report.sessions = sessions.size;
  const changed = [...sessions.entries()].filter(([, s]) => s.changed > 0);
  report.changedSessions = changed.length;
  report.changed = changed
    .sort((a, b) => b[1].changed - a[1].changed)
    .slice(0, opts.maxSessions ?? 200)
    .map(([id, s]) => ({ session: id, connection: s.connection, actor: s.actor, actorName: s.actorName, requests: s.requests, changed: s.changed, examples: s.examples }));
  return report;
}

function inputFor(
  e: AuditEvent,
  p: Obj,
  info: SessionInfo,
  kinds: Map<string, ConnectionKind>,
  roles: NonNullable<DryRunOptions['roles']>,
  classify: DryRunOptions['classifySql'],
): { input: PolicyInput; summary: string; partial: boolean } {
  const groups = info.groups ?? [];
  const identity: Identity = {
    subject: e.actor ?? 'unknown',
    name: (typeof p['actorName'] === 'string' ? p['actorName'] : info.actorName) ?? e.actor ?? 'unknown',
    groups,
    roles: rolesFor(groups, roles),
    via: info.via ?? (e.actor?.startsWith('key:') ? 'api-key' : 'oidc'),
  };
  // Span types and masked counts (upper-case types), and the detectors a statement was recorded with (ids).
  const recorded = Array.isArray(p['detectors']) ? p['detectors'].filter((d): d is string => typeof d === 'string') : [];
  const detectorHits = [...new Set([...e.spans.map((s) => s.type.toLowerCase()), ...(isObj(p['masked']) ? Object.keys(p['masked']).map((k) => k.toLowerCase()) : []), ...recorded])];
  const connection = e.connection ?? '';
  let partial = info.groups === undefined;
  if (e.kind === 'http.request') {
    const method = typeof p['method'] === 'string' ? p['method'] : 'POST';
    const path = typeof p['path'] === 'string' ? p['path'] : '/';
    if (p['body'] === undefined && (p['bodyOmitted'] !== undefined || Number(p['bytes'] ?? 0) > 0)) partial = true;
    const body = p['bodyEncoding'] === 'base64' ? undefined : p['body'];
    const facts = describeRequest(kinds.get(connection) ?? 'http', path, body);
    const model = facts.model ?? (typeof p['model'] === 'string' ? p['model'] : undefined);
    // as the live proxy does: every value of the body, then the query
    const query = typeof p['query'] === 'string' ? queryText(`?${p['query']}`) : '';
    const text = query ? `${facts.all}\n${query}` : facts.all;
    return {
      input: { connection, protocol: 'http', identity, http: { method, path, model, tools: facts.tools }, text, detectorHits },
      summary: `${method} ${path}${model ? ` ${model}` : ''}`,
      partial,
    };
  }
  const sql = [p['sql'], p['text'], p['query'], p['statement']].find((v): v is string => typeof v === 'string') ?? '';
  let classes = Array.isArray(p['classes']) ? (p['classes'] as SqlClass[]) : undefined;
  let tables = Array.isArray(p['tables']) ? (p['tables'] as string[]) : [];
  if (!classes && classify && sql) {
    try {
      const c = classify(sql);
      classes = c.classes;
      tables = c.tables;
    } catch {
      // stays unknown
    }
  }
  if (!classes) {
    classes = ['unknown'];
    partial = true;
  }
  const flat = sql.replace(/\s+/g, ' ').trim();
  return {
    input: { connection, protocol: 'postgres', identity, sql: { classes, tables }, text: sql, detectorHits },
    summary: flat.length > 120 ? `${flat.slice(0, 120)}…` : flat,
    partial,
  };
}

/** Every string in a recorded payload (keys are structure, not content). */
function stringsOf(v: unknown, out: string[] = []): string[] {
  const stack = [v];
  while (stack.length) {
    const x = stack.pop();
    if (typeof x === 'string') out.push(x);
    else if (Array.isArray(x)) stack.push(...x);
    else if (isObj(x)) stack.push(...Object.values(x));
  }
  return out;
}

/**
 * The `masking` option for a candidate `{masking, detectors}`: counts, per connection, the values
 * its rules would mask in a recorded text. The key for `hash` tokens is a throwaway: only counts
 * leave this function.
 */
export function candidateMasking(config: Pick<Config, 'masking' | 'detectors'>): NonNullable<DryRunOptions['masking']> {
  const engine = createMaskingEngine(config, { hmacKey: randomBytes(32) });
  return (connection) => {
    const rows = engine.rows({ name: connection } as Connection);
    return (text) => rows.text(text, 'log').spans.length;
  };
}
