/**
 * Connections from the console: `GET /api/connections`, `POST /api/connections`,
 * `PUT /api/connections/:name`, `POST /api/connections/:name/test` and `POST /api/connections/test`
 * (an unsaved draft). Connections added here live in the store's `connections` table; the secret
 * is write-only — sealed with the gateway's SecretWrapper, never returned by any route — and every
 * change is a `connection.changed` audit event. The proxies read connections when they start: a
 * change applies after the gateway restarts (the listing marks such connections `pendingRestart`).
 *
 * Reachability test: HTTP kinds send `HEAD <upstream>` (any HTTP answer, even 401 or 404, means the
 * upstream is reachable); postgres opens a TCP connection to the upstream's host and port. Both
 * give up after a few seconds.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { type Config, Connection, ConnectionKind, type SecretSource } from '../../../shared/config';
import type { GatewayServices } from '../../services';
import { HttpError, type Router } from '../router';
import { incomingUpstream, redactUpstream, upstreamView } from './connection-credentials';

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
}

export interface ConnectionTestResult {
  ok: boolean;
  latencyMs: number;
  /** What was tried and what happened, in one line. */
  message: string;
  status?: number;
}

interface StoredRow {
  name: string;
  config: string;
  secret: Buffer | null;
  updated_at: number;
}

interface StoredConfig extends Omit<Connection, 'secret'> {
  /** For env/file secrets the reference itself is not secret; for values only the kind is kept here. */
  secretRef?: { env: string } | { file: string } | { value: true };
  updatedBy?: string;
}

const TEST_TIMEOUT_MS = 4000;
const started = new WeakMap<GatewayServices, number>();

function readRows(s: GatewayServices): StoredRow[] {
  return s.store.db.prepare('SELECT name, config, secret, updated_at FROM connections ORDER BY name').all() as StoredRow[];
}

/**
 * The config's connections with those stored from the console laid over them (same name: the stored
 * one wins). Called once at gateway start, before the proxies read `config.connections`. A stored
 * connection whose secret cannot be opened is left out and logged: the gateway refuses its traffic
 * rather than forwarding without the credential.
 */
export function withStoredConnections(config: Config, s: Pick<GatewayServices, 'store' | 'secrets' | 'log'>): Config {
  const byName = new Map(config.connections.map((c) => [c.name, c] as const));
  for (const row of readRows(s as GatewayServices)) {
    try {
      byName.set(row.name, toConnection(row, s.secrets));
    } catch (err) {
      byName.delete(row.name);
      s.log.error(`connection ${row.name}: cannot be loaded from the store (${(err as Error).message}); its traffic is refused`);
    }
  }
  return { ...config, connections: [...byName.values()] };
}

function toConnection(row: StoredRow, secrets: GatewayServices['secrets']): Connection {
  const stored = JSON.parse(row.config) as StoredConfig;
  const { secretRef, updatedBy: _by, ...rest } = stored;
  let secret: SecretSource | undefined;
  if (secretRef && 'file' in secretRef) throw new Error('its secret is a file reference set through the API, which is no longer accepted; enter the secret again');
  if (secretRef && 'value' in secretRef) {
    if (!row.secret) throw new Error('the secret is missing');
    secret = { value: secrets.unwrap(row.secret).toString('utf8') };
  } else if (secretRef) secret = secretRef;
  return Connection.parse({ ...rest, ...(secret ? { secret } : {}) });
}

function viewOf(c: Connection | StoredConfig, source: ConnectionView['source'], row: StoredRow | undefined, pending: boolean): ConnectionView {
  const secretRef = 'secretRef' in c ? c.secretRef : undefined;
  const sec = 'secret' in c ? (c as Connection).secret : undefined;
  let secret: ConnectionView['secret'] = null;
  const ref = secretRef ?? sec;
  if (ref && 'env' in ref) secret = { kind: 'env', env: ref.env };
  else if (ref && 'file' in ref) secret = { kind: 'file', file: ref.file };
  else if (ref) secret = { kind: 'value' };
  return {
    name: c.name,
    kind: c.kind,
    ...upstreamView(c.name, c.upstream),
    ...(c.listen ? { listen: c.listen } : {}),
    ...(c.tls ? { tls: c.tls } : {}),
    ...(c.description ? { description: c.description } : {}),
    source,
    secret,
    updatedAt: row?.updated_at ?? null,
    updatedBy: ('updatedBy' in c ? c.updatedBy : undefined) ?? null,
    pendingRestart: pending,
  };
}

