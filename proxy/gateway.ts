/**
 * The gateway: opens the store, builds the identity, policy, masking and approval parts, and starts
 * the listeners (HTTP proxy, PostgreSQL listeners, control plane). The same code runs under
 * `custody serve` and inside the desktop app's utilityProcess; it never imports Electron.
 */
import { readFileSync } from 'node:fs';
import { type Config, parseDuration } from '../shared/config';
import type { GatewayStartPayload, GatewayStopPayload, KeyCreatedPayload, SessionEndPayload } from '../shared/events';
import { AuditService } from './audit/service';
import { storeConnection, storeLabel } from './audit/shared-store/schema';
import { APPLY_PULLED_KEY_SQL, APPLY_PULLED_SSH_KEY_SQL, type PulledKeys, pulledKeyParams, pulledSshKeyParams } from './audit/shared-store/key-sync';
import { personApplyStatements, type PulledPersons } from './audit/shared-store/person-sync';
import { applyGroupDocument } from './group-config';
import { SharedStoreMember } from './audit/shared-store/shipper';
import { TeamStore } from './audit/shared-store/team';
import { CombinedCheckpoints } from './audit/shared-store/combined';
import { SharedHolds } from './approvals/shared-holds';
import { AuditStore } from './audit/store';
import { POSTGRES_PACING, SessionAuditWriter } from './audit/session-writer';
import { EventBus, sessionEventsFromStore } from './bus';
import { checkSecretFiles } from './config';
import { type ControlPlane, type RouteModule, startControlPlane } from './control/server';
import { registerConnectionRoutes } from './control/routes/connections';
import { versionStoredConnections, withStoredConnections } from './connections/store';
import { upstreamCredentialWarning } from '../shared/upstream-credentials';
import { registerDashboardRoutes } from './control/routes/dashboard';
import { ApiKeyStore } from './identity/api-keys';
import { Authenticator } from './identity/authenticator';
import { ConsoleLogin } from './identity/console-login';
import { ConsoleSessions } from './identity/console-sessions';
import { OidcVerifier } from './identity/oidc';
import { LiveSessions } from './identity/live-sessions';
import { PersonDirectory } from './identity/persons';
import { UserDirectory } from './identity/users';
import { createLogger, type Logger } from './log';
import { HoldQueue } from './approvals/hold-queue';
import { startHttpProxy } from './http/proxy';
import { startPgListener } from './postgres/listener';
import { startSshListener } from './ssh/listener';
import type { Listener } from './net';
import { createMaskingEngine } from './masking/engine';
import { syncMaskingAtStart } from './masking/versions';
import { PolicyEngine } from './policy/engine';
import { syncPoliciesAtStart } from './policy/versions';
import { registerAuditRoutes } from './control/routes/audit';
import { registerAuthRoutes } from './control/routes/auth';
import { registerHoldRoutes } from './control/routes/holds';
import { registerKeyRoutes } from './control/routes/keys';
import { registerGatewayRoutes } from './control/routes/gateways';
import { registerSshKeyRoutes } from './control/routes/ssh-keys';
import { registerPersonRoutes } from './control/routes/persons';
import { registerMaskingRoutes } from './control/routes/masking';
import { registerPolicyRoutes } from './control/routes/policies';
import { policyContext } from './policy/context';
import { loadOrCreateSecretFile, plainSecrets, type SecretWrapper } from './secret-wrapper';
import type { GatewayServices } from './services';
import { canonicalize } from '../shared/canonical-json';
import type { Identity } from '../shared/identity';

/** package.json's version; found from the source tree (proxy/) and from the desktop bundle (dist/proxy/). */
export const VERSION: string = (() => {
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      return (JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { version: string }).version;
    } catch {
      // try the next location
    }
  }
  return '0.0.0';
})();

/** How long the console worker may take to read the group's chains for an evidence bundle. */
const GROUP_EXPORT_TIMEOUT_MS = 30 * 60_000;

export interface GatewayOptions {
  config: Config;
  dataDir: string;
  configFile?: string;
  log?: Logger;
  /** Create a first admin key when the store has none (desktop/local mode). Default true. */
  bootstrapKey?: boolean;
  /** How secrets at rest are protected: plain 0600 files headless (default), sealed in the desktop app. */
  secrets?: SecretWrapper;
}

export type { Listener };

