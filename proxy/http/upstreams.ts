/**
 * The HTTP connections the proxy serves: each one's upstream URL, keep-alive agent and secret
 * header, built once from the config (secrets are read when the table is built, never per request).
 */
import { readFileSync } from 'node:fs';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { type Connection, LISTENER_KINDS } from '../../shared/config';
import { ConfigError, readSecret } from '../config';
import { redactUpstream, shortSecretProblem } from '../../shared/upstream-credentials';
import { SecretScrubber } from './scrub';

export interface UpstreamRoute {
  connection: Connection;
  protocol: 'http:' | 'https:';
  hostname: string;
  port: number;
  /** `host` header value for the upstream. */
  host: string;
  /** Path prefix of the upstream URL without a trailing slash, e.g. `/v1`. */
  basePath: string;
  agent: HttpAgent;
  /** The secret in the header the upstream expects; undefined when the connection has no secret. */
  authHeader?: [name: string, value: string];
  /** The raw secret, so it can be scrubbed from anything that echoes it. */
  secret?: string;
  /** Scrubs the secret (and its encodings) from responses; undefined without a scrubbable secret. */
  scrubber?: SecretScrubber;
}

export class UpstreamTable {
  private routes = new Map<string, UpstreamRoute>();
  /** Connections that exist but are not served here (postgres), for a precise 404. */
  private elsewhere = new Map<string, string>();

  constructor(connections: Connection[]) {
    this.load(connections);
  }

  /** Replaces the table; throws ConfigError (naming the connection) when a secret cannot be read. */
  load(connections: Connection[]): void {
    const routes = new Map<string, UpstreamRoute>();
    const elsewhere = new Map<string, string>();
    for (const c of connections) {
      if (LISTENER_KINDS.includes(c.kind)) {
        elsewhere.set(c.name, c.kind);
        continue;
      }
      routes.set(c.name, buildRoute(c));
    }
    const old = this.routes;
    this.routes = routes;
    this.elsewhere = elsewhere;
    for (const r of old.values()) r.agent.destroy();
  }

  get(name: string): UpstreamRoute | undefined {
    return this.routes.get(name);
  }

  /** The kind of a connection that exists but is not an HTTP connection. */
  otherKind(name: string): string | undefined {
    return this.elsewhere.get(name);
  }

  /** The keep-alive agents of the connections served now. */
  *agents(): IterableIterator<HttpAgent> {
    for (const r of this.routes.values()) yield r.agent;
  }

  destroy(): void {
    for (const r of this.routes.values()) r.agent.destroy();
  }
}

function buildRoute(c: Connection): UpstreamRoute {
  let url: URL;
  try {
    url = new URL(c.upstream);
  } catch {
    throw new ConfigError(`connection ${c.name}: upstream "${redactUpstream(c.upstream)}" is not a URL`);
  }
  if (url.username || url.password) throw new ConfigError(`connection ${c.name}: put credentials in secret, not in the upstream URL`);
  const https = url.protocol === 'https:';
  const secret = readSecret(c.secret, `connection ${c.name}`);
  // Fail closed: a secret too short to scrub from responses could come back to a client unseen.
  const short = shortSecretProblem(c.name, secret);
  if (short) throw new ConfigError(short);
  let ca: Buffer | undefined;
  if (c.tls?.ca) {
    try {
      ca = readFileSync(c.tls.ca);
    } catch (err) {
      throw new ConfigError(`connection ${c.name}: cannot read tls.ca ${c.tls.ca} (${(err as NodeJS.ErrnoException).code ?? err})`);
    }
  }
  const agentOptions = { keepAlive: true, keepAliveMsecs: 1000, maxFreeSockets: 64, scheduling: 'lifo' as const, noDelay: true };
  const agent = https ? new HttpsAgent({ ...agentOptions, ca, rejectUnauthorized: true }) : new HttpAgent(agentOptions);
  const port = url.port ? Number(url.port) : https ? 443 : 80;
  return {
    connection: c,
    protocol: https ? 'https:' : 'http:',
    hostname: url.hostname.replace(/^\[|\]$/g, ''),
    port,
    host: url.host,
    basePath: url.pathname.replace(/\/+$/, ''),
    agent,
    secret: secret || undefined,
    scrubber: secret ? SecretScrubber.for(secret) : undefined,
    authHeader: secret ? (c.kind === 'anthropic' ? ['x-api-key', secret] : ['authorization', `Bearer ${secret}`]) : undefined,
  };
}
