/**
 * What the console asks of the control plane (DESIGN.md, Control plane). The HTTP implementation is
 * renderer/api.ts; stores take this interface so their logic runs in node tests with a fake.
 */
import type { CustomDetector, MaskingRule, PolicyRule } from '../../shared/config';
import type { AuditEvent, SessionSummary } from '../../shared/events';
import type { HoldDecisionRequest, HoldState, HoldView } from '../../shared/holds';
import type { ApiKeyRecord } from '../../shared/identity';
import type { DashboardData } from '../../shared/dashboard';
import type { ArchiveStatus, SinkStatus, WitnessStatus } from '../../shared/evidence';
import type { Me } from './roles';
import type { SessionFilter } from './sessions';

export interface Provider {
  issuer: string;
  name: string;
  /** Where "Sign in with <name>" goes: the gateway starts the authorization code flow. */
  startUrl: string;
}

export interface Health {
  status: string;
  version: string;
  events?: number;
}

export interface PolicySet {
  version: number | null;
  author: string | null;
  updatedAt: number | null;
  policies: PolicyRule[];
}

export interface MaskingSet {
  version: number | null;
  author: string | null;
  updatedAt: number | null;
  masking: MaskingRule[];
  detectors: CustomDetector[];
  /** Built-in detector ids, when the gateway lists them. */
  builtins: string[];
}

export interface PolicyVersionMeta {
  version: number;
  kind: 'policies' | 'masking';
  author: string;
  createdAt: number;
  /** The rules of that version, when the listing includes them. */
  body?: unknown;
  note?: string;
  /** Number of rules in that version. */
  count?: number;
}

/** `POST /api/policies/dry-run`: what the candidate rules would have done to recorded traffic. */
export interface DryRunResult {
  from?: number;
  to?: number;
  /** Requests replayed. */
  total: number;
  /** Counts by action under the candidate, and under the rules in force. */
  candidate: Record<string, number>;
  current: Record<string, number>;
  /** Examples of requests whose outcome would change. */
  changes: { session?: string; seq?: number; time?: number; summary: string; from: string; to: string; rule?: string }[];
  changedRequests: number;
  changedSessions: number;
  /** e.g. `allowed→held`: count. */
  transitions: Record<string, number>;
  /** Requests replayed with less than the proxy saw. */
  partial: number;
  /** Values masked in requests and responses: as recorded, and under the draft's masking rules. */
  maskedValues: { current: number; candidate: number };
  raw: unknown;
}

export interface AuditStatus {
  treeSize: number | null;
  rootHash: string | null;
  lastCheckpoint: { time: number; treeSize: number; rootHash?: string } | null;
  lastVerification: { time: number; ok: boolean; message?: string; events?: number } | null;
  publicKey: string | null;
  fingerprint: string | null;
  origin?: string | null;
  witnesses: WitnessView[];
  sinks: SinkView[];
  /** The archive in object storage; null when audit.archive is not configured. */
  archive: ArchiveView | null;
  raw: unknown;
}

export type WitnessView = WitnessStatus;
export type SinkView = SinkStatus;
export type ArchiveView = ArchiveStatus;

export interface VerifyResult {
  ok: boolean;
  message: string;
  events?: number;
  firstBad?: number | null;
  raw: unknown;
}

export interface ExportRequest {
  from?: number;
  to?: number;
  user?: string;
  connection?: string;
}

export type ApiKeyView = ApiKeyRecord;

export interface ConnectionView {
  name: string;
  kind: 'openai' | 'anthropic' | 'http' | 'postgres';
  upstream: string;
  /** Set when the upstream address carries a credential (shown as `***`): move it into `secret`. */
  warning?: string;
  listen?: string;
  description?: string;
  tls?: { mode?: string };
  source: 'config' | 'console';
  secret: { kind: 'env' | 'value' | 'file'; env?: string; file?: string } | null;
  updatedAt: number | null;
  updatedBy: string | null;
  pendingRestart: boolean;
}

export interface ConnectionList {
  connections: ConnectionView[];
  httpListen: string;
  liveReload: boolean;
}

export interface ConnectionInput {
  name?: string;
  kind?: ConnectionView['kind'];
  upstream?: string;
  listen?: string;
  description?: string;
  /** Write-only: a new secret value, `{env}` or `{file}`; omitted keeps the stored one. */
  secret?: string | { env: string } | { file: string };
}

export interface ConnectionTestResult {
  ok: boolean;
  latencyMs: number;
  message: string;
  status?: number;
}

