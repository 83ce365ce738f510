import type { Role } from './config';

/** Who is behind a request, after the gateway verified their credential. */
export interface Identity {
  /** Stable id: `key:<keyId>` for API keys, `<issuer>#<sub>` for OIDC, `local:<user>` for the desktop user. */
  subject: string;
  /** Human-readable name: the key's name, the token's email/preferred_username. */
  name: string;
  groups: string[];
  roles: Role[];
  via: 'api-key' | 'oidc' | 'console';
  keyId?: string;
  /**
   * The person this credential belongs to (proxy/identity/persons.ts). Separation of duties counts
   * persons: two credentials of one person are one vote.
   */
  person?: string;
  /** Unix ms when the credential that proved this identity stops being valid (token `exp`, key expiry). */
  credentialExpiresAt?: number;
}

export function hasRole(identity: Identity | undefined, role: Role): boolean {
  if (!identity) return false;
  return identity.roles.includes('admin') || identity.roles.includes(role);
}

/** A gateway-issued API key as the store and `GET /api/keys` describe it; never the secret. */
export interface ApiKeyRecord {
  id: string;
  name: string;
  groups: string[];
  createdAt: number;
  createdBy: string | null;
  expiresAt: number | null;
  revokedAt: number | null;
  lastUsedAt: number | null;
}

/** How a credential proves its person: an API key, an OIDC subject, or the desktop's local user. */
export type CredentialKind = 'api-key' | 'oidc' | 'local';

/** The local user's person: one id for the login link and the first-start admin key. */
export const LOCAL_PERSON = 'person_local';

/** A human (or service) behind credentials (proxy/identity/persons.ts); `GET /api/persons` lists them. */
export interface Person {
  id: string;
  name: string;
  createdAt: number;
  createdBy: string;
  lockedAt: number | null;
  lockedBy: string | null;
  credentials: { credential: string; kind: CredentialKind; linkedAt: number; linkedBy: string }[];
  /** An OIDC subject is linked: the IdP vouches for this person. */
  idpBacked: boolean;
}

/** `GET /api/auth/providers`: the sign-in options a gateway offers (proxy/identity/console-login.ts). */
export interface LoginProviders {
  /** API keys can be pasted. */
  apiKey: boolean;
  /** A local login link exists for this run (printed by `custody serve`, used by the desktop app). */
  localLink: boolean;
  /** "Sign in with <name>" for each configured issuer. */
  oidc: OidcProvider[];
}

/** An identity provider the console offers: the gateway starts its authorization code flow at `startUrl`. */
export interface OidcProvider {
  id: string;
  name: string;
  issuer: string;
  startUrl: string;
}
