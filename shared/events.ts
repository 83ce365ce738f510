/**
 * Audit events: what the gateway records. Every event is appended to one hash-chained log
 * (see proxy/audit). Payloads are JSON; anything a masking rule masks is stored masked, with the
 * masked spans beside it so replay can highlight them.
 */

export const EVENT_KINDS = [
  // sessions and traffic
  'session.start',
  'session.end',
  'http.request',
  'http.response',
  'http.chunk',
  'http.error',
  'pg.statement',
  'pg.result',
  'pg.error',
  // ssh: a channel's request (exec, shell, subsystem, forwarding), its output and end, file operations
  'ssh.request',
  'ssh.output',
  'ssh.exit',
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
  'journal.salvaged',
] as const;
export type EventKind = (typeof EVENT_KINDS)[number];

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
