/**
 * Turns a presented credential (a `cst_` API key, or an OIDC JWT when issuers are configured) into
 * an Identity with roles, or throws AuthError saying why not. API keys are checked without I/O on
 * the hot path (see ApiKeyStore.check).
 */
import type { Config, Role } from '../../shared/config';
import type { Identity } from '../../shared/identity';
import type { ApiKeyRecord, ApiKeyStore } from './api-keys';

export type AuthFailure = 'missing' | 'malformed' | 'unknown' | 'expired' | 'revoked' | 'invalid_token' | 'forbidden';

export class AuthError extends Error {
  constructor(
    readonly code: AuthFailure,
    message: string,
  ) {
    super(message);
    this.name = 'AuthError';
  }
}

/** Verifies bearer JWTs; implemented in oidc.ts. */
export interface TokenVerifier {
  verify(token: string): Promise<Identity>;
}

export function rolesFor(groups: string[], roles: Config['identity']['roles']): Role[] {
  const out: Role[] = [];
  const has = (list: string[]) => list.some((g) => groups.includes(g));
  if (groups.includes('admin') || has(roles.admin)) out.push('admin');
  if (has(roles.approver)) out.push('approver');
  if (has(roles.reviewer)) out.push('reviewer');
  out.push('user');
  return out;
}

const KEY_MESSAGES: Record<string, string> = {
  malformed: 'the API key is malformed (expected cst_…)',
  unknown: 'the API key is not valid',
  expired: 'the API key has expired',
  revoked: 'the API key has been revoked',
};

export class Authenticator {
  private verifier: TokenVerifier | undefined;

  constructor(
    private readonly keys: ApiKeyStore,
    private readonly identityConfig: Config['identity'],
  ) {}

  /** Installs the OIDC token verifier (when issuers are configured). */
  setTokenVerifier(verifier: TokenVerifier | undefined): void {
    this.verifier = verifier;
  }

  identityForKey(record: ApiKeyRecord): Identity {
    return { subject: `key:${record.id}`, name: record.name, groups: record.groups, roles: rolesFor(record.groups, this.identityConfig.roles), via: 'api-key', keyId: record.id };
  }

  /** Synchronous API-key check; throws AuthError. */
  authenticateKey(key: string): Identity {
    if (!this.identityConfig.apiKeys) throw new AuthError('unknown', 'API keys are disabled on this gateway');
    const r = this.keys.check(key);
    if (!r.ok) throw new AuthError(r.reason, KEY_MESSAGES[r.reason]!);
    return this.identityForKey(r.key);
  }

  /** Any credential: `cst_` keys synchronously, JWTs through the configured issuers. */
  async authenticate(credential: string | undefined): Promise<Identity> {
    if (!credential) throw new AuthError('missing', 'no credential: send your Custody API key (cst_…) or an OIDC token as a Bearer token');
    if (credential.startsWith('cst_')) return this.authenticateKey(credential);
    if (credential.split('.').length === 3 && this.verifier) return this.verifier.verify(credential);
    throw new AuthError('malformed', this.verifier ? 'the credential is neither a Custody API key nor a JWT' : 'the credential is not a Custody API key (cst_…)');
  }
}

/** Extracts the credential from `Authorization: Bearer …` or `x-api-key`. */
export function credentialFrom(headers: Record<string, string | string[] | undefined>): string | undefined {
  const auth = headers['authorization'];
  if (typeof auth === 'string') {
    const m = /^Bearer\s+(.+)$/i.exec(auth.trim());
    if (m) return m[1]!.trim();
  }
  const x = headers['x-api-key'];
  if (typeof x === 'string' && x) return x.trim();
  return undefined;
}
