/**
 * A real OpenID Provider (the `oidc-provider` package) on loopback, for tests that need real tokens:
 *
 *   const idp = await startTestIdp();                     // http://127.0.0.1:<port>
 *   const token = await idp.clientCredentialsToken({ clientId: 'svc-approver' });   // JWT access token
 *   idp.setUser({ sub: 'alice', email: 'alice@example.test', groups: ['approver'] }); // code flow user
 *   await idp.rotateKeys();                              // new signing key, old one gone from the JWKS
 *   await idp.close();
 *
 * Access tokens are JWTs because a resource indicator (RFC 8707) is configured: `idp.audience` by
 * default. Service clients (client_credentials) carry the groups given in `startTestIdp({ services })`.
 * The code-flow client `custody-console` (public, PKCE) accepts any loopback redirect URI
 * (`http://127.0.0.1/...` with any port, RFC 8252 §7.3), and interactions log in `setUser`'s user
 * without a form. `browser()` is a small fetch-based user agent with a cookie jar for driving flows.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import Provider from 'oidc-provider';

export interface TestUser {
  sub: string;
  email?: string;
  name?: string;
  groups?: string[];
}

export interface ServiceClient {
  clientId: string;
  clientSecret?: string;
  groups?: string[];
}

export interface TestIdpOptions {
  /** Resource indicator / expected audience; default `https://custody.test/api`. */
  audience?: string;
  services?: ServiceClient[];
  /** Access (and code-flow ID) token lifetime in seconds (default 300). */
  accessTokenTtl?: number;
  /** The console client may use refresh tokens (issued with every code exchange). */
  refreshTokens?: boolean;
  /** Signing algorithm for access and ID tokens (default RS256). */
  alg?: 'RS256' | 'ES256' | 'PS256';
}

export interface TestIdp {
  issuer: string;
  audience: string;
  consoleClientId: string;
  /** Number of JWKS document fetches served (to check caching and refresh rate limits). */
  readonly jwksFetches: number;
  /** The current signing key's kid. */
  readonly kid: string;
  /** A real access token from the token endpoint (client_credentials grant). */
  clientCredentialsToken(opts?: { clientId?: string; resource?: string }): Promise<string>;
  /** Replaces the signing key; the JWKS then lists only the new key. */
  rotateKeys(): Promise<void>;
  /** Signs claims with the provider's current private key (for crafted claims such as `exp`). */
  signWithProviderKey(claims: Record<string, unknown>, header?: { kid?: string }): Promise<string>;
  /** Signs claims with a fresh key the provider never published. */
  signWithUnknownKey(claims: Record<string, unknown>): Promise<string>;
  /** The user the next code-flow interaction logs in. */
  setUser(user: TestUser): void;
  close(): Promise<void>;
}

interface SigningKey {
  kid: string;
  alg: string;
  privateJwk: JWK;
  privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
}

let keyCounter = 0;
async function newSigningKey(alg: string): Promise<SigningKey> {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  const kid = `k${++keyCounter}-${Math.random().toString(36).slice(2, 8)}`;
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateJwk, privateKey };
}

