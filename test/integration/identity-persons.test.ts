// Separation of duties counts persons, not credentials, against the running gateway with the real
// OpenID provider: every attempt in test/fixtures/identity/one-person-one-vote.txt tries to satisfy
// a 2-person hold (or approve one's own request) with another credential of the same person. The
// effect is checked where it lands: the upstream never receives the held request, and the SDK
// caller is denied. Also: locking a person ends every session of theirs, from the console and from
// the CLI; an OIDC-token console session ends with the token; admin only from identity.roles.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import type { HoldView } from '../../shared/holds';
import { main as cli } from '../../proxy/cli';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { startTestIdp, type TestIdp } from '../support/oidc-provider';
import { eventually, startTestGateway, type TestGateway } from './http-harness';

interface Attempt {
  line: string;
  requester: string;
  voters: string[];
  expect: string[];
}

const attempts: Attempt[] = readFileSync(new URL('../fixtures/identity/one-person-one-vote.txt', import.meta.url), 'utf8')
  .split('\n')
  .filter((l) => l.trim() && !l.startsWith('#'))
  .map((line) => {
    const [requester, voters, expect] = line.split('|').map((p) => p.trim());
    return { line, requester: requester!, voters: voters!.split(',').map((v) => v.trim()), expect: expect!.split(',').map((v) => v.trim()) };
  });

let upstream: LlmUpstream;
let idp: TestIdp;
let t: TestGateway;
/** Bearer credentials (keys, tokens) and console cookies, by name. */
const bearer: Record<string, string> = {};
const cookie: Record<string, string> = {};
let n = 0;

function headersOf(who: string): Record<string, string> {
  if (cookie[who]) return { cookie: cookie[who], origin: t.control };
  return { authorization: `Bearer ${bearer[who]}` };
}

async function call(who: string, method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`${t.control}${path}`, { method, headers: { 'content-type': 'application/json', ...headersOf(who) }, body: body === undefined ? undefined : JSON.stringify(body) });
}

async function signInWithKey(key: string): Promise<string> {
  const res = await fetch(`${t.control}/api/auth/key`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key }) });
  assert.equal(res.status, 200, await res.clone().text());
  return res.headers.getSetCookie()[0]!.split(';')[0]!;
}

async function mint(who: string, body: Record<string, unknown>): Promise<string> {
  const res = await call(who, 'POST', '/api/keys', body);
  assert.equal(res.status, 200, await res.clone().text());
  return ((await res.json()) as { key: string }).key;
}

/** Asks and resolves with how the SDK call ended: `answered`, or `refused <status>`. */
function outcome(who: string, prompt: string): Promise<string> {
  return ask(who, prompt).then(
    () => 'answered',
    (err: unknown) => (err instanceof OpenAI.APIError ? `refused ${err.status}` : `failed ${String(err)}`),
  );
}

function ask(who: string, prompt: string) {
  return new OpenAI({ baseURL: `${t.proxy}/openai`, apiKey: bearer[who]!, maxRetries: 0, timeout: 30_000 }).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: prompt }] });
}

async function pendingHold(marker: string): Promise<HoldView> {
  return eventually(async () => (await t.api<{ holds: HoldView[] }>('/api/holds?state=pending')).holds.find((h) => h.summary.includes(marker)), `a pending hold for ${marker}`, 10_000);
}

const upstreamSaw = (marker: string) => upstream.requests.some((r) => r.body.toString('utf8').includes(marker));

