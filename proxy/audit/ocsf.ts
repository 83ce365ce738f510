/**
 * Maps audit events to OCSF (Open Cybersecurity Schema Framework) events for SIEM import:
 *
 *   LLM / HTTP traffic (http.*)            API Activity 6003 (category 6), with the `ai_operation`
 *                                          profile (ai_model, message_context) for LLM connections
 *   PostgreSQL statements (pg.*)           Datastore Activity 6005 (category 6)
 *   logins (auth.login/logout/failure)     Authentication 3002 (category 3)
 *   approval outcomes (hold.resolved)      Web Resource Access Activity 6004 (category 6):
 *                                          Access Grant (1) / Access Deny (2)
 *   everything else                        Base Event 0, activity Other (99)
 *
 * class_uid = category_uid × 1000 + class; type_uid = class_uid × 100 + activity_id. The original
 * event's seq and hash ride along in `metadata` and `unmapped`, so an OCSF record can be traced back
 * to the verified log.
 */
import type { AuditEvent } from '../../shared/events';

export const OCSF_VERSION = '1.7.0';

/** The exported event, as events.jsonl carries it. */
/** An event as the mapping reads it: `masked` is how many values masking replaced in it (its spans). */
export type OcsfSource = Pick<AuditEvent, 'seq' | 'time' | 'session' | 'actor' | 'connection' | 'payload' | 'hash'> & { kind: string; masked: number };

export interface OcsfContext {
  /** Connection name → kind (openai, anthropic, http, postgres). */
  connectionKinds: Map<string, string>;
  /** Identity subject → display name, when known. */
  actorNames: Map<string, string>;
  product: { name: string; version: string };
  origin: string;
}

type Obj = Record<string, unknown>;

