/**
 * Audit events: what the gateway records. Every event is appended to one hash-chained log
 * (see proxy/audit). Payloads are JSON; anything a masking rule masks is stored masked, with the
 * masked spans beside it so replay can highlight them.
 */
import type { Connection, CustomDetector, MaskingRule, PolicyRule, Role } from './config';
import type { HoldState, HoldView, HoldVote } from './holds';
import type { CredentialKind, Identity } from './identity';

export const EVENT_KINDS = [
  // sessions and traffic
  'session.start',
  'session.end',
  // an approver or admin ended a live session from the console (before the session's own end)
  'session.terminated',
  'http.request',
  'http.response',
  'http.chunk',
  // bytes of a body relayed piece by piece, journaled before they are sent (the http.response follows)
  'http.body',
  'http.error',
  'pg.statement',
  'pg.result',
  // rows of a result that spans several reads, journaled before they are sent (the pg.result follows)
  'pg.rows',
  'pg.error',
  // ssh: a channel's request (exec, shell, subsystem, forwarding), its output and end, file operations
  'ssh.request',
  'ssh.output',
  'ssh.exit',
  // a line entered in an interactive shell, rebuilt from its keys (best effort: see payload.uncertain)
  'ssh.command',
  'ssh.sftp',
  'ssh.error',
  // decisions
  'policy.decision',
  'hold.created',
  'hold.vote',
  'hold.resolved',
  // identity
  'auth.login',
  'auth.logout',
  'auth.failure',
  'key.created',
  'key.revoked',
  'auth.failures',
  'person.created',
  'person.linked',
  'person.locked',
  // administration and audit
  'policy.changed',
  'masking.changed',
  'connection.changed',
  'export.created',
  'retention.run',
  'recording.viewed',
  'gateway.start',
  'gateway.stop',
  // several gateways on one shared store (docs/SCALE-OUT.md): this gateway enrolled an empty store; it approved another's key
  'gateway.enrolled',
  'gateway.approved',
  'gateway.removed',
  // rows this gateway shipped are gone from the tail of its chain in the shared store
  'store.tampered',
  // this gateway refused to make or cosign the group's combined checkpoint: a chain is not what the last one committed to
  'group.checkpoint.refused',
  'journal.salvaged',
  'result.unrecorded',
] as const;
export type EventKind = (typeof EVENT_KINDS)[number];

/** The payload type of `kind` (a kind added to EVENT_KINDS without one in `EventPayloads` fails to compile). */
export type EventPayload<K extends EventKind> = EventPayloads[K];

/** Who a session belongs to, as every protocol records it in `session.start`. */
export interface SessionIdentity {
  subject: string;
  name: string;
  groups: string[];
  via: 'api-key' | 'oidc' | 'console';
}

/**
 * The version of the `session.start` payload the gateway writes. Version 1 (no `v` field) had one
 * shape per protocol; `readSessionStart` reads both.
 */
export const SESSION_START_VERSION = 2;

interface SessionStartCommon {
  v: typeof SESSION_START_VERSION;
  actorName: string;
  identity: SessionIdentity;
}

/** `session.start` of an HTTP session: its first exchange. */
export interface HttpSessionStart extends SessionStartCommon {
  protocol: 'http';
  /** `session`: the label the client asked for in `x-custody-session`, when it named one. */
  client: { address: string; port: number | null; userAgent?: string; session?: string };
  /** The connection's kind and the upstream it forwards to. */
  upstream: { kind: string; host: string; port: number; tls: boolean };
}

/** `session.start` of a PostgreSQL session, once the upstream accepted its login. */
export interface PostgresSessionStart extends SessionStartCommon {
  protocol: 'postgres';
  client: { address: string; port: number | null; tls: boolean; user: string; database: string | null; applicationName: string | null };
  /** The database the session uses (the upstream URL's, else the client's). */
  database: string;
  upstream: { host: string; port: number; user: string; database: string; tls: boolean; auth: string; pid: number; role?: string };
}

