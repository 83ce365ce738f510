/**
 * How people sign in to the console (the control plane then keeps them signed in with a
 * ConsoleSessions cookie):
 *
 * - **Local login link** — a random console token made at each gateway start. `custody serve`
 *   prints `http://<control>/login?token=…` and the desktop app receives the same token from the
 *   gateway process; whoever holds it is the local user (admin). It is valid for this run only.
 * - **API key** — pasted on the login page (`POST /api/auth/key`).
 * - **OIDC** — authorization code flow with PKCE (RFC 7636) and a nonce, through openid-client,
 *   for each issuer in `identity.oidc` that has a `clientId`.
 *
 * Failed attempts are recorded (`auth.failure`), limited per source address so a flood of bad
 * attempts cannot flood the log; past the limit the attempt is refused with 429 unrecorded and
 * the next recorded failure counts what was suppressed.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { userInfo } from 'node:os';
import * as client from 'openid-client';
import type { Config } from '../../shared/config';
import type { Identity } from '../../shared/identity';
import type { AuditStore } from '../audit/store';
import { AuthError, rolesFor } from './authenticator';
import { identityFromClaims, type OidcVerifier, type TrustedIssuer } from './oidc';

export interface LoginProviders {
  /** API keys can be pasted. */
  apiKey: boolean;
  /** A local login link exists for this run (printed by `custody serve`, used by the desktop app). */
  localLink: boolean;
  /** "Sign in with <name>": start the flow at `startUrl`. */
  oidc: { id: string; name: string; issuer: string; startUrl: string }[];
}

interface PendingFlow {
  issuer: TrustedIssuer;
  codeVerifier: string;
  nonce: string;
  redirectUri: string;
  next: string;
  createdAt: number;
}

const FLOW_TTL_MS = 10 * 60_000;
const MAX_FLOWS = 1000;

/** A `next` path after login must stay on this origin: a path, never `//host` or a URL. */
export function safeNext(next: string | null | undefined): string {
  if (!next || !next.startsWith('/') || next.startsWith('//') || next.startsWith('/\\') || /[\r\n]/.test(next)) return '/';
  return next;
}

export class ConsoleLogin {
  /** This run's console token (the local login link's secret). */
  readonly consoleToken = randomBytes(32).toString('base64url');
  private readonly tokenDigest = createHash('sha256').update(this.consoleToken).digest();
  private readonly flows = new Map<string, PendingFlow>();
  private readonly logoutListeners = new Set<(sessionId: string) => void>();
  /** Records failed sign-ins and failed credentials on the control plane, rate-limited per source. */
  readonly failures: AuthFailureRecorder;

  constructor(
    private readonly identityConfig: Config['identity'],
    private readonly oidc: OidcVerifier | undefined,
    store: AuditStore,
  ) {
    this.failures = new AuthFailureRecorder(store);
  }

  /** The local user: the OS account running the gateway, as admin. */
  localIdentity(): Identity {
    let user = 'local';
    try {
      user = userInfo().username || user;
    } catch {
      // no passwd entry (containers): keep "local"
    }
    return { subject: `local:${user}`, name: user, groups: ['admin'], roles: rolesFor(['admin'], this.identityConfig.roles), via: 'console' };
  }

  /** The local identity when `token` is this run's console token (constant-time compare). */
  redeemConsoleToken(token: string | null | undefined): Identity | undefined {
    if (!token) return undefined;
    const digest = createHash('sha256').update(token).digest();
    return timingSafeEqual(digest, this.tokenDigest) ? this.localIdentity() : undefined;
  }

  providers(): LoginProviders {
    return {
      apiKey: this.identityConfig.apiKeys,
      localLink: true,
      oidc: (this.oidc?.issuers ?? [])
        .map((i, idx) => ({ i, idx }))
        .filter(({ i }) => i.supportsLogin)
        .map(({ i, idx }) => ({ id: String(idx), name: i.name, issuer: i.issuer, startUrl: `/api/auth/oidc/start?issuer=${idx}` })),
    };
  }

