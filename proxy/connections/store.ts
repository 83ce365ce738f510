/**
 * Connections added or edited from the console, in the store's `connections` table. The secret is
 * write-only: a value is sealed with the gateway's SecretWrapper and never returned; env references
 * are kept as they are. Every change is a `connection.changed` event in the chain and a
 * `connections.updated` bus message. The proxies read connections when they start, so a change
 * applies after the gateway restarts (listings mark such connections `pendingRestart`).
 */
import type { ConnectionView } from '../../shared/api';
import { type Config, Connection, LISTENER_KINDS, type SecretSource } from '../../shared/config';
import type { ConnectionChangedPayload } from '../../shared/events';
import { redactUpstream, shortSecretProblem, upstreamCredentialWarning } from '../../shared/upstream-credentials';
import type { AuditStore } from '../audit/store';
import type { EventBus } from '../bus';
import type { Logger } from '../log';
import type { SecretWrapper } from '../secret-wrapper';
import { type ConnectionBody, ConnectionInputError, incomingUpstream, parseSecret, upstreamOrigin, validateConnection } from './input';

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

function readRows(store: AuditStore): StoredRow[] {
  return store.db.prepare('SELECT name, config, secret, updated_at FROM connections ORDER BY name').all() as StoredRow[];
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
 * connection whose secret cannot be opened is left out and logged: the gateway refuses its traffic
 * rather than forwarding without the credential.
 */
export function withStoredConnections(config: Config, deps: { store: AuditStore; secrets: SecretWrapper; log: Logger }): Config {
  const byName = new Map(config.connections.map((c) => [c.name, c] as const));
  for (const row of readRows(deps.store)) {
    try {
      byName.set(row.name, toConnection(row, deps.secrets));
    } catch (err) {
      byName.delete(row.name);
      deps.log.error(`connection ${row.name}: cannot be loaded from the store (${(err as Error).message}); its traffic is refused`);
    }
  }
  return { ...config, connections: [...byName.values()] };
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
  };
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
      store.db
        .prepare('INSERT INTO connections (name, config, secret, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET config = excluded.config, secret = excluded.secret, updated_at = excluded.updated_at')
        .run(connection.name, JSON.stringify(stored), sealed, now);
      store.append({
        kind: 'connection.changed',
        actor: actor.subject,
        connection: connection.name,
        payload: {
          action: previous || config.connections.some((c) => c.name === connection.name) ? 'updated' : 'added',
          name: connection.name,
          kind: connection.kind,
          upstream: redactUpstream(connection.upstream),
          listen: connection.listen ?? null,
          secretChanged: secret !== undefined,
          byName: actor.name,
        } satisfies ConnectionChangedPayload,
      });
    });
    bus.publish({ type: 'connections.updated' });
  }
}