/** `session.start` of an SSH session, once the upstream host accepted the gateway's login. */
export interface SshSessionStart extends SessionStartCommon {
  protocol: 'ssh';
  /** `publicKey`: the registered SSH key (fingerprint) the client logged in with, when it used one. */
  client: { address: string; port: number | null; software: string; publicKey?: string };
  upstream: { host: string; port: number; user: string; hostKey: string; hostKeyLearned?: true };
}

/** What every proxy records when a session starts: one shape, with the protocol's details under `client` and `upstream`. */
export type SessionStartPayload = HttpSessionStart | PostgresSessionStart | SshSessionStart;

/**
 * What a reader can rely on in a `session.start` of any version: fields a version did not record
 * are null. `version` is the payload's (1 for events recorded before `v` existed).
 */
export interface SessionStartFacts {
  version: number;
  protocol: 'http' | 'postgres' | 'ssh' | null;
  actorName: string | null;
  subject: string | null;
  groups: string[] | null;
  via: SessionIdentity['via'] | null;
  clientAddress: string | null;
  /** The HTTP client's session label (`x-custody-session`). */
  clientSession: string | null;
}

const VIAS: readonly string[] = ['api-key', 'oidc', 'console'];

/**
 * Reads a `session.start` payload of any version. Version 1 recorded HTTP sessions flat
 * (`identity` the subject, `groups`, `via`, `clientAddress`, `userAgent`, `clientSession` at the
 * top) and PostgreSQL and SSH sessions with an `identity` object and a `client` object (SSH: a
 * `client` object too); version 2 is `SessionStartPayload`.
 */