export async function startTestIdp(opts: TestIdpOptions = {}): Promise<TestIdp> {
  const audience = opts.audience ?? 'https://custody.test/api';
  const alg = opts.alg ?? 'RS256';
  const services = opts.services ?? [
    { clientId: 'svc-approver', groups: ['approver'] },
    { clientId: 'svc-admin', groups: ['admin'] },
    { clientId: 'svc-user', groups: [] },
  ];
  const consoleClientId = 'custody-console';
  let user: TestUser = { sub: 'alice', email: 'alice@example.test', name: 'Alice', groups: ['approver'] };
  let key = await newSigningKey(alg);
  let jwksFetches = 0;

  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const build = () => {
    const provider = new Provider(issuer, {
      jwks: { keys: [key.privateJwk] },
      clients: [
        ...services.map((s) => ({
          client_id: s.clientId,
          client_secret: s.clientSecret ?? `${s.clientId}-secret`,
          grant_types: ['client_credentials'],
          response_types: [],
          redirect_uris: [],
          id_token_signed_response_alg: alg,
        })),
        {
          client_id: consoleClientId,
          application_type: 'native',
          token_endpoint_auth_method: 'none',
          grant_types: opts.refreshTokens ? ['authorization_code', 'refresh_token'] : ['authorization_code'],
          response_types: ['code'],
          redirect_uris: ['http://127.0.0.1/api/auth/oidc/callback'],
          id_token_signed_response_alg: alg,
        },
      ],
      claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name', 'preferred_username'], groups: ['groups'] },
      scopes: ['openid', 'email', 'profile', 'groups', 'api'],
      findAccount: (_ctx: unknown, id: string) => ({
        accountId: id,
        claims: () => ({ sub: id, email: user.email, email_verified: true, name: user.name ?? id, preferred_username: id, groups: user.groups ?? [] }),
      }),
      features: {
        devInteractions: { enabled: false },
        clientCredentials: { enabled: true },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => audience,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx: unknown, resource: string) => ({
            scope: 'api',
            audience: resource,
            accessTokenTTL: opts.accessTokenTtl ?? 300,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg } },
          }),
        },
      },
      extraTokenClaims: (_ctx: unknown, token: { clientId?: string; accountId?: string }) => {
        if (token.accountId) return { groups: user.groups ?? [], email: user.email };
        const svc = services.find((s) => s.clientId === token.clientId);
        return svc ? { groups: svc.groups ?? [] } : undefined;
      },
      interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}` },
      pkce: { required: () => true },
      issueRefreshToken: (_ctx: unknown, client: { grantTypeAllowed(t: string): boolean }) => client.grantTypeAllowed('refresh_token'),
      ttl: { AccessToken: opts.accessTokenTtl ?? 300, ClientCredentials: opts.accessTokenTtl ?? 300, IdToken: opts.accessTokenTtl ?? 300, Session: 600, Grant: 600, Interaction: 600 },
      cookies: { keys: ['test-idp-cookie-key'] },
      renderError: (ctx: { type: string; body: string }, out: Record<string, unknown>) => {
        ctx.type = 'json';
        ctx.body = JSON.stringify(out);
      },
    });
    return provider;
  };

  let provider = build();
  let handler = provider.callback();

  async function interaction(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const details = await provider.interactionDetails(req, res);
    if (details.prompt.name === 'login') {
      await provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
      return;
    }
    const clientId = String(details.params['client_id']);
    const grant = new provider.Grant({ accountId: details.session?.accountId ?? user.sub, clientId });
    grant.addOIDCScope(String(details.params['scope'] ?? 'openid'));
    const resource = details.params['resource'];
    if (typeof resource === 'string') grant.addResourceScope(resource, 'api');
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  server.on('request', (req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === '/jwks') jwksFetches++;
    if (path.startsWith('/interaction/')) {
      interaction(req, res).catch((err: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(String(err));
      });
      return;
    }
    handler(req, res);
  });

  const tokenEndpoint = `${issuer}/token`;
  return {
    issuer,
    audience,
    consoleClientId,
    get jwksFetches() {
      return jwksFetches;
    },
    get kid() {
      return key.kid;
    },
    async clientCredentialsToken(o = {}) {
      const svc = services.find((s) => s.clientId === (o.clientId ?? services[0]!.clientId));
      if (!svc) throw new Error(`test IdP: no service client ${o.clientId}`);
      const res = await fetch(tokenEndpoint, {
        method: 'POST',
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          authorization: `Basic ${Buffer.from(`${svc.clientId}:${svc.clientSecret ?? `${svc.clientId}-secret`}`).toString('base64')}`,
        },
        body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'api', resource: o.resource ?? audience }),
      });
      const body = (await res.json()) as { access_token?: string; error?: string; error_description?: string };
      if (!res.ok || !body.access_token) throw new Error(`test IdP token endpoint: ${res.status} ${body.error}: ${body.error_description}`);
      return body.access_token;
    },
    async rotateKeys() {
      key = await newSigningKey(alg);
      provider = build();
      handler = provider.callback();
    },
    async signWithProviderKey(claims, header = {}) {
      return new SignJWT(claims).setProtectedHeader({ alg: key.alg, kid: header.kid ?? key.kid, typ: 'at+jwt' }).sign(key.privateKey);
    },
    async signWithUnknownKey(claims) {
      const other = await newSigningKey(alg);
      return new SignJWT(claims).setProtectedHeader({ alg: other.alg, kid: other.kid, typ: 'at+jwt' }).sign(other.privateKey);
    },
    setUser(u) {
      user = u;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * A minimal browser for OAuth redirects: follows 3xx by hand, keeps cookies per host, and returns
 * each hop so a test can assert on the redirects (e.g. that the gateway's callback set a cookie).
 */
export class TestBrowser {
  private jar = new Map<string, Map<string, string>>();

  cookies(url: string): Map<string, string> {
    const host = new URL(url).host;
    let m = this.jar.get(host);
    if (!m) this.jar.set(host, (m = new Map()));
    return m;
  }

  cookieHeader(url: string): string {
    return [...this.cookies(url)].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  /** One request with this browser's cookies; stores any Set-Cookie. */
  async request(url: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    const cookie = this.cookieHeader(url);
    if (cookie) headers.set('cookie', cookie);
    const res = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const i = pair!.indexOf('=');
      const name = pair!.slice(0, i).trim();
      const value = pair!.slice(i + 1).trim();
      const expired = attrs.some((a) => /^\s*max-age=0\s*$/i.test(a) || /^\s*expires=Thu, 01 Jan 1970/i.test(a));
      if (expired || value === '') this.cookies(url).delete(name);
      else this.cookies(url).set(name, value);
    }
    return res;
  }

  /** Follows redirects (GET) from `url`; returns every hop's URL and the final response. */
  async navigate(url: string, maxHops = 20): Promise<{ hops: string[]; response: Response; url: string }> {
    const hops: string[] = [];
    let current = url;
    for (let i = 0; i < maxHops; i++) {
      hops.push(current);
      const res = await this.request(current);
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location) {
        await res.body?.cancel();
        current = new URL(location, current).toString();
        continue;
      }
      return { hops, response: res, url: current };
    }
    throw new Error(`too many redirects from ${url}`);
  }
}