export interface ConsoleApi {
  health(): Promise<Health>;
  me(): Promise<Me>;
  providers(): Promise<Provider[]>;
  loginWithKey(key: string): Promise<void>;
  logout(): Promise<void>;
  holds(state: HoldState, limit?: number): Promise<HoldView[]>;
  decide(id: string, req: HoldDecisionRequest): Promise<HoldView | undefined>;
  sessions(filter: SessionFilter, offset: number, limit: number): Promise<{ total: number; sessions: SessionSummary[] }>;
  sessionEvents(id: string): Promise<{ session: SessionSummary; events: AuditEvent[] }>;
  policies(): Promise<PolicySet>;
  /** `baseVersion` guards against overwriting someone else's save (409). */
  putPolicies(policies: PolicyRule[], baseVersion?: number | null): Promise<PolicySet>;
  masking(): Promise<MaskingSet>;
  putMasking(masking: MaskingRule[], detectors: CustomDetector[], baseVersion?: number | null): Promise<MaskingSet>;
  /** Policy and masking versions together, newest first (their numbers are shared). */
  policyVersions(): Promise<PolicyVersionMeta[]>;
  policyVersion(v: number, kind: 'policies' | 'masking'): Promise<PolicyVersionMeta>;
  /** Replays recorded traffic through draft rules; `masking` (the draft's masking rules) decides what counts as masked. */
  dryRun(policies: PolicyRule[], from: number, to: number, masking?: { masking: unknown[]; detectors: unknown[] }): Promise<DryRunResult>;
  auditStatus(): Promise<AuditStatus>;
  verify(): Promise<VerifyResult>;
  createExport(req: ExportRequest): Promise<{ id: string; url?: string }>;
  keys(): Promise<ApiKeyView[]>;
  /** The key belongs to the signed-in person unless `owner` names a person or `newOwner` creates one. */
  createKey(req: { name: string; groups: string[]; expires?: string; owner?: string; newOwner?: string }): Promise<{ key: string; record: ApiKeyView }>;
  revokeKey(id: string): Promise<void>;
  connections(): Promise<ConnectionList>;
  addConnection(c: ConnectionInput): Promise<ConnectionView>;
  editConnection(name: string, c: ConnectionInput): Promise<ConnectionView>;
  testConnection(name: string): Promise<ConnectionTestResult>;
  testDraft(c: ConnectionInput): Promise<ConnectionTestResult>;
  dashboard(from: number, to: number, buckets: number): Promise<DashboardData>;
}

// ---- tolerant readers: the console accepts a bare array or an object wrapping it ----------------

export function listOf<T>(v: unknown, ...keys: string[]): T[] {
  if (Array.isArray(v)) return v as T[];
  if (v && typeof v === 'object') for (const k of keys) if (Array.isArray((v as Record<string, unknown>)[k])) return (v as Record<string, T[]>)[k]!;
  return [];
}

export function num(v: unknown): number | null {
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (typeof v === 'string' && v) {
    const n = /^\d+$/.test(v) ? Number(v) : Date.parse(v);
    return Number.isFinite(n) ? n : null;
  }
  return null;
}