export function listConnections(s: GatewayServices, boundListen: (name: string) => string | undefined = () => undefined): ConnectionView[] {
  const since = started.get(s) ?? 0;
  const rows = new Map(readRows(s).map((r) => [r.name, r]));
  const out = new Map<string, ConnectionView>();
  for (const c of s.config.connections) out.set(c.name, viewOf(c, rows.has(c.name) ? 'console' : 'config', rows.get(c.name), false));
  for (const [name, row] of rows) {
    const stored = JSON.parse(row.config) as StoredConfig;
    out.set(name, viewOf(stored, 'console', row, row.updated_at >= since));
  }
  // Show where a postgres connection really listens (a configured port 0 is picked at start).
  for (const v of out.values()) {
    const bound = (v.kind === 'postgres' || v.kind === 'ssh') && !v.pendingRestart ? boundListen(v.name) : undefined;
    if (bound) v.listen = bound;
  }
  return [...out.values()].sort((a, b) => a.name.localeCompare(b.name));
}

/** Where the gateway's listeners are bound, once they are. */
export interface BoundAddresses {
  /** The HTTP proxy, `host:port`. */
  http(): string | undefined;
  /** A postgres connection's listener, `host:port`. */
  postgres(name: string): string | undefined;
}

/** The body of POST/PUT: a connection plus a write-only secret. */
interface ConnectionInput {
  name?: unknown;
  kind?: unknown;
  upstream?: unknown;
  listen?: unknown;
  tls?: unknown;
  description?: unknown;
  /** A string is the secret value; or `{env}`, `{file}`, `{value}`; null removes it; omitted keeps it. */
  secret?: unknown;
}

/** Environment variables a secret set through the API may name. */
const API_SECRET_ENV = /^CUSTODY_SECRET_[A-Z0-9_]+$/;

function parseSecret(v: unknown): SecretSource | null | undefined {
  if (v === undefined) return undefined;
  if (v === null) return null;
  if (typeof v === 'string') {
    if (!v) return undefined; // an empty password field means "unchanged"
    return { value: v };
  }
  if (v && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if (typeof o['env'] === 'string' && o['env']) {
      // Any variable of the gateway's environment (another connection's key, cloud credentials)
      // could be sent to an upstream the admin controls: through the API, only variables the host's
      // operator exported for console-added connections, by name.
      if (!API_SECRET_ENV.test(o['env'])) throw new HttpError(400, 'secret_env_not_allowed', `secret.env through the API names only variables starting with CUSTODY_SECRET_ (the host's operator exports them for console-added connections); "${o['env']}" is not one. Send the secret value instead, or name the variable in the config file`);
      return { env: o['env'] };
    }
    // A file reference through the API would read any file the gateway can read and send it
    // upstream: secret files are named in the config file only (see checkSecretFiles).
    if (o['file'] !== undefined) throw new HttpError(400, 'secret_file_not_allowed', 'secret.file is accepted only in the config file (under the data dir\'s secrets/ folder or a path listed in secretFiles), never through the API; send the secret value instead');
    if (typeof o['value'] === 'string' && o['value']) return { value: o['value'] };
  }
  throw new HttpError(400, 'invalid_connection', 'secret: a string, {env: NAME} or {value: TEXT}');
}

/** Scheme, host and port of an upstream URL: where a stored secret would be sent. */
function upstreamOrigin(upstream: string): string {
  try {
    const u = new URL(upstream);
    const port = u.port || ({ 'http:': '80', 'https:': '443', 'postgres:': '5432', 'postgresql:': '5432' } as Record<string, string>)[u.protocol] || '';
    return `${u.protocol.replace('postgresql:', 'postgres:')}//${u.hostname.toLowerCase()}:${port}`;
  } catch {
    return upstream;
  }
}

/** Validates with the config schema, so the console and the config file accept the same connections. */
function validate(input: Record<string, unknown>, others: string[]): Connection {
  const r = Connection.safeParse(Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined && v !== '')));
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new HttpError(400, 'invalid_connection', `${i.path.join('.') || 'connection'}: ${i.message}`);
  }
  if (r.data.kind === 'postgres' && r.data.listen) {
    // A listen address another postgres connection uses would fail at start; say so now.
    if (others.includes(r.data.listen)) throw new HttpError(409, 'listen_in_use', `listen: ${r.data.listen} is already used by another connection`);
  }
  return r.data;
}

