/**
 * The control plane's REST contract: every route under `/api/…`, with the body it reads and the
 * JSON it answers. The route handlers (proxy/control/routes/) are typed from this map through the
 * router, and the console's client (renderer/api.ts) from the same map, so a field renamed on one
 * side fails the typecheck on the other. docs/CONSOLE.md describes the routes for people.
 *
 * Bodies arrive from the network: a handler reads them as `Untrusted<…>` (every field `unknown`)
 * and validates before use; the request types here say what a well-behaved client sends.
 */
import type { Connection, CustomDetector, MaskingRule, PolicyRule } from './config';
import type { DashboardData } from './dashboard';
import type { AuditEvent, MaskSpan, SessionSummary, VersionSource } from './events';
import type { ArchiveStatus, SignerStatus, SinkStatus, WitnessStatus } from './evidence';
import type { HoldDecisionRequest, HoldView } from './holds';
import type { ApiKeyRecord, Identity, LoginProviders, Person } from './identity';

// ---- health and sign-in -------------------------------------------------------------------------

/** What /api/health (public) shows of the evidence leaving the box: names, states and counts, no URLs or error texts. */
export interface AuditHealth {
  /** The checkpoint signer: a failing one (audit.signer) writes no checkpoints until it signs again. */
  signer: { kind: SignerStatus['kind']; state: SignerStatus['state']; failures: number; lastSignedAt: number | null };
  witnesses: { name: string; state: WitnessStatus['state']; cosignedTreeSize: number | null; behind: number; failures: number }[];
  sinks: { name: string; state: SinkStatus['state']; backlog: number; backlogAgeMs: number | null; lastDeliveryAt: number | null; failures: number }[];
  archive: { state: ArchiveStatus['state']; lastSegment: { index: number; lastSeq: number; verifiedAt: number } | null; archivedThrough: number; behind: number; objectLock: ArchiveStatus['objectLock']['state']; failures: number } | null;
}

/** The store's commit path: `degraded` (locked or slow) and `failed` come with their cause. */
export interface StoreHealth {
  state: 'ok' | 'degraded' | 'failed';
  cause?: string;
  since?: number;
  behindMs?: number;
}

/** This gateway's place in a shared store (store.url): admission, and how far shipping is behind. */
export interface SharedStoreHealth {
  state: 'ok' | 'degraded';
  cause?: string;
  /** This gateway's id: the fingerprint of its checkpoint-signing key. */
  gateway: string;
  /** connecting: no answer from the store yet; pending: waiting for approval (serves nothing); admitted: serving and shipping. */
  phase: 'connecting' | 'pending' | 'admitted';
  enrolment: 'enrolled' | 'pending' | 'approved' | 'removed' | null;
  /** The last seq of this gateway's chain in the store, and in the local store. */
  shippedSeq: number;
  localSeq: number;
  lagEvents: number;
  /** How long the store has been behind the local chain (0 when it is not). */
  lagMs: number;
  /** Since when the store cannot be reached or written, while it cannot. */
  failingSince?: number;
}

/** A gateway of the shared store's group, as the Audit page's Gateways view shows it. */
export interface GatewayView {
  /** The fingerprint of its checkpoint-signing key (`SHA256:…`). */
  id: string;
  /** Its host name. */
  name: string;
  status: 'enrolled' | 'pending' | 'approved' | 'removed';
  requestedAt: number;
  /** The gateway that approved it, and where its `gateway.approved` sits in that gateway's chain. */
  approvedBy: string | null;
  approvalSeq: number | null;
  /** The gateway that removed it, and where its `gateway.removed` sits in that gateway's chain. */
  removedBy?: string | null;
  removalSeq?: number | null;
  /** The last seq of its chain in the store. */
  shippedSeq: number;
  /** When it last shipped or touched its row. */
  lastSeen: number;
  /** Its hold lease, on the store's clock (absent until its hold worker first renewed it). */
  lease: { renewedAt: number; expiresAt: number } | null;
  /**
   * Whether `status` is proven by the gateway answering, as it proves its members (never from the
   * store's table, which anyone who can write to the store can write): an approval or removal in
   * the chain of a proven member under a checkpoint signed by its key, its own local records and
   * the keys it pinned at admission; for a pending row, its request signed by its key.
   */
  proven: boolean;
  /** How `status` is proven (e.g. "approval at seq 12 in chain SHA256:…, checkpoint-signed"). */
  provenBy?: string;
  /** Why `status` is not proven; for a pending row, why it cannot be approved. */
  problem?: string;
  /** The gateway answering. */
  self: boolean;
}

