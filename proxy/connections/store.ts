/**
 * Connections added or edited from the console, in the store's `connections` table. The secret is
 * write-only: a value is sealed with the gateway's SecretWrapper and never returned; env references
 * are kept as they are. Every change is a `connection.changed` event in the chain and a
 * `connections.updated` bus message. The proxies read connections when they start, so a change
 * applies after the gateway restarts (listings mark such connections `pendingRestart`).
 *
 * In a shared-store group the console's connections are the group's (docs/SCALE-OUT.md): every
 * change here records the full set, without secret values, as a `connections` version in
 * `policy_versions`, which audit/shared-store/doc-sync.ts signs and pushes like a policy version;
 * the group's newer set is applied here by applyGroupConnections. A sealed value cannot travel: a
 * connection that arrives with one is stored without it and not served until an admin sets the
 * secret on this gateway (the listing marks it `secretMissing`); that local secret is kept while
 * the group's later versions keep the connection's secret a value sent to the same origin.
 */
import type { ConnectionView } from '../../shared/api';
import { canonicalize } from '../../shared/canonical-json';
import { type Config, Connection, LISTENER_KINDS, type SecretSource } from '../../shared/config';
import type { ConnectionChangedPayload, VersionSource } from '../../shared/events';
import { REDACTED, redactUpstream, shortSecretProblem, upstreamCredentials, upstreamCredentialWarning } from '../../shared/upstream-credentials';
import type { AuditStore } from '../audit/store';
import { insertVersion } from '../audit/versioned-document';
import type { EventBus } from '../bus';
import type { Logger } from '../log';
import type { SecretWrapper } from '../secret-wrapper';
import { API_SECRET_ENV, type ConnectionBody, ConnectionInputError, incomingUpstream, parseSecret, upstreamOrigin, validateConnection } from './input';

interface StoredRow {
  name: string;
  config: string;
  secret: Buffer | null;
  updated_at: number;
}

/** A row's `config` column: the connection without its secret's value. */
interface StoredConfig extends Omit<Connection, 'secret'> {
  /** For env/file secrets the reference itself is not secret; for values only the kind is kept here. */
  secretRef?: { env: string } | { file: string } | { value: true };
  updatedBy?: string;
}

/** Who saves a change: the subject goes into the chain, the name into the listing. */
export interface ConnectionActor {
  subject: string;
  name: string;
}

function readRows(store: Pick<AuditStore, 'db'>): StoredRow[] {
  return store.db.prepare('SELECT name, config, secret, updated_at FROM connections ORDER BY name').all() as StoredRow[];
}

/** An upstream address whose credential was redacted where it came from (the group's versions never carry one). */
const upstreamLacksCredential = (upstream: string) => upstreamCredentials(upstream).some((c) => c.includes(REDACTED));

/** Why a stored connection cannot be served on this gateway although it is listed, or undefined. */
function missingHere(row: StoredRow, stored: StoredConfig): string | undefined {
  if (stored.secretRef && 'value' in stored.secretRef && !row.secret) return "its secret is not set on this gateway (it came from another gateway of the group, and a secret value never travels); an admin sets it in this gateway's console, Connections";
  if (upstreamLacksCredential(stored.upstream)) return "its upstream address's credential is not set on this gateway (it came from another gateway of the group without it); an admin enters the full address in this gateway's console, Connections";
  return undefined;
}

/** What the group shares of a connection: no secret value, no credential in the address, not who edited it last here. */
function sharedOf(stored: StoredConfig): StoredConfig {
  const { updatedBy: _updatedBy, ...rest } = stored;
  return { ...rest, upstream: redactUpstream(stored.upstream) };
}

/** The content of a `connections` version: every connection stored here (added or edited from the console), by name. */
function sharedContent(store: Pick<AuditStore, 'db'>): { connections: StoredConfig[] } {
  return { connections: readRows(store).map((row) => sharedOf(JSON.parse(row.config) as StoredConfig)) };
}