function save(s: GatewayServices, c: Connection, secret: SecretSource | null | undefined, actor: { subject: string; name: string }, previous: StoredRow | undefined): void {
  const now = Date.now();
  let sealed: Buffer | null = previous?.secret ?? null;
  let prevRef: StoredConfig['secretRef'] | undefined = previous ? (JSON.parse(previous.config) as StoredConfig).secretRef : undefined;
  if (!previous) {
    // Editing a config-file connection for the first time: keep its secret reference unless replaced.
    const fromConfig = s.config.connections.find((x) => x.name === c.name);
    if (fromConfig?.secret && secret === undefined) {
      if ('value' in fromConfig.secret) {
        sealed = s.secrets.wrap(Buffer.from(fromConfig.secret.value, 'utf8'));
        prevRef = { value: true };
      } else prevRef = fromConfig.secret;
    }
  }
  let secretRef = prevRef;
  if (secret === null) {
    sealed = null;
    secretRef = undefined;
  } else if (secret && 'value' in secret) {
    sealed = s.secrets.wrap(Buffer.from(secret.value, 'utf8'));
    secretRef = { value: true };
  } else if (secret) {
    sealed = null;
    secretRef = secret;
  }
  const { secret: _drop, ...rest } = c;
  const stored: StoredConfig = { ...rest, ...(secretRef ? { secretRef } : {}), updatedBy: actor.name };
  s.store.transaction(() => {
    s.store.db
      .prepare('INSERT INTO connections (name, config, secret, updated_at) VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET config = excluded.config, secret = excluded.secret, updated_at = excluded.updated_at')
      .run(c.name, JSON.stringify(stored), sealed, now);
    s.store.append({
      kind: 'connection.changed',
      actor: actor.subject,
      connection: c.name,
      payload: {
        action: previous || s.config.connections.some((x) => x.name === c.name) ? 'updated' : 'added',
        name: c.name,
        kind: c.kind,
        upstream: redactUpstream(c.upstream),
        listen: c.listen ?? null,
        secretChanged: secret !== undefined,
        byName: actor.name,
      },
    });
  });
  s.bus.publish({ type: 'connections.updated' });
}