/** `POST /api/gateways/:id/remove`: why (recorded in the `gateway.removed` event). */
export interface RemoveGatewayRequest {
  reason: string;
}

export interface GatewayList {
  /** This gateway's id; null without a shared store (then there is no group). */
  self: string | null;
  gateways: GatewayView[];
}

/**
 * The group's combined checkpoint as this gateway takes part in it (store.url, docs/SCALE-OUT.md):
 * `refused` once it has refused to make or cosign one since it started (a chain in the store was not
 * what the last one committed to; recorded in its chain as `group.checkpoint.refused`), `failing`
 * while the store cannot be read, `waiting` until it is admitted and a checkpoint exists.
 */
export interface CombinedCheckpointHealth {
  state: 'ok' | 'waiting' | 'refused' | 'failing';
  cause?: string;
  interval: string;
  /** The newest combined checkpoint in the store, and how many gateways cosigned it. */
  latest: { interval: number; madeAt: number; maker: string; chains: number; cosigners: number } | null;
  /** The newest this gateway signed: made it, or cosigned it. */
  signed: { interval: number; at: number; role: 'made' | 'cosigned'; chains: number } | null;
  /** The last refusal since the start. */
  refusal: { at: number; role: 'make' | 'cosign'; chain: string; problem: string; message: string } | null;
  /**
   * With audit.witnesses[]: each witness's standing on the group's log of combined checkpoints
   * (docs/SCALE-OUT.md, "Witnesses of the combined checkpoints"): the size it last cosigned and how
   * many combined checkpoints were made since. A failing witness never stops traffic or the
   * combined checkpoints.
   */
  witnesses?: { name: string; state: WitnessStatus['state']; cosignedTreeSize: number | null; behind: number; failures: number }[];
}

export interface HealthResponse {
  status: 'ok' | 'degraded';
  version: string;
  /** Events in the log. */
  events: number;
  store: StoreHealth;
  audit?: AuditHealth;
  sharedStore?: SharedStoreHealth;
  combinedCheckpoint?: CombinedCheckpointHealth;
}

export interface KeyLoginRequest {
  key: string;
}

export interface KeyLoginResponse {
  identity: Identity;
  expiresAt: number;
}

// ---- holds and sessions -------------------------------------------------------------------------

export interface HoldList {
  total: number;
  holds: HoldView[];
}

export interface SessionList {
  total: number;
  sessions: SessionSummary[];
  /** With a shared store: why the other gateways' sessions are missing from this list (the store did not answer). */
  incomplete?: string;
}

/** Ends a live session (SSH) from the console; the reason is recorded and shown to the client. */
export interface EndSessionRequest {
  reason: string;
}

export interface EndSessionResponse {
  session: string;
  ended: true;
}

export interface SessionEvents {
  session: SessionSummary;
  events: AuditEvent[];
  /** Set when the viewer may replay the session only up to this event (an approver of a hold in it). */
  upToSeq?: number;
  /** Another gateway's session, read from the shared store: seqs of events whose stored row no longer matches its hashes. */
  altered?: number[];
}

// ---- policies -----------------------------------------------------------------------------------

// VersionSource lives with the event payloads that record it (shared/events.ts).
export type { VersionSource } from './events';

/** Who saved a version of a policy or masking document, and when. */
export interface VersionMeta {
  version: number;
  /** The subject that saved it (`key:…`, `<issuer>#<sub>`, `config`). */
  author: string;
  authorName: string;
  createdAt: number;
  source: VersionSource;
  note?: string;
}