const CONNECTIONS_KIND = 'connections';

/**
 * Records the set stored now as a new `connections` version when it differs from the latest (a
 * secret set here changes nothing the group shares, so nothing is pushed). Call inside the change's
 * transaction.
 */
function recordVersion(store: Pick<AuditStore, 'db'>, content: { connections: unknown[] }, author: ConnectionActor, source: VersionSource, note: string | undefined, now: number): void {
  const latest = store.db.prepare('SELECT body FROM policy_versions WHERE kind = ? ORDER BY version DESC LIMIT 1').get(CONNECTIONS_KIND) as { body: string } | undefined;
  if (latest && canonicalize((JSON.parse(latest.body) as { connections?: unknown }).connections ?? null) === canonicalize(content.connections)) return;
  insertVersion(store, CONNECTIONS_KIND, content, author.subject, { authorName: author.name, source, ...(note ? { note } : {}) }, now);
}

function writeRow(store: Pick<AuditStore, 'db'>, name: string, stored: StoredConfig, sealed: Buffer | null, now: number): void {
  store.db
    .prepare('INSERT INTO connections (name, config, secret, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET config = excluded.config, secret = excluded.secret, updated_at = excluded.updated_at')
    .run(name, JSON.stringify(stored), sealed, now);
}

/** Appends the `connection.changed` event of one change (inside the change's transaction). */
function recordChange(store: AuditStore, actor: ConnectionActor, c: Pick<StoredConfig, 'name' | 'kind' | 'upstream' | 'listen'>, change: Pick<ConnectionChangedPayload, 'action' | 'secretChanged' | 'source' | 'note'>, time: number): void {
  store.append({
    kind: 'connection.changed',
    actor: actor.subject,
    connection: c.name,
    payload: { ...change, name: c.name, kind: c.kind, upstream: redactUpstream(c.upstream), listen: c.listen ?? null, byName: actor.name } satisfies ConnectionChangedPayload,
    time,
  });
}

/**
 * The connections that exist now, by name and kind: the config's and those added from the console.
 * Reads no secrets (the CLI's policy check and dry-run use it without the gateway's keys).
 */
export function connectionsNow(config: Pick<Config, 'connections'>, store: Pick<AuditStore, 'db'>): { name: string; kind: Connection['kind'] }[] {
  const byName = new Map(config.connections.map((c) => [c.name, c.kind] as const));
  for (const row of store.db.prepare('SELECT name, config FROM connections').all() as { name: string; config: string }[]) {
    try {
      const kind = (JSON.parse(row.config) as { kind?: Connection['kind'] }).kind;
      if (kind) byName.set(row.name, kind);
    } catch {
      // an unreadable row is refused where connections are loaded; it simply is not known here
    }
  }
  return [...byName].map(([name, kind]) => ({ name, kind }));
}

/**
 * The config's connections with those stored from the console laid over them (same name: the stored
 * one wins). Called once at gateway start, before the proxies read `config.connections`. A stored
 * connection that cannot be served here (its secret is not set on this gateway, its environment
 * variable is not set on this host, or its secret cannot be opened) is left out, logged and listed
 * in `unserved` with the reason, which the HTTP proxy gives to requests naming it: the gateway
 * refuses its traffic rather than forwarding without the credential.
 */