export class Gateway {
  /** The first admin key, when this start created it (printed once by `custody serve`). */
  firstKey?: string;
  readonly listeners: Listener[] = [];
  private control!: ControlPlane;
  private stopping?: Promise<void>;
  private readonly cleanups: (() => void | Promise<void>)[] = [];

  private constructor(readonly services: GatewayServices) {}

  static async start(opts: GatewayOptions): Promise<Gateway> {
    const log = opts.log ?? createLogger();
    checkSecretFiles(opts.config, opts.dataDir);
    // The shared store's password is read now: a missing one stops the start before anything listens.
    if (opts.config.store) storeConnection(opts.config.store);
    const store = AuditStore.open(opts.dataDir, { commitThread: true, fsync: opts.config.audit.fsync });
    if (store.recovery.replayed) log.info(`audit: folded ${store.recovery.replayed} event(s) a previous run journaled but had not written to the database`);
    for (const l of store.recovery.skipped)
      log.warn(`audit: journal file ${l.file} line ${l.line} cannot be read (${l.message}); it is journal line ${l.jseq}, already folded into the store, so nothing is lost and it was skipped`);
    const keys = new ApiKeyStore(store.db, (sql, params) => store.readAsync(sql, params));
    const secrets = opts.secrets ?? plainSecrets;
    const bus = new EventBus(10_000, sessionEventsFromStore(store));
    let services: GatewayServices;
    try {
      versionStoredConnections(store);
      const connections = withStoredConnections(opts.config, { store, secrets, log });
      const users = new UserDirectory(store.db, 60_000, (sql, params, done) => store.writeBehind(sql, params, done));
      // Bearer JWTs from the configured issuers; API keys keep working beside them.
      const oidc = opts.config.identity.oidc.length ? new OidcVerifier(opts.config.identity, { onIdentity: (i) => users.seen(i) }) : undefined;
      const persons = new PersonDirectory(store);
      const auth = new Authenticator(keys, opts.config.identity, persons);
      auth.setTokenVerifier(oidc);
      oidc?.warmUp((issuer, err) => log.warn(`OIDC issuer ${issuer}: ${err.message} (tokens from it are refused until it answers)`));
      services = {
      config: connections.config,
      unservedConnections: connections.unserved,
      configConnections: opts.config.connections,
      configFile: opts.configFile,
      dataDir: opts.dataDir,
      store,
      keys,
      auth,
      consoleSessions: new ConsoleSessions(store.db, (i) => auth.current(i)),
      bus,
      log,
      secrets,
      keyFile: (name, create) => loadOrCreateSecretFile(opts.dataDir, name, secrets, create),
      masking: createMaskingEngine({ masking: opts.config.masking, detectors: opts.config.detectors, policies: opts.config.policies }, { hmacKey: loadOrCreateSecretFile(opts.dataDir, 'masking-hmac.key', secrets) }),
      policy: new PolicyEngine(opts.config.policies),
      holds: new HoldQueue({ store, bus, log, separationOfDuties: opts.config.identity.separationOfDuties, idpBacked: (p) => persons.isIdpBacked(p) }),
      login: new ConsoleLogin(opts.config.identity, oidc, store, persons),
      users,
      persons,
      liveSessions: new LiveSessions({
        keyEnded: (id, now) => {
          const k = keys.get(id);
          return !k ? 'no longer exists' : k.revokedAt !== null ? 'was revoked' : k.expiresAt !== null && k.expiresAt <= now ? 'has expired' : undefined;
        },
        personLocked: (p) => persons.isLocked(p),
      }),
      version: VERSION,
      admissionRefusal: () => {
        if (!opts.config.store) return undefined;
        return services.sharedStore ? services.sharedStore.refusal() : 'this gateway is starting and has not joined the shared store yet';
      },
      };
    } catch (err) {
      store.close();
      throw err;
    }
    for (const c of services.config.connections) warnIf(upstreamCredentialWarning(c.name, c.upstream), log);
    const gw = new Gateway(services);
    try {
      await gw.startParts(opts);
    } catch (err) {
      await gw.stop().catch(() => {});
      throw err;
    }
    return gw;
  }