/** A problem `POST /api/policies/check` (and a refused PUT) finds in a rule set. */
export interface PolicyIssue {
  level: 'error' | 'warning';
  /** Index of the rule in the list, when the issue is about one rule. */
  rule?: number;
  name?: string;
  path: (string | number)[];
  message: string;
}

/** The rules in force (`GET /api/policies`), or the version a PUT just saved. */
export interface PolicySetResponse {
  /** 0 before any version was recorded. */
  version: number;
  author: string | null;
  updatedAt: number | null;
  source: VersionSource;
  rules: PolicyRule[];
  /** Warnings only on GET; a PUT returns every issue it found (none of them errors). */
  warnings: PolicyIssue[];
}

export interface PutPoliciesRequest {
  rules: PolicyRule[];
  /** The version the edit started from: a save over someone else's newer version is refused (409). */
  baseVersion?: number;
  note?: string;
}

export interface PolicyVersion extends VersionMeta {
  rules: PolicyRule[];
}

/** A version in a listing: `rules` is how many there are. */
export interface PolicyVersionSummary extends VersionMeta {
  rules: number;
}

export interface VersionPage<V> {
  total: number;
  /** Newest first. */
  versions: V[];
}

export interface PolicyCheckRequest {
  rules: PolicyRule[];
}

export interface PolicyCheckResponse {
  ok: boolean;
  issues: PolicyIssue[];
}

export interface DryRunRequest {
  rules: PolicyRule[];
  /** ms since epoch or ISO 8601. */
  from?: number | string;
  to?: number | string;
  /** A draft's masking rules: what counts as masked under the candidate (else the gateway's). */
  masking?: MaskingRule[];
  detectors?: CustomDetector[];
}

/** What a request's policy decision came to. */
export type Outcome = 'allowed' | 'held' | 'denied' | 'masked';

export interface ChangedRequest {
  seq: number;
  time: number;
  summary: string;
  recorded: Outcome;
  recordedRule?: string;
  candidate: Outcome;
  candidateRule?: string;
}

export interface ChangedSession {
  session: string;
  connection: string | null;
  actor: string | null;
  actorName: string | null;
  requests: number;
  changed: number;
  examples: ChangedRequest[];
}

/** `POST /api/policies/dry-run`: what candidate rules would have done to recorded traffic. */
export interface DryRunReport {
  from: number | null;
  to: number | null;
  requests: number;
  sessions: number;
  candidate: Record<Outcome, number>;
  recorded: Record<Outcome, number>;
  /** Requests whose outcome differs, by transition, e.g. `allowed→held`. */
  transitions: Record<string, number>;
  changedRequests: number;
  changedSessions: number;
  /** Matches per candidate rule name. */
  byRule: Record<string, number>;
  /** Requests replayed with less than the proxy saw (body not recorded, SQL not classifiable). */
  partial: number;
  /**
   * Values masked in requests and their responses: as recorded (masked spans in the log), and under
   * the candidate (those, plus values the candidate's masking rules find in the recorded text).
   */
  maskedValues: { recorded: number; candidate: number };
  changed: ChangedSession[];
}

// ---- masking ------------------------------------------------------------------------------------

/** A detector the gateway knows, built in (proxy/masking/detectors.ts) or custom. */
export interface DetectorInfo {
  id: string;
  /** The label a redaction shows, e.g. `CREDIT_CARD`. */
  type: string;
  kind: 'pii' | 'secret' | 'custom';
  description: string;
}

/** `GET /api/masking/detectors`: what a masking rule may name besides the custom detectors. */
export interface DetectorCatalog {
  detectors: DetectorInfo[];
  /** Group names usable in place of detector ids (`all`, `pii`, `secrets`, …), with their members. */
  groups: Record<string, string[]>;
}

export interface MaskingDocument {
  detectors: CustomDetector[];
  masking: MaskingRule[];
}

export interface MaskingSetResponse extends MaskingDocument {
  version: number;
  author: string | null;
  updatedAt: number | null;
  source: VersionSource;
  builtinDetectors: DetectorInfo[];
  detectorGroups: string[];
}

export interface PutMaskingRequest extends MaskingDocument {
  baseVersion?: number;
  note?: string;
}

