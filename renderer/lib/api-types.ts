/**
 * What the console asks of the control plane. The wire types are the REST contract in
 * shared/api.ts; the HTTP implementation is renderer/api.ts. Stores take this interface so their
 * logic runs in node tests with a fake. The few shapes defined here are the console's own views,
 * built from the contract's responses by the `read…` functions below.
 */
import type {
  AuditStatusResponse,
  CombinedCheckpointHealth,
  ConnectionInput,
  ConnectionList,
  ConnectionTestResult,
  ConnectionView,
  CreateKeyRequest,
  DetectorCatalog,
  DryRunReport,
  ExportRequest,
  GatewayList,
  GatewayView,
  HealthResponse,
  KeyView,
  MaskingDocument,
  MaskingSetResponse,
  MaskingVersion,
  MaskingVersionSummary,
  PolicySetResponse,
  PolicyVersion,
  PolicyVersionSummary,
  VerificationView,
  AddSshKeyRequest,
  SshKeyList,
  SshKeyView,
} from '../../shared/api';
import type { CustomDetector, MaskingRule, PolicyRule } from '../../shared/config';
import type { DashboardData } from '../../shared/dashboard';
import type { AuditEvent, SessionFilter, SessionSummary } from '../../shared/events';
import type { ArchiveStatus, SignerStatus, SinkStatus, WitnessStatus } from '../../shared/evidence';
import type { HoldDecisionRequest, HoldState, HoldView } from '../../shared/holds';
import type { OidcProvider } from '../../shared/identity';
import type { Me } from './roles';

/** The rules in force, as the Policies page edits them. */
export interface PolicySet {
  version: number;
  author: string | null;
  updatedAt: number | null;
  policies: PolicyRule[];
}

/** The masking rules in force, as the Policies page edits them. */
export interface MaskingSet {
  version: number;
  author: string | null;
  updatedAt: number | null;
  masking: MaskingRule[];
  detectors: CustomDetector[];
}

/** A policy or masking version in the history list (their numbers are shared). */
export interface PolicyVersionMeta {
  version: number;
  kind: 'policies' | 'masking';
  author: string;
  createdAt: number;
  /** The rules of that version (policies) or `{masking, detectors?}` (masking), when loaded. */
  body?: unknown;
  note?: string;
  /** Number of rules in that version. */
  count?: number;
}

/** `POST /api/policies/dry-run`, flattened for the review step. */
export interface DryRunResult {
  from?: number;
  to?: number;
  /** Requests replayed. */
  total: number;
  /** Counts by outcome under the candidate, and under the rules in force. */
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
}

/** The Audit page's summary of `GET /api/audit/status`. */
export interface AuditStatus {
  treeSize: number | null;
  rootHash: string | null;
  lastCheckpoint: { time: number; treeSize: number; rootHash?: string } | null;
  lastVerification: { time: number; ok: boolean; message?: string; events?: number } | null;
  publicKey: string | null;
  fingerprint: string | null;
  origin?: string | null;
  /** The checkpoint signer (absent from older gateways). */
  signer?: SignerStatus;
  witnesses: WitnessStatus[];
  sinks: SinkStatus[];
  /** The archive in object storage; null when audit.archive is not configured. */
  archive: ArchiveStatus | null;
  /**
   * The group's combined checkpoint (with a shared store); a refusal raises the banner. With
   * audit.witnesses[], each witness's standing on the group's log of combined checkpoints.
   */
  combinedCheckpoint?: { state: string; cause?: string; witnesses?: CombinedCheckpointHealth['witnesses'] };
}

export interface VerifyResult {
  ok: boolean;
  message: string;
  events?: number;
  firstBad?: number | null;
}

export interface ConsoleApi {
  health(): Promise<HealthResponse>;
  me(): Promise<Me>;
  providers(): Promise<OidcProvider[]>;
  loginWithKey(key: string): Promise<void>;
  logout(): Promise<void>;
  holds(state: HoldState, limit?: number): Promise<HoldView[]>;
  decide(id: string, req: HoldDecisionRequest): Promise<HoldView | undefined>;
  /** `incomplete`: with a shared store, why the other gateways' sessions are missing (the store did not answer). */
  sessions(filter: SessionFilter, offset: number, limit: number): Promise<{ total: number; sessions: SessionSummary[]; incomplete?: string }>;
  /** `altered`: another gateway's session whose rows in the shared store no longer match their hashes (their seqs). */
  sessionEvents(id: string): Promise<{ session: SessionSummary; events: AuditEvent[]; altered?: number[] }>;
  /** Ends a live (SSH) session with a reason; approvers and admins. */
  endSession(id: string, reason: string): Promise<void>;
  policies(): Promise<PolicySet>;
  /** `baseVersion` guards against overwriting someone else's save (409). */
  putPolicies(policies: PolicyRule[], baseVersion?: number | null): Promise<PolicySet>;
  masking(): Promise<MaskingSet>;
  putMasking(masking: MaskingRule[], detectors: CustomDetector[], baseVersion?: number | null): Promise<MaskingSet>;
  /** The built-in detectors and groups a masking rule may name. */
  detectors(): Promise<DetectorCatalog>;
  /** Policy and masking versions together, newest first (their numbers are shared). */
  policyVersions(): Promise<PolicyVersionMeta[]>;
  policyVersion(v: number, kind: 'policies' | 'masking'): Promise<PolicyVersionMeta>;
  /** Replays recorded traffic through draft rules; `masking` (the draft's masking rules) decides what counts as masked. */
  dryRun(policies: PolicyRule[], from: number, to: number, masking?: MaskingDocument): Promise<DryRunResult>;
  auditStatus(): Promise<AuditStatus>;
  verify(): Promise<VerifyResult>;
  createExport(req: ExportRequest): Promise<{ id: string; url?: string }>;
  keys(): Promise<KeyView[]>;
  /** The key belongs to the signed-in person unless `owner` names a person or `newOwner` creates one. */
  createKey(req: CreateKeyRequest): Promise<{ key: string; record: KeyView }>;
  revokeKey(id: string): Promise<void>;
  /** The signed-in person's SSH keys (admins: everyone's with `all`), and where ssh connections listen. */
  sshKeys(all?: boolean): Promise<SshKeyList>;
  addSshKey(req: AddSshKeyRequest): Promise<SshKeyView>;
  removeSshKey(fingerprint: string): Promise<void>;
  connections(): Promise<ConnectionList>;
  addConnection(c: ConnectionInput): Promise<ConnectionView>;
  editConnection(name: string, c: ConnectionInput): Promise<ConnectionView>;
  testConnection(name: string): Promise<ConnectionTestResult>;
  testDraft(c: ConnectionInput): Promise<ConnectionTestResult>;
  dashboard(from: number, to: number, buckets: number): Promise<DashboardData>;
  /** The gateways of the shared store's group (admins); `self: null` without a shared store. */
  gateways(): Promise<GatewayList>;
  /** Approves a pending gateway, as this gateway (recorded in its chain). */
  approveGateway(id: string): Promise<GatewayView>;
  removeGateway(id: string, reason: string): Promise<GatewayView>;
}