  private async startParts(opts: GatewayOptions): Promise<void> {
    const s = this.services;
    if ((opts.bootstrapKey ?? true) && s.keys.count() === 0) {
      // The first-start key is the local user's, like the login link: one person, one vote.
      const adminGroups = s.config.identity.roles.admin.length ? [s.config.identity.roles.admin[0]!] : ['admin'];
      const { key, record } = s.keys.create({ name: 'local-admin', groups: adminGroups, createdBy: 'system' });
      const person = s.login.localIdentity().person!;
      s.persons.attach(`key:${record.id}`, 'api-key', person, 'system');
      s.store.append({ kind: 'key.created', actor: 'system', payload: { id: record.id, name: record.name, groups: record.groups, expiresAt: null, person, reason: 'first start' } satisfies KeyCreatedPayload });
      this.firstKey = key;
    }
    // Results a previous run could not journal are recorded in their sessions, before those end.
    try {
      const n = s.store.recordUnrecordedResults();
      if (n) s.log.warn(`audit: ${n} result(s) the previous run could not journal (its clients were cut off) are recorded as result.unrecorded`);
    } catch (err) {
      s.log.error(`audit: cannot record the results a previous run could not journal, or reserve room to note this run's (${(err as Error).message}); such failures are only logged`);
    }
    endLeftoverSessions(s.store);
    // The rules in force: the config file's when it changed, else the latest (console) version.
    syncPoliciesAtStart(s, policyContext(s), s.configFile);
    // Likewise for masking: the config file's when it changed, else the latest (console) version.
    syncMaskingAtStart(s, s.configFile);
    s.consoleSessions.prune();
    // Failure counts still in memory are written as their summary before the store closes.
    this.onStop(() => s.login.failures.close());
    // Locking a person ends all their live sessions; locks and revocations made by the CLI (another
    // process) are picked up within a second.
    s.persons.onLock((person, reason) => {
      s.consoleSessions.deleteForPerson(person);
      s.holds.cancelForPerson(person, `the requester was locked (${reason})`);
      s.liveSessions.endPerson(person, 'terminating connection: your access was locked by an administrator');
    });
    // Re-read on the store's commit thread: a locked or slow store delays these, never the proxies.
    let rereading = false;
    let ticks = 0;
    const identityTimer = setInterval(() => {
      s.liveSessions.sweep();
      if (rereading) return;
      rereading = true;
      const keysToo = ticks++ % 4 === 0;
      void (async () => {
        await s.persons.refreshAsync().catch((err: unknown) => s.log.warn(`cannot re-read persons: ${(err as Error).message}`));
        if (keysToo) await s.keys.refresh().catch((err: unknown) => s.log.warn(`cannot re-read API keys: ${(err as Error).message}`));
      })().finally(() => (rereading = false));
    }, 500);
    identityTimer.unref();
    this.onStop(() => clearInterval(identityTimer));
    // Every recorded session event goes to the console live; one subscription for all proxies.
    s.store.onAppend((event) => {
      if (event.session) s.bus.publish({ type: 'session.event', event });
    });
    this.listeners.push(await startHttpProxy(s));
    // One listener per postgres connection; their audit writes share one batching writer.
    const pgWriter = new SessionAuditWriter(s.store, POSTGRES_PACING);
    for (const connection of s.config.connections.filter((c) => c.kind === 'postgres'))
      this.listeners.push(await startPgListener({ connection, services: s, dataDir: s.dataDir, recordRows: s.config.limits.recordRows, connectTimeoutMs: parseDuration(s.config.limits.upstreamConnectTimeout), writer: pgWriter }));
    // One SSH server per ssh connection, like the PostgreSQL listeners.
    for (const connection of s.config.connections.filter((c) => c.kind === 'ssh'))
      this.listeners.push(await startSshListener({ connection, services: s, dataDir: s.dataDir, connectTimeoutMs: parseDuration(s.config.limits.upstreamConnectTimeout) }));
    // Signing key, checkpoints on a timer (a last one at stop), retention.
    s.audit = AuditService.start(s);
    this.onStop(() => s.audit?.stop());
    // A shared store: join it (enrolment) and ship this gateway's chain to it, on a worker thread.
    // Keys created or revoked on another gateway of the group are copied into this one's table
    // (on the commit thread), and the key index re-read at once.
    // Persons, their links and locks from the group likewise, always before the keys of the same
    // round (a key then works here as its owner at once), and the person directory re-read (a lock
    // ends the person's sessions here through onLock).
    let applying = Promise.resolve();
    const writeAll = (what: string, statements: { sql: string; params: unknown[] }[]) =>
      Promise.all(
        statements.map(
          ({ sql, params }) =>
            new Promise<void>((resolve) =>
              s.store.writeBehind(sql, params, (err) => {
                if (err) s.log.warn(`shared store: ${what} from the group could not be written here (${err.message}); it is copied again at the next round`);
                resolve();
              }),
            ),
        ),
      );
    const onPersons = (p: PulledPersons) => {
      applying = applying.then(async () => {
        await writeAll('a person', personApplyStatements(p));
        for (const l of p.locks) s.log.info(`shared store: ${l.id} was locked on another gateway of the group (by ${l.by}); locked here too`);
        await s.persons.refreshAsync(true).catch((err: unknown) => s.log.warn(`cannot re-read persons: ${(err as Error).message}`));
      });
    };
    // SSH keys once the API keys they log in as are written and the key index re-read, so an SSH
    // key copied here logs in from its first attempt; a login reads the ssh_keys table each time.
    const onKeys = (p: PulledKeys) => {
      applying = applying.then(async () => {
        if (p.keys.length) {
          await writeAll('a key', p.keys.map((r) => ({ sql: APPLY_PULLED_KEY_SQL, params: pulledKeyParams(r) })));
          await s.keys.refresh().catch(() => {});
        }
        await writeAll('an SSH key', p.sshKeys.map((r) => ({ sql: APPLY_PULLED_SSH_KEY_SQL, params: pulledSshKeyParams(r) })));
      });
    };
    if (s.config.store) {
      s.sharedStore = await SharedStoreMember.start({ store: s.store, signer: s.audit.trail.signer, config: s.config.store, log: s.log, onKeys, onPersons, onDocument: (doc) => applyGroupDocument(s, doc) });
      // `audit.remoteCommit: sync`: the proxies' batches are acknowledged once the store has them too.
      if (s.config.audit.remoteCommit === 'sync') s.store.setRemoteCommit(s.sharedStore);
      // Holds across gateways: this gateway's holds go to the store, the others' come from it.
      s.sharedHolds = SharedHolds.start({ store: s.store, bus: s.bus, holds: s.holds, log: s.log, config: s.config.store, gateway: s.sharedStore.identity.id, publicKey: s.sharedStore.identity.publicKey, signingKey: s.audit.trail.signer.signingKeyForThread(), refusal: () => s.sharedStore?.refusal(), onConfigChange: (listening) => s.sharedStore?.configChanged(listening), onShipped: () => s.team?.shipped() });
      // The console of any gateway: the group's sessions, console sign-ins made on any gateway, the gateways.
      const team = (s.team = await TeamStore.start({ dbPath: s.store.path, signer: s.audit.trail.signer, config: s.config.store, log: s.log }));
      this.onStop(() => team.stop());
      // Evidence bundles carry every chain of the group, read on the console worker.
      const storeName = storeLabel(s.config.store.url);
      s.audit.groupExport = (dir, filter) => team.ask('exportChains', { dir, filter, store: storeName }, GROUP_EXPORT_TIMEOUT_MS);
      const warnTeam = (what: string) => (err: unknown) => s.log.warn(`shared store: ${what} (${(err as Error).message})`);
      s.consoleSessions.share({
        self: team.identity.id,
        put: (p) => void team.ask('putSession', { ...p, identity: canonicalize(p.identity) }).catch(warnTeam('a console session made here could not be written to the store; it works on this gateway only')),
        lookup: async (digest) => {
          const r = await team.ask('lookupSession', { digest }).catch(warnTeam('a console session could not be looked up in the store'));
          if (r && 'missing' in r && r.untrusted) s.log.warn(`shared store: ${r.missing}; refused`);
          if (!r || 'missing' in r) return undefined;
          if ('ended' in r) return 'ended';
          return { ...r.found, identity: JSON.parse(r.found.identity) as Identity };
        },
        end: (digests) => void team.ask('endSessions', { digests }).catch(warnTeam('the end of a console session could not be written to the store; other gateways end it when it expires')),
      });
      // The other gateways' sessions, pushed to this gateway's consoles as its own are, while one watches.
      team.onLive((messages) => {
        for (const m of messages) s.bus.publish(m);
      });
      team.onEnded((digests) => {
        const n = s.consoleSessions.dropEnded(digests);
        if (n) s.log.info(`shared store: ${n} console session(s) ended on another gateway of the group; ended here too`);
      });
      // The group's combined checkpoints: made and cosigned by this gateway's worker, checked against the store.
      s.combinedCheckpoints = CombinedCheckpoints.start({ store: s.store, log: s.log, config: s.config.store, signer: s.audit.trail.signer, identity: s.sharedStore.identity, interval: s.config.audit.groupCheckpointInterval, witnesses: s.config.audit.witnesses });
    }
    const routeModules: RouteModule[] = [registerAuditRoutes];
    routeModules.push(registerAuthRoutes, registerHoldRoutes, registerPolicyRoutes, registerKeyRoutes, registerPersonRoutes);
    routeModules.push(registerMaskingRoutes, registerGatewayRoutes);
    const bound = (name: string) => this.listeners.find((l) => l.name === name)?.address;
    const sshListeners = () => this.listeners.filter((l) => l.name.startsWith('ssh:')).map((l) => ({ connection: l.name.slice(4), address: l.address }));
    routeModules.push((router, services) => registerSshKeyRoutes(router, services, sshListeners));
    routeModules.push((router, services) => registerConnectionRoutes(router, services, { http: () => bound('http'), postgres: (name) => bound(`postgres:${name}`) ?? bound(`ssh:${name}`) }), registerDashboardRoutes);
    this.control = await startControlPlane(s, routeModules, { httpAddress: () => bound('http') });
    this.listeners.push({ name: 'control', address: this.control.address, close: () => this.control.close() });
    s.store.append({ kind: 'gateway.start', actor: 'system', payload: { version: s.version, listeners: this.listeners.map((l) => ({ name: l.name, address: l.address })) } satisfies GatewayStartPayload });
  }