const str = (v: unknown): string | undefined => (typeof v === 'string' && v ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

function httpActivity(method: string | undefined): { id: number; name: string } {
  switch ((method ?? '').toUpperCase()) {
    case 'POST':
      return { id: 1, name: 'Create' };
    case 'GET':
    case 'HEAD':
      return { id: 2, name: 'Read' };
    case 'PUT':
    case 'PATCH':
      return { id: 3, name: 'Update' };
    case 'DELETE':
      return { id: 4, name: 'Delete' };
    default:
      return { id: 99, name: 'Other' };
  }
}

function datastoreActivity(classes: string[]): { id: number; name: string } {
  const has = (c: string) => classes.includes(c);
  if (has('select')) return { id: 4, name: 'Query' };
  if (has('insert') || has('copy')) return { id: 5, name: 'Write' };
  if (has('update') || has('update_without_where') || has('merge')) return { id: 2, name: 'Update' };
  if (has('delete') || has('delete_without_where') || has('drop') || has('truncate')) return { id: 7, name: 'Delete' };
  if (has('create') || has('ddl')) return { id: 6, name: 'Create' };
  return { id: 99, name: 'Other' };
}

const PROVIDERS: Record<string, string> = { openai: 'OpenAI', anthropic: 'Anthropic' };

/** One OCSF record for one audit event. */
export function toOcsf(e: OcsfSource, ctx: OcsfContext): Obj {
  const p = (e.payload && typeof e.payload === 'object' ? e.payload : {}) as Obj;
  // Unknown connection (deleted since, or a CLI export without the config): a model field marks an LLM call.
  const connKind = (e.connection ? ctx.connectionKinds.get(e.connection) : undefined) ?? (e.connection && PROVIDERS[e.connection] ? e.connection : typeof p['model'] === 'string' ? 'llm' : undefined);
  const actorName = str(p['actorName']) ?? (e.actor ? ctx.actorNames.get(e.actor) : undefined);
  // Properties are assigned, not spread in: this runs for every event a sink delivers.
  const base = (categoryUid: number, categoryName: string, classUid: number, className: string, activity: { id: number; name: string }, profiles: string[] = []): Obj => {
    const metadata: Obj = {
      version: OCSF_VERSION,
      product: { name: ctx.product.name, vendor_name: 'Custody', version: ctx.product.version },
      uid: `${ctx.origin}#${e.seq}`,
      log_name: e.kind,
      original_time: String(e.time),
    };
    if (e.session) metadata['correlation_uid'] = e.session;
    if (profiles.length) metadata['profiles'] = profiles;
    const rec: Obj = {
      category_uid: categoryUid,
      category_name: categoryName,
      class_uid: classUid,
      class_name: className,
      activity_id: activity.id,
      activity_name: activity.name,
      type_uid: classUid * 100 + activity.id,
      type_name: `${className}: ${activity.name}`,
      time: e.time,
      time_dt: new Date(e.time).toISOString(),
      severity_id: 1,
      severity: 'Informational',
      metadata,
    };
    if (e.actor) {
      const actor: Obj = { user: actorName ? { uid: e.actor, name: actorName } : { uid: e.actor } };
      if (e.session) actor['session'] = { uid: e.session };
      rec['actor'] = actor;
    }
    rec['unmapped'] = { custody: { seq: e.seq, kind: e.kind, hash: e.hash, connection: e.connection, masked: e.masked } };
    return rec;
  };
  const status = (ok: boolean | undefined): Obj => (ok === undefined ? { status_id: 0, status: 'Unknown' } : ok ? { status_id: 1, status: 'Success' } : { status_id: 2, status: 'Failure' });

  if (e.kind.startsWith('http.')) {
    const llm = connKind === 'openai' || connKind === 'anthropic' || connKind === 'llm';
    const method = str(p['method']);
    const code = num(p['status']);
    const rec = base(6, 'Application Activity', 6003, 'API Activity', httpActivity(method), llm ? ['ai_operation'] : []);
    rec['api'] = {
      operation: method && str(p['path']) ? `${method} ${str(p['path'])}` : e.kind,
      service: { name: e.connection ?? 'unknown' },
      request: { uid: `${e.session ?? ''}#${e.seq}` },
      ...(code !== undefined ? { response: { code } } : {}),
    };
    if (str(p['path'])) rec['http_request'] = { http_method: method, url: { path: str(p['path']), ...(str(p['query']) ? { query_string: str(p['query']) } : {}) } };
    if (code !== undefined) rec['http_response'] = { code };
    Object.assign(rec, e.kind === 'http.error' ? status(false) : code !== undefined ? status(code < 400) : status(undefined));
    if (e.kind === 'http.error' && str(p['message'])) rec['status_detail'] = str(p['message']);
    if (llm) {
      const model = str(p['model']) ?? str((p['body'] as Obj | undefined)?.['model']);
      const usage = (p['usage'] ?? (p['body'] as Obj | undefined)?.['usage']) as Obj | undefined;
      if (model) rec['ai_model'] = { name: model, ai_provider: PROVIDERS[connKind!] ?? 'unknown' };
      const prompt = num(usage?.['prompt_tokens']) ?? num(usage?.['input_tokens']);
      const completion = num(usage?.['completion_tokens']) ?? num(usage?.['output_tokens']);
      rec['message_context'] = {
        uid: `${e.session ?? ''}#${e.seq}`,
        name: e.kind === 'http.request' ? 'request' : e.kind === 'http.response' ? 'response' : e.kind.slice(5),
        ...(prompt !== undefined ? { prompt_tokens: prompt } : {}),
        ...(completion !== undefined ? { completion_tokens: completion } : {}),
        ...(prompt !== undefined && completion !== undefined ? { total_tokens: prompt + completion } : {}),
      };
    }
    return rec;
  }

  if (e.kind.startsWith('pg.')) {
    const classes = Array.isArray(p['classes']) ? (p['classes'] as unknown[]).filter((c): c is string => typeof c === 'string') : [];
    const activity = e.kind === 'pg.statement' ? datastoreActivity(classes) : { id: 99, name: 'Other' };
    const rec = base(6, 'Application Activity', 6005, 'Datastore Activity', activity);
    const tables = Array.isArray(p['tables']) ? (p['tables'] as unknown[]).filter((t): t is string => typeof t === 'string') : [];
    rec['database'] = { name: e.connection ?? 'unknown', type_id: 1, type: 'Relational' };
    if (tables.length) rec['table'] = { name: tables[0] };
    if (str(p['sql'])) rec['query_info'] = { query_string: str(p['sql']) };
    const decision = (p['decision'] as Obj | undefined)?.['action'];
    Object.assign(rec, e.kind === 'pg.error' || p['refused'] ? status(false) : decision === 'deny' ? status(false) : e.kind === 'pg.statement' ? status(true) : status(undefined));
    if (e.kind === 'pg.error' && str(p['message'])) rec['status_detail'] = str(p['message']);
    return rec;
  }

  if (e.kind === 'auth.login' || e.kind === 'auth.logout' || e.kind === 'auth.failure') {
    const logoff = e.kind === 'auth.logout';
    const rec = base(3, 'Identity & Access Management', 3002, 'Authentication', logoff ? { id: 2, name: 'Logoff' } : { id: 1, name: 'Logon' });
    Object.assign(rec, status(e.kind !== 'auth.failure'));
    const user = str(p['user']) ?? actorName;
    rec['user'] = { ...(e.actor ? { uid: e.actor } : {}), ...(user ? { name: user } : {}) };
    if (str(p['method'])) rec['auth_protocol'] = str(p['method']);
    if (str(p['source']) || str(p['client']) || str(p['clientAddress'])) rec['src_endpoint'] = { ip: str(p['source']) ?? str(p['client']) ?? str(p['clientAddress']) };
    if (e.kind === 'auth.failure' && (str(p['reason']) || str(p['message']))) rec['status_detail'] = str(p['message']) ?? str(p['reason']);
    return rec;
  }

  if (e.kind === 'hold.resolved') {
    const state = str(p['state']);
    const activity = state === 'approved' ? { id: 1, name: 'Access Grant' } : state === 'denied' || state === 'expired' ? { id: 2, name: 'Access Deny' } : { id: 99, name: 'Other' };
    const rec = base(6, 'Application Activity', 6004, 'Web Resource Access Activity', activity);
    rec['web_resources'] = [{ name: e.connection ?? 'unknown', uid: str(p['id']) ?? '', type: 'connection' }];
    rec['policy'] = { name: str(p['rule']) ?? 'unknown', ...(str(p['reason']) ? { desc: str(p['reason']) } : {}) };
    Object.assign(rec, status(state === 'approved'));
    if (Array.isArray(p['decidedBy'])) (rec['unmapped'] as Obj)['approvers'] = p['decidedBy'];
    if (str(p['requester'])) (rec['unmapped'] as Obj)['requester'] = p['requester'];
    return rec;
  }

  return base(0, 'Uncategorized', 0, 'Base Event', { id: 99, name: 'Other' });
}
