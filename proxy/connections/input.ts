/**
 * What the console may send as a connection (POST/PUT `/api/connections…`), checked before anything
 * is stored: the same schema as the config file (shared/config.ts), a write-only secret whose
 * sources are limited, and an upstream address whose shown form (`***` for a credential) is never
 * saved as the real one. Each refusal is a ConnectionInputError with the HTTP status and code the
 * control plane answers with.
 *
 * The connections API never shows a credential written into an upstream address
 * (`postgres://app:pw@db/x`, `?password=…`): listings, answers, `connection.changed` events and
 * reachability messages carry `redactUpstream(upstream)`. Since the console edits what it was
 * shown, an upstream sent back as it was shown (or omitted) keeps the real one; an upstream that
 * still holds the `***` placeholder next to other edits is refused.
 */
import type { ConnectionInput, Untrusted } from '../../shared/api';
import { Connection, type SecretSource } from '../../shared/config';
import { REDACTED, redactUpstream, upstreamCredentials } from '../../shared/upstream-credentials';

export class ConnectionInputError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ConnectionInputError';
  }
}

/** A connection body as it arrives from the network. */
export type ConnectionBody = Untrusted<ConnectionInput>;

/** Environment variables a secret set through the API may name. */
export const API_SECRET_ENV = /^CUSTODY_SECRET_[A-Z0-9_]+$/;

/** The body's `secret`: a source to store, null to remove the stored one, undefined to keep it. */
export function parseSecret(sent: unknown): SecretSource | null | undefined {
  if (sent === undefined) return undefined;
  if (sent === null) return null;
  if (typeof sent === 'string') {
    if (!sent) return undefined; // an empty password field means "unchanged"
    return { value: sent };
  }
  if (sent && typeof sent === 'object') {
    const source = sent as Record<string, unknown>;
    if (typeof source['env'] === 'string' && source['env']) {
      // Any variable of the gateway's environment (another connection's key, cloud credentials)
      // could be sent to an upstream the admin controls: through the API, only variables the host's
      // operator exported for console-added connections, by name.
      if (!API_SECRET_ENV.test(source['env'])) throw new ConnectionInputError(400, 'secret_env_not_allowed', `secret.env through the API names only variables starting with CUSTODY_SECRET_ (the host's operator exports them for console-added connections); "${source['env']}" is not one. Send the secret value instead, or name the variable in the config file`);
      return { env: source['env'] };
    }
    // A file reference through the API would read any file the gateway can read and send it
    // upstream: secret files are named in the config file only (see checkSecretFiles).
    if (source['file'] !== undefined) throw new ConnectionInputError(400, 'secret_file_not_allowed', 'secret.file is accepted only in the config file (under the data dir\'s secrets/ folder or a path listed in secretFiles), never through the API; send the secret value instead');
    if (typeof source['value'] === 'string' && source['value']) return { value: source['value'] };
  }
  throw new ConnectionInputError(400, 'invalid_connection', 'secret: a string, {env: NAME} or {value: TEXT}');
}

/** Scheme, host and port of an upstream URL: where a stored secret would be sent. */
export function upstreamOrigin(upstream: string): string {
  try {
    const url = new URL(upstream);
    const port = url.port || ({ 'http:': '80', 'https:': '443', 'postgres:': '5432', 'postgresql:': '5432' } as Record<string, string>)[url.protocol] || '';
    return `${url.protocol.replace('postgresql:', 'postgres:')}//${url.hostname.toLowerCase()}:${port}`;
  } catch {
    return upstream;
  }
}

/**
 * Validates with the config schema, so the console and the config file accept the same
 * connections. `listenInUse`: the listen addresses other postgres connections have.
 */
export function validateConnection(input: Record<string, unknown>, listenInUse: string[]): Connection {
  const parsed = Connection.safeParse(Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined && v !== '')));
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConnectionInputError(400, 'invalid_connection', `${issue.path.join('.') || 'connection'}: ${issue.message}`);
  }
  if (parsed.data.kind === 'postgres' && parsed.data.listen) {
    // A listen address another postgres connection uses would fail at start; say so now.
    if (listenInUse.includes(parsed.data.listen)) throw new ConnectionInputError(409, 'listen_in_use', `listen: ${parsed.data.listen} is already used by another connection`);
  }
  return parsed.data;
}

/**
 * The upstream to save from a PUT body: omitted, or sent back exactly as the API showed it, keeps
 * `current` (credentials included). Refused when the body still holds the placeholder.
 */
export function incomingUpstream(sent: unknown, current: string): unknown {
  if (sent === undefined || sent === redactUpstream(current)) return current;
  if (typeof sent === 'string' && upstreamCredentials(sent).some((c) => c.includes(REDACTED)))
    throw new ConnectionInputError(400, 'invalid_connection', `upstream: it still holds the ${REDACTED} placeholder shown in place of a credential; give the full address, or put the credential in secret`);
  return sent;
}