  address(name: string): string {
    const l = this.listeners.find((x) => x.name === name);
    if (!l) throw new Error(`no listener ${name}`);
    return l.address;
  }

  /**
   * The local login link for this run (`custody serve` prints it; the desktop app opens it): signs
   * the browser in as the local user. Each call makes a new link, which works once, for 10 minutes.
   */
  loginLink(): string {
    const address = this.address('control').replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '[::1]:');
    return `http://${address}/login?token=${this.services.login.mintLoginLink()}`;
  }

  get controlPlane(): ControlPlane {
    return this.control;
  }

  /** Registers work to do on stop, after the listeners have drained (timers, sockets). */
  onStop(fn: () => void | Promise<void>): void {
    this.cleanups.push(fn);
  }

  /** Stops accepting, drains in-flight requests, records the stop, closes the store. Idempotent. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      // Held requests are answered (abandoned, recorded) first, so draining does not wait on approvers.
      await this.services.holds.close();
      await Promise.allSettled([...this.listeners].reverse().map((l) => l.close()));
      for (const fn of this.cleanups.reverse()) await Promise.resolve(fn()).catch(() => {});
      try {
        this.services.store.append({ kind: 'gateway.stop', actor: 'system', payload: {} satisfies GatewayStopPayload });
      } catch {
        // the store may be the reason we are stopping
      }
      await this.services.combinedCheckpoints?.stop();
      // The holds' last steps (abandoned at stop) reach the store before its worker ends (bounded wait).
      await this.services.sharedHolds?.stop();
      if (this.services.sharedStore) {
        // What is committed locally goes to the shared store before the worker ends (bounded wait).
        this.services.store.settle();
        await this.services.sharedStore.stop();
      }
      this.services.store.close();
    })();
    return this.stopping;
  }
}

function warnIf(message: string | undefined, log: { warn(m: string): void }): void {
  if (message) log.warn(message);
}

/**
 * Sessions a previous run left open end now, recorded with `reason: gateway_restarted` and their
 * last activity: after a crash nothing else would end them, and an HTTP session waiting for its idle
 * gap cannot continue in a new run either (its client gets a new session).
 */
function endLeftoverSessions(store: AuditStore): void {
  const open = store.db.prepare('SELECT id, connection, protocol, actor, last_event_at AS lastAt FROM sessions WHERE ended_at IS NULL').all() as {
    id: string;
    connection: string | null;
    protocol: SessionEndPayload['protocol'];
    actor: string | null;
    lastAt: number;
  }[];
  if (!open.length) return;
  store.appendMany(
    open.map((r) => ({ kind: 'session.end', session: r.id, actor: r.actor ?? 'system', connection: r.connection ?? undefined, payload: { protocol: r.protocol, reason: 'gateway_restarted', lastActivityAt: r.lastAt } satisfies SessionEndPayload })),
  );
}
