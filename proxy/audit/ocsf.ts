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
 * to the verified log. In a group bundle each record also names its chain (`unmapped.custody.gateway`,
 * the gateway's id, and `gateway_name`).
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
  /** Prefix of `metadata.uid` (`<origin>#<seq>`): the log's checkpoint origin, or in a group bundle another chain's id. */
  origin: string;
  /** In a group bundle: the chain the events are of (its gateway id and host name), named in every record. */
  gateway?: { id: string; name: string };
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

/** The chain fields a sink attaches beside seq and hash, so the SIEM copy can be checked link by link. */
export interface OcsfChain {
  prevHash: string;
  payloadHash: string;
}

const q = JSON.stringify;
/** `"key":value` for a defined value, else nothing (a leading comma included). */
const opt = (key: string, v: unknown): string => (v === undefined ? '' : `,"${key}":${q(v)}`);

/** The product object, serialised once per context: it is the same in every record. */
const productJson = new WeakMap<OcsfContext, string>();
function product(ctx: OcsfContext): string {
  let s = productJson.get(ctx);
  if (s === undefined) {
    s = `{"name":${q(ctx.product.name)},"vendor_name":"Custody","version":${q(ctx.product.version)}}`;
    productJson.set(ctx, s);
  }
  return s;
}

/** JSON text of the few strings that recur in every record (kinds, connections, actors), kept rather than escaped again. */
const quoted = new Map<string, string>();
function qc(v: string): string {
  let t = quoted.get(v);
  if (t === undefined) {
    if (quoted.size >= 4096) quoted.clear();
    t = q(v);
    quoted.set(v, t);
  }
  return t;
}

/** ISO 8601 text of a time in ms. Events come many to a second: the second's text is kept and the milliseconds added. */
let isoSecond = Number.NaN;
let isoPrefix = '';
function isoTime(t: number): string {
  if (!Number.isInteger(t)) return new Date(t).toISOString();
  const ms = t % 1000;
  const second = t - ms;
  if (ms < 0 || second !== isoSecond) {
    const text = new Date(t).toISOString();
    if (ms < 0 || text.length !== 24) return text;
    isoSecond = second;
    isoPrefix = text.slice(0, 20);
    return text;
  }
  return `${isoPrefix}${ms < 10 ? '00' : ms < 100 ? '0' : ''}${ms}Z`;
}

const status = (ok: boolean | undefined): string => (ok === undefined ? '"status_id":0,"status":"Unknown"' : ok ? '"status_id":1,"status":"Success"' : '"status_id":2,"status":"Failure"');

/**
 * One OCSF record for one audit event, as JSON text. The text is written directly rather than
 * built as objects and serialised: a sink maps every event the gateway records, and this halves
 * what each one costs its thread (docs/BENCHMARKS.md).
 */
export function ocsfJson(e: OcsfSource, ctx: OcsfContext, chain?: OcsfChain): string {
  const p = (e.payload && typeof e.payload === 'object' ? e.payload : {}) as Obj;
  // Unknown connection (deleted since, or a CLI export without the config): a model field marks an LLM call.
  const connKind = (e.connection ? ctx.connectionKinds.get(e.connection) : undefined) ?? (e.connection && PROVIDERS[e.connection] ? e.connection : typeof p['model'] === 'string' ? 'llm' : undefined);
  const actorName = str(p['actorName']) ?? (e.actor ? ctx.actorNames.get(e.actor) : undefined);
  const session = e.session ? q(e.session) : undefined;
  /** Everything every class shares, from category_uid to unmapped (with `unmappedMore` inside it). */
  const base = (categoryUid: number, categoryName: string, classUid: number, className: string, activity: { id: number; name: string }, profiles = '', unmappedMore = ''): string => {
    const typeUid = classUid * 100 + activity.id;
    let s = `{"category_uid":${categoryUid},"category_name":"${categoryName}","class_uid":${classUid},"class_name":"${className}","activity_id":${activity.id},"activity_name":"${activity.name}","type_uid":${typeUid},"type_name":"${className}: ${activity.name}","time":${e.time},"time_dt":"${isoTime(e.time)}","severity_id":1,"severity":"Informational"`;
    s += `,"metadata":{"version":"${OCSF_VERSION}","product":${product(ctx)},"uid":${q(`${ctx.origin}#${e.seq}`)},"log_name":${qc(e.kind)},"original_time":"${e.time}"${session ? `,"correlation_uid":${session}` : ''}${profiles ? `,"profiles":[${profiles}]` : ''}}`;
    if (e.actor) s += `,"actor":{"user":{"uid":${qc(e.actor)}${actorName ? `,"name":${q(actorName)}` : ''}}${session ? `,"session":{"uid":${session}}` : ''}}`;
    const chainFields = chain ? `,"prev_hash":${q(chain.prevHash)},"payload_hash":${q(chain.payloadHash)}` : '';
    const gatewayFields = ctx.gateway ? `,"gateway":${q(ctx.gateway.id)},"gateway_name":${q(ctx.gateway.name)}` : '';
    s += `,"unmapped":{"custody":{"seq":${e.seq},"kind":${qc(e.kind)},"hash":${q(e.hash)}${opt('connection', e.connection)},"masked":${e.masked}${chainFields}${gatewayFields}}${unmappedMore}}`;
    return s;
  };

  if (e.kind.startsWith('http.')) {
    const llm = connKind === 'openai' || connKind === 'anthropic' || connKind === 'llm';
    const method = str(p['method']);
    const path = str(p['path']);
    const code = num(p['status']);
    const uid = q(`${e.session ?? ''}#${e.seq}`);
    const activity = httpActivity(method);
    let s = base(6, 'Application Activity', 6003, 'API Activity', activity, llm ? '"ai_operation"' : '');
    s += `,"api":{"operation":${q(method && path ? `${method} ${path}` : e.kind)},"service":{"name":${qc(e.connection ?? 'unknown')}},"request":{"uid":${uid}}${code !== undefined ? `,"response":{"code":${code}}` : ''}}`;
    if (path) s += `,"http_request":{${method ? `"http_method":${q(method)},` : ''}"url":{"path":${q(path)}${opt('query_string', str(p['query']))}}}`;
    if (code !== undefined) s += `,"http_response":{"code":${code}}`;
    s += `,${e.kind === 'http.error' ? status(false) : code !== undefined ? status(code < 400) : status(undefined)}`;
    if (e.kind === 'http.error') s += opt('status_detail', str(p['message']));
    if (llm) {
      const body = p['body'] as Obj | undefined;
      const model = str(p['model']) ?? str(body?.['model']);
      const usage = (p['usage'] ?? body?.['usage']) as Obj | undefined;
      if (model) s += `,"ai_model":{"name":${q(model)},"ai_provider":"${PROVIDERS[connKind!] ?? 'unknown'}"}`;
      const prompt = num(usage?.['prompt_tokens']) ?? num(usage?.['input_tokens']);
      const completion = num(usage?.['completion_tokens']) ?? num(usage?.['output_tokens']);
      const name = e.kind === 'http.request' ? 'request' : e.kind === 'http.response' ? 'response' : e.kind.slice(5);
      s += `,"message_context":{"uid":${uid},"name":${q(name)}${opt('prompt_tokens', prompt)}${opt('completion_tokens', completion)}${prompt !== undefined && completion !== undefined ? `,"total_tokens":${prompt + completion}` : ''}}`;
    }
    return `${s}}`;
  }

  if (e.kind.startsWith('pg.')) {
    const classes = Array.isArray(p['classes']) ? (p['classes'] as unknown[]).filter((c): c is string => typeof c === 'string') : [];
    const activity = e.kind === 'pg.statement' ? datastoreActivity(classes) : { id: 99, name: 'Other' };
    let s = base(6, 'Application Activity', 6005, 'Datastore Activity', activity);
    const tables = Array.isArray(p['tables']) ? (p['tables'] as unknown[]).filter((t): t is string => typeof t === 'string') : [];
    s += `,"database":{"name":${q(e.connection ?? 'unknown')},"type_id":1,"type":"Relational"}`;
    if (tables.length) s += `,"table":{"name":${q(tables[0])}}`;
    if (str(p['sql'])) s += `,"query_info":{"query_string":${q(str(p['sql']))}}`;
    const decision = (p['decision'] as Obj | undefined)?.['action'];
    s += `,${e.kind === 'pg.error' || p['refused'] ? status(false) : decision === 'deny' ? status(false) : e.kind === 'pg.statement' ? status(true) : status(undefined)}`;
    if (e.kind === 'pg.error') s += opt('status_detail', str(p['message']));
    return `${s}}`;
  }

  if (e.kind === 'auth.login' || e.kind === 'auth.logout' || e.kind === 'auth.failure') {
    const logoff = e.kind === 'auth.logout';
    let s = base(3, 'Identity & Access Management', 3002, 'Authentication', logoff ? { id: 2, name: 'Logoff' } : { id: 1, name: 'Logon' });
    s += `,${status(e.kind !== 'auth.failure')}`;
    const user = str(p['user']) ?? actorName;
    s += `,"user":{${[e.actor ? `"uid":${q(e.actor)}` : '', user ? `"name":${q(user)}` : ''].filter(Boolean).join(',')}}`;
    s += opt('auth_protocol', str(p['method']));
    const ip = str(p['source']) ?? str(p['client']) ?? str(p['clientAddress']);
    if (ip) s += `,"src_endpoint":{"ip":${q(ip)}}`;
    if (e.kind === 'auth.failure') s += opt('status_detail', str(p['message']) ?? str(p['reason']));
    return `${s}}`;
  }

  if (e.kind === 'hold.resolved') {
    const state = str(p['state']);
    const activity = state === 'approved' ? { id: 1, name: 'Access Grant' } : state === 'denied' || state === 'expired' ? { id: 2, name: 'Access Deny' } : { id: 99, name: 'Other' };
    const more = `${Array.isArray(p['decidedBy']) ? `,"approvers":${q(p['decidedBy'])}` : ''}${opt('requester', str(p['requester']))}`;
    let s = base(6, 'Application Activity', 6004, 'Web Resource Access Activity', activity, '', more);
    s += `,"web_resources":[{"name":${q(e.connection ?? 'unknown')},"uid":${q(str(p['id']) ?? '')},"type":"connection"}]`;
    s += `,"policy":{"name":${q(str(p['rule']) ?? 'unknown')}${opt('desc', str(p['reason']))}}`;
    s += `,${status(state === 'approved')}`;
    return `${s}}`;
  }

  return `${base(0, 'Uncategorized', 0, 'Base Event', { id: 99, name: 'Other' })}}`;
}
