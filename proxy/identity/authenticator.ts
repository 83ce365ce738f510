/**
 * Turns a presented credential (a `cst_` API key, or an OIDC JWT when issuers are configured) into
 * an Identity with roles, or throws AuthError saying why not. API keys are checked without I/O on
 * the hot path (see ApiKeyStore.check).
 */
import type { Config, Role } from '../../shared/config';
import type { ApiKeyRecord, Identity } from '../../shared/identity';
import { StoreUnavailableError } from '../audit/store';
import type { ApiKeyStore } from './api-keys';
import type { PersonDirectory } from './persons';

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

/** Roles come only from `identity.roles` (its default maps the group `admin` to admin; nothing else does). */
export function rolesFor(groups: string[], roles: Config['identity']['roles']): Role[] {
  const out: Role[] = [];
  const has = (list: string[]) => list.some((g) => groups.includes(g));
  if (has(roles.admin)) out.push('admin');
  if (has(roles.approver)) out.push('approver');
  if (has(roles.reviewer)) out.push('reviewer');
  out.push('user');
  return out;
}

/** Why a person is created for a key at its first use (a closure per request would cost every request). */
const ownerlessKey = (identity: Identity) => `key "${identity.name}" had no owner (created before persons existed)`;
const firstSeen = (identity: Identity) => `first seen: ${identity.subject}`;

const KEY_MESSAGES: Record<string, string> = {
  malformed: 'the API key is malformed (expected cst_…)',
  unknown: 'the API key is not valid',
  expired: 'the API key has expired',
  revoked: 'the API key has been revoked',
};

export class Authenticator {
  private verifier: TokenVerifier | undefined;
  /** Roles by a key record's groups array (frozen, replaced when the key changes). */
  private readonly keyRoles = new WeakMap<readonly string[], Role[]>();

  constructor(
    private readonly keys: ApiKeyStore,
    private readonly identityConfig: Config['identity'],
    private readonly persons?: PersonDirectory,
  ) {}

  /** Installs the OIDC token verifier (when issuers are configured). */
  setTokenVerifier(verifier: TokenVerifier | undefined): void {
    this.verifier = verifier;
  }

  identityForKey(record: ApiKeyRecord): Identity {
    // A key's record (and its groups array) is shared until the key changes: its roles are worked out once.
    let roles = this.keyRoles.get(record.groups);
    if (!roles) {
      roles = Object.freeze(rolesFor(record.groups, this.identityConfig.roles)) as Role[];
      this.keyRoles.set(record.groups, roles);
    }
    const identity: Identity = { subject: `key:${record.id}`, name: record.name, groups: record.groups, roles, via: 'api-key', keyId: record.id };
    if (record.expiresAt !== null) identity.credentialExpiresAt = record.expiresAt;
    return this.withPerson(identity, ownerlessKey);
  }

  /**
   * Attaches the credential's person (creating it, recorded, the first time an OIDC subject or an
   * ownerless key is seen) and refuses a locked person. No I/O once the person is known.
   */
  withPerson(identity: Identity, firstSight: (identity: Identity) => string): Identity {
    if (!this.persons) return identity;
    const kind = identity.via === 'oidc' ? 'oidc' : identity.via === 'api-key' ? 'api-key' : 'local';
    const person = this.persons.personOf(identity.subject) ?? this.persons.ensure(identity.subject, kind, identity.name, 'system', firstSight(identity));
    if (this.persons.isLocked(person)) throw new AuthError('revoked', 'this person is locked: every credential they hold is refused');
    return { ...identity, person };
  }

