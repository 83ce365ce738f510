/**
 * RFC 8252 sign-in against a real OpenID Provider (`oidc-provider`) on loopback. The "system
 * browser" is a small cookie-keeping HTTP client that follows the provider's redirects, the way a
 * browser would, until it reaches the app's loopback redirect URI.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeJwt } from 'jose';
import { RemoteLoginError, signInWithBrowser } from '../../proxy/identity/native-login';
import { type SafeStorageLike, safeStorageKeychain, TokenVault } from '../../main/secret-wrap';
import { startTestIdp, TestBrowser, type TestIdp } from '../support/oidc-provider';
import { tempDir } from '../support/tmp';

// The fixture's public native client accepts loopback redirects on this path, any port (RFC 8252 §7.3).
const REDIRECT_PATH = '/api/auth/oidc/callback';

describe('remote gateway sign-in (RFC 8252 loopback + PKCE)', () => {
  let idp: TestIdp;
  before(async () => {
    idp = await startTestIdp();
  });
  after(async () => {
    await idp.close();
  });

  it('signs in through the browser and gets tokens for the gateway', async () => {
    idp.setUser({ sub: 'alice', email: 'alice@example.test', name: 'Alice', groups: ['approver', 'dba'] });
    const visited: string[] = [];
    let finalPage = '';
    const tokens = await signInWithBrowser({
      issuer: idp.issuer,
      clientId: idp.consoleClientId,
      scope: 'openid email profile groups api',
      resource: idp.audience,
      redirectPath: REDIRECT_PATH,
      openBrowser: async (url) => {
        const auth = new URL(url);
        assert.equal(auth.searchParams.get('code_challenge_method'), 'S256');
        assert.match(auth.searchParams.get('code_challenge')!, /^[A-Za-z0-9_-]{43}$/);
        assert.match(auth.searchParams.get('redirect_uri')!, /^http:\/\/127\.0\.0\.1:\d+\/api\/auth\/oidc\/callback$/);
        assert.ok(auth.searchParams.get('state'));
        const browser = new TestBrowser();
        // the browser runs on its own; signInWithBrowser waits for the redirect, not for this
        void browser.navigate(url).then(async ({ hops, response }) => {
          visited.push(...hops);
          finalPage = await response.text();
        });
      },
    });
    assert.equal(tokens.claims?.['sub'], 'alice');
    assert.equal(tokens.claims?.['email'], 'alice@example.test');
    const access = decodeJwt(tokens.accessToken);
    assert.equal(access.aud, idp.audience);
    assert.equal(access.sub, 'alice');
    assert.deepEqual(access['groups'], ['approver', 'dba']);
    assert.ok(tokens.expiresAt! > Date.now());
    for (let i = 0; i < 50 && !finalPage; i++) await new Promise((r) => setTimeout(r, 20));
    assert.match(finalPage, /Signed in to Custody/);
    assert.ok(visited.at(-1)!.startsWith('http://127.0.0.1:') && visited.at(-1)!.includes(`${REDIRECT_PATH}?code=`), 'the browser ended on the loopback redirect');

    // kept sealed by the OS keychain
    const fake: SafeStorageLike = { isEncryptionAvailable: () => true, encryptString: (s) => Buffer.from(s, 'utf8').reverse(), decryptString: (b) => Buffer.from(b).reverse().toString('utf8') };
    const vault = new TokenVault(join(tempDir(), 'remote-tokens.safe'), safeStorageKeychain(fake, 'darwin'));
    vault.save({ issuer: idp.issuer, clientId: idp.consoleClientId, gateway: 'https://gw.example', accessToken: tokens.accessToken, idToken: tokens.idToken });
    assert.equal(vault.load()!.accessToken, tokens.accessToken);
  });

  it('rejects a callback whose state does not match (a forged redirect)', async () => {
    let page = '';
    await assert.rejects(
      signInWithBrowser({
        issuer: idp.issuer,
        clientId: idp.consoleClientId,
        redirectPath: REDIRECT_PATH,
        openBrowser: async (url) => {
          const redirect = new URL(new URL(url).searchParams.get('redirect_uri')!);
          redirect.search = new URLSearchParams({ code: 'stolen-code', state: 'not-the-state', iss: idp.issuer }).toString();
          void fetch(redirect).then(async (r) => (page = `${r.status} ${await r.text()}`));
        },
      }),
      (err: unknown) => err instanceof RemoteLoginError && /state/i.test(err.message),
    );
    for (let i = 0; i < 50 && !page; i++) await new Promise((r) => setTimeout(r, 20));
    assert.match(page, /^400 .*Sign-in failed/s);
  });

  it('reports an error the IdP sent back', async () => {
    await assert.rejects(
      signInWithBrowser({
        issuer: idp.issuer,
        clientId: idp.consoleClientId,
        redirectPath: REDIRECT_PATH,
        openBrowser: async (url) => {
          const u = new URL(url);
          const redirect = new URL(u.searchParams.get('redirect_uri')!);
          redirect.search = new URLSearchParams({ error: 'access_denied', error_description: 'the user said no', state: u.searchParams.get('state')!, iss: idp.issuer }).toString();
          void fetch(redirect);
        },
      }),
      /access_denied: the user said no/,
    );
  });

  it('gives up when the browser never comes back, and refuses plain-http issuers off loopback', async () => {
    await assert.rejects(signInWithBrowser({ issuer: idp.issuer, clientId: idp.consoleClientId, redirectPath: REDIRECT_PATH, timeoutMs: 200, openBrowser: () => {} }), /not completed within/);
    await assert.rejects(signInWithBrowser({ issuer: 'http://idp.example.com', clientId: 'x', openBrowser: () => {} }), /must use https/);
  });
});
