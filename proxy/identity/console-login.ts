/**
 * How people sign in to the console (the control plane then keeps them signed in with a
 * ConsoleSessions cookie):
 *
 * - **Local login link** — `http://<control>/login?token=…`, made fresh for each use (`custody
 *   serve` prints one, `custody login-link` and the desktop app make more). Whoever holds it is the
 *   local user (admin); it signs in once, within 10 minutes of being made.
 * - **API key** — pasted on the login page (`POST /api/auth/key`).
 * - **OIDC** — authorization code flow with PKCE (RFC 7636) and a nonce, through openid-client,
 *   for each issuer in `identity.oidc` that has a `clientId`.
 *
 * Failed attempts are recorded by AuthFailureRecorder: aggregated per source per minute, and
 * throttled per source and per credential, never globally.
 */
import { createHash, randomBytes } from 'node:crypto';
import type Database from 'better-sqlite3';
import { userInfo } from 'node:os';
import * as client from 'openid-client';
import type { Config } from '../../shared/config';
import type { AuthFailureDetails, AuthFailurePayload, AuthFailuresPayload } from '../../shared/events';
import type { Identity, LoginProviders } from '../../shared/identity';
import type { AuditStore } from '../audit/store';
import { AuthError } from './authenticator';
import type { ConsoleSessions } from './console-sessions';
import { identityFromClaims, type OidcVerifier, type TrustedIssuer } from './oidc';
import { LOCAL_PERSON, type PersonDirectory } from './persons';

interface PendingFlow {
  issuer: TrustedIssuer;
  codeVerifier: string;
  nonce: string;
  redirectUri: string;
  next: string;
  createdAt: number;
}

const FLOW_TTL_MS = 10 * 60_000;
/** A session's access token is refreshed when it has less than this left. */
const REFRESH_BEFORE_MS = 5_000;
const MAX_FLOWS = 1000;

/** A `next` path after login must stay on this origin: a path, never `//host` or a URL. */
export function safeNext(next: string | null | undefined): string {
  if (!next || !next.startsWith('/') || next.startsWith('//') || next.startsWith('/\\') || /[\r\n]/.test(next)) return '/';
  return next;
}

/** A login link signs in once, within this long of being made. */
export const LOGIN_LINK_TTL_MS = 10 * 60_000;

const linkDigest = (token: string) => createHash('sha256').update(token).digest('hex');

/**
 * Makes a local login link token: single-use, valid for LOGIN_LINK_TTL_MS. Only its digest is
 * stored, so `custody login-link` (another process on the same data dir) can make one that the
 * running gateway redeems.
 */
export function mintLoginLink(db: Database.Database, createdBy: string, now = Date.now()): { token: string; expiresAt: number } {
  const token = randomBytes(32).toString('base64url');
  db.prepare('DELETE FROM login_links WHERE expires_at <= ? OR used_at IS NOT NULL').run(now - 86_400_000);
  db.prepare('INSERT INTO login_links (digest, created_at, expires_at, created_by) VALUES (?, ?, ?, ?)').run(linkDigest(token), now, now + LOGIN_LINK_TTL_MS, createdBy);
  return { token, expiresAt: now + LOGIN_LINK_TTL_MS };
}

export type LinkRedemption = { ok: true; identity: Identity } | { ok: false; reason: 'unknown' | 'used' | 'expired' };

export class ConsoleLogin {
  private readonly flows = new Map<string, PendingFlow>();
  private readonly logoutListeners = new Set<(sessionId: string) => void>();
  private readonly refreshTokens = new Map<string, { issuer: string; refreshToken: string }>();
  private readonly refreshing = new Map<string, Promise<void>>();
  /** Records failed sign-ins and failed credentials on the control plane, rate-limited per source. */
  readonly failures: AuthFailureRecorder;

  constructor(
    private readonly identityConfig: Config['identity'],
    private readonly oidc: OidcVerifier | undefined,
    private readonly store: AuditStore,
    private readonly persons?: PersonDirectory,
  ) {
    this.failures = new AuthFailureRecorder(store);
  }

  /** A fresh single-use login link token (the desktop app and `custody login-link` ask for one each time). */
  mintLoginLink(createdBy = 'system'): string {
    return mintLoginLink(this.store.db, createdBy).token;
  }

  /**
   * The local user: the OS account running the gateway, as admin. The login link and the
   * first-start admin key are this one person (LOCAL_PERSON).
   */
  localIdentity(): Identity {
    let user = 'local';
    try {
      user = userInfo().username || user;
    } catch {
      // no passwd entry (containers): keep "local"
    }
    const subject = `local:${user}`;
    // Admin by being the host's operator, not through a group that identity.roles may remap.
    const identity: Identity = { subject, name: user, groups: ['admin'], roles: ['admin', 'user'], via: 'console' };
    if (!this.persons) return identity;
    const person = this.persons.personOf(subject) ?? this.persons.ensure(subject, 'local', user, 'system', 'the local user (login link)', LOCAL_PERSON);
    return { ...identity, person };
  }