export function readSessionStart(payload: unknown): SessionStartFacts {
  const p = isRecord(payload) ? payload : {};
  const identity = isRecord(p['identity']) ? p['identity'] : {};
  const client = isRecord(p['client']) ? p['client'] : {};
  const groups = Array.isArray(identity['groups']) ? identity['groups'] : Array.isArray(p['groups']) ? p['groups'] : null;
  const via = typeof identity['via'] === 'string' ? identity['via'] : p['via'];
  const protocol = p['protocol'];
  return {
    version: typeof p['v'] === 'number' ? p['v'] : 1,
    protocol: protocol === 'http' || protocol === 'postgres' || protocol === 'ssh' ? protocol : null,
    actorName: text(p['actorName']) ?? text(identity['name']),
    subject: text(identity['subject']) ?? text(p['identity']),
    groups: groups ? groups.filter((g): g is string => typeof g === 'string') : null,
    via: typeof via === 'string' && VIAS.includes(via) ? (via as SessionIdentity['via']) : null,
    clientAddress: text(client['address']) ?? text(p['clientAddress']) ?? text(p['client']),
    clientSession: text(client['session']) ?? text(p['clientSession']),
  };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function text(v: unknown): string | null {
  return typeof v === 'string' ? v : null;
}

/** How a session ended. */
/** `session.terminated`: an approver or admin ended a live session from the console, before its own `session.end`. */
export interface SessionTerminatedPayload {
  protocol: 'http' | 'postgres' | 'ssh' | 'control';
  /** Identity subject and name of who ended it. */
  by: string;
  byName: string;
  reason: string;
}

export interface SessionEndPayload {
  protocol: 'http' | 'postgres' | 'ssh' | 'control';
  /** `idle`, `gateway_restarted`, `closed`, or what ended it in words. */
  reason: string;
  durationMs?: number;
  lastActivityAt?: number;
  /** PostgreSQL: statements run. */
  statements?: number;
  /** SSH: channel requests made. */
  requests?: number;
}

/** A policy decision as the traffic events record it. */
export interface RecordedDecision {
  action: string;
  rule: string | null;
  reason: string | null;
}

/** An HTTP request as forwarded (or refused): headers and body as recorded, masked. */
export interface HttpRequestPayload {
  method: string;
  path: string;
  headers: Record<string, string | string[]>;
  bytes: number;
  actorName: string;
  query?: string;
  model?: string;
  stream?: true;
  body?: unknown;
  bodyEncoding?: string;
  [more: string]: unknown;
}

/** The upstream's answer as the client got it. */
export interface HttpResponsePayload {
  status: number;
  /** Absent on an answer the gateway made itself (`gateway`). */
  headers?: Record<string, string | string[]>;
  /** Absent on a stream (its `http.chunk`s count the bytes) and on an answer the gateway made itself. */
  bytes?: number;
  duration: number;
  body?: unknown;
  bodyEncoding?: string;
  masked?: Record<string, number>;
  /** A streamed answer: its events follow as `http.chunk`s; `ttfb` is ms from forwarding to the upstream's headers. */
  stream?: true;
  ttfb?: number;
  /** A refusal the policy decided, answered by the gateway (not the upstream) with error `code`. */
  gateway?: true;
  code?: string;
}

/**
 * Bytes of a non-streamed body relayed piece by piece (large, unmasked, or chunked), journaled
 * before those bytes leave, once per turn of the event loop that relays some; the exchange's
 * http.response (with the whole body as recorded) goes with its last piece.
 */
export interface HttpBodyPayload {
  /** Milliseconds since the request arrived. */
  offset: number;
  /** Bytes of the body sent to the client so far, these included. */
  bytes: number;
}

/** Stream events relayed within one batching window (`offset` ms after the request). */
export interface HttpChunkPayload {
  offset: number;
  events: unknown[];
  done?: true;
  totalEvents?: number;
  bytes?: number;
  incompleteTail?: true;
  duration?: number;
  [more: string]: unknown;
}

/** Why an HTTP exchange failed, and where (`phase`). */
export interface HttpErrorPayload {
  phase: string;
  code: string;
  message: string;
  status?: number;
  duration?: number;
  [more: string]: unknown;
}

/** One statement the server will run, with its decision. */
export interface PgStatementPayload {
  n: number;
  protocol: 'simple' | 'extended' | string;
  sql: string;
  classes: string[];
  tables: string[];
  params?: (string | null)[];
  decision: RecordedDecision;
  refused?: { code: string; message: string };
  [more: string]: unknown;
}

/** A statement's result: rows counted, a masked sample. */
export interface PgResultPayload {
  n: number;
  durationMs: number;
  rows: number;
  command: string | null;
  columns?: string[];
  sample?: unknown[][];
  sampleTruncated?: boolean;
  masked?: Record<string, number>;
  suspended?: true;
}

/**
 * Rows of a statement's result already sent to the client while the result goes on: journaled
 * before those rows leave, once per read of a result that spans several (its pg.result or
 * pg.error follows, with the total and the sample).
 */
export interface PgRowsPayload {
  /** The statement (pg.statement's `n`). */
  n: number;
  /** Rows (DataRow or COPY data) sent so far, these included. */
  rows: number;
}

/** A statement that failed, was skipped or withheld; or (`fatal`) the session's end by error. */
export interface PgErrorPayload {
  code: string | null;
  message: string;
  n?: number;
  severity?: string;
  detail?: string;
  fatal?: true;
  [more: string]: unknown;
}

/** SSH traffic: a channel's request, output, exit, file operation or error. */
export interface SshChannelPayload {
  protocol: 'ssh';
  channel?: number;
  [more: string]: unknown;
}

/** A decision other than allow (allow is in the request event itself). */
export interface PolicyDecisionPayload {
  protocol: string;
  action: string;
  rule?: string | null;
  reason?: string | null;
  [more: string]: unknown;
}

// Holds (proxy/approvals/hold-queue.ts)

/** `hold.created`: the hold as stored and shown in the console, with the requester's display name. */
export interface HoldCreatedPayload extends HoldView {
  actorName: string;
}

/** `hold.vote`: one approver's decision on a pending hold. */
export interface HoldVotePayload {
  /** The hold's id. */
  id: string;
  decision: HoldVote['decision'];
  /** The approver's reason ('' when none was given). */
  reason: string;
  byName: string;
  via: Identity['via'];
  /** The approver's person, when their credential has one. */
  person?: string;
  protocol: HoldView['protocol'];
  /** An approval that grants time-boxed access: the duration as given (`1h`) and in ms. */
  grant?: string;
  grantMs?: number;
  /** A vote on another gateway's hold (shared store): that gateway's `hold.created`. */
  refs?: EventRef[];
}

/** An event in another gateway's chain (shared store): cited by its position and hash. */
export interface EventRef {
  gateway: string;
  seq: number;
  hash: string;
}

interface HoldResolvedCommon {
  /** The hold's id. */
  id: string;
  state: Exclude<HoldState, 'pending'>;
  reason: string;
  /** Display names of the voters that decided it (none when it expired, was cancelled or abandoned). */
  decidedBy: string[];
  rule: string;
  /** The requester's identity subject. */
  requester: string;
  protocol: HoldView['protocol'];
}

/** `hold.resolved` of a hold that waited: decided, expired, cancelled, or abandoned. */
export interface HoldEndedPayload extends HoldResolvedCommon {
  /** The time-boxed grant the approval gave (`ms` its length). */
  grant?: { id: string; expiresAt: number; ms: number };
  /** Abandoned by a previous run and recorded at this start (ms since epoch). */
  recoveredAt?: number;
  /**
   * Shared store: the events in other chains this resolution rests on: the votes cast on other
   * gateways that decided it, or, for a hold abandoned by another gateway, the owner's
   * `hold.created` and its last event before its lease expired.
   */
  refs?: EventRef[];
  /** Shared store: the gateway whose request waited, when another gateway recorded the end. */
  owner?: string;
}

/** `hold.resolved` of a request an earlier approval's grant covered: approved at once, never pending. */
export interface HoldPassedByGrantPayload extends HoldResolvedCommon {
  state: 'approved';
  via: 'grant';
  /** The grant's id, the hold that gave it, and when it ends. */
  grant: string;
  grantHold: string;
  grantExpiresAt: number;
  actorName: string;
  /** Shared store: the grant was given on this gateway of the group (the hold waited there). */
  grantGateway?: string;
  /** Shared store: that gateway's `hold.resolved` that gave the grant. */
  refs?: EventRef[];
}

export type HoldResolvedPayload = HoldEndedPayload | HoldPassedByGrantPayload;

// Identity (proxy/control/routes/auth.ts, proxy/identity, the proxies' logins)

/** `auth.login`: a console sign-in. */
export interface AuthLoginPayload {
  /** How: `local-link`, `api-key`, `oidc-token`, `oidc`. */
  method: string;
  actorName: string;
  via: Identity['via'];
  person?: string;
  groups: string[];
  roles: Role[];
  /** The client's address. */
  source: string;
  userAgent?: string;
  /** When the console session ends (ms since epoch). */
  expiresAt: number;
  /** `api-key`: the key's id. */
  keyId?: string;
  /** `oidc`: the issuer, and whether the session can refresh its token. */
  issuer?: string;
  refreshable?: boolean;
}

/** `auth.logout`: a console sign-out. */
export interface AuthLogoutPayload {
  method: 'console';
  actorName: string;
  source: string;
}

/**
 * What a failed authentication records (the first from a source or naming a known credential in a
 * window; the rest are counted in `auth.failures`).
 */
export interface AuthFailureDetails {
  /** The AuthError code (`unknown`, `expired`, `revoked`, ...), or `error`. */
  reason: string;
  message: string;
  /** Proxies: which one refused the credential. */
  protocol?: 'http' | 'postgres' | 'ssh';
  /** Console and HTTP: the sign-in method or the HTTP method. */
  method?: string;
  path?: string;
  /** PostgreSQL and SSH: the user name the client sent, and its address. */
  user?: string;
  client?: string;
  /** HTTP: the client's address. */
  clientAddress?: string;
  userAgent?: string;
  /** Console sign-in with an API key: the id the key names. */
  keyId?: string;
  /** Console OIDC sign-in: the issuer. */
  issuer?: string;
}

/** `auth.failure` (every writer in the gateway gives `reason` and `message`; the recorder does not insist). */
export interface AuthFailurePayload extends Partial<AuthFailureDetails> {
  /** The source address the failure is counted under (absent when no failure recorder was running). */
  source?: string;
  /** The known credential prefix the attempt named (`key:<id>`). */
  credential?: string;
}

/** `auth.failures`: the failures from one source in one window that were counted, not recorded one by one. */
export interface AuthFailuresPayload {
  source: string;
  count: number;
  /** How many of `count` have no `auth.failure` event of their own. */
  unrecorded: number;
  firstSeen: number;
  lastSeen: number;
  /** Failures by reason. */
  reasons: Record<string, number>;
}

/** `key.created` of an API key (console, `custody keys create`, or the first start's key). */
export interface ApiKeyCreatedPayload {
  id: string;
  name: string;
  groups: string[];
  expiresAt: number | null;
  /** The person the key belongs to. */
  person: string;
  /** Console: the creator's display name. */
  actorName?: string;
  /** The first start's key: `first start`. */
  reason?: string;
}

/** `key.created` announcing the data dir's checkpoint-signing key (proxy/audit/checkpoints.ts). */
export interface SigningKeyCreatedPayload {
  purpose: 'checkpoint-signing';
  /** The signed-note key name. */
  name: string;
  keyId: string;
  /** The signed-note verifier key (`name+keyid+base64`). */
  verifierKey: string;
  fingerprint: string;
  /** base64 raw Ed25519 public key. */
  publicKey: string;
  /** `first start`, or `key name recorded`. */
  reason: string;
}

/** `key.created` of an SSH public key registered to log in as an API key (`custody keys add-ssh`). */
export interface SshKeyCreatedPayload {
  credential: 'ssh-key';
  /** `SHA256:…`, as ssh-keygen -l prints it. */
  fingerprint: string;
  algo: string;
  comment: string | null;
  /** The API key it logs in as. */
  keyId: string;
  /** The person it was registered for (console and `custody ssh-login`). */
  person?: string;
  /** When it stops logging in (its API key's expiry), if it does. */
  expiresAt?: number | null;
  /** Console: who registered it, by name. */
  actorName?: string;
}

export type KeyCreatedPayload = ApiKeyCreatedPayload | SigningKeyCreatedPayload | SshKeyCreatedPayload;

/** `key.revoked` of an API key: revoked or expired at once. */
export interface ApiKeyRevokedPayload {
  id: string;
  how: 'revoke' | 'expire';
  /** Console: the key's name and the admin's display name. */
  name?: string;
  consoleSessionsEnded: number;
  actorName?: string;
}

/** `key.revoked` of a registered SSH key (`custody keys remove-ssh`). */
export interface SshKeyRevokedPayload {
  credential: 'ssh-key';
  fingerprint: string;
  /** The API key it logged in as. */
  keyId: string;
  how: 'remove';
  /** Console: who removed it, by name. */
  actorName?: string;
}

export type KeyRevokedPayload = ApiKeyRevokedPayload | SshKeyRevokedPayload;

/** `person.created`. */
export interface PersonCreatedPayload {
  person: string;
  name: string;
  reason: string;
}

/** `person.linked`: a credential moved to a person. */
export interface PersonLinkedPayload {
  /** `key:<id>`, `oidc:<issuer>#<sub>`, ... */
  credential: string;
  credentialKind: CredentialKind;
  person: string;
  /** The person it belonged to before, if any. */
  from: string | null;
}

/** `person.locked`: what locking a person ended. */
export interface PersonLockedPayload {
  person: string;
  /** Ids of the API keys revoked with it. */
  keysRevoked: string[];
  consoleSessionsEnded: number;
}

// Administration and audit

/** `config`: from the config file; `console`: edited through the control plane. */
/** `group`: made on another gateway of the shared store and applied here (docs/SCALE-OUT.md). */
export type VersionSource = 'config' | 'console' | 'group';

/** What every `policy.changed` and `masking.changed` records besides the content (proxy/audit/versioned-document.ts). */
export interface VersionChangedCommon {
  version: number;
  previousVersion: number | null;
  source: VersionSource;
  actorName: string;
  /** SHA-256 (hex) of the canonical content the version hash covers. */
  hash: string;
  note?: string;
}

/** `policy.changed`: a new version of the policy rules, in full. */
export interface PolicyChangedPayload extends VersionChangedCommon {
  rules: PolicyRule[];
}

/** `masking.changed`: a new version of the masking rules and custom detectors, in full. */
export interface MaskingChangedPayload extends VersionChangedCommon {
  detectors: CustomDetector[];
  masking: MaskingRule[];
}

/** `connection.changed`: a connection added, updated or removed from the console (its secret never recorded). */
export interface ConnectionChangedPayload {
  action: 'added' | 'updated' | 'removed';
  /** `group`: the change came with another gateway's `connections` version (`note` names it; docs/SCALE-OUT.md). */
  source?: 'console' | 'group';
  note?: string;
  name: string;
  kind: Connection['kind'];
  /** The upstream URL with any credential in it redacted. */
  upstream: string;
  listen: string | null;
  /** The request set, replaced or removed its secret. */
  secretChanged: boolean;
  byName: string;
}

/** `export.created`: an evidence bundle written (proxy/audit/export.ts). */
export interface ExportCreatedPayload {
  id: string;
  /** The bundle's file name. */
  file: string;
  filter: { from?: number; to?: number; user?: string; connection?: string };
  /** The checkpoint the bundle proves against: tree size and root hash. */
  treeSize: number;
  rootHash: string;
  /** Events in the bundle. */
  events: number;
  manifestSha256: string;
  integrity: 'intact' | 'failed';
  actorName: string | null;
}

/** `retention.run`: payloads older than `cutoff` purged. */
export interface RetentionRunPayload {
  /** The configured window (`90d`). */
  payloadsAfter: string;
  cutoff: number;
  /** Events whose payloads this run purged. */
  purged: number;
  /** With an archive: nothing after this seq was purged. */
  archivedThrough?: number;
}

/** `recording.viewed`: someone opened a session's recording. */
export interface RecordingViewedPayload {
  session: string;
  /** The viewer's display name. */
  viewer: string;
  /** Another gateway's session (read from the shared store): the gateway that recorded it. */
  gateway?: string;
}

/** `gateway.start`: the version and every listener's bound address. */
export interface GatewayStartPayload {
  version: string;
  listeners: { name: string; address: string }[];
}

/** `gateway.stop` records nothing beyond the event. */
export type GatewayStopPayload = Record<string, never>;

/** `journal.salvaged`: journal lines folded, lost or skipped when a damaged journal was read at start. */
export interface JournalSalvagedPayload {
  /** Events folded into the log. */
  folded: number;
  /** Lines that could not be read (kept in `keptIn`), with their size and hash. */
  lost: { file: string; line: number; journalLine: number | null; bytes: number; sha256: string }[];
  /** Damaged lines already in the log before. */
  skippedAlreadyFolded: number;
  keptIn: string | null;
}

/** The payload of each event kind, as the gateway writes it now. */
export interface EventPayloads {
  'session.start': SessionStartPayload;
  'session.end': SessionEndPayload;
  'session.terminated': SessionTerminatedPayload;
  'http.request': HttpRequestPayload;
  'http.response': HttpResponsePayload;
  'http.chunk': HttpChunkPayload;
  'http.body': HttpBodyPayload;
  'http.error': HttpErrorPayload;
  'pg.statement': PgStatementPayload;
  'pg.result': PgResultPayload;
  'pg.rows': PgRowsPayload;
  'pg.error': PgErrorPayload;
  'ssh.request': SshChannelPayload;
  'ssh.output': SshChannelPayload;
  'ssh.exit': SshChannelPayload;
  'ssh.command': SshChannelPayload;
  'ssh.sftp': SshChannelPayload;
  'ssh.error': SshChannelPayload;
  'policy.decision': PolicyDecisionPayload;
  'hold.created': HoldCreatedPayload;
  'hold.vote': HoldVotePayload;
  'hold.resolved': HoldResolvedPayload;
  'auth.login': AuthLoginPayload;
  'auth.logout': AuthLogoutPayload;
  'auth.failure': AuthFailurePayload;
  'key.created': KeyCreatedPayload;
  'key.revoked': KeyRevokedPayload;
  'auth.failures': AuthFailuresPayload;
  'person.created': PersonCreatedPayload;
  'person.linked': PersonLinkedPayload;
  'person.locked': PersonLockedPayload;
  'policy.changed': PolicyChangedPayload;
  'masking.changed': MaskingChangedPayload;
  'connection.changed': ConnectionChangedPayload;
  'export.created': ExportCreatedPayload;
  'retention.run': RetentionRunPayload;
  'recording.viewed': RecordingViewedPayload;
  'gateway.start': GatewayStartPayload;
  'gateway.stop': GatewayStopPayload;
  'gateway.enrolled': GatewayEnrolledPayload;
  'gateway.approved': GatewayApprovedPayload;
  'gateway.removed': GatewayRemovedPayload;
  'store.tampered': StoreTamperedPayload;
  'group.checkpoint.refused': GroupCheckpointRefusedPayload;
  'journal.salvaged': JournalSalvagedPayload;
  'result.unrecorded': ResultUnrecordedPayload;
}

/**
 * A result the gateway could not journal after the upstream acted (its client was cut off), recorded
 * at the next start in the result's session (proxy/audit/unrecorded.ts). `result: "more"` with
 * `dropped` counts notes that did not fit.
 */
export interface ResultUnrecordedPayload {
  /** The event that could not be journaled: `http.response`, `http.chunk`, `pg.result`, or `more`. */
  result: string;
  /** When the gateway gave up on it (ms since epoch). */
  at: number;
  error: string;
  /** What the client got instead. */
  client: string;
  dropped?: number;
  note?: string;
}

/** `gateway.enrolled`: this gateway enrolled an empty shared store, as its first member (docs/SCALE-OUT.md). */
export interface GatewayEnrolledPayload {
  group: string;
  /** The gateway id: the fingerprint of its checkpoint-signing key. */
  id: string;
  fingerprint: string;
  /** base64 raw Ed25519 public key, and its signed-note key name. */
  publicKey: string;
  keyName: string;
  name: string;
  /** This start enrolled it (false: recorded at a later start, after a crash in between). */
  first: boolean;
}

/** `gateway.approved`: this gateway approved another's key for the shared store; verify trusts it under a signed checkpoint. */
/**
 * `gateway.removed`: this gateway removed another from the shared store's group (its key is no
 * longer trusted for anything it signs from now on; its chain up to here stays verifiable).
 */
export interface GatewayRemovedPayload {
  /** The removed gateway's id (its key's fingerprint). */
  id: string;
  fingerprint: string;
  name: string;
  /** Why, as the admin gave it. */
  reason: string;
  /** The removing gateway's id (this chain's). */
  by: string;
  /** Removed in the console: who did it (absent when removed with `custody gateways remove`). */
  actorName?: string;
}

export interface GatewayApprovedPayload {
  /** The approved gateway's id (its key's fingerprint). */
  id: string;
  fingerprint: string;
  publicKey: string;
  keyName: string;
  name: string;
  requestedAt: number;
  /** The approving gateway's id (this chain's). */
  by: string;
  /** Approved in the console: who did it (absent when approved with `custody gateways approve`). */
  actorName?: string;
}

/**
 * `store.tampered`: the shared store no longer ends this gateway's chain where the gateway shipped
 * it to (rows deleted from its tail, or the last row changed). Recorded once per detection, in the
 * gateway's own chain, which still holds every row.
 */
export interface StoreTamperedPayload {
  /** The store, as logs name it (no password). */
  store: string;
  /** Where the gateway shipped its chain to. */
  shippedSeq: number;
  shippedHash: string;
  /** Where the store's copy ends now (0 and '' when it holds none). */
  foundSeq: number;
  foundHash: string;
  message: string;
}

/**
 * `group.checkpoint.refused`: this gateway found, in the shared store, a chain that is not consistent
 * with the combined checkpoint it last signed or with the one before the checkpoint it was asked to
 * cosign (shorter, rows missing, another root), so it refused to make or cosign the group's combined
 * checkpoint (docs/SCALE-OUT.md). Recorded once per finding.
 */
export interface GroupCheckpointRefusedPayload {
  /** The store, as logs name it (no password). */
  store: string;
  /** `make`: it would have made this interval's checkpoint; `cosign`: another gateway made it. */
  role: 'make' | 'cosign';
  /** The checkpoint it refused to cosign (its interval start, maker and root), for `cosign`. */
  checkpoint?: { interval: number; maker: string; rootHash: string };
  /** The chain found wrong (a gateway id), and what is wrong with it. */
  chain: string;
  problem: 'shorter' | 'missing-rows' | 'inconsistent' | 'dropped' | 'not-a-member' | 'signature-invalid';
  /** Where the chain stood in the checkpoint it was compared with, and what the store holds now. */
  committed?: { size: number; rootHash: string };
  found?: { size: number };
  message: string;
}

/** One masked value: where it sits in the recorded text (after masking) and what found it. */
export interface MaskSpan {
  /** Detector type, e.g. CREDIT_CARD, EMAIL, AWS_ACCESS_KEY. */
  type: string;
  /** UTF-16 offsets into the masked string at `path`. */
  start: number;
  end: number;
  /** Masking rule id. */
  rule: string;
  /** JSON pointer (RFC 6901) of the string inside the payload, '' for the payload itself. */
  path?: string;
}

/** What a caller hands the store. */
export interface AuditEventInput {
  kind: EventKind;
  /** Session id; omitted for gateway-wide events (key creation, policy change, ...). */
  session?: string;
  /** Identity subject that caused the event, or `system`. */
  actor?: string;
  connection?: string;
  payload: unknown;
  /** Masked spans inside the payload, for replay. */
  spans?: MaskSpan[];
  /** Override the timestamp (ms since epoch); default now. */
  time?: number;
}

/** A stored event. `hash = SHA-256(prevHash ‖ canonical(body))`, body as in `eventBody`. */
export interface AuditEvent {
  seq: number;
  time: number;
  kind: EventKind;
  session: string | null;
  actor: string | null;
  connection: string | null;
  /** null after retention purged it; `payloadHash` still commits to it. */
  payload: unknown;
  spans: MaskSpan[];
  /** hex SHA-256 of canonical(payload) and canonical(spans), fixed at append time. */
  payloadHash: string;
  prevHash: string;
  hash: string;
}

/** Summary row of a session (an index over events). */
export interface SessionSummary {
  id: string;
  connection: string | null;
  protocol: 'http' | 'postgres' | 'ssh' | 'control';
  actor: string | null;
  actorName: string | null;
  startedAt: number;
  lastEventAt: number;
  endedAt: number | null;
  events: number;
  requests: number;
  holds: number;
  masked: number;
  denied: number;
  errors: number;
  /** With a shared store: the gateway that recorded it (its id, the fingerprint of its key), and its host name. */
  gateway?: string;
  gatewayName?: string;
}

/** Filters of `GET /api/sessions` (and the store's session index query). */
export interface SessionFilter {
  user?: string;
  connection?: string;
  protocol?: string;
  from?: number;
  to?: number;
  hadHolds?: boolean;
  hadMasking?: boolean;
}