// ---- the console's views, built from the contract's responses ----------------------------------

export function readPolicySet(r: PolicySetResponse): PolicySet {
  return { version: r.version, author: r.author, updatedAt: r.updatedAt, policies: r.rules };
}

export function readMaskingSet(r: MaskingSetResponse): MaskingSet {
  return { version: r.version, author: r.author, updatedAt: r.updatedAt, masking: r.masking, detectors: r.detectors };
}

/** A policy version listing or one version: in listings `rules` is a count, in one version the rules. */
export function readPolicyVersion(v: PolicyVersion | PolicyVersionSummary): PolicyVersionMeta {
  const rules = typeof v.rules === 'number' ? undefined : v.rules;
  return { version: v.version, kind: 'policies', author: v.authorName, createdAt: v.createdAt, body: rules, note: v.note, count: rules ? rules.length : (v.rules as number) };
}

/** A masking version in a listing (its rules; detectors only counted) or one version (rules and detectors). */
export function readMaskingVersion(v: MaskingVersion | MaskingVersionSummary): PolicyVersionMeta {
  const detectors = typeof v.detectors === 'number' ? [] : v.detectors;
  return {
    version: v.version,
    kind: 'masking',
    author: v.authorName,
    createdAt: v.createdAt,
    body: { masking: v.masking, ...(detectors.length ? { detectors } : {}) },
    note: v.note,
    count: 'rules' in v ? v.rules : undefined,
  };
}

/** `POST /api/policies/dry-run` (proxy/policy/dry-run.ts), one row per example of a changed request. */
export function readDryRun(r: DryRunReport): DryRunResult {
  const changes: DryRunResult['changes'] = [];
  for (const changed of r.changed)
    for (const example of changed.examples)
      changes.push({
        session: changed.session,
        seq: example.seq,
        time: example.time,
        summary: example.summary,
        from: `${example.recorded}${example.recordedRule ? ` (${example.recordedRule})` : ''}`,
        to: example.candidate,
        rule: example.candidateRule,
      });
  return {
    from: r.from ?? undefined,
    to: r.to ?? undefined,
    total: r.requests,
    candidate: r.candidate,
    current: r.recorded,
    changes,
    changedRequests: r.changedRequests,
    changedSessions: r.changedSessions,
    transitions: r.transitions,
    maskedValues: { current: r.maskedValues.recorded, candidate: r.maskedValues.candidate },
    partial: r.partial,
  };
}

export function readAuditStatus(r: AuditStatusResponse): AuditStatus {
  const checkpoint = r.lastCheckpoint;
  const verification = r.lastVerification;
  return {
    treeSize: r.treeSize,
    rootHash: r.rootHash,
    lastCheckpoint: checkpoint ? { time: checkpoint.time, treeSize: checkpoint.treeSize, rootHash: checkpoint.rootHash } : null,
    lastVerification: verification ? { time: verification.time, ok: verification.ok, message: verification.message, events: verification.events } : null,
    publicKey: r.publicKey,
    fingerprint: r.fingerprint,
    origin: r.origin,
    signer: r.signer,
    witnesses: r.witnesses,
    sinks: r.sinks,
    archive: r.archive,
    ...(r.combinedCheckpoint
      ? {
          combinedCheckpoint: {
            state: r.combinedCheckpoint.state,
            ...(r.combinedCheckpoint.cause ? { cause: r.combinedCheckpoint.cause } : {}),
            ...(r.combinedCheckpoint.witnesses ? { witnesses: r.combinedCheckpoint.witnesses } : {}),
          },
        }
      : {}),
  };
}

export function readVerify(v: VerificationView | null): VerifyResult {
  if (!v) return { ok: false, message: 'verification failed' };
  return { ok: v.ok, message: v.message, events: v.events, firstBad: v.firstBadSeq };
}
