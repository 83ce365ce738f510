/**
 * Sign-in of a native app — the desktop app in team mode, and `custody ssh-login` — to the
 * organisation's IdP through the system browser
 * (never an embedded web view), as RFC 8252 "OAuth 2.0 for Native Apps" asks: authorization code
 * flow with PKCE (RFC 7636, S256) and a loopback redirect on `http://127.0.0.1:<ephemeral port>`
 * (RFC 8252 §7.3, an IP literal rather than `localhost`, §8.3). The OIDC client is openid-client.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as oidc from 'openid-client';

export interface RemoteLoginOptions {
  issuer: string;
  /** A public client (no secret) registered with `application_type: native`. */
  clientId: string;
  scope?: string;
  /** RFC 8707 resource indicator: the gateway API the access token is for, when the IdP needs it. */
  resource?: string;
  /** Path of the loopback redirect URI (the port is chosen per sign-in). */
  redirectPath?: string;
  /** Opens the authorization URL in the system browser (`shell.openExternal`). */
  openBrowser(url: string): void | Promise<void>;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface RemoteTokens {
  accessToken: string;
  idToken?: string;
  refreshToken?: string;
  /** Epoch ms, when the IdP said. */
  expiresAt?: number;
  /** ID token claims (sub, email, name, groups…). */
  claims?: Record<string, unknown>;
}

export class RemoteLoginError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RemoteLoginError';
  }
}

function isLoopbackHost(host: string): boolean {
  return host === '127.0.0.1' || host === '[::1]' || host === 'localhost';
}

/** Discovers the issuer; plain http is accepted only for an issuer on loopback (development, tests). */
export async function discoverIssuer(issuer: string, clientId: string): Promise<oidc.Configuration> {
  const url = new URL(issuer);
  const insecure = url.protocol === 'http:';
  if (insecure && !isLoopbackHost(url.hostname)) throw new RemoteLoginError(`the issuer ${issuer} must use https`);
  try {
    return await oidc.discovery(url, clientId, { token_endpoint_auth_method: 'none' }, oidc.None(), insecure ? { execute: [oidc.allowInsecureRequests] } : undefined);
  } catch (err) {
    throw new RemoteLoginError(`cannot read the OpenID configuration of ${issuer}: ${(err as Error).message}`);
  }
}

function toTokens(t: oidc.TokenEndpointResponse & oidc.TokenEndpointResponseHelpers): RemoteTokens {
  return {
    accessToken: t.access_token,
    ...(t.id_token ? { idToken: t.id_token } : {}),
    ...(t.refresh_token ? { refreshToken: t.refresh_token } : {}),
    ...(typeof t.expires_in === 'number' ? { expiresAt: Date.now() + t.expires_in * 1000 } : {}),
    ...(t.claims() ? { claims: { ...t.claims() } } : {}),
  };
}

const PAGE = (title: string, text: string) =>
  `<!doctype html><meta charset="utf-8"><title>${title}</title><body style="font:16px system-ui;margin:4em auto;max-width:32em"><h1>${title}</h1><p>${text}</p></body>`;

/** openid-client's message plus the check that failed (its `cause`). */
function describe(err: unknown): string {
  const e = err as Error & { cause?: unknown };
  const cause = e.cause as { message?: string } | undefined;
  return cause?.message && !e.message.includes(cause.message) ? `${e.message} (${cause.message})` : e.message;
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/**
 * Runs one browser sign-in and resolves with the tokens. The loopback listener accepts exactly one
 * callback on its path, answers the browser with a page saying the result, and closes.
 */
export async function signInWithBrowser(o: RemoteLoginOptions): Promise<RemoteTokens> {
  const config = await discoverIssuer(o.issuer, o.clientId);
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const path = o.redirectPath ?? '/callback';

  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const redirectUri = `http://127.0.0.1:${(server.address() as AddressInfo).port}${path}`;
  try {
    const callback = new Promise<{ url: URL; res: ServerResponse }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new RemoteLoginError(`sign-in was not completed within ${Math.round((o.timeoutMs ?? 300_000) / 1000)}s`)), o.timeoutMs ?? 300_000);
      o.signal?.addEventListener('abort', () => {
        clearTimeout(timer);
        reject(new RemoteLoginError('sign-in cancelled'));
      });
      server.on('request', (req: IncomingMessage, res: ServerResponse) => {
        const url = new URL(req.url ?? '/', redirectUri);
        if (req.method !== 'GET' || url.pathname !== path) {
          res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
          return;
        }
        clearTimeout(timer);
        resolve({ url, res });
      });
    });
    const authUrl = oidc.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      scope: o.scope ?? 'openid profile email',
      code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
      state,
      ...(o.resource ? { resource: o.resource } : {}),
    });
    await o.openBrowser(authUrl.href);
    const { url, res } = await callback;
    try {
      const tokens = await oidc.authorizationCodeGrant(config, url, { pkceCodeVerifier: verifier, expectedState: state, idTokenExpected: true }, { redirect_uri: redirectUri, ...(o.resource ? { resource: o.resource } : {}) });
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(PAGE('Signed in to Custody', 'You can close this tab and return to the app.'));
      return toTokens(tokens);
    } catch (err) {
      const why = err instanceof oidc.AuthorizationResponseError ? `${err.error}${err.error_description ? `: ${err.error_description}` : ''}` : describe(err);
      res.writeHead(400, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(PAGE('Sign-in failed', escapeHtml(why)));
      throw new RemoteLoginError(`sign-in failed: ${why}`);
    }
  } finally {
    // Let the result page reach the browser, then drop whatever is left.
    server.close();
    server.closeIdleConnections();
    setTimeout(() => server.closeAllConnections(), 1000).unref();
  }
}

/** Exchanges a refresh token for fresh tokens. */
export async function refreshTokens(o: Pick<RemoteLoginOptions, 'issuer' | 'clientId' | 'resource'>, refreshToken: string): Promise<RemoteTokens> {
  const config = await discoverIssuer(o.issuer, o.clientId);
  try {
    const t = await oidc.refreshTokenGrant(config, refreshToken, o.resource ? { resource: o.resource } : undefined);
    return { refreshToken, ...toTokens(t) };
  } catch (err) {
    throw new RemoteLoginError(`could not refresh the sign-in: ${(err as Error).message}`);
  }
}