  /**
   * Starts an authorization code flow: returns the IdP URL to redirect to and the `state` that the
   * browser must bring back (kept in a short-lived cookie as well, to bind the flow to the browser).
   */
  async beginOidc(issuerId: string, redirectUri: string, next: string): Promise<{ url: string; state: string }> {
    const issuer = this.oidc?.issuer(issuerId);
    if (!issuer || !issuer.supportsLogin) throw new AuthError('unknown', `no sign-in issuer "${issuerId}" (see GET /api/auth/providers)`);
    const config = await issuer.configuration();
    const codeVerifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const codeChallenge = await client.calculatePKCECodeChallenge(codeVerifier);
    const scope = ['openid', 'email', 'profile', ...(issuer.config.groupsClaim === 'groups' ? ['groups'] : [])];
    const supported = config.serverMetadata().scopes_supported;
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: (supported ? scope.filter((s) => s === 'openid' || supported.includes(s)) : scope).join(' '),
      code_challenge: codeChallenge,
      code_challenge_method: 'S256',
      state,
      nonce,
    });
    this.prune();
    this.flows.set(state, { issuer, codeVerifier, nonce, redirectUri, next: safeNext(next), createdAt: Date.now() });
    return { url: url.toString(), state };
  }

  /**
   * Finishes the flow at the callback: checks state (against the browser's cookie too), exchanges
   * the code with the PKCE verifier, validates the ID token (signature, issuer, audience, nonce)
   * and reads groups from it — or from UserInfo when the ID token does not carry them.
   */
  async completeOidc(callback: URL, cookieState: string | undefined): Promise<{ identity: Identity; next: string; issuer: string }> {
    const state = callback.searchParams.get('state') ?? '';
    const flow = this.flows.get(state);
    if (!flow || Date.now() - flow.createdAt > FLOW_TTL_MS) throw new AuthError('invalid_token', 'the sign-in attempt is unknown or too old; start again');
    this.flows.delete(state);
    if (!cookieState || cookieState !== state) throw new AuthError('invalid_token', 'the sign-in attempt was started in another browser; start again');
    const error = callback.searchParams.get('error');
    if (error) throw new AuthError('forbidden', `${flow.issuer.name} refused the sign-in: ${callback.searchParams.get('error_description') ?? error}`);
    const config = await flow.issuer.configuration();
    const current = new URL(flow.redirectUri);
    for (const [k, v] of callback.searchParams) current.searchParams.append(k, v);
    let tokens: Awaited<ReturnType<typeof client.authorizationCodeGrant>>;
    try {
      tokens = await client.authorizationCodeGrant(config, current, { pkceCodeVerifier: flow.codeVerifier, expectedState: state, expectedNonce: flow.nonce, idTokenExpected: true });
    } catch (err) {
      throw new AuthError('invalid_token', `sign-in with ${flow.issuer.name} failed: ${err instanceof Error ? err.message : String(err)}`);
    }
    const claims = { ...(tokens.claims() as Record<string, unknown>) };
    const groupsClaim = flow.issuer.config.groupsClaim;
    if (claims[groupsClaim] === undefined && !groupsClaim.includes('.') && config.serverMetadata().userinfo_endpoint) {
      try {
        const info = await client.fetchUserInfo(config, tokens.access_token, String(claims['sub']));
        for (const k of [groupsClaim, 'email', 'preferred_username', 'name']) if (claims[k] === undefined && info[k] !== undefined) claims[k] = info[k];
      } catch {
        // groups stay empty: the user signs in with the `user` role only
      }
    }
    return { identity: identityFromClaims(claims, flow.issuer.config, this.identityConfig.roles), next: flow.next, issuer: flow.issuer.issuer };
  }

  /** Called when a console session ends (logout), so open WebSockets of that session close. */
  onLogout(listener: (sessionId: string) => void): () => void {
    this.logoutListeners.add(listener);
    return () => this.logoutListeners.delete(listener);
  }

  loggedOut(sessionId: string): void {
    for (const l of this.logoutListeners) l(sessionId);
  }

  private prune(): void {
    const now = Date.now();
    for (const [k, f] of this.flows) if (now - f.createdAt > FLOW_TTL_MS) this.flows.delete(k);
    while (this.flows.size >= MAX_FLOWS) this.flows.delete(this.flows.keys().next().value!);
  }
}

/**
 * Records `auth.failure` events, at most `perMinute` per source address; the rest are refused
 * (`allowed` false → the caller answers 429) and counted in the next recorded failure.
 */
export class AuthFailureRecorder {
  private readonly windows = new Map<string, { start: number; count: number; suppressed: number }>();

  constructor(
    private readonly store: AuditStore,
    private readonly perMinute = 20,
  ) {}

  /** Records a failure; returns false when this source is over its limit (answer 429). */
  record(source: string, payload: Record<string, unknown>, actor = 'anonymous'): boolean {
    const now = Date.now();
    let w = this.windows.get(source);
    if (!w || now - w.start > 60_000) {
      if (this.windows.size > 10_000) this.windows.clear();
      w = { start: now, count: 0, suppressed: w?.suppressed ?? 0 };
      this.windows.set(source, w);
    }
    if (w.count >= this.perMinute) {
      w.suppressed++;
      return false;
    }
    w.count++;
    const suppressed = w.suppressed;
    w.suppressed = 0;
    this.store.append({ kind: 'auth.failure', actor, payload: { ...payload, source, ...(suppressed ? { suppressedSinceLast: suppressed } : {}) } });
    return true;
  }

  /** Whether this source is currently over its limit (checked before trying a credential). */
  limited(source: string): boolean {
    const w = this.windows.get(source);
    return !!w && Date.now() - w.start <= 60_000 && w.count >= this.perMinute;
  }
}
