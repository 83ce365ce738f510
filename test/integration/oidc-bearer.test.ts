// Bearer JWT verification against a real OpenID Provider on loopback (oidc-provider), issuing real
// access tokens through the client_credentials grant.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { base64url, decodeJwt, decodeProtectedHeader } from 'jose';
import { Config } from '../../shared/config';
import { AuthError, Authenticator } from '../../proxy/identity/authenticator';
import { ApiKeyStore } from '../../proxy/identity/api-keys';
import { OidcVerifier } from '../../proxy/identity/oidc';
import { AuditStore } from '../../proxy/audit/store';
import { startTestIdp, type TestIdp } from '../support/oidc-provider';
import { tempDir } from '../support/tmp';

function identityConfig(idps: TestIdp[], extra: Record<string, unknown> = {}) {
  return Config.parse({ identity: { oidc: idps.map((i) => ({ issuer: i.issuer, audience: i.audience, ...extra })) } }).identity;
}

async function rejects(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof AuthError, `expected AuthError, got ${String(err)}`);
    assert.equal(err.code, code);
    assert.match(err.message, message);
    return true;
  });
}

describe('OIDC bearer tokens from a real provider', () => {
  let idp: TestIdp;
  let other: TestIdp;
  before(async () => {
    idp = await startTestIdp();
    other = await startTestIdp();
  });
  after(async () => {
    await idp.close();
    await other.close();
  });

  it('accepts a valid access token and maps its groups to roles', async () => {
    const v = new OidcVerifier(identityConfig([idp]));
    const token = await idp.clientCredentialsToken({ clientId: 'svc-approver' });
    const id = await v.verify(token);
    assert.equal(id.subject, `${idp.issuer}#svc-approver`);
    assert.equal(id.via, 'oidc');
    assert.deepEqual(id.groups, ['approver']);
    assert.deepEqual(id.roles, ['approver', 'user']);
    const admin = await v.verify(await idp.clientCredentialsToken({ clientId: 'svc-admin' }));
    assert.ok(admin.roles.includes('admin'));
  });

  it('works through the Authenticator beside API keys', async () => {
    const store = AuditStore.open(tempDir());
    try {
      const keys = new ApiKeyStore(store.db);
      const cfg = identityConfig([idp]);
      const auth = new Authenticator(keys, cfg);
      const token = await idp.clientCredentialsToken({ clientId: 'svc-user' });
      await rejects(auth.authenticate(token), 'malformed', /not a Custody API key/);
      auth.setTokenVerifier(new OidcVerifier(cfg));
      assert.equal((await auth.authenticate(token)).subject, `${idp.issuer}#svc-user`);
      const { key } = keys.create({ name: 'ci', groups: ['reviewer'] });
      assert.deepEqual((await auth.authenticate(key)).roles, ['reviewer', 'user']);
    } finally {
      store.close();
    }
  });

  it('rejects an expired token, but honours the configured clock skew', async () => {
    const token = await idp.clientCredentialsToken();
    const exp = decodeJwt(token).exp! * 1000;
    const late = new OidcVerifier(identityConfig([idp], { clockSkew: '30s' }), { now: () => exp + 45_000 });
    await rejects(late.verify(token), 'expired', /expired/);
    const withinSkew = new OidcVerifier(identityConfig([idp], { clockSkew: '30s' }), { now: () => exp + 15_000 });
    assert.ok(await withinSkew.verify(token));
  });

  it('rejects a token that is not valid yet (nbf beyond the skew)', async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = await idp.signWithProviderKey({ iss: idp.issuer, aud: idp.audience, sub: 'x', iat: now, nbf: now + 600, exp: now + 900 });
    await rejects(new OidcVerifier(identityConfig([idp])).verify(token), 'invalid_token', /not valid yet/);
  });

  it('rejects a token for another audience', async () => {
    const token = await idp.clientCredentialsToken({ resource: 'https://someone-else.test/' });
    assert.equal(decodeJwt(token).aud, 'https://someone-else.test/');
    await rejects(new OidcVerifier(identityConfig([idp])).verify(token), 'invalid_token', /audience/);
  });

  it('rejects a token from an issuer that is not configured', async () => {
    const token = await other.clientCredentialsToken();
    await rejects(new OidcVerifier(identityConfig([idp])).verify(token), 'invalid_token', new RegExp(`issuer ${other.issuer} is not trusted`));
  });

  it('rejects a token claiming a trusted issuer but signed by another issuer', async () => {
    const v = new OidcVerifier(identityConfig([idp, other]));
    // `other`'s real token, with the payload rewritten to claim `idp` — the signature no longer holds.
    const real = await other.clientCredentialsToken();
    const [h, , s] = real.split('.');
    const forged = `${h}.${base64url.encode(JSON.stringify({ ...decodeJwt(real), iss: idp.issuer, aud: idp.audience }))}.${s}`;
    await rejects(v.verify(forged), 'invalid_token', /key .* does not publish|signature/);
  });

  it('rejects a token signed with a key the issuer never published, fetching the JWKS again at most once per cooldown', async () => {
    const v = new OidcVerifier(identityConfig([idp]), { jwksCooldownMs: 60_000 });
    await v.verify(await idp.clientCredentialsToken()); // primes the JWKS cache
    const fetchesBefore = idp.jwksFetches;
    const now = Math.floor(Date.now() / 1000);
    const claims = { iss: idp.issuer, aud: idp.audience, sub: 'mallory', groups: ['admin'], iat: now, exp: now + 300 };
    for (let i = 0; i < 5; i++) await rejects(v.verify(await idp.signWithUnknownKey(claims)), 'invalid_token', /does not publish/);
    assert.ok(idp.jwksFetches - fetchesBefore <= 1, `unknown kids caused ${idp.jwksFetches - fetchesBefore} JWKS fetches`);
  });

  it('follows a key rotation: a token with the new kid triggers one JWKS refresh and verifies', async () => {
    const v = new OidcVerifier(identityConfig([idp]), { jwksCooldownMs: 0 });
    await v.verify(await idp.clientCredentialsToken());
    const oldKid = idp.kid;
    await idp.rotateKeys();
    const token = await idp.clientCredentialsToken();
    assert.notEqual(decodeProtectedHeader(token).kid, oldKid);
    const before = idp.jwksFetches;
    const id = await v.verify(token);
    assert.equal(id.subject, `${idp.issuer}#svc-approver`);
    assert.equal(idp.jwksFetches - before, 1);
  });

  it('never accepts alg "none"', async () => {
    const now = Math.floor(Date.now() / 1000);
    const enc = (o: object) => base64url.encode(JSON.stringify(o));
    const token = `${enc({ alg: 'none', typ: 'JWT' })}.${enc({ iss: idp.issuer, aud: idp.audience, sub: 'root', groups: ['admin'], iat: now, exp: now + 300 })}.`;
    await rejects(new OidcVerifier(identityConfig([idp])).verify(token), 'invalid_token', /never accepted/);
  });

  it('never accepts HS256, even signed with the issuer public key as the secret, nor when configured', async () => {
    const { createHmac } = await import('node:crypto');
    const jwks = (await (await fetch(`${idp.issuer}/jwks`)).json()) as { keys: { n: string }[] };
    const now = Math.floor(Date.now() / 1000);
    const enc = (o: object) => base64url.encode(JSON.stringify(o));
    const input = `${enc({ alg: 'HS256', kid: idp.kid })}.${enc({ iss: idp.issuer, aud: idp.audience, sub: 'root', iat: now, exp: now + 300 })}`;
    const sig = base64url.encode(createHmac('sha256', jwks.keys[0]!.n).update(input).digest());
    const v = new OidcVerifier(identityConfig([idp], { algorithms: ['HS256', 'RS256'] }));
    await rejects(v.verify(`${input}.${sig}`), 'invalid_token', /never accepted/);
    assert.throws(() => new OidcVerifier(identityConfig([idp], { algorithms: ['HS256', 'none'] })), /no usable algorithm/);
  });

  it('rejects an algorithm outside the issuer allow-list', async () => {
    const token = await idp.clientCredentialsToken();
    const v = new OidcVerifier(identityConfig([idp], { algorithms: ['ES256'] }));
    await rejects(v.verify(token), 'invalid_token', /RS256 is not allowed/);
  });

  it('rejects a tampered signature and a tampered payload', async () => {
    const v = new OidcVerifier(identityConfig([idp]));
    const token = await idp.clientCredentialsToken({ clientId: 'svc-user' });
    const [h, p, s] = token.split('.');
    const flipped = s!.slice(0, 10) + (s![10] === 'A' ? 'B' : 'A') + s!.slice(11);
    await rejects(v.verify(`${h}.${p}.${flipped}`), 'invalid_token', /signature is invalid/);
    const elevated = base64url.encode(JSON.stringify({ ...decodeJwt(token), groups: ['admin'] }));
    await rejects(v.verify(`${h}.${elevated}.${s}`), 'invalid_token', /signature is invalid/);
  });

  it('rejects garbage as malformed and says why when the issuer cannot be reached', async () => {
    const v = new OidcVerifier(identityConfig([idp]));
    await rejects(v.verify('a.b.c'), 'malformed', /not a well-formed JWT/);
    const dead = await startTestIdp();
    const token = await dead.clientCredentialsToken();
    await dead.close();
    const v2 = new OidcVerifier(identityConfig([dead]), { timeoutMs: 1000 });
    await rejects(v2.verify(token), 'invalid_token', /cannot reach issuer/);
  });
});