describe('one person, one vote', () => {
  before(async () => {
    upstream = await startLlmUpstream({ openaiKey: 'sk-upstream-openai-0123456789' });
    idp = await startTestIdp({ accessTokenTtl: 5 });
    t = await startTestGateway(upstream, {
      identity: { oidc: [{ issuer: idp.issuer, audience: idp.audience }] },
      policies: [
        { name: 'bot-allowed', match: { users: ['ci-bot'] }, action: 'allow' },
        { name: 'no-forbidden', match: { connections: ['openai'], content: 'forbidden-thing' }, action: 'deny' },
        { name: 'two-person', match: { connections: ['openai'], content: 'two-person' }, action: 'hold', hold: { approvers: ['dba'], min: 2, timeout: '2m' } },
      ],
    });
    bearer['local-key'] = t.adminKey;
    const link = await fetch(t.gw.loginLink(), { redirect: 'manual' });
    cookie['local-link'] = link.headers.getSetCookie()[0]!.split(';')[0]!;
    bearer['local-minted'] = await mint('local-link', { name: 'second identity', groups: ['dba'] });
    bearer['alice-key1'] = await mint('local-key', { name: 'alice laptop', groups: ['dba', 'admin'], newOwner: 'alice' });
    cookie['alice-cookie'] = await signInWithKey(bearer['alice-key1']);
    bearer['alice-key2'] = await mint('alice-cookie', { name: 'alice ci', groups: ['dba'] });
    bearer['bob'] = await mint('local-key', { name: 'bob', groups: ['engineering'], newOwner: 'bob' });
    bearer['carol'] = await mint('local-key', { name: 'carol', groups: ['dba'], newOwner: 'carol' });
    const linked = await call('local-key', 'POST', '/api/persons/alice/link', { credential: `${idp.issuer}#alice-sub` });
    assert.equal(linked.status, 200, await linked.clone().text());
    // A key signed in to the console first, then linked to alice: its session votes as alice.
    bearer['late-key'] = await mint('local-key', { name: 'found later', groups: ['dba'], newOwner: 'unknown owner' });
    cookie['late-cookie'] = await signInWithKey(bearer['late-key']);
    const late = await call('local-key', 'POST', '/api/persons/alice/link', { credential: `key:${bearer['late-key'].split('_')[1]}` });
    assert.equal(late.status, 200, await late.clone().text());
    bearer['alice-oidc'] = await idp.signWithProviderKey({ iss: idp.issuer, aud: idp.audience, sub: 'alice-sub', groups: ['dba'], exp: Math.floor(Date.now() / 1000) + 600 });
  });
  after(async () => {
    await t?.stop();
    await idp?.close();
    await upstream?.close();
  });

  for (const a of attempts) {
    it(`refuses: ${a.line}`, async () => {
      const marker = `two-person #${++n} ${a.requester}`;
      const pending = outcome(a.requester, marker);
      const hold = await pendingHold(marker);
      for (const [i, voter] of a.voters.entries()) {
        const res = await call(voter, 'POST', `/api/holds/${hold.id}/decision`, { decision: 'approve', reason: `vote ${i}` });
        const body = (await res.json()) as { error?: { code: string } };
        assert.equal(res.status === 200 ? 'ok' : body.error?.code, a.expect[i], `${voter}'s vote`);
      }
      // The effect: still pending, the upstream never saw it; then another person denies it.
      await new Promise((r) => setTimeout(r, 200));
      assert.equal((await t.api<HoldView>(`/api/holds/${hold.id}`)).state, 'pending');
      assert.equal(upstreamSaw(marker), false, 'the held request never reached the upstream');
      assert.equal((await call('carol', 'POST', `/api/holds/${hold.id}/decision`, { decision: 'deny', reason: 'cleanup' })).status, 200);
      assert.equal(await pending, 'refused 403');
      assert.equal(upstreamSaw(marker), false);
    });
  }

  it('tells an approver who may not decide why ("you asked for this"), and two persons do approve', async () => {
    const marker = `two-person #${++n} works`;
    const pending = ask('alice-key1', marker);
    const hold = await pendingHold(marker);
    const seen = (await (await call('alice-key2', 'GET', `/api/holds/${hold.id}`)).json()) as HoldView;
    assert.equal(seen.youMayNotDecide?.code, 'self_approval');
    assert.match(seen.youMayNotDecide!.message, /you asked for this/);
    const carolView = (await (await call('carol', 'GET', `/api/holds/${hold.id}`)).json()) as HoldView;
    assert.equal(carolView.youMayNotDecide, undefined);
    assert.ok(seen.approversWhoCan!.includes('carol'), `carol can (${seen.approversWhoCan!.join(', ')})`);
    assert.ok(!seen.approversWhoCan!.includes('alice'), 'the requester is not offered as an approver');
    assert.ok(!seen.approversWhoCan!.includes('bob'), 'nor someone outside the approver groups');
    assert.equal((await call('carol', 'POST', `/api/holds/${hold.id}/decision`, { decision: 'approve', reason: 'ok' })).status, 200);
    const afterVote = (await (await call('alice-key2', 'GET', `/api/holds/${hold.id}`)).json()) as HoldView;
    assert.ok(!afterVote.approversWhoCan!.includes('carol'), 'one who voted is no longer listed');
    assert.equal((await call('local-key', 'POST', `/api/holds/${hold.id}/decision`, { decision: 'approve', reason: 'ok' })).status, 200);
    await pending;
    assert.ok(upstreamSaw(marker), 'two persons approved: the request went through');
  });

  it('never matches users: rules on a display name or unverified e-mail in a token', async () => {
    const before = upstream.requests.length;
    for (const claims of [{ email: 'ci-bot' }, { email: 'ci-bot', email_verified: false }, { preferred_username: 'ci-bot', name: 'ci-bot' }, { client_id: 'ci-bot' }]) {
      const token = await idp.signWithProviderKey({ iss: idp.issuer, aud: idp.audience, sub: 'u-impostor', exp: Math.floor(Date.now() / 1000) + 600, ...claims });
      const r = await fetch(`${t.proxy}/openai/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'forbidden-thing' }] }) });
      assert.equal(r.status, 403, `${JSON.stringify(claims)} does not make the token "ci-bot"`);
    }
    assert.equal(upstream.requests.length, before, 'nothing reached the upstream');
  });

  it('records every person created and every link, with who did it', () => {
    const events = t.gw.services.store.events(1, 100_000);
    const created = events.filter((e) => e.kind === 'person.created').map((e) => (e.payload as { name: string }).name);
    for (const name of ['alice', 'bob', 'carol']) assert.ok(created.includes(name), `person ${name} recorded`);
    const link = events.find((e) => e.kind === 'person.linked' && (e.payload as { credential: string }).credential.startsWith('http'))!;
    assert.equal((link.payload as { credential: string }).credential, `${idp.issuer}#alice-sub`);
    assert.equal(link.actor, `key:${t.adminKey.split('_')[1]}`);
    const minted = events.filter((e) => e.kind === 'key.created' && (e.payload as { name: string }).name === 'second identity')[0]!;
    assert.equal((minted.payload as { person: string }).person, 'person_local', 'a key minted by the local user is the local person');
  });

  it('ends a console session made from an OIDC token when the token expires', async () => {
    const token = await idp.signWithProviderKey({ iss: idp.issuer, aud: idp.audience, sub: 'shortlived', groups: ['admin'], exp: Math.floor(Date.now() / 1000) + 3 });
    const res = await fetch(`${t.control}/api/auth/key`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ key: token }) });
    assert.equal(res.status, 200);
    const line = res.headers.getSetCookie()[0]!;
    const maxAge = Number(/Max-Age=(\d+)/.exec(line)![1]);
    assert.ok(maxAge <= 3, `the cookie lasts no longer than the token (Max-Age ${maxAge})`);
    const c = line.split(';')[0]!;
    assert.equal((await fetch(`${t.control}/api/me`, { headers: { cookie: c } })).status, 200);
    await new Promise((r) => setTimeout(r, 3500));
    assert.equal((await fetch(`${t.control}/api/me`, { headers: { cookie: c } })).status, 401, 'the server refuses the session once the token has expired');
    const mintAfter = await fetch(`${t.control}/api/keys`, { method: 'POST', headers: { cookie: c, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'permanent' }) });
    assert.equal(mintAfter.status, 401, 'no permanent key from an expired token');
  });

  it('locks a person over REST: their keys, token and console session stop, their held request is cancelled', async () => {
    const marker = `two-person #${++n} before lock`;
    const pending = outcome('alice-key2', marker);
    await pendingHold(marker);
    const res = await call('local-key', 'POST', '/api/persons/alice/lock');
    assert.equal(res.status, 200, await res.clone().text());
    assert.equal(((await res.json()) as { keysRevoked: string[] }).keysRevoked.length, 3, 'her two keys and the one linked to her');
    assert.equal(await pending, 'refused 403', 'the held request is cancelled');
    assert.equal(upstreamSaw(marker), false);
    for (const who of ['alice-key1', 'alice-key2', 'alice-oidc']) {
      const r = await fetch(`${t.proxy}/openai/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${bearer[who]}`, 'content-type': 'application/json' }, body: '{"model":"gpt-4o","messages":[]}' });
      assert.equal(r.status, 401, `${who} is refused on the proxy`);
    }
    for (const who of ['alice-cookie', 'late-cookie']) assert.equal((await fetch(`${t.control}/api/me`, { headers: { cookie: cookie[who]! } })).status, 401, `${who}: her console sessions are over`);
    assert.ok(t.gw.services.store.events(1, 100_000).some((e) => e.kind === 'person.locked' && (e.payload as { person: string }).person !== undefined));
  });

  it('locks a person from the CLI: the running gateway cancels their held request within a second', async () => {
    const marker = `two-person #${++n} cli lock`;
    const pending = outcome('bob', marker);
    await pendingHold(marker);
    const out: string[] = [];
    const code = await cli(['persons', 'lock', 'bob', '--data-dir', t.gw.services.dataDir], { out: (s) => void out.push(s), err: (s) => void out.push(s) });
    assert.equal(code, 0, out.join(''));
    const started = Date.now();
    assert.equal(await pending, 'refused 403');
    assert.ok(Date.now() - started < 3000, 'picked up within about a second');
    const r = await fetch(`${t.proxy}/openai/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${bearer['bob']}`, 'content-type': 'application/json' }, body: '{"model":"gpt-4o","messages":[]}' });
    assert.equal(r.status, 401);
  });
});
