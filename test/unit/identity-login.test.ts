// Identity building blocks: claims → identity, the per-run console token, safe redirects after
// sign-in, the failed-attempt recorder, the user directory and key-bound console sessions.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Config } from '../../shared/config';
import { AuditStore } from '../../proxy/audit/store';
import { ApiKeyStore } from '../../proxy/identity/api-keys';
import { Authenticator, credentialFrom, rolesFor } from '../../proxy/identity/authenticator';
import { AuthFailureRecorder, ConsoleLogin, mintLoginLink, safeNext } from '../../proxy/identity/console-login';
import { ConsoleSessions, parseCookies } from '../../proxy/identity/console-sessions';
import { claimAt, groupsFrom, identityFromClaims, isLoopbackUrl, OidcVerifier } from '../../proxy/identity/oidc';
import { UserDirectory } from '../../proxy/identity/users';
import { tempDir } from '../support/tmp';

const identity = Config.parse({}).identity;
const issuer = Config.parse({ identity: { oidc: [{ issuer: 'https://idp.example.com', audience: 'custody', groupsClaim: 'realm_access.roles' }] } }).identity.oidc[0]!;

describe('identity', () => {
  it('reads groups from a claim path, as a list or a separated string', () => {
    assert.deepEqual(claimAt({ realm_access: { roles: ['a', 'b'] } }, 'realm_access.roles'), ['a', 'b']);
    assert.deepEqual(claimAt({ 'https://example.com/groups': ['x'] }, 'https://example.com/groups'), ['x'], 'a claim name containing dots is read as is');
    assert.deepEqual(groupsFrom(['admin', 3, '', 'dba']), ['admin', 'dba']);
    assert.deepEqual(groupsFrom('approver dba,ops'), ['approver', 'dba', 'ops']);
    assert.deepEqual(groupsFrom(undefined), []);
  });

  it('names an OIDC identity by the issuer\'s verified claim, qualified by issuer, never a display name', () => {
    const id = identityFromClaims({ sub: 'u1', email: 'ann@example.com', preferred_username: 'ann', realm_access: { roles: ['admin'] }, exp: 2_000_000_000 }, issuer, identity.roles);
    assert.deepEqual(id, { subject: 'https://idp.example.com#u1', name: 'u1', groups: ['admin'], roles: ['admin', 'user'], via: 'oidc', credentialExpiresAt: 2_000_000_000_000 });
    assert.equal(identityFromClaims({ sub: 'svc', client_id: 'ci', email: 'ci-bot' }, issuer, identity.roles).name, 'svc', 'an unverified email is not the name');
    assert.throws(() => identityFromClaims({ email: 'x' }, issuer, identity.roles), /no "sub"/);
    const byEmail = { ...issuer, userClaim: 'email' as const };
    assert.equal(identityFromClaims({ sub: 'u1', email: 'ann@example.com', email_verified: true }, byEmail, identity.roles).subject, 'https://idp.example.com#ann@example.com');
    for (const unverified of [undefined, false, 'true', 1]) {
      assert.throws(() => identityFromClaims({ sub: 'u1', email: 'ci-bot', email_verified: unverified }, byEmail, identity.roles), /not verified/);
    }
    const entra = { ...issuer, userClaim: 'oid' as const };
    assert.equal(identityFromClaims({ sub: 'pairwise', oid: '0000-1111' }, entra, identity.roles).name, '0000-1111');
    assert.throws(() => identityFromClaims({ sub: 'pairwise' }, entra, identity.roles), /no "oid"/);
  });

  it('grants admin only through identity.roles: no implicit "admin" group once roles are configured', () => {
    const roles = Config.parse({ identity: { roles: { admin: ['sec-admins'] } } }).identity.roles;
    assert.deepEqual(rolesFor(['admin'], roles), ['user']);
    assert.deepEqual(rolesFor(['sec-admins'], roles), ['admin', 'user']);
    assert.deepEqual(rolesFor(['admin'], identity.roles), ['admin', 'user'], 'the default maps the group admin');
  });

  it('refuses plain-http issuers except on loopback', () => {
    assert.ok(isLoopbackUrl('http://127.0.0.1:8080'));
    assert.ok(!isLoopbackUrl('http://idp.example.com'));
    const cfg = (url: string) => Config.parse({ identity: { oidc: [{ issuer: url, audience: 'a' }] } }).identity;
    assert.throws(() => new OidcVerifier(cfg('http://idp.example.com')), /must use https/);
    assert.ok(new OidcVerifier(cfg('http://localhost:9999')));
  });

  it('redeems a login link once, within 10 minutes, as the local admin', () => {
    const store = AuditStore.open(tempDir());
    const a = new ConsoleLogin(identity, undefined, store);
    const t1 = a.mintLoginLink();
    const t2 = a.mintLoginLink();
    assert.notEqual(t1, t2, 'a new link each time');
    const local = a.redeemConsoleToken(t1)!;
    assert.match(local.subject, /^local:/);
    assert.deepEqual(local.roles, ['admin', 'user']);
    assert.deepEqual(a.redeemLoginLink(t1), { ok: false, reason: 'used' }, 'single use');
    assert.equal(a.redeemConsoleToken(''), undefined);
    assert.equal(a.redeemConsoleToken(`${t2}x`), undefined);
    assert.deepEqual(a.redeemLoginLink(t2, Date.now() + 10 * 60_000 + 1), { ok: false, reason: 'expired' });
    assert.ok(a.redeemConsoleToken(t2), 'still good inside its 10 minutes');
    const other = mintLoginLink(store.db, 'cli').token;
    assert.ok(a.redeemConsoleToken(other), 'a link made by another process on the same store works');
    assert.deepEqual(a.providers(), { apiKey: true, localLink: true, oidc: [] });
    store.close();
  });

  it('sends the browser only to a path on this origin after sign-in', () => {
    assert.equal(safeNext('/holds?state=pending'), '/holds?state=pending');
    for (const bad of ['//evil.example/x', 'https://evil.example', '/\\evil.example', 'holds', '/x\r\nSet-Cookie: a=b', null, undefined]) assert.equal(safeNext(bad), '/');
  });

  it('aggregates failures per source per minute, throttles per source and per credential, never globally', () => {
    const store = AuditStore.open(tempDir());
    let now = 1_000_000;
    const rec = new AuthFailureRecorder(store, 3, 60_000, () => now);
    const kinds = () => store.events(1, 1000).filter((e) => e.kind.startsWith('auth.fail'));
    for (let i = 0; i < 200; i++) rec.record('10.0.0.1', { method: 'bearer', reason: 'malformed' });
    assert.equal(kinds().length, 1, 'the first failure of the minute is recorded at once, the rest are counted');
    assert.deepEqual(kinds()[0]!.payload, { method: 'bearer', reason: 'malformed', source: '10.0.0.1' });
    assert.equal(rec.record('10.0.0.1', { method: 'bearer' }), false, 'the source is over its limit');
    assert.equal(rec.record('10.0.0.2', { method: 'bearer' }), true, 'other sources are not affected');
    // The first failure naming a known key is recorded at once even from a source already seen.
    rec.record('10.0.0.2', { method: 'api-key', reason: 'unknown' }, { credential: 'key:abc' });
    assert.equal(kinds().filter((e) => (e.payload as { credential?: string }).credential === 'key:abc').length, 1);
    // Per credential: a flood against one key from many addresses is throttled for that key only.
    for (let i = 0; i < 5; i++) rec.record(`10.1.0.${i}`, { method: 'api-key' }, { credential: 'key:victim' });
    assert.equal(rec.record('10.2.0.1', { method: 'api-key' }, { credential: 'key:victim' }), false);
    assert.equal(rec.record('10.2.0.1', { method: 'api-key' }, { credential: 'key:other' }), true);
    now += 60_001;
    rec.flush();
    const summary = kinds().find((e) => e.kind === 'auth.failures' && (e.payload as { source: string }).source === '10.0.0.1')!;
    assert.deepEqual(summary.payload, { source: '10.0.0.1', count: 201, unrecorded: 200, firstSeen: 1_000_000, lastSeen: 1_000_000, reasons: { malformed: 200, error: 1 } });
    assert.equal(rec.record('10.0.0.1', { method: 'bearer' }), true, 'a new minute starts afresh');
    rec.close();
    store.close();
  });

  it('reads a malformed cookie header as no cookie, never throwing', () => {
    assert.deepEqual({ ...parseCookies('custody_session=%') }, {});
    assert.deepEqual({ ...parseCookies('a=%E0%A4%A; custody_session=ok') }, { custody_session: 'ok' });
    assert.deepEqual({ ...parseCookies('custody_session=first; custody_session=second') }, { custody_session: 'first' });
    assert.deepEqual(Object.entries(parseCookies('__proto__=x; constructor=y')), [['__proto__', 'x'], ['constructor', 'y']]);
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.array(fc.constantFrom('%', '=', ';', ' ', '"', 'a', 'custody_session', '%zz', '%E0')).map((a) => a.join(''))), (header) => {
        const out = parseCookies(header);
        for (const v of Object.values(out)) assert.equal(typeof v, 'string');
      }),
      { numRuns: 2000 },
    );
  });

  it('reads a credential from any header value without throwing', () => {
    assert.equal(credentialFrom({ authorization: 'Bearer  cst_x ' }), 'cst_x');
    assert.equal(credentialFrom({ authorization: 'Basic abc' }), undefined);
    assert.equal(credentialFrom({ authorization: ['Bearer a', 'Bearer b'] }), undefined);
    assert.equal(credentialFrom({ 'x-api-key': '' }), undefined);
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.array(fc.string()), fc.constant(undefined)), fc.oneof(fc.string(), fc.constant(undefined)), (authorization, x) => {
        const c = credentialFrom({ authorization, 'x-api-key': x });
        assert.ok(c === undefined || (typeof c === 'string' && c.length > 0));
      }),
      { numRuns: 2000 },
    );
  });

  it('keeps the users it saw, writing each again only when something changed', () => {
    const store = AuditStore.open(tempDir());
    const users = new UserDirectory(store.db, 60_000);
    const ann = { subject: 'https://idp#ann', name: 'ann', groups: ['dba'], roles: ['user' as const], via: 'oidc' as const };
    users.seen(ann, 1000);
    users.seen({ ...ann, name: 'Ann Renamed' }, 2000); // within the throttle, same groups: not written
    assert.equal(users.get(ann.subject)!.name, 'ann');
    users.seen({ ...ann, groups: ['dba', 'ops'] }, 3000); // groups changed: written at once
    const u = users.get(ann.subject)!;
    assert.deepEqual([u.groups, u.firstSeen, u.lastSeen], [['dba', 'ops'], 1000, 3000]);
    store.close();
  });

  it('ends the console sessions of a revoked key and prunes expired ones', () => {
    const store = AuditStore.open(tempDir());
    const keys = new ApiKeyStore(store.db);
    const auth = new Authenticator(keys, identity);
    const sessions = new ConsoleSessions(store.db);
    const k1 = keys.create({ name: 'a', groups: [] });
    const k2 = keys.create({ name: 'b', groups: [] });
    const s1 = sessions.create(auth.identityForKey(k1.record));
    const s2 = sessions.create(auth.identityForKey(k2.record));
    const old = sessions.create(auth.identityForKey(k2.record), 1);
    assert.equal(sessions.deleteForKey(k1.record.id), 1);
    assert.equal(sessions.get(s1.id), undefined);
    assert.ok(sessions.get(s2.id));
    assert.equal(sessions.prune(Date.now() + 10), 1);
    assert.equal(sessions.get(old.id), undefined);
    store.close();
  });
});
