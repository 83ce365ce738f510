// Console sign-in end to end: API key → cookie, the local login link, OIDC authorization code +
// PKCE against a real provider, logout, failures recorded, Origin checks, login redirect.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import WebSocket from 'ws';
import { Config } from '../../shared/config';
import type { AuditEvent } from '../../shared/events';
import type { ServerMessage } from '../../shared/messages';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { startTestIdp, TestBrowser, type TestIdp } from '../support/oidc-provider';

let idp: TestIdp;
let gw: Gateway;
let control: string;
let dataDir: string;

function events(kind: string): AuditEvent[] {
  return gw.services.store.events(1, 100_000).filter((e) => e.kind === kind);
}

async function postJson(path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${control}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
}

function sessionCookieOf(res: Response): string {
  const line = res.headers.getSetCookie().find((c) => c.startsWith('custody_session='));
  assert.ok(line, 'a session cookie is set');
  return line.split(';')[0]!;
}

/** Opens a WebSocket and resolves with the first message, or rejects with the HTTP status. */
function wsFirst(headers: Record<string, string>): Promise<ServerMessage> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${control.replace('http', 'ws')}/api/events`, { headers });
    ws.once('message', (d) => {
      resolve(JSON.parse(String(d)) as ServerMessage);
      ws.close();
    });
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

describe('console sign-in', () => {
  before(async () => {
    idp = await startTestIdp();
    dataDir = mkdtempSync(join(tmpdir(), 'custody-login-'));
    const config = Config.parse({
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      identity: { oidc: [{ issuer: idp.issuer, audience: idp.audience, clientId: idp.consoleClientId, name: 'Test IdP' }] },
    });
    gw = await Gateway.start({ config, dataDir, log: silentLogger });
    control = `http://${gw.address('control')}`;
  });
  after(async () => {
    await gw.stop();
    await idp.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('lists the sign-in options without a session', async () => {
    const res = await fetch(`${control}/api/auth/providers`);
    assert.equal(res.status, 200);
    const p = (await res.json()) as { apiKey: boolean; localLink: boolean; oidc: { id: string; name: string; startUrl: string }[] };
    assert.equal(p.apiKey, true);
    assert.deepEqual(p.oidc.map((o) => [o.name, o.startUrl]), [['Test IdP', '/api/auth/oidc/start?issuer=0']]);
  });

  it('requires a signed-in user for the API and sends browsers to the login page', async () => {
    assert.equal((await fetch(`${control}/api/holds`)).status, 401);
    const nav = await fetch(`${control}/holds?state=pending`, { headers: { accept: 'text/html' }, redirect: 'manual' });
    assert.equal(nav.status, 302);
    assert.equal(nav.headers.get('location'), `/login?next=${encodeURIComponent('/holds?state=pending')}`);
  });

  it('signs in with a pasted API key: HttpOnly SameSite=Strict cookie, then logout', async () => {
    const res = await postJson('/api/auth/key', { key: gw.firstKey }, { origin: control });
    assert.equal(res.status, 200);
    const line = res.headers.getSetCookie().find((c) => c.startsWith('custody_session='))!;
    assert.match(line, /HttpOnly/);
    assert.match(line, /SameSite=Strict/);
    const cookie = sessionCookieOf(res);
    const me = await fetch(`${control}/api/me`, { headers: { cookie } });
    assert.equal(((await me.json()) as { name: string }).name, 'local-admin');
    const login = events('auth.login').at(-1)!;
    assert.equal((login.payload as { method: string }).method, 'api-key');

    const out = await fetch(`${control}/api/auth/logout`, { method: 'POST', headers: { cookie, origin: control } });
    assert.equal(out.status, 204);
    assert.match(out.headers.getSetCookie()[0]!, /Max-Age=0/);
    assert.equal((await fetch(`${control}/api/me`, { headers: { cookie } })).status, 401);
    assert.equal(events('auth.logout').at(-1)!.actor, login.actor);
  });

  it('records a bad key as auth.failure and refuses cross-origin sign-in', async () => {
    const before = events('auth.failure').length;
    const res = await postJson('/api/auth/key', { key: 'cst_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb' });
    assert.equal(res.status, 401);
    const f = events('auth.failure');
    assert.equal(f.length, before + 1);
    assert.equal((f.at(-1)!.payload as { method: string; reason: string }).reason, 'unknown');
    const csrf = await postJson('/api/auth/key', { key: gw.firstKey }, { origin: 'http://evil.example' });
    assert.equal(csrf.status, 403);
    assert.equal((await postJson('/api/auth/key', {})).status, 400);
  });

  it('signs in the local user with a login link once, and refuses a reused or wrong token', async () => {
    const link = gw.loginLink();
    assert.match(link, /^http:\/\/127\.0\.0\.1:\d+\/login\?token=[\w-]{43}$/);
    assert.equal((await fetch(link, { method: 'HEAD', redirect: 'manual' })).status, 405, 'a probe does not spend the link');
    const res = await fetch(link, { redirect: 'manual' });
    assert.equal(res.status, 303);
    assert.equal(res.headers.get('location'), '/');
    const me = (await (await fetch(`${control}/api/me`, { headers: { cookie: sessionCookieOf(res) } })).json()) as { subject: string; roles: string[]; via: string };
    assert.match(me.subject, /^local:/);
    assert.ok(me.roles.includes('admin'));
    assert.equal((events('auth.login').at(-1)!.payload as { method: string }).method, 'local-link');

    const again = await fetch(link, { redirect: 'manual' });
    assert.equal(again.headers.getSetCookie().length, 0, 'a link signs in once');
    assert.match(decodeURIComponent(again.headers.get('location')!), /already been used/);
    const bad = await fetch(`${control}/login?token=not-the-token`, { redirect: 'manual' });
    assert.equal(bad.status, 303);
    assert.match(bad.headers.get('location')!, /^\/login\?error=/);
    assert.equal(bad.headers.getSetCookie().length, 0);
  });

  it('signs in through the OIDC provider with authorization code + PKCE, groups from the IdP', async () => {
    idp.setUser({ sub: 'alice', email: 'alice@example.test', name: 'Alice', groups: ['approver', 'dba'] });
    const browser = new TestBrowser();
    const { hops, response } = await browser.navigate(`${control}/api/auth/oidc/start?issuer=0&next=/holds`);
    const auth = new URL(hops[1]!);
    assert.equal(auth.origin, idp.issuer);
    assert.equal(auth.searchParams.get('code_challenge_method'), 'S256');
    assert.ok(auth.searchParams.get('code_challenge'));
    assert.ok(auth.searchParams.get('nonce'));
    assert.equal(auth.searchParams.get('redirect_uri'), `${control}/api/auth/oidc/callback`);
    assert.equal(response.status, 200);
    assert.match(await response.text(), /url=\/holds/);
    const cookie = `custody_session=${browser.cookies(control).get('custody_session')}`;
    const session = gw.services.store.db.prepare('SELECT expires_at FROM console_sessions ORDER BY created_at DESC LIMIT 1').get() as { expires_at: number };
    assert.ok(session.expires_at <= Date.now() + 300_000, 'the session ends with the access token the IdP granted (300 s), not after 12 h');
    const me = (await (await fetch(`${control}/api/me`, { headers: { cookie } })).json()) as { subject: string; name: string; groups: string[]; roles: string[]; via: string };
    assert.equal(me.subject, `${idp.issuer}#alice`);
    assert.equal(me.name, 'alice', 'named by the verified sub, not the e-mail (the issuer is not set to use email)');
    assert.deepEqual(me.groups, ['approver', 'dba']);
    assert.deepEqual(me.roles, ['approver', 'user']);
    assert.equal(me.via, 'oidc');
    assert.match((me as { person?: string }).person ?? '', /^person_/, 'the IdP sign-in belongs to a person');
    const minted = await postJson('/api/keys', { name: 'from-oidc' }, { cookie, origin: control });
    assert.equal(minted.status, 403, 'an approver (not admin) cannot mint keys');
    const login = events('auth.login').at(-1)!;
    assert.equal((login.payload as { method: string; issuer: string }).issuer, idp.issuer);
    assert.equal(gw.services.users.get(me.subject)?.name, 'alice');
  });

  it('refuses a callback whose state is unknown or from another browser', async () => {
    const before = events('auth.failure').length;
    const forged = await fetch(`${control}/api/auth/oidc/callback?code=abc&state=made-up`, { redirect: 'manual' });
    assert.equal(forged.status, 303);
    assert.match(decodeURIComponent(forged.headers.get('location')!), /unknown or too old/);
    // A flow started in one browser and completed in another (login CSRF) fails on the state cookie.
    const attacker = new TestBrowser();
    const start = await attacker.request(`${control}/api/auth/oidc/start?issuer=0`);
    const victim = new TestBrowser();
    const state = new URL(start.headers.get('location')!).searchParams.get('state')!;
    const cb = await victim.request(`${control}/api/auth/oidc/callback?code=abc&state=${state}`);
    assert.match(decodeURIComponent(cb.headers.get('location')!), /another browser/);
    assert.ok(events('auth.failure').length <= before + 2, 'failures from one address are aggregated');
    const unknownIssuer = await fetch(`${control}/api/auth/oidc/start?issuer=7`, { redirect: 'manual' });
    assert.match(decodeURIComponent(unknownIssuer.headers.get('location')!), /no sign-in issuer/);
  });

  it('ends console sessions when their API key is revoked', async () => {
    const admin = { authorization: `Bearer ${gw.firstKey}` };
    const created = (await (await postJson('/api/keys', { name: 'ops', groups: ['approver'] }, admin)).json()) as { key: string; id: string };
    const cookie = sessionCookieOf(await postJson('/api/auth/key', { key: created.key }));
    assert.equal((await fetch(`${control}/api/me`, { headers: { cookie } })).status, 200);
    assert.equal((await postJson(`/api/keys/${created.id}/revoke`, {}, admin)).status, 200);
    assert.equal((await fetch(`${control}/api/me`, { headers: { cookie } })).status, 401);
  });

  it('manages API keys over REST: admin only, the secret shown once, expiry recorded', async () => {
    const admin = { authorization: `Bearer ${gw.firstKey}` };
    const createdRes = await postJson('/api/keys', { name: 'ci-bot', groups: ['reviewer'], expires: '30d' }, admin);
    assert.equal(createdRes.status, 200);
    const created = (await createdRes.json()) as { key: string; id: string; expiresAt: number; state: string };
    assert.match(created.key, /^cst_[a-z0-9]{12}_/);
    assert.equal(created.state, 'active');
    assert.ok(created.expiresAt > Date.now() + 29 * 86_400_000);
    const list = (await (await fetch(`${control}/api/keys`, { headers: admin })).json()) as { keys: { id: string; name: string }[] };
    assert.ok(list.keys.some((k) => k.id === created.id && k.name === 'ci-bot'));
    // The secret is everything after the id (it may itself hold `_`).
    const secret = /^cst_[a-z0-9]{12}_(.+)$/.exec(created.key)![1]!;
    assert.ok(!JSON.stringify(list).includes(secret), 'the secret is never listed');
    const asReviewer = { authorization: `Bearer ${created.key}` };
    assert.equal((await fetch(`${control}/api/keys`, { headers: asReviewer })).status, 403);
    assert.equal((await postJson('/api/keys', { name: 'x' }, asReviewer)).status, 403);
    assert.equal((await postJson('/api/keys', { name: '', groups: [] }, admin)).status, 400);
    assert.equal((await postJson('/api/keys', { name: 'x', groups: ['bad group!'] }, admin)).status, 400);
    assert.equal((await postJson('/api/keys', { name: 'x', expires: 'soon' }, admin)).status, 400);
    const expired = await postJson(`/api/keys/${created.id}/expire`, {}, admin);
    assert.equal(((await expired.json()) as { state: string }).state, 'expired');
    assert.equal((await fetch(`${control}/api/me`, { headers: asReviewer })).status, 401);
    assert.equal((await postJson('/api/keys/nope/revoke', {}, admin)).status, 404);
    const recorded = events('key.revoked').at(-1)!;
    assert.deepEqual([(recorded.payload as { id: string; how: string }).id, (recorded.payload as { how: string }).how], [created.id, 'expire']);
    assert.equal(events('key.created').at(-1)!.actor, `key:${gw.firstKey!.split('_')[1]}`);
  });

  it('checks the session and Origin on WebSocket upgrades', async () => {
    const cookie = sessionCookieOf(await postJson('/api/auth/key', { key: gw.firstKey }));
    const hello = await wsFirst({ cookie, origin: control });
    assert.equal(hello.type, 'hello');
    await assert.rejects(wsFirst({ cookie, origin: 'http://evil.example' }), /HTTP 403/);
    await assert.rejects(wsFirst({ cookie }), /HTTP 401/, 'a cookie without Origin is not a browser: Bearer only');
    await assert.rejects(wsFirst({ origin: control }), /HTTP 401/);
    await assert.rejects(wsFirst({ authorization: 'Bearer cst_aaaaaaaaaaaa_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb' }), /HTTP 401/);
    assert.equal((await wsFirst({ authorization: `Bearer ${gw.firstKey}` })).type, 'hello');
    const token = await idp.clientCredentialsToken({ clientId: 'svc-approver' });
    const viaOidc = await wsFirst({ authorization: `Bearer ${token}` });
    assert.equal(viaOidc.type === 'hello' && viaOidc.user.subject, `${idp.issuer}#svc-approver`);
  });

  // Last: it leaves this address rate-limited for a minute.
  it('aggregates failures per address, refuses the flood with 429, and never locks out a valid key or link', async () => {
    const before = events('auth.failure').length;
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) statuses.push((await postJson('/api/auth/key', { key: `cst_aaaaaaaaaaaa_${'b'.repeat(31)}${i % 10}` })).status);
    for (let i = 0; i < 25; i++) statuses.push((await fetch(`${control}/login?token=x${i}`, { redirect: 'manual' })).status);
    assert.equal(statuses.at(-1), 429, 'over the limit a failed attempt is refused');
    const recorded = events('auth.failure').length - before;
    assert.ok(recorded <= 1, `${recorded} failures recorded one by one (the rest are counted)`);
    assert.equal((await postJson('/api/auth/key', { key: gw.firstKey })).status, 200, 'a good key is never locked out');
    const link = await fetch(gw.loginLink(), { redirect: 'manual' });
    assert.equal(link.status, 303);
    assert.equal(link.headers.get('location'), '/', 'nor a good link');
    gw.services.login.failures.flush(true);
    const summary = events('auth.failures').at(-1)!.payload as { source: string; count: number; firstSeen: number; lastSeen: number };
    assert.equal(summary.source, '127.0.0.1');
    assert.ok(summary.count >= 55, `the summary counts every failure (${summary.count})`);
    assert.ok(summary.lastSeen >= summary.firstSeen);
  });
});