export function withStoredConnections(config: Config, deps: { store: AuditStore; secrets: SecretWrapper; log: Logger }): { config: Config; unserved: Map<string, string> } {
  const byName = new Map(config.connections.map((c) => [c.name, c] as const));
  const unserved = new Map<string, string>();
  for (const row of readRows(deps.store)) {
    try {
      const stored = JSON.parse(row.config) as StoredConfig;
      const env = stored.secretRef && 'env' in stored.secretRef ? stored.secretRef.env : undefined;
      // A host's own environment is checked here, not at the proxies' start: one connection it cannot serve does not keep the gateway from starting.
      const fromEnv = env === undefined ? undefined : process.env[env];
      const why =
        missingHere(row, stored) ??
        (env !== undefined && fromEnv === undefined ? `environment variable ${env}, which holds its secret, is not set on this gateway's host` : undefined) ??
        (LISTENER_KINDS.includes(stored.kind) ? undefined : shortSecretProblem(row.name, fromEnv));
      if (why) throw new Error(why);
      byName.set(row.name, toConnection(row, deps.secrets));
    } catch (err) {
      byName.delete(row.name);
      unserved.set(row.name, (err as Error).message);
      deps.log.error(`connection ${row.name}: not served (${(err as Error).message}); its traffic is refused`);
    }
  }
  return { config: { ...config, connections: [...byName.values()] }, unserved };
}

function toConnection(row: StoredRow, secrets: SecretWrapper): Connection {
  const { secretRef, updatedBy: _updatedBy, ...rest } = JSON.parse(row.config) as StoredConfig;
  let secret: SecretSource | undefined;
  if (secretRef && 'file' in secretRef) throw new Error('its secret is a file reference set through the API, which is no longer accepted; enter the secret again');
  if (secretRef && 'value' in secretRef) {
    if (!row.secret) throw new Error('the secret is missing');
    secret = { value: secrets.unwrap(row.secret).toString('utf8') };
  } else if (secretRef) secret = secretRef;
  return Connection.parse({ ...rest, ...(secret ? { secret } : {}) });
}

/** The view's `upstream` and, when the address carries a credential, a warning to move it into `secret`. */
function upstreamView(name: string, upstream: string): { upstream: string; warning?: string } {
  const warning = upstreamCredentialWarning(name, upstream);
  return { upstream: redactUpstream(upstream), ...(warning ? { warning } : {}) };
}

function viewOf(connection: Connection | StoredConfig, source: ConnectionView['source'], row: StoredRow | undefined, pendingRestart: boolean): ConnectionView {
  const reference = ('secretRef' in connection ? connection.secretRef : undefined) ?? ('secret' in connection ? (connection as Connection).secret : undefined);
  let secret: ConnectionView['secret'] = null;
  if (reference && 'env' in reference) secret = { kind: 'env', env: reference.env };
  else if (reference && 'file' in reference) secret = { kind: 'file', file: reference.file };
  else if (reference) secret = { kind: 'value' };
  return {
    name: connection.name,
    kind: connection.kind,
    ...upstreamView(connection.name, connection.upstream),
    ...(connection.listen ? { listen: connection.listen } : {}),
    ...(connection.tls ? { tls: connection.tls } : {}),
    ...(connection.description ? { description: connection.description } : {}),
    source,
    secret,
    updatedAt: row?.updated_at ?? null,
    updatedBy: ('updatedBy' in connection ? connection.updatedBy : undefined) ?? null,
    pendingRestart,
    ...(row && missingHere(row, connection as StoredConfig) ? { secretMissing: true as const } : {}),
  };
}

/**
 * At start: connections stored before this gateway versioned them become its first `connections`
 * version, so they seed a group that has none yet (doc-sync.ts), as the config file's rules do;
 * a group that has one replaces them, as it replaces a joining gateway's rules.
 */
export function versionStoredConnections(store: AuditStore): void {
  if (!readRows(store).length || store.db.prepare('SELECT 1 FROM policy_versions WHERE kind = ? LIMIT 1').get(CONNECTIONS_KIND)) return;
  store.transaction(() => recordVersion(store, sharedContent(store), { subject: 'config', name: 'connections stored before they were versioned' }, 'config', undefined, Date.now()));
}

/** The services' `config` with the config file's own connections: what console changes are laid over (the proxies serve the merged set since start). */
export function fileConfig<T extends { config: Config; configConnections?: Config['connections'] }>(s: T): T {
  return s.configConnections ? { ...s, config: { ...s.config, connections: s.configConnections } } : s;
}

export class ConnectionStore {
  /** Rows saved at or after this time take effect at the next start. */
  private readonly startedAt = Date.now();