  /**
   * Redeems a login link token: the local identity when `token` is a link made less than 10 minutes
   * ago and never used. Marking it used and checking it are one statement, so two browsers racing
   * with one link cannot both get in.
   */
  redeemLoginLink(token: string | null | undefined, now = Date.now()): LinkRedemption {
    if (!token || token.length > 200) return { ok: false, reason: 'unknown' };
    const digest = linkDigest(token);
    const used = this.store.db.prepare('UPDATE login_links SET used_at = ? WHERE digest = ? AND used_at IS NULL AND expires_at > ?').run(now, digest, now).changes;
    if (used === 1) return { ok: true, identity: this.localIdentity() };
    const row = this.store.db.prepare('SELECT used_at FROM login_links WHERE digest = ?').get(digest) as { used_at: number | null } | undefined;
    return { ok: false, reason: !row ? 'unknown' : row.used_at !== null ? 'used' : 'expired' };
  }

  /** The local identity when `token` is a valid, unused login link (see redeemLoginLink). */
  redeemConsoleToken(token: string | null | undefined): Identity | undefined {
    const r = this.redeemLoginLink(token);
    return r.ok ? r.identity : undefined;
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
    // offline_access: a refresh token, so the session can outlive one access token while the IdP
    // still vouches for the user (re-reading groups at each refresh), where the IdP offers it.
    const scope = ['openid', 'email', 'profile', 'offline_access', ...(issuer.config.groupsClaim === 'groups' ? ['groups'] : [])];
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
  async completeOidc(callback: URL, cookieState: string | undefined): Promise<{ identity: Identity; next: string; issuer: string; refreshToken?: string }> {
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
    const identity = await this.identityFromTokens(flow.issuer, config, tokens);
    return { identity, next: flow.next, issuer: flow.issuer.issuer, ...(tokens.refresh_token ? { refreshToken: tokens.refresh_token } : {}) };
  }

  /**
   * The identity an IdP's token response proves: ID token claims, groups from UserInfo when the ID
   * token lacks them, and an expiry no later than the access token's.
   */
  private async identityFromTokens(issuer: TrustedIssuer, config: client.Configuration, tokens: client.TokenEndpointResponse & client.TokenEndpointResponseHelpers): Promise<Identity> {
    const claims = { ...((tokens.claims() ?? {}) as Record<string, unknown>) };
    const groupsClaim = issuer.config.groupsClaim;
    if (claims[groupsClaim] === undefined && !groupsClaim.includes('.') && config.serverMetadata().userinfo_endpoint) {
      try {
        const info = await client.fetchUserInfo(config, tokens.access_token, String(claims['sub']));
        for (const k of [groupsClaim, 'email', 'email_verified', 'oid', 'preferred_username', 'name']) if (claims[k] === undefined && info[k] !== undefined) claims[k] = info[k];
      } catch {
        // groups stay empty: the user signs in with the `user` role only
      }
    }
    const identity = identityFromClaims(claims, issuer.config, this.identityConfig.roles);
    // The console session lasts no longer than the access token the IdP granted with it.
    const expiresIn = tokens.expiresIn();
    if (expiresIn !== undefined) identity.credentialExpiresAt = Math.min(identity.credentialExpiresAt ?? Infinity, Date.now() + expiresIn * 1000);
    return identity;
  }

  /** Keeps a session's refresh token (in memory only: after a restart the session ends with its token). */
  rememberRefresh(sessionId: string, issuer: string, refreshToken: string): void {
    if (this.refreshTokens.size >= 10_000) this.refreshTokens.delete(this.refreshTokens.keys().next().value!);
    this.refreshTokens.set(sessionId, { issuer, refreshToken });
  }

  /**
   * Before a console session's access token runs out, uses its refresh token: the IdP is asked
   * again, groups are read again, and the session's identity and expiry follow the new tokens.
   * Without a refresh token, or when the IdP refuses, nothing changes and the session ends with its
   * token. Concurrent requests of one session share one refresh.
   */
  refreshSession(sessionId: string, sessions: ConsoleSessions, now = Date.now()): Promise<void> {
    const entry = this.refreshTokens.get(sessionId);
    if (!entry) return Promise.resolve();
    const stored = sessions.peek(sessionId);
    if (!stored) {
      this.refreshTokens.delete(sessionId);
      return Promise.resolve();
    }
    if (stored.identity.credentialExpiresAt === undefined || stored.identity.credentialExpiresAt - now > REFRESH_BEFORE_MS) return Promise.resolve();
    let running = this.refreshing.get(sessionId);
    if (!running) {
      running = this.doRefresh(sessionId, entry, stored.identity, sessions).finally(() => this.refreshing.delete(sessionId));
      this.refreshing.set(sessionId, running);
    }
    return running;
  }

  private async doRefresh(sessionId: string, entry: { issuer: string; refreshToken: string }, previous: Identity, sessions: ConsoleSessions): Promise<void> {
    const issuer = this.oidc?.issuer(entry.issuer);
    try {
      if (!issuer) throw new Error(`issuer ${entry.issuer} is no longer configured`);
      const config = await issuer.configuration();
      const tokens = await client.refreshTokenGrant(config, entry.refreshToken);
      const identity = await this.identityFromTokens(issuer, config, tokens);
      if (identity.subject !== previous.subject) throw new Error('the IdP answered for another subject');
      sessions.replace(sessionId, { ...identity, ...(previous.person ? { person: previous.person } : {}) });
      if (tokens.refresh_token) this.refreshTokens.set(sessionId, { issuer: entry.issuer, refreshToken: tokens.refresh_token });
    } catch {
      // The IdP no longer vouches for this user (or cannot be asked): the session ends with its token.
      this.refreshTokens.delete(sessionId);
    }
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

interface FailureWindow {
  start: number;
  first: number;
  last: number;
  count: number;
  recorded: number;
  reasons: Record<string, number>;
}

/**
 * Failed authentications, recorded without letting a flood fill the log or lock anyone out:
 *
 * - The first failure from a source address in a minute is recorded at once (`auth.failure`), and
 *   so is the first failure naming an existing credential (an API key id), so a leaked-but-wrong
 *   key shows up immediately. The rest are counted and written as one `auth.failures` event per
 *   source per minute (count, first and last seen, reasons).
 * - `record` says when a source, or a credential prefix, is over `perMinute` failures; the caller
 *   answers that failure with 429. Callers check the credential first: a valid credential is never
 *   refused for what others did, so no page elsewhere can lock out a valid link or key.
 */
export class AuthFailureRecorder {
  private readonly bySource = new Map<string, FailureWindow>();
  private readonly byCredential = new Map<string, FailureWindow>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly store: AuditStore,
    private readonly perMinute = 20,
    private readonly windowMs = 60_000,
    private readonly now: () => number = Date.now,
  ) {
    this.timer = setInterval(() => this.flush(), Math.min(windowMs, 60_000));
    this.timer.unref();
  }

  /**
   * Notes a failure. `credential` names the credential prefix when it is one the gateway knows
   * (e.g. `key:<id>`). Returns false when the source or that credential is over its limit.
   * Never throws: a log that cannot take the note does not change the refusal. A failure without
   * a `reason` is counted as `error`.
   */
  record(source: string, payload: Partial<AuthFailureDetails>, opts: { credential?: string; actor?: string; connection?: string } = {}): boolean {
    const now = this.now();
    if (this.bySource.size > 10_000 || this.byCredential.size > 10_000) this.flush(true);
    const w = this.window(this.bySource, source, now);
    const reason = typeof payload['reason'] === 'string' ? payload['reason'] : 'error';
    w.reasons[reason] = (w.reasons[reason] ?? 0) + 1;
    const c = opts.credential ? this.window(this.byCredential, opts.credential, now) : undefined;
    if (w.count === 1 || c?.count === 1) {
      try {
        this.store.append({ kind: 'auth.failure', actor: opts.actor ?? 'anonymous', ...(opts.connection ? { connection: opts.connection } : {}), payload: { ...payload, source, ...(opts.credential ? { credential: opts.credential } : {}) } satisfies AuthFailurePayload, time: now });
        w.recorded++;
      } catch {
        // counted in the window's summary instead
      }
    }
    return w.count <= this.perMinute && (!c || c.count <= this.perMinute);
  }

  /** Writes the summary of every window that has ended (all of them with `force`). */
  flush(force = false): void {
    const now = this.now();
    for (const [source, w] of this.bySource) if (force || now - w.start >= this.windowMs) this.flushOne(source, w, now);
    for (const [k, w] of this.byCredential) if (force || now - w.start >= this.windowMs) this.byCredential.delete(k);
  }

  /** Writes what is pending and stops the timer (the gateway is stopping). */
  close(): void {
    clearInterval(this.timer);
    this.flush(true);
  }

  private window(map: Map<string, FailureWindow>, key: string, now: number): FailureWindow {
    let w = map.get(key);
    if (w && now - w.start >= this.windowMs) {
      if (map === this.bySource) this.flushOne(key, w, now);
      w = undefined;
    }
    if (!w) {
      w = { start: now, first: now, last: now, count: 0, recorded: 0, reasons: {} };
      map.set(key, w);
    }
    w.count++;
    w.last = now;
    return w;
  }

  private flushOne(source: string, w: FailureWindow, now: number): void {
    this.bySource.delete(source);
    if (w.count <= w.recorded) return;
    try {
      this.store.append({ kind: 'auth.failures', actor: 'anonymous', payload: { source, count: w.count, unrecorded: w.count - w.recorded, firstSeen: w.first, lastSeen: w.last, reasons: w.reasons } satisfies AuthFailuresPayload, time: now });
    } catch {
      // the store is gone (stopping): nothing more can be said
    }
  }
}
