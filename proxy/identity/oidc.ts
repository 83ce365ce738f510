/**
 * OIDC bearer tokens: verifies JWTs (access tokens per RFC 9068, or ID tokens) from the issuers in
 * `identity.oidc` and turns them into Identities.
 *
 * - Issuer metadata comes from OpenID Connect Discovery 1.0 through openid-client, which also checks
 *   that the document's `issuer` equals the configured one.
 * - Signatures are checked with jose against the issuer's JWKS (RFC 7517). The key set is cached and
 *   fetched again when a token names a `kid` the cache lacks (key rotation), at most once per
 *   cooldown period, so a flood of tokens with made-up `kid`s cannot turn into a flood of fetches.
 * - Claims (RFC 7519 §4.1): `iss` must be a configured issuer, `aud` must include its audience,
 *   `exp` is required, `exp`/`nbf` are checked with the configured clock skew.
 * - Algorithms: only the issuer's allow-list, and never `none` or an HMAC (`HS*`) algorithm — an
 *   HMAC "signature" made with the issuer's public key as the secret would otherwise verify.
 * - Groups come from the issuer's `groupsClaim` (a dotted path such as `realm_access.roles` works)
 *   and map to roles through `identity.roles`.
 *
 * Plain-http issuers are accepted only on loopback (tests, a local IdP); anything else needs https.
 */
import {
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors as joseErrors,
  type JWTPayload,
  jwtVerify,
} from 'jose';
import * as client from 'openid-client';
import type { Config, OidcIssuer } from '../../shared/config';
import { parseDuration } from '../../shared/config';
import type { Identity } from '../../shared/identity';
import { readSecret } from '../config';
import { AuthError, rolesFor, type TokenVerifier } from './authenticator';

export interface OidcOptions {
  /** Least time between two JWKS fetches triggered by an unknown `kid` (default 30 s). */
  jwksCooldownMs?: number;
  /** A cached JWKS older than this is fetched again on the next unknown `kid` (default 10 min). */
  jwksMaxAgeMs?: number;
  /** After a failed discovery, wait this long before trying again (default 10 s). */
  discoveryRetryMs?: number;
  /** HTTP timeout for discovery and JWKS fetches (default 5 s). */
  timeoutMs?: number;
  /** Clock, for tests. */
  now?: () => number;
  /** Called with each identity a token proved (the gateway keeps its user directory with it). */
  onIdentity?: (identity: Identity) => void;
}

const FORBIDDEN_ALG = /^(none|HS\d+)$/i;
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

export function isLoopbackUrl(url: string): boolean {
  try {
    return LOOPBACK_HOSTS.has(new URL(url).hostname);
  } catch {
    return false;
  }
}

/** Reads a claim by dotted path (`groups`, `realm_access.roles`). */
export function claimAt(claims: Record<string, unknown>, path: string): unknown {
  if (path in claims) return claims[path];
  let v: unknown = claims;
  for (const part of path.split('.')) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[part];
  }
  return v;
}

/** Groups from a claim that is an array of strings, or a space/comma separated string. */
export function groupsFrom(value: unknown): string[] {
  if (Array.isArray(value)) return value.filter((g): g is string => typeof g === 'string' && g.length > 0);
  if (typeof value === 'string') return value.split(/[\s,]+/).filter(Boolean);
  return [];
}

/**
 * Builds the Identity for verified claims from `issuer`. The name that `users:` rules match and
 * the console shows is the issuer's `userClaim`, never a display name: `sub` by default, `email`
 * only when `email_verified` is true, `oid` for Entra ID. The subject qualifies it by issuer,
 * because two issuers can mint the same `sub` or e-mail.
 */
export function identityFromClaims(claims: Record<string, unknown>, issuer: OidcIssuer, roles: Config['identity']['roles']): Identity {
  const sub = typeof claims['sub'] === 'string' ? claims['sub'] : undefined;
  if (!sub) throw new AuthError('invalid_token', 'the token has no "sub" claim');
  const claim = issuer.userClaim ?? 'sub';
  const value = claims[claim];
  if (typeof value !== 'string' || !value) throw new AuthError('invalid_token', `the token has no "${claim}" claim, which names users for ${issuer.issuer}`);
  if (claim === 'email' && claims['email_verified'] !== true) throw new AuthError('invalid_token', `the token's email is not verified (email_verified is not true), and ${issuer.issuer} names users by email`);
  const groups = groupsFrom(claimAt(claims, issuer.groupsClaim));
  const identity: Identity = { subject: `${issuer.issuer}#${value}`, name: value, groups, roles: rolesFor(groups, roles), via: 'oidc' };
  if (typeof claims['exp'] === 'number') identity.credentialExpiresAt = claims['exp'] * 1000;
  return identity;
}