/** Tries to reach an upstream within a few seconds; never throws. */
export async function testUpstream(c: Pick<Connection, 'kind' | 'upstream'>, timeoutMs = TEST_TIMEOUT_MS): Promise<ConnectionTestResult> {
  const t0 = performance.now();
  const done = (ok: boolean, message: string, status?: number): ConnectionTestResult => ({ ok, latencyMs: Math.round(performance.now() - t0), message, ...(status ? { status } : {}) });
  let url: URL;
  try {
    url = new URL(c.upstream);
  } catch {
    return done(false, `${redactUpstream(c.upstream)} is not a URL`);
  }
  if (c.kind === 'postgres') {
    const host = url.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1';
    const port = Number(url.port || 5432);
    return new Promise((resolve) => {
      const socket = connect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        resolve(done(false, `no answer from ${host}:${port} within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.destroy();
        resolve(done(true, `TCP connection to ${host}:${port} opened`));
      });
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        resolve(done(false, `cannot connect to ${host}:${port}: ${err.code ?? err.message}`));
      });
    });
  }
  const req = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve) => {
    const r = req(url, { method: 'HEAD', timeout: timeoutMs, headers: { 'user-agent': 'custody-connection-test' } }, (res) => {
      res.resume();
      resolve(done(true, `HEAD ${url.origin}${url.pathname} answered ${res.statusCode}`, res.statusCode));
    });
    r.once('timeout', () => {
      r.destroy();
      resolve(done(false, `no answer from ${url.host} within ${timeoutMs / 1000} s`));
    });
    r.once('error', (err: NodeJS.ErrnoException) => resolve(done(false, `cannot reach ${url.host}: ${err.code ?? err.message}`)));
    r.end();
  });
}

/**
 * Registers the connection routes; listing needs a signed-in admin, approver or reviewer, changes
 * need admin. `bound` gives the listeners' real addresses (for the snippets) once they listen.
 */
export function registerConnectionRoutes(router: Router, s: GatewayServices, bound: BoundAddresses = { http: () => undefined, postgres: () => undefined }): void {
  started.set(s, Date.now());
  const current = () => listConnections(s, (name) => bound.postgres(name));
  // The views carry redacted upstreams; saving and testing need the address as configured.
  const realUpstream = (name: string): string | undefined => {
    const row = readRows(s).find((r) => r.name === name);
    return row ? (JSON.parse(row.config) as StoredConfig).upstream : s.config.connections.find((c) => c.name === name)?.upstream;
  };
  router.get(
    '/api/connections',
    ({ identity }) => {
      if (!identity || !['admin', 'approver', 'reviewer'].some((r) => identity.roles.includes(r as never))) throw new HttpError(403, 'forbidden', 'this needs the reviewer, approver or admin role');
      return { connections: current(), httpListen: bound.http() ?? s.config.listen.http, liveReload: false };
    },
  );
  router.post(
    '/api/connections',
    async ({ identity, json, res }) => {
      const body = ((await json<ConnectionInput>()) ?? {}) as ConnectionInput;
      if (typeof body.name !== 'string') throw new HttpError(400, 'invalid_connection', 'name: required');
      if (current().some((c) => c.name === body.name)) throw new HttpError(409, 'exists', `a connection named "${body.name}" already exists; edit it instead`);
      const secret = parseSecret(body.secret);
      const c = validate({ ...body, secret: undefined }, current().filter((x) => x.listen).map((x) => x.listen!));
      save(s, c, secret, identity!, undefined);
      res.statusCode = 201;
      return current().find((x) => x.name === c.name);
    },
    { role: 'admin' },
  );
  router.put(
    '/api/connections/:name',
    async ({ identity, json, params }) => {
      const name = params['name']!;
      const existing = current().find((c) => c.name === name);
      if (!existing) throw new HttpError(404, 'not_found', `no connection ${name}`);
      const body = ((await json<ConnectionInput>()) ?? {}) as ConnectionInput;
      if (body.name !== undefined && body.name !== name) throw new HttpError(400, 'invalid_connection', 'name: a connection cannot be renamed; add a new one');
      const secret = parseSecret(body.secret);
      const merged = {
        name,
        kind: body.kind ?? existing.kind,
        upstream: incomingUpstream(body.upstream, realUpstream(name) ?? existing.upstream),
        listen: body.listen === undefined ? existing.listen : body.listen || undefined,
        tls: body.tls === undefined ? existing.tls : body.tls || undefined,
        description: body.description === undefined ? existing.description : body.description || undefined,
      };
      const c = validate(merged, current().filter((x) => x.listen && x.name !== name).map((x) => x.listen!));
      // The stored secret goes only where it went before: re-pointing the upstream elsewhere
      // needs the secret entered again, or a changed upstream would receive the old one.
      if (secret === undefined && existing.secret && upstreamOrigin(c.upstream) !== upstreamOrigin(existing.upstream)) {
        throw new HttpError(409, 'secret_required', `changing the upstream's scheme, host or port (${upstreamOrigin(existing.upstream)} → ${upstreamOrigin(c.upstream)}) needs the secret entered again; the stored one is never sent to a new upstream`);
      }
      const row = readRows(s).find((r) => r.name === name);
      save(s, c, secret, identity!, row);
      return current().find((x) => x.name === name);
    },
    { role: 'admin' },
  );
  router.post(
    '/api/connections/test',
    async ({ json }) => {
      const body = ((await json<ConnectionInput>()) ?? {}) as ConnectionInput;
      const kind = ConnectionKind.safeParse(body.kind);
      if (typeof body.upstream !== 'string' || !kind.success) throw new HttpError(400, 'invalid_connection', 'kind (openai, anthropic, http or postgres) and upstream are required');
      return testUpstream({ kind: kind.data, upstream: body.upstream });
    },
    { role: 'admin' },
  );
  router.post(
    '/api/connections/:name/test',
    ({ params }) => {
      const c = current().find((x) => x.name === params['name']);
      if (!c) throw new HttpError(404, 'not_found', `no connection ${params['name']}`);
      return testUpstream({ kind: c.kind, upstream: realUpstream(c.name) ?? c.upstream });
    },
    { role: 'admin' },
  );
}