/** An issue in a masking config: where, and what is wrong. */
export interface MaskingIssue {
  path: (string | number)[];
  message: string;
}

export interface MaskingCheckRequest extends MaskingDocument {
  /** Text to mask with the draft, as a preview. */
  sample?: string;
}

export interface MaskingCheckResponse {
  ok: boolean;
  issues: MaskingIssue[];
  /** The sample as the log would hold it: the masked text (parsed JSON where the body reads as JSON). */
  sample?: { text: unknown; spans: MaskSpan[]; counts: Record<string, number> };
}

export type MaskingVersion = VersionMeta & MaskingDocument;

/** A version in a listing: its masking rules, and how many rules and custom detectors it has. */
export interface MaskingVersionSummary extends VersionMeta {
  masking: MaskingRule[];
  rules: number;
  detectors: number;
}

// ---- keys and persons ---------------------------------------------------------------------------

export type KeyView = ApiKeyRecord & { state: 'active' | 'expired' | 'revoked' };

export interface CreateKeyRequest {
  name: string;
  groups: string[];
  /** A duration such as `30d`. */
  expires?: string;
  /** An existing person (id or name) who owns the key; default: the caller. */
  owner?: string;
  /** A new person to create as the key's owner. */
  newOwner?: string;
}

/** The new key, shown this once, and its record. */
export type CreatedKey = KeyView & { key: string; person: string };

/** A registered SSH public key (docs/SSH.md, "Public keys"): it logs in as the API key `keyId`. */
export interface SshKeyView {
  /** `SHA256:…`, as `ssh-keygen -l` prints it. */
  fingerprint: string;
  algo: string;
  comment: string | null;
  /** The API key it logs in as (groups, person and expiry are that key's). */
  keyId: string;
  keyName: string | null;
  person: string | null;
  personName: string | null;
  createdAt: number;
  createdBy: string;
  /** When the API key it logs in as expires; after that the SSH key is refused. */
  expiresAt: number | null;
  /** `expired` or `revoked` when the API key it logs in as is. */
  state: 'active' | 'expired' | 'revoked';
}

export interface AddSshKeyRequest {
  /** One OpenSSH public key line (`ssh-ed25519 AAAA… me@laptop`). */
  publicKey: string;
  /** A duration such as `8h`: the key is refused after it (default 30d; never past the caller's own API key). */
  expires?: string;
  /** Admins: the person (id or name) whose key it is; default the caller. */
  person?: string;
  /** Admins, with `person`: the groups it logs in with; default none. */
  groups?: string[];
}

/** `GET /api/ssh-keys`: the keys, and where the gateway's ssh connections listen. */
export interface SshKeyList {
  keys: SshKeyView[];
  listeners: { connection: string; address: string }[];
}

export interface PersonLockResult {
  /** Ids of the keys the lock revoked. */
  keysRevoked: string[];
  consoleSessionsEnded: number;
}

// ---- audit and evidence -------------------------------------------------------------------------

export interface CheckpointView {
  treeSize: number;
  /** hex */
  rootHash: string;
  time: number;
  /** The signed note, as written. */
  note: string;
}

export interface SigningKeyView {
  name: string;
  keyId: string;
  /** `<name>+<hex key id>+<base64(0x01 ‖ public key)>` */
  verifierKey: string;
  fingerprint: string;
  publicKey: string;
}

/** A verification of the store: when, by whom, what it checked, and the first problem if any. */
export interface VerificationRecord {
  ok: boolean;
  verifiedAt: number;
  by: string;
  events: number;
  checkpointsChecked: number;
  payloadsPurged: number;
  durationMs: number;
  failure?: { seq?: number; problem: string; message: string };
}

/** The last verification, with a one-line `message`. */
export interface VerificationView extends VerificationRecord {
  time: number;
  message: string;
  firstBadSeq: number | null;
  problem: string | null;
}