/** Normalises an issuer identifier for comparison (a trailing slash is not significant to us). */
function sameIssuer(a: string, b: string): boolean {
  return a.replace(/\/+$/, '') === b.replace(/\/+$/, '');
}

/**
 * One configured issuer: its discovered metadata (lazily, retried after failures), its JWKS, and —
 * when `clientId` is set — the openid-client Configuration the console's code flow uses.
 */
export class TrustedIssuer {
  readonly algorithms: string[];
  readonly clockSkewSec: number;
  private discovering?: Promise<client.Configuration>;
  private failedAt = 0;
  private lastError?: Error;
  private jwks?: ReturnType<typeof createRemoteJWKSet>;

  constructor(
    readonly config: OidcIssuer,
    private readonly opts: OidcOptions = {},
  ) {
    this.algorithms = config.algorithms.filter((a) => !FORBIDDEN_ALG.test(a));
    if (this.algorithms.length === 0) throw new Error(`identity.oidc ${config.issuer}: no usable algorithm (none and HS* are never accepted)`);
    this.clockSkewSec = Math.round(parseDuration(config.clockSkew) / 1000);
    if (!/^https:/.test(config.issuer) && !isLoopbackUrl(config.issuer)) throw new Error(`identity.oidc ${config.issuer}: an issuer must use https (plain http only on loopback)`);
  }

  get issuer(): string {
    return this.config.issuer;
  }

  /** Label for the login page. */
  get name(): string {
    return this.config.name ?? new URL(this.config.issuer).host;
  }

  /** The console can sign in through this issuer (authorization code + PKCE). */
  get supportsLogin(): boolean {
    return this.config.clientId !== undefined;
  }

  /** Discovery (cached). A failure is remembered for `discoveryRetryMs`, then tried again. */
  configuration(): Promise<client.Configuration> {
    const now = Date.now();
    if (!this.discovering && this.lastError && now - this.failedAt < (this.opts.discoveryRetryMs ?? 10_000)) {
      return Promise.reject(this.lastError);
    }
    this.discovering ??= this.discover().catch((err: unknown) => {
      this.discovering = undefined;
      this.failedAt = Date.now();
      this.lastError = new AuthError('invalid_token', `cannot reach issuer ${this.issuer}: ${err instanceof Error ? err.message : String(err)}`);
      throw this.lastError;
    });
    return this.discovering;
  }

  private async discover(): Promise<client.Configuration> {
    const c = this.config;
    const secret = readSecret(c.clientSecret, `identity.oidc ${c.issuer} clientSecret`);
    const auth = secret ? client.ClientSecretBasic(secret) : client.None();
    const options: client.DiscoveryRequestOptions = { timeout: Math.ceil((this.opts.timeoutMs ?? 5000) / 1000) };
    if (isLoopbackUrl(c.issuer)) options.execute = [client.allowInsecureRequests];
    return client.discovery(new URL(c.issuer), c.clientId ?? c.audience, secret ? { client_secret: secret } : undefined, auth, options);
  }

  private async keySet(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    if (this.jwks) return this.jwks;
    const meta = (await this.configuration()).serverMetadata();
    if (!meta.jwks_uri) throw new AuthError('invalid_token', `issuer ${this.issuer} publishes no jwks_uri`);
    this.jwks = createRemoteJWKSet(new URL(meta.jwks_uri), {
      cooldownDuration: this.opts.jwksCooldownMs ?? 30_000,
      cacheMaxAge: this.opts.jwksMaxAgeMs ?? 600_000,
      timeoutDuration: this.opts.timeoutMs ?? 5000,
    });
    return this.jwks;
  }

  /**
   * Verifies signature and claims. `audience` defaults to the configured one (the console's code
   * flow checks ID tokens through openid-client instead).
   */
  async verify(token: string, alg: string): Promise<JWTPayload> {
    if (!this.algorithms.includes(alg)) throw new AuthError('invalid_token', `the token's algorithm ${alg} is not allowed for ${this.issuer} (allowed: ${this.algorithms.join(', ')})`);
    const keys = await this.keySet();
    try {
      const { payload } = await jwtVerify(token, keys, {
        issuer: this.config.issuer,
        audience: this.config.audience,
        algorithms: this.algorithms,
        clockTolerance: this.clockSkewSec,
        requiredClaims: ['exp', 'sub'],
        currentDate: this.opts.now ? new Date(this.opts.now()) : undefined,
      });
      return payload;
    } catch (err) {
      throw mapJoseError(err, this.issuer);
    }
  }
}