  constructor(
    private readonly deps: { store: AuditStore; secrets: SecretWrapper; config: Config; bus: EventBus },
    /** Where a postgres or ssh connection's listener is really bound (a configured port 0 is picked at start). */
    private readonly boundListen: (name: string) => string | undefined = () => undefined,
  ) {}

  /** Every connection, config and console alike, by name. */
  list(): ConnectionView[] {
    const rows = new Map(readRows(this.deps.store).map((row) => [row.name, row]));
    const views = new Map<string, ConnectionView>();
    for (const c of this.deps.config.connections) views.set(c.name, viewOf(c, rows.has(c.name) ? 'console' : 'config', rows.get(c.name), false));
    for (const [name, row] of rows) views.set(name, viewOf(JSON.parse(row.config) as StoredConfig, 'console', row, row.updated_at >= this.startedAt));
    for (const view of views.values()) {
      const bound = (view.kind === 'postgres' || view.kind === 'ssh') && !view.pendingRestart ? this.boundListen(view.name) : undefined;
      if (bound) view.listen = bound;
    }
    return [...views.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  find(name: string): ConnectionView | undefined {
    return this.list().find((c) => c.name === name);
  }

  /** The upstream as configured, credentials included (views carry it redacted). */
  upstreamOf(name: string): string | undefined {
    const row = readRows(this.deps.store).find((r) => r.name === name);
    return row ? (JSON.parse(row.config) as StoredConfig).upstream : this.deps.config.connections.find((c) => c.name === name)?.upstream;
  }

  /** Adds a connection; throws ConnectionInputError (409 when the name exists). */
  add(body: ConnectionBody, actor: ConnectionActor): ConnectionView {
    if (typeof body.name !== 'string') throw new ConnectionInputError(400, 'invalid_connection', 'name: required');
    const current = this.list();
    if (current.some((c) => c.name === body.name)) throw new ConnectionInputError(409, 'exists', `a connection named "${body.name}" already exists; edit it instead`);
    const secret = parseSecret(body.secret);
    const connection = validateConnection({ ...body, secret: undefined }, current.filter((c) => c.listen).map((c) => c.listen!));
    this.save(connection, secret, actor, undefined);
    return this.saved(connection.name);
  }

  /**
   * Edits a connection (fields omitted keep their value; a name cannot change). The stored secret
   * goes only where it went before: re-pointing the upstream's scheme, host or port needs the
   * secret entered again. Undefined when there is no such connection.
   */
  edit(name: string, body: ConnectionBody, actor: ConnectionActor): ConnectionView | undefined {
    const current = this.list();
    const existing = current.find((c) => c.name === name);
    if (!existing) return undefined;
    if (body.name !== undefined && body.name !== name) throw new ConnectionInputError(400, 'invalid_connection', 'name: a connection cannot be renamed; add a new one');
    const secret = parseSecret(body.secret);
    const merged = {
      name,
      kind: body.kind ?? existing.kind,
      upstream: incomingUpstream(body.upstream, this.upstreamOf(name) ?? existing.upstream),
      listen: body.listen === undefined ? existing.listen : body.listen || undefined,
      tls: body.tls === undefined ? existing.tls : body.tls || undefined,
      description: body.description === undefined ? existing.description : body.description || undefined,
    };
    const connection = validateConnection(merged, current.filter((c) => c.listen && c.name !== name).map((c) => c.listen!));
    if (secret === undefined && existing.secret && upstreamOrigin(connection.upstream) !== upstreamOrigin(existing.upstream)) {
      throw new ConnectionInputError(409, 'secret_required', `changing the upstream's scheme, host or port (${upstreamOrigin(existing.upstream)} → ${upstreamOrigin(connection.upstream)}) needs the secret entered again; the stored one is never sent to a new upstream`);
    }
    this.save(connection, secret, actor, readRows(this.deps.store).find((r) => r.name === name));
    return this.saved(name);
  }

  private saved(name: string): ConnectionView {
    const view = this.find(name);
    if (!view) throw new Error(`connection ${name} was saved but cannot be read back`);
    return view;
  }

  private save(connection: Connection, secret: SecretSource | null | undefined, actor: ConnectionActor, previous: StoredRow | undefined): void {
    const { store, secrets, config, bus } = this.deps;
    // A secret the HTTP proxy could not scrub from responses would keep the gateway from starting: refused now.
    if (secret && !LISTENER_KINDS.includes(connection.kind)) {
      const problem = shortSecretProblem(connection.name, 'value' in secret ? secret.value : 'env' in secret ? process.env[secret.env] : undefined);
      if (problem) throw new ConnectionInputError(400, 'secret_too_short', problem);
    }
    const now = Date.now();
    let sealed: Buffer | null = previous?.secret ?? null;
    let previousRef: StoredConfig['secretRef'] | undefined = previous ? (JSON.parse(previous.config) as StoredConfig).secretRef : undefined;
    if (!previous) {
      // Editing a config-file connection for the first time: keep its secret reference unless replaced.
      const fromConfig = config.connections.find((c) => c.name === connection.name);
      if (fromConfig?.secret && secret === undefined) {
        if ('value' in fromConfig.secret) {
          sealed = secrets.wrap(Buffer.from(fromConfig.secret.value, 'utf8'));
          previousRef = { value: true };
        } else previousRef = fromConfig.secret;
      }
    }
    let secretRef = previousRef;
    if (secret === null) {
      sealed = null;
      secretRef = undefined;
    } else if (secret && 'value' in secret) {
      sealed = secrets.wrap(Buffer.from(secret.value, 'utf8'));
      secretRef = { value: true };
    } else if (secret) {
      sealed = null;
      secretRef = secret;
    }
    const { secret: _secret, ...rest } = connection;
    const stored: StoredConfig = { ...rest, ...(secretRef ? { secretRef } : {}), updatedBy: actor.name };
    store.transaction(() => {
      writeRow(store, connection.name, stored, sealed, now);
      recordChange(store, actor, connection, { action: previous || config.connections.some((c) => c.name === connection.name) ? 'updated' : 'added', secretChanged: secret !== undefined, source: 'console' }, now);
      recordVersion(store, sharedContent(store), actor, 'console', undefined, now);
    });
    bus.publish({ type: 'connections.updated' });
  }

  /**
   * Removes a connection added or edited from the console (one edited from the config file's goes
   * back to the file's). Undefined when there is no such connection; ConnectionInputError for one
   * only the config file defines.
   */
  remove(name: string, actor: ConnectionActor): { name: string; fromConfig: boolean } | undefined {
    const { store, config, bus } = this.deps;
    const row = readRows(store).find((r) => r.name === name);
    const fromConfig = config.connections.some((c) => c.name === name);
    if (!row) {
      if (fromConfig) throw new ConnectionInputError(409, 'config_connection', `connection ${name} is defined in the config file; remove it there`);
      return undefined;
    }
    const now = Date.now();
    store.transaction(() => {
      store.db.prepare('DELETE FROM connections WHERE name = ?').run(name);
      recordChange(store, actor, JSON.parse(row.config) as StoredConfig, { action: 'removed', secretChanged: row.secret !== null, source: 'console' }, now);
      recordVersion(store, sharedContent(store), actor, 'console', undefined, now);
    });
    bus.publish({ type: 'connections.updated' });
    return { name, fromConfig };
  }
}

/** A connection of a group version, checked as this gateway checks its own: undefined and the problem when it cannot be taken. */
function takeShared(item: unknown): { stored: StoredConfig } | { problem: string } {
  if (!item || typeof item !== 'object') return { problem: 'a connection is not an object' };
  const { secretRef, updatedBy: _updatedBy, ...rest } = item as StoredConfig;
  const name = typeof rest.name === 'string' ? rest.name : '?';
  // Only what the console may set: an env reference to a variable the host's operator exports for
  // console connections, or a sealed value (which stays behind). A file reference would read any
  // file here, another variable any credential of this host.
  if (secretRef !== undefined && !(secretRef && typeof secretRef === 'object' && (('value' in secretRef && secretRef.value === true) || ('env' in secretRef && typeof secretRef.env === 'string' && API_SECRET_ENV.test(secretRef.env))))) {
    return { problem: `connection ${name}: its secret reference is not one the console may set (an environment variable CUSTODY_SECRET_…, or a value)` };
  }
  const parsed = Connection.safeParse(rest);
  if (!parsed.success) return { problem: `connection ${name}: ${parsed.error.issues[0]?.message ?? 'invalid'}` };
  const { secret: _secret, ...connection } = parsed.data;
  return { stored: { ...connection, ...(secretRef ? { secretRef } : {}) } };
}

/**
 * Applies the group's set of console connections (a `connections` version another gateway made:
 * audit/shared-store/doc-sync.ts): connections it lacks are removed here, the others added or
 * updated, each change a `connection.changed` event naming where it came from (`source: group`),
 * and the set recorded as this gateway's own version (never pushed back). A connection whose
 * secret is a value keeps the one set here when it still goes to the same origin; otherwise it is
 * stored without one (not served until an admin sets it here). Changes apply at the next start,
 * as console changes do. Returns the problems that kept the version from being applied (nothing
 * changed then); throws when the store cannot record it.
 */
export function applyGroupConnections(deps: { store: AuditStore; config: Pick<Config, 'connections'>; bus: EventBus }, content: Record<string, unknown>, who: { author: ConnectionActor; note: string }): string[] {
  const list = content['connections'];
  if (!Array.isArray(list)) return ['connections: not a list'];
  const incoming: StoredConfig[] = [];
  for (const item of list) {
    const taken = takeShared(item);
    if ('problem' in taken) return [taken.problem];
    incoming.push(taken.stored);
  }
  const { store, config, bus } = deps;
  const rows = new Map(readRows(store).map((row) => [row.name, row]));
  const now = Date.now();
  store.transaction(() => {
    for (const c of incoming) {
      const previous = rows.get(c.name);
      const before = previous && (JSON.parse(previous.config) as StoredConfig);
      // This gateway's own credential in the address stays while the group's address is the same without it.
      const upstream = before && redactUpstream(before.upstream) === c.upstream ? before.upstream : c.upstream;
      if (before && canonicalize(sharedOf(before)) === canonicalize(sharedOf({ ...c, upstream }))) continue;
      const isValue = (ref: StoredConfig['secretRef']) => !!ref && 'value' in ref;
      const keep = !!previous?.secret && isValue(before?.secretRef) && isValue(c.secretRef) && upstreamOrigin(upstream) === upstreamOrigin(before!.upstream);
      const sealed = keep ? previous!.secret : null;
      writeRow(store, c.name, { ...c, upstream, updatedBy: who.author.name }, sealed, now);
      const secretChanged = canonicalize(before?.secretRef ?? null) !== canonicalize(c.secretRef ?? null) || (!!previous?.secret && !keep);
      recordChange(store, who.author, c, { action: previous || config.connections.some((x) => x.name === c.name) ? 'updated' : 'added', secretChanged, source: 'group', note: who.note }, now);
    }
    for (const [name, row] of rows) {
      if (incoming.some((c) => c.name === name)) continue;
      store.db.prepare('DELETE FROM connections WHERE name = ?').run(name);
      recordChange(store, who.author, JSON.parse(row.config) as StoredConfig, { action: 'removed', secretChanged: row.secret !== null, source: 'group', note: who.note }, now);
    }
    // The version as received, so that this gateway finds the group's newest already in force.
    recordVersion(store, { connections: list }, who.author, 'group', who.note, now);
  });
  bus.publish({ type: 'connections.updated' });
  return [];
}
