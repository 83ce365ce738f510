/**
 * What a PostgreSQL session is given: the gateway's parts (`PgSessionServices`) and what every
 * session of one listener shares (`PgListenerContext`). Kept apart from the session so the modules
 * it is made of (startup and login, planner, reply pairing, recording) can name them too.
 */
import type { SecureContext } from 'node:tls';
import type { Connection } from '../../shared/config';
import type { Identity } from '../../shared/identity';
import type { HoldGate } from '../approvals/types';
import type { AuditStore } from '../audit/store';
import type { EventBus } from '../bus';
import type { ApiKeyStore } from '../identity/api-keys';
import type { AuthFailureRecorder } from '../identity/console-login';
import type { LiveSessions } from '../identity/live-sessions';
import type { Logger } from '../log';
import type { MaskingEngine } from '../masking/types';
import type { PolicyEvaluator } from '../policy/types';
import type { SessionAuditWriter } from '../audit/session-writer';
import type { RoutineCatalog, TableNameResolver } from './catalog';
import type { UpstreamTarget } from './upstream';

/** What a session needs from the gateway. */
export interface PgSessionServices {
  auth: { authenticate(credential: string | undefined): Promise<Identity> };
  policy: PolicyEvaluator;
  holds: HoldGate;
  masking: MaskingEngine;
  store: Pick<AuditStore, 'appendMany' | 'appendAsync'> & Partial<Pick<AuditStore, 'liveSession' | 'noteUnrecorded'>>;
  bus?: EventBus;
  log: Logger;
  /** Live sessions by credential: a session ends when its credential expires, is revoked or its person is locked. */
  liveSessions?: Pick<LiveSessions, 'register'>;
  /** Failed logins, aggregated per source (one event per source per minute, not one each). */
  login?: { failures: Pick<AuthFailureRecorder, 'record'> };
  keys?: Pick<ApiKeyStore, 'knownPrefix'>;
  /** Why the gateway refuses every session right now (not admitted to the shared store), or undefined. */
  admissionRefusal?(): string | undefined;
}

/** A session as its listener sees it: cancelled by a CancelRequest, ended at shutdown. */
export interface ListenedSession {
  /** A CancelRequest carrying this session's key arrived. */
  cancel(): void;
  /** Gateway shutdown: tell the client why, then close. */
  shutdown(): void;
}

/** Shared by every session of one listener. */
export interface PgListenerContext {
  connection: Connection;
  target: UpstreamTarget;
  services: PgSessionServices;
  writer: SessionAuditWriter;
  secureContext: SecureContext;
  tables: TableNameResolver;
  /** What the functions, operators and relations statements use do (classification by effect). */
  routines: RoutineCatalog;
  recordRows: number;
  /** The cancel keys handed to clients (BackendKeyData), by the gateway's pid. */
  cancelKeys: Map<number, { secret: Buffer; session: ListenedSession }>;
  sessions: Set<ListenedSession>;
}