function mapJoseError(err: unknown, issuer: string): AuthError {
  if (err instanceof AuthError) return err;
  if (err instanceof joseErrors.JWTExpired) return new AuthError('expired', 'the token has expired');
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    const what: Record<string, string> = {
      aud: 'the token is not meant for this gateway (audience mismatch)',
      iss: 'the token comes from another issuer',
      nbf: 'the token is not valid yet (nbf)',
      iat: 'the token was issued in the future (iat)',
    };
    return new AuthError('invalid_token', what[err.claim] ?? `the token's "${err.claim}" claim is invalid: ${err.message}`);
  }
  if (err instanceof joseErrors.JWKSNoMatchingKey) return new AuthError('invalid_token', `the token is signed with a key ${issuer} does not publish`);
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return new AuthError('invalid_token', 'the token signature is invalid');
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return new AuthError('invalid_token', `the token's algorithm is not allowed: ${err.message}`);
  if (err instanceof joseErrors.JWKSTimeout) return new AuthError('invalid_token', `cannot fetch the signing keys of ${issuer} (timeout)`);
  if (err instanceof joseErrors.JOSEError) return new AuthError('invalid_token', `the token is invalid: ${err.message}`);
  return new AuthError('invalid_token', `cannot verify the token: ${err instanceof Error ? err.message : String(err)}`);
}

/** Verifies bearer JWTs from every configured issuer; installed with `Authenticator.setTokenVerifier`. */
export class OidcVerifier implements TokenVerifier {
  readonly issuers: TrustedIssuer[];
  private cache = new Map<string, { identity: Identity; until: number }>();
  private static readonly CACHE_MAX = 5000;

  constructor(
    private readonly identityConfig: Config['identity'],
    private readonly opts: OidcOptions = {},
  ) {
    this.issuers = identityConfig.oidc.map((c) => new TrustedIssuer(c, opts));
  }

  /** An issuer by its identifier (exact, ignoring a trailing slash) or by its position. */
  issuer(idOrUrl: string): TrustedIssuer | undefined {
    if (/^\d+$/.test(idOrUrl)) return this.issuers[Number(idOrUrl)];
    return this.issuers.find((i) => sameIssuer(i.issuer, idOrUrl));
  }

  /** Starts discovery for every issuer in the background, so the first request does not wait. */
  warmUp(onError: (issuer: string, err: Error) => void): void {
    for (const i of this.issuers) i.configuration().catch((err: Error) => onError(i.issuer, err));
  }

  async verify(token: string): Promise<Identity> {
    const now = this.opts.now?.() ?? Date.now();
    const hit = this.cache.get(token);
    if (hit && hit.until > now) return hit.identity;

    let header: ReturnType<typeof decodeProtectedHeader>;
    let claims: JWTPayload;
    try {
      header = decodeProtectedHeader(token);
      claims = decodeJwt(token);
    } catch {
      throw new AuthError('malformed', 'the bearer token is not a well-formed JWT');
    }
    const alg = typeof header.alg === 'string' ? header.alg : '';
    if (!alg || FORBIDDEN_ALG.test(alg)) throw new AuthError('invalid_token', `tokens signed with "${alg || 'no algorithm'}" are never accepted`);
    const iss = typeof claims.iss === 'string' ? claims.iss : '';
    const issuer = this.issuers.find((i) => sameIssuer(i.issuer, iss));
    if (!issuer) throw new AuthError('invalid_token', iss ? `issuer ${iss} is not trusted by this gateway` : 'the token has no "iss" claim');

    const payload = await issuer.verify(token, alg);
    const identity = identityFromClaims(payload as Record<string, unknown>, issuer.config, this.identityConfig.roles);
    // Cache until expiry, but not longer than a minute, so a rotated-out key stops working soon.
    const until = Math.min((payload.exp ?? 0) * 1000, now + 60_000);
    if (this.cache.size >= OidcVerifier.CACHE_MAX) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(token, { identity, until });
    this.opts.onIdentity?.(identity);
    return identity;
  }
}
