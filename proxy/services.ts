/**
 * The gateway's parts, created once in gateway.ts and handed to each listener and route module.
 * A part is added here when it lands; listeners read what they need from this one object.
 */
import type { Config } from '../shared/config';
import type { AuditService } from './audit/service';
import type { SharedStoreMember } from './audit/shared-store/shipper';
import type { TeamStore } from './audit/shared-store/team';
import type { CombinedCheckpoints } from './audit/shared-store/combined';
import type { AuditStore } from './audit/store';
import type { EventBus } from './bus';
import type { ApiKeyStore } from './identity/api-keys';
import type { Authenticator } from './identity/authenticator';
import type { ConsoleLogin } from './identity/console-login';
import type { ConsoleSessions } from './identity/console-sessions';
import type { LiveSessions } from './identity/live-sessions';
import type { PersonDirectory } from './identity/persons';
import type { UserDirectory } from './identity/users';
import type { Logger } from './log';
import type { HoldQueue } from './approvals/hold-queue';
import type { SharedHolds } from './approvals/shared-holds';
import type { MaskingEngine } from './masking/types';
import type { PolicyEngine } from './policy/engine';
import type { SecretWrapper } from './secret-wrapper';

export interface GatewayServices {
  config: Config;
  /** The config file, when there is one (policy and masking edits are versioned in the store). */
  configFile?: string;
  dataDir: string;
  store: AuditStore;
  keys: ApiKeyStore;
  auth: Authenticator;
  consoleSessions: ConsoleSessions;
  bus: EventBus;
  log: Logger;
  masking: MaskingEngine;
  policy: PolicyEngine;
  /** The approval queue (a HoldGate for the proxies; decisions and history for the control plane). */
  holds: HoldQueue;
  /** Console sign-in: the per-run console token, OIDC code flow, failed-attempt recording. */
  login: ConsoleLogin;
  /** Identities seen (names and groups), for the console and policy dry-runs. */
  users: UserDirectory;
  /** The persons behind credentials: separation of duties counts them; locking one ends their sessions. */
  persons: PersonDirectory;
  /** Live data-plane sessions by credential: ended when it expires, is revoked, or its person is locked. */
  liveSessions: LiveSessions;
  /** Protects secrets at rest (connection secrets in the store): plain headless, sealed on the desktop. */
  secrets: SecretWrapper;
  /** Reads (or creates) a per-install secret such as `signing.key`, protected by `secrets`. */
  keyFile(name: string, create?: () => Buffer): Buffer;
  /** Checkpoints, signing key, retention, verification and evidence exports (set once the gateway starts). */
  audit?: AuditService;
  /**
   * With `store.url`: this gateway's membership of the shared store. Until the store admits it
   * (enrolled or approved), `admissionRefusal` says why the proxies refuse every request.
   */
  sharedStore?: SharedStoreMember;
  /** With `store.url`: holds across the gateways of the shared store. */
  sharedHolds?: SharedHolds;
  /** With `store.url`: the console's reads of the group (other gateways' sessions, console sign-ins, the gateways). */
  team?: TeamStore;
  /** With `store.url`: the group's combined checkpoints, made and cosigned by this gateway. */
  combinedCheckpoints?: CombinedCheckpoints;
  /** The config file's own connections, before those stored from the console were laid over them (`config.connections`). */
  configConnections?: Config['connections'];
  /** Stored connections not served since this start, by name, with why (e.g. their secret is not set on this gateway): connections/store.ts. */
  unservedConnections?: ReadonlyMap<string, string>;
  /** Why the proxies refuse every request right now (not admitted to the shared store), or undefined. */
  admissionRefusal?(): string | undefined;
  /** Gateway version, shown by /api/health and the console. */
  version: string;
}