  /**
   * A console session's identity as its credential stands now (ConsoleSessions calls this at each
   * request): undefined once the person is locked or the key is revoked or expired; roles from the
   * key's current groups and the current `identity.roles`. The local user stays admin.
   */
  current(stored: Identity, now = Date.now()): Identity | undefined {
    // The credential may have been linked to another person since sign-in: vote as that one.
    const person = this.persons?.personOf(stored.subject) ?? stored.person;
    if (person && this.persons?.isLocked(person)) return undefined;
    if (stored.credentialExpiresAt !== undefined && stored.credentialExpiresAt <= now) return undefined;
    if (person !== stored.person) stored = { ...stored, ...(person ? { person } : {}) };
    if (stored.via === 'console') return stored;
    let groups = stored.groups;
    if (stored.keyId) {
      const record = this.keys.get(stored.keyId);
      if (!record || record.revokedAt !== null || (record.expiresAt !== null && record.expiresAt <= now)) return undefined;
      groups = record.groups;
    }
    return { ...stored, groups, roles: rolesFor(groups, this.identityConfig.roles) };
  }

  /** Synchronous API-key check; throws AuthError. */
  authenticateKey(key: string): Identity {
    if (!this.identityConfig.apiKeys) throw new AuthError('unknown', 'API keys are disabled on this gateway');
    const r = this.keys.check(key);
    if (!r.ok) throw new AuthError(r.reason, KEY_MESSAGES[r.reason]!);
    return this.identityForKey(r.key);
  }

  /**
   * The identity of API key `id`, for a login that proved it holds an SSH key registered for it:
   * refused like the key itself when it is revoked or expired, or its person is locked.
   */
  async authenticateKeyId(id: string, now = Date.now()): Promise<Identity> {
    if (!this.identityConfig.apiKeys) throw new AuthError('unknown', 'API keys are disabled on this gateway');
    await withinStoreWait(this.keys.lookupId(id, true), 'look up the API key');
    const record = this.keys.get(id);
    if (!record) throw new AuthError('unknown', 'the API key this SSH key is registered for does not exist');
    if (record.revokedAt !== null) throw new AuthError('revoked', 'the API key this SSH key is registered for has been revoked');
    if (record.expiresAt !== null && record.expiresAt <= now) throw new AuthError('expired', 'the API key this SSH key is registered for has expired');
    // A key the CLI made a moment ago has its owner in the store before this process has read the
    // link (PersonDirectory refreshes every second): read it now rather than make a second owner.
    if (this.persons && !this.persons.personOf(`key:${id}`)) await withinStoreWait(this.persons.refreshAsync(), 'look up the key\'s owner');
    return this.identityForKey(record);
  }

  /** Any credential: `cst_` keys synchronously, JWTs through the configured issuers. */
  async authenticate(credential: string | undefined): Promise<Identity> {
    if (!credential) throw new AuthError('missing', 'no credential: send your Custody API key (cst_…) or an OIDC token as a Bearer token');
    if (credential.startsWith('cst_')) {
      // A key id the index does not know may have been created by another process: read once, off this thread.
      if (this.identityConfig.apiKeys && !this.keys.indexed(credential)) await withinStoreWait(this.keys.lookup(credential), 'look up the API key');
      return this.authenticateKey(credential);
    }
    if (credential.split('.').length === 3 && this.verifier) {
      const identity = await this.verifier.verify(credential);
      return this.withPerson(identity, firstSeen);
    }
    throw new AuthError('malformed', this.verifier ? 'the credential is neither a Custody API key nor a JWT' : 'the credential is not a Custody API key (cst_…)');
  }
}

/** How long a request waits for the store to answer a lookup before it is refused (503). */
export const STORE_LOOKUP_WAIT_MS = 1000;

/** `p`, or StoreUnavailableError when the store does not answer within STORE_LOOKUP_WAIT_MS. */
async function withinStoreWait<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new StoreUnavailableError(new Error(`the store did not answer within ${STORE_LOOKUP_WAIT_MS} ms to ${what}`))), STORE_LOOKUP_WAIT_MS);
      }),
    ]);
  } finally {
    clearTimeout(timer);
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
  // Blank is no credential (the caller then says "no credential" instead of checking "").
  if (typeof x === 'string' && x.trim()) return x.trim();
  return undefined;
}