export interface AuditStatusResponse {
  events: number;
  treeSize: number;
  rootHash: string;
  headHash: string;
  origin: string;
  publicKey: string;
  fingerprint: string;
  key: SigningKeyView;
  /** Where the signing key lives and whether it signs; `lastError` says why a failing audit.signer does not. */
  signer: SignerStatus;
  checkpointInterval: string;
  lastCheckpoint: CheckpointView | null;
  lastVerification: VerificationView | null;
  retention: { payloadsAfter: string | null };
  witnesses: WitnessStatus[];
  sinks: SinkStatus[];
  /** The archive in object storage; null when audit.archive is not configured. */
  archive: ArchiveStatus | null;
  /** The group's combined checkpoint; absent without store.url. */
  combinedCheckpoint?: CombinedCheckpointHealth;
}

export interface ExportRequest {
  from?: number | string;
  to?: number | string;
  user?: string;
  connection?: string;
}

export interface ExportJobView {
  id: string;
  state: 'running' | 'done' | 'failed';
  requestedBy: string;
  createdAt: number;
  filter: { from?: number; to?: number; user?: string; connection?: string };
  done: number;
  total: number;
  bytes?: number;
  events?: number;
  error?: string;
  /** Where to download the bundle, once it is done. */
  url?: string;
}

// ---- connections --------------------------------------------------------------------------------

/** What the console sees of a connection: everything but the secret's value. */
export interface ConnectionView {
  name: string;
  kind: Connection['kind'];
  /** The upstream address with any credential in it shown as `***`. */
  upstream: string;
  /** Set when the upstream address carries a credential: move it into `secret`. */
  warning?: string;
  listen?: string;
  tls?: Connection['tls'];
  description?: string;
  /** `config`: from the config file; `console`: added or edited here (stored in the database). */
  source: 'config' | 'console';
  /** Where the secret comes from; its value is never shown. */
  secret: { kind: 'env' | 'value' | 'file'; env?: string; file?: string } | null;
  updatedAt: number | null;
  updatedBy: string | null;
  /** Saved after the proxies started: takes effect on the next gateway start. */
  pendingRestart: boolean;
  /**
   * It came from another gateway of the group with a secret value (or a credential in its address),
   * which never travels: not served here until an admin sets the secret on this gateway.
   */
  secretMissing?: true;
}

export interface ConnectionList {
  connections: ConnectionView[];
  /** Where the HTTP proxy listens, for the client snippets. */
  httpListen: string;
  liveReload: boolean;
}

/** The body of POST/PUT `/api/connections…`: a connection plus a write-only secret. */
export interface ConnectionInput {
  name?: string;
  kind?: Connection['kind'];
  upstream?: string;
  listen?: string;
  tls?: ConnectionView['tls'];
  description?: string;
  /** A string is the secret value; or `{env}` (CUSTODY_SECRET_… only) or `{value}`; null removes it; omitted keeps it. */
  secret?: string | { env: string } | { value: string } | null;
}

export interface ConnectionTestResult {
  ok: boolean;
  latencyMs: number;
  /** What was tried and what happened, in one line. */
  message: string;
  status?: number;
}

// ---- the map ------------------------------------------------------------------------------------

/**
 * Every route: `request` is the JSON body it reads (absent: none), `response` the JSON it answers.
 * `never` marks a route that answers something other than JSON (a redirect, a file, 204).
 */
export interface ApiRoutes {
  'GET /api/health': { response: HealthResponse };
  'GET /api/me': { response: Identity };
  'GET /api/auth/providers': { response: LoginProviders };
  'POST /api/auth/key': { request: KeyLoginRequest; response: KeyLoginResponse };
  'GET /api/auth/oidc/start': { response: never };
  'GET /api/auth/oidc/callback': { response: never };
  'POST /api/auth/logout': { response: never };

  'GET /api/holds': { response: HoldList };
  'GET /api/holds/:id': { response: HoldView };
  'POST /api/holds/:id/decision': { request: HoldDecisionRequest; response: HoldView };

  'GET /api/sessions': { response: SessionList };
  'GET /api/sessions/:id': { response: SessionSummary };
  'GET /api/sessions/:id/events': { response: SessionEvents };
  'POST /api/sessions/:id/end': { request: EndSessionRequest; response: EndSessionResponse };

