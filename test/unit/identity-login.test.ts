// Identity building blocks: claims → identity, the per-run console token, safe redirects after
// sign-in, the failed-attempt recorder, the user directory and key-bound console sessions.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Config } from '../../shared/config';
import { AuditStore } from '../../proxy/audit/store';
import { ApiKeyStore } from '../../proxy/identity/api-keys';
import { Authenticator } from '../../proxy/identity/authenticator';
import { AuthFailureRecorder, ConsoleLogin, safeNext } from '../../proxy/identity/console-login';
import { ConsoleSessions } from '../../proxy/identity/console-sessions';
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

  it('builds an identity from verified claims, naming it by email first', () => {
    const id = identityFromClaims({ sub: 'u1', email: 'ann@example.com', preferred_username: 'ann', realm_access: { roles: ['admin'] } }, issuer, identity.roles);
    assert.deepEqual(id, { subject: 'https://idp.example.com#u1', name: 'ann@example.com', groups: ['admin'], roles: ['admin', 'user'], via: 'oidc' });
    assert.equal(identityFromClaims({ sub: 'svc', client_id: 'ci' }, issuer, identity.roles).name, 'ci');
    assert.throws(() => identityFromClaims({ email: 'x' }, issuer, identity.roles), /no "sub"/);
  });

  it('refuses plain-http issuers except on loopback', () => {
    assert.ok(isLoopbackUrl('http://127.0.0.1:8080'));
    assert.ok(!isLoopbackUrl('http://idp.example.com'));
    const cfg = (url: string) => Config.parse({ identity: { oidc: [{ issuer: url, audience: 'a' }] } }).identity;
    assert.throws(() => new OidcVerifier(cfg('http://idp.example.com')), /must use https/);
    assert.ok(new OidcVerifier(cfg('http://localhost:9999')));
  });

  it('redeems only this run\'s console token, as the local admin', () => {
    const store = AuditStore.open(tempDir());
    const a = new ConsoleLogin(identity, undefined, store);
    const b = new ConsoleLogin(identity, undefined, store);
    assert.notEqual(a.consoleToken, b.consoleToken, 'a new token at every start');
    const local = a.redeemConsoleToken(a.consoleToken)!;
    assert.match(local.subject, /^local:/);
    assert.deepEqual(local.roles, ['admin', 'user']);
    assert.equal(a.redeemConsoleToken(b.consoleToken), undefined);
    assert.equal(a.redeemConsoleToken(''), undefined);
    assert.equal(a.redeemConsoleToken(`${a.consoleToken}x`), undefined);
    assert.deepEqual(a.providers(), { apiKey: true, localLink: true, oidc: [] });
    store.close();
  });

  it('sends the browser only to a path on this origin after sign-in', () => {
    assert.equal(safeNext('/holds?state=pending'), '/holds?state=pending');
    for (const bad of ['//evil.example/x', 'https://evil.example', '/\\evil.example', 'holds', '/x\r\nSet-Cookie: a=b', null, undefined]) assert.equal(safeNext(bad), '/');
  });

  it('records failures up to a limit per source, then refuses unrecorded', () => {
    const store = AuditStore.open(tempDir());
    const rec = new AuthFailureRecorder(store, 3);
    for (let i = 0; i < 3; i++) assert.equal(rec.record('10.0.0.1', { method: 'api-key' }), true);
    assert.equal(rec.limited('10.0.0.1'), true);
    assert.equal(rec.record('10.0.0.1', { method: 'api-key' }), false);
    assert.equal(rec.record('10.0.0.2', { method: 'api-key' }), true, 'other sources are not affected');
    const events = store.events(1, 100).filter((e) => e.kind === 'auth.failure');
    assert.equal(events.length, 4);
    assert.deepEqual(events[0]!.payload, { method: 'api-key', source: '10.0.0.1' });
    store.close();
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