export function strOrNull(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

function obj(v: unknown): Record<string, unknown> {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

export function readPolicySet(v: unknown): PolicySet {
  const o = obj(v);
  return {
    version: num(o['version']),
    author: strOrNull(o['author']),
    updatedAt: num(o['updatedAt'] ?? o['createdAt']),
    policies: listOf<PolicyRule>(v, 'policies', 'rules'),
  };
}

export function readMaskingSet(v: unknown): MaskingSet {
  const o = obj(v);
  const builtins = listOf<unknown>(o['builtins'] ?? o['builtinDetectors'] ?? o['available'], 'detectors').map((d) => (typeof d === 'string' ? d : strOrNull(obj(d)['id']) ?? '')).filter(Boolean);
  return {
    version: num(o['version']),
    author: strOrNull(o['author']),
    updatedAt: num(o['updatedAt'] ?? o['createdAt']),
    masking: listOf<MaskingRule>(v, 'masking', 'rules'),
    detectors: listOf<CustomDetector>(o['detectors'], 'detectors'),
    builtins,
  };
}

/**
 * Policy (`/api/policies/versions`) or masking (`/api/masking/versions`) versions. In listings
 * `rules` is a count; a single policy version carries its rules, a masking version `{masking, detectors}`.
 */
export function readVersions(v: unknown, kind?: 'policies' | 'masking'): PolicyVersionMeta[] {
  return listOf<Record<string, unknown>>(v, 'versions').map((x) => {
    const rules = Array.isArray(x['rules']) ? x['rules'] : undefined;
    const k = kind ?? (x['kind'] === 'masking' ? 'masking' : 'policies');
    const maskingBody = Array.isArray(x['masking']) ? { masking: x['masking'], ...(Array.isArray(x['detectors']) && x['detectors'].length ? { detectors: x['detectors'] } : {}) } : undefined;
    return {
      version: num(x['version']) ?? 0,
      kind: k,
      author: strOrNull(x['authorName']) ?? strOrNull(x['author']) ?? '?',
      createdAt: num(x['createdAt'] ?? x['created_at'] ?? x['time']) ?? 0,
      body: x['body'] ?? (k === 'masking' ? maskingBody : rules),
      note: strOrNull(x['note']) ?? undefined,
      count: typeof x['rules'] === 'number' ? x['rules'] : rules?.length,
    };
  });
}

/** `POST /api/policies/dry-run` (proxy/policy/dry-run.ts DryRunReport), read tolerantly. */
export function readDryRun(v: unknown): DryRunResult {
  const o = obj(v);
  const counts = (x: unknown): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const [k, n] of Object.entries(obj(x))) if (typeof n === 'number') out[k] = n;
    return out;
  };
  const changes: DryRunResult['changes'] = [];
  for (const sess of listOf<Record<string, unknown>>(o['changed'], 'sessions')) {
    const examples = listOf<Record<string, unknown>>(sess['examples']);
    for (const c of examples)
      changes.push({
        session: strOrNull(sess['session']) ?? undefined,
        seq: num(c['seq']) ?? undefined,
        time: num(c['time']) ?? undefined,
        summary: strOrNull(c['summary']) ?? '',
        from: `${strOrNull(c['recorded']) ?? '?'}${strOrNull(c['recordedRule']) ? ` (${strOrNull(c['recordedRule'])})` : ''}`,
        to: strOrNull(c['candidate']) ?? '?',
        rule: strOrNull(c['candidateRule']) ?? undefined,
      });
  }
  return {
    from: num(o['from']) ?? undefined,
    to: num(o['to']) ?? undefined,
    total: num(o['requests'] ?? o['total']) ?? 0,
    candidate: counts(o['candidate']),
    current: counts(o['recorded'] ?? o['current']),
    changes,
    changedRequests: num(o['changedRequests']) ?? changes.length,
    changedSessions: num(o['changedSessions']) ?? new Set(changes.map((c) => c.session)).size,
    transitions: counts(o['transitions']),
    maskedValues: { current: num(obj(o['maskedValues'])['recorded']) ?? 0, candidate: num(obj(o['maskedValues'])['candidate']) ?? 0 },
    partial: num(o['partial']) ?? 0,
    raw: v,
  };
}

export function readAuditStatus(v: unknown): AuditStatus {
  const o = obj(v);
  const cp = obj(o['lastCheckpoint'] ?? o['checkpoint']);
  const lv = obj(o['lastVerification'] ?? o['verification']);
  const key = obj(o['publicKey'] ?? o['key']);
  return {
    treeSize: num(o['treeSize'] ?? o['events'] ?? o['size']),
    rootHash: strOrNull(o['rootHash'] ?? o['root']),
    lastCheckpoint: Object.keys(cp).length ? { time: num(cp['time'] ?? cp['at']) ?? 0, treeSize: num(cp['treeSize'] ?? cp['size']) ?? 0, rootHash: strOrNull(cp['rootHash'] ?? cp['root']) ?? undefined } : null,
    lastVerification: Object.keys(lv).length
      ? { time: num(lv['time'] ?? lv['at']) ?? 0, ok: lv['ok'] === true || lv['intact'] === true, message: strOrNull(lv['message'] ?? lv['error']) ?? undefined, events: num(lv['events'] ?? lv['checked']) ?? undefined }
      : null,
    publicKey: typeof o['publicKey'] === 'string' ? o['publicKey'] : strOrNull(key['publicKey'] ?? key['key'] ?? key['note']),
    fingerprint: strOrNull(o['fingerprint'] ?? o['keyFingerprint'] ?? key['fingerprint']),
    origin: strOrNull(o['origin'] ?? cp['origin']),
    witnesses: Array.isArray(o['witnesses']) ? (o['witnesses'] as WitnessView[]) : [],
    sinks: Array.isArray(o['sinks']) ? (o['sinks'] as SinkView[]) : [],
    archive: o['archive'] && typeof o['archive'] === 'object' ? (o['archive'] as ArchiveView) : null,
    raw: v,
  };
}

export function readVerify(v: unknown): VerifyResult {
  const o = obj(v);
  const ok = o['ok'] === true || o['intact'] === true;
  return {
    ok,
    message: strOrNull(o['message'] ?? o['error'] ?? o['summary']) ?? (ok ? 'intact' : 'verification failed'),
    events: num(o['events'] ?? o['checked'] ?? o['treeSize']) ?? undefined,
    firstBad: num(o['firstBad'] ?? o['firstBadSeq'] ?? o['seq']),
    raw: v,
  };
}