  'GET /api/policies': { response: PolicySetResponse };
  'PUT /api/policies': { request: PutPoliciesRequest; response: PolicySetResponse };
  'GET /api/policies/versions': { response: VersionPage<PolicyVersionSummary> };
  'GET /api/policies/versions/:v': { response: PolicyVersion };
  'POST /api/policies/check': { request: PolicyCheckRequest; response: PolicyCheckResponse };
  'POST /api/policies/dry-run': { request: DryRunRequest; response: DryRunReport };

  'GET /api/masking': { response: MaskingSetResponse };
  'PUT /api/masking': { request: PutMaskingRequest; response: MaskingSetResponse };
  'POST /api/masking/check': { request: MaskingCheckRequest; response: MaskingCheckResponse };
  'GET /api/masking/versions': { response: VersionPage<MaskingVersionSummary> };
  'GET /api/masking/versions/:v': { response: MaskingVersion };
  'GET /api/masking/detectors': { response: DetectorCatalog };

  'GET /api/keys': { response: { keys: KeyView[] } };
  'POST /api/keys': { request: CreateKeyRequest; response: CreatedKey };
  'POST /api/keys/:id/revoke': { response: KeyView };
  'POST /api/keys/:id/expire': { response: KeyView };

  'GET /api/ssh-keys': { response: SshKeyList };
  'POST /api/ssh-keys': { request: AddSshKeyRequest; response: SshKeyView };
  'DELETE /api/ssh-keys/:fingerprint': { response: SshKeyView };

  'GET /api/persons': { response: { persons: Person[] } };
  'POST /api/persons': { request: { name: string }; response: Person };
  'POST /api/persons/:id/link': { request: { credential: string }; response: Person | undefined };
  'POST /api/persons/:id/lock': { response: Person & PersonLockResult };

  'GET /api/audit/status': { response: AuditStatusResponse };
  'POST /api/audit/verify': { response: VerificationView | null };
  'POST /api/exports': { request: ExportRequest; response: ExportJobView };
  'GET /api/exports': { response: { exports: ExportJobView[] } };
  'GET /api/exports/:id': { response: ExportJobView };
  'GET /api/exports/:id/download': { response: never };

  'GET /api/connections': { response: ConnectionList };
  'POST /api/connections': { request: ConnectionInput; response: ConnectionView };
  'PUT /api/connections/:name': { request: ConnectionInput; response: ConnectionView };
  'DELETE /api/connections/:name': { response: { removed: string; fromConfig: boolean } };
  'POST /api/connections/test': { request: ConnectionInput; response: ConnectionTestResult };
  'POST /api/connections/:name/test': { response: ConnectionTestResult };

  'GET /api/dashboard': { response: DashboardData };

  'GET /api/gateways': { response: GatewayList };
  'POST /api/gateways/:id/approve': { response: GatewayView };
  'POST /api/gateways/:id/remove': { request: RemoveGatewayRequest; response: GatewayView };
}

export type ApiRoute = keyof ApiRoutes;
export type ApiMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';

/** The paths a method has routes on: `ApiPath<'PUT'>` is `'/api/policies' | '/api/masking' | …`. */
export type ApiPath<M extends ApiMethod> = ApiRoute extends infer R ? (R extends `${M} ${infer P}` ? P : never) : never;

export type ApiResponse<R extends ApiRoute> = ApiRoutes[R]['response'];

/** The body a route reads; `undefined` for routes that read none. */
export type ApiRequest<R extends ApiRoute> = ApiRoutes[R] extends { request: infer B } ? B : undefined;

/** A body as it arrives: the contract's field names, each of unknown type until validated. */
export type Untrusted<T> = T extends readonly unknown[] ? unknown : T extends object ? { [K in keyof T]?: unknown } : unknown;

/** The `:name` parameters of a path, as an object: `PathParams<'/api/holds/:id'>` is `{id: string}`. */
export type PathParams<P extends string> = P extends `${string}:${infer Name}/${infer Rest}`
  ? { [K in Name]: string } & PathParams<`/${Rest}`>
  : P extends `${string}:${infer Name}`
    ? { [K in Name]: string }
    : Record<never, never>;
