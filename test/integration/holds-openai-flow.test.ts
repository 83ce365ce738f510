// The whole approval flow with the official OpenAI SDK: a prompt matching a hold rule waits in the
// gateway; an approver signed in to the console gets `hold.created` on the WebSocket at once and
// decides over REST; the SDK call then completes (approval) or fails with a 403 naming the decision
// and reason (denial, timeout). Everything ends up in the verifiable log.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import type { HoldView } from '../../shared/holds';
import type { ServerMessage } from '../../shared/messages';
import { DEFAULT_REPLY, type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { startTestGateway, type TestGateway } from './http-harness';
import { EventsClient } from './holds-ws-client';

type HoldMsg = Extract<ServerMessage, { type: 'hold.created' | 'hold.updated' | 'hold.resolved' }>;

let upstream: LlmUpstream;
let t: TestGateway;
const keys: Record<string, string> = {};
const cookies: Record<string, string> = {};

function sdk(who: string): OpenAI {
  return new OpenAI({ baseURL: `${t.proxy}/openai`, apiKey: keys[who]!, maxRetries: 0, timeout: 20_000 });
}

function ask(who: string, prompt: string) {
  const answer = sdk(who).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: prompt }] });
  // The answer may come before the decision's own response does: handled here, asserted later.
  answer.catch(() => {});
  return answer;
}

async function decide(who: string, id: string, body: Record<string, unknown>): Promise<Response> {
  return fetch(`${t.control}/api/holds/${id}/decision`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', cookie: cookies[who]!, origin: t.control },
    body: JSON.stringify(body),
  });
}

async function signIn(who: string): Promise<void> {
  const res = await fetch(`${t.control}/api/auth/key`, { method: 'POST', headers: { 'content-type': 'application/json', origin: t.control }, body: JSON.stringify({ key: keys[who] }) });
  assert.equal(res.status, 200);
  cookies[who] = res.headers.getSetCookie()[0]!.split(';')[0]!;
}

const created = (pred: (h: HoldView) => boolean = () => true) => (m: ServerMessage) => m.type === 'hold.created' && pred(m.hold);

describe('holds with the OpenAI SDK', () => {
  let alice: EventsClient;

  before(async () => {
    upstream = await startLlmUpstream({ openaiKey: 'sk-upstream-openai-0123456789' });
    t = await startTestGateway(upstream, {
      policies: [
        { name: 'two-person-rule', match: { connections: ['openai'], content: '(?i)wire transfer' }, action: 'hold', hold: { approvers: ['dba'], min: 2 } },
        { name: 'quick-timeout', match: { connections: ['openai'], content: 'tick tock' }, action: 'hold', hold: { approvers: ['dba'], timeout: '1s' } },
        { name: 'hold-bulk-export', match: { connections: ['openai'], content: '(?i)(export|dump) (all|every)' }, action: 'hold', reason: 'bulk exports need security sign-off', hold: { approvers: ['dba'], reason: 'required' } },
      ],
    });
    const make = (name: string, groups: string[]) => (keys[name] = t.gw.services.keys.create({ name, groups }).key);
    make('dev', ['engineering']);
    make('dba-dev', ['dba']);
    make('alice', ['dba']);
    make('bob', ['dba']);
    make('mallory', ['marketing']);
    for (const who of ['alice', 'bob', 'dba-dev', 'mallory']) await signIn(who);
    alice = await EventsClient.connect(t.control, { cookie: cookies['alice'], origin: t.control });
  });
  after(async () => {
    await alice?.close();
    await t.stop();
    await upstream.close();
  });

  it('holds the request until an approver approves; the SDK then gets its answer', async () => {
    const pending = ask('dev', 'Please export all customer records');
    const msg = await alice.waitNew<HoldMsg>(created());
    const hold = msg.hold;
    assert.equal(hold.rule, 'hold-bulk-export');
    assert.equal(hold.ruleReason, 'bulk exports need security sign-off');
    assert.equal(hold.requesterName, 'dev');
    assert.match(hold.summary, /POST \/chat\/completions gpt-4o: "Please export all customer records"/);
    assert.ok(hold.expiresAt - hold.createdAt >= 299_000, 'default timeout of 5 minutes');
    assert.equal(upstream.requestsTo('/v1/chat').length, 0, 'nothing reached the upstream while held');

    assert.equal((await decide('alice', hold.id, { decision: 'approve' })).status, 400, 'this rule requires a reason');
    const ok = await decide('alice', hold.id, { decision: 'approve', reason: 'ticket SEC-7' });
    assert.equal(ok.status, 200);
    const completion = await pending;
    assert.equal(completion.choices[0]!.message.content, DEFAULT_REPLY);
    const resolved = await alice.next<HoldMsg>((m) => m.type === 'hold.resolved' && m.hold.id === hold.id);
    assert.equal(resolved.hold.state, 'approved');

    // identity, rule, decision, approver and reason are in the verifiable log, in the request's session
    const events = await t.events(hold.session!);
    const kinds: string[] = events.map((e) => e.kind);
    for (const k of ['http.request', 'policy.decision', 'hold.created', 'hold.vote', 'hold.resolved', 'http.response']) assert.ok(kinds.includes(k), `${k} recorded`);
    assert.ok(kinds.indexOf('hold.resolved') < kinds.indexOf('http.response'));
    const vote = events.find((e) => e.kind === 'hold.vote')!;
    assert.equal(vote.actor, `key:${keys['alice']!.split('_')[1]}`);
    assert.deepEqual([(vote.payload as { decision: string }).decision, (vote.payload as { reason: string }).reason], ['approve', 'ticket SEC-7']);
    assert.equal(events.find((e) => e.kind === 'hold.created')!.actor, `key:${keys['dev']!.split('_')[1]}`);
  });

  it('denial answers the SDK with a 403 naming the decision and the reason', async () => {
    const pending = ask('dev', 'dump every invoice please');
    const { hold } = await alice.waitNew<HoldMsg>(created());
    assert.equal((await decide('alice', hold.id, { decision: 'deny', reason: 'not without a DPA' })).status, 200);
    await assert.rejects(pending, (err: unknown) => {
      assert.ok(err instanceof OpenAI.APIError);
      assert.equal(err.status, 403);
      assert.match(err.message, /denied by alice: not without a DPA/);
      return true;
    });
    assert.equal(upstream.requestsTo('/v1/chat').length, 1, 'only the approved request reached the upstream');
  });

  it('a hold that times out denies the SDK call', async () => {
    const t0 = Date.now();
    await assert.rejects(ask('dev', 'tick tock'), (err: unknown) => {
      assert.ok(err instanceof OpenAI.APIError);
      assert.equal(err.status, 403);
      assert.match(err.message, /expired.*timed out after 1s/);
      return true;
    });
    assert.ok(Date.now() - t0 >= 900);
    const held = await alice.next<HoldMsg>((m) => m.type === 'hold.resolved' && m.hold.rule === 'quick-timeout');
    assert.equal(held.hold.state, 'expired');
  });

  it('refuses self-approval and non-approvers, over REST', async () => {
    const pending = ask('dba-dev', 'export all the things');
    const { hold } = await alice.waitNew<HoldMsg>(created((h) => h.requesterName === 'dba-dev'));
    const self = await decide('dba-dev', hold.id, { decision: 'approve', reason: 'mine' });
    assert.equal(self.status, 403);
    assert.equal(((await self.json()) as { error: { code: string } }).error.code, 'self_approval');
    const outsider = await decide('mallory', hold.id, { decision: 'approve', reason: 'looks fine' });
    assert.equal(outsider.status, 403);
    assert.equal((await decide('bob', hold.id, { decision: 'deny', reason: 'ask someone else' })).status, 200);
    await assert.rejects(pending, (err: unknown) => err instanceof OpenAI.APIError && err.status === 403);
  });

  it('k-of-N counts distinct approvers', async () => {
    let settled = false;
    const pending = ask('dev', 'initiate a wire transfer of $1M').finally(() => (settled = true));
    const { hold } = await alice.waitNew<HoldMsg>(created((h) => h.rule === 'two-person-rule'));
    assert.equal(hold.min, 2);
    assert.equal((await decide('alice', hold.id, { decision: 'approve', reason: 'ok' })).status, 200);
    const updated = await alice.next<HoldMsg>((m) => m.type === 'hold.updated' && m.hold.id === hold.id);
    assert.equal(updated.hold.votes.length, 1);
    assert.equal((await decide('alice', hold.id, { decision: 'approve', reason: 'really ok' })).status, 409);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(settled, false, 'one approver is not enough');
    assert.equal((await decide('bob', hold.id, { decision: 'approve', reason: 'second pair of eyes' })).status, 200);
    assert.equal((await pending).choices[0]!.message.content, DEFAULT_REPLY);
  });

  it('a client that disconnects cancels its hold', async () => {
    const ac = new AbortController();
    const pending = sdk('dev').chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'export all logs' }] }, { signal: ac.signal });
    const { hold } = await alice.waitNew<HoldMsg>(created());
    ac.abort();
    await assert.rejects(pending);
    const resolved = await alice.next<HoldMsg>((m) => m.type === 'hold.resolved' && m.hold.id === hold.id);
    assert.equal(resolved.hold.state, 'cancelled');
  });

  it('an approver who reconnects with its last sequence number misses nothing', async () => {
    const bobWs = await EventsClient.connect(t.control, { bearer: keys['bob'] });
    const last = bobWs.lastSeq;
    await bobWs.close();
    const p1 = ask('dev', 'export all orders');
    const h1 = (await alice.waitNew<HoldMsg>(created())).hold;
    await decide('alice', h1.id, { decision: 'deny', reason: 'no' });
    await assert.rejects(p1);
    const p2 = ask('dev', 'dump all users');
    const h2 = (await alice.waitNew<HoldMsg>(created())).hold;

    const again = await EventsClient.connect(t.control, { bearer: keys['bob'] });
    again.send({ type: 'resume', epoch: t.gw.services.bus.epoch, after: last });
    const missed2 = await again.next<HoldMsg>(created((h) => h.id === h2.id));
    const missed1 = await again.next<HoldMsg>((m) => m.type === 'hold.resolved' && m.hold.id === h1.id);
    assert.ok(missed1.seq < missed2.seq);
    const seqs = again.messages.filter((m) => m.type !== 'hello').map((m) => m.seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'replayed in order');
    assert.equal(new Set(seqs).size, seqs.length, 'no duplicates');
    assert.ok(!again.messages.some((m) => m.type === 'session.event'), 'an approver without the reviewer role gets no session events');
    await decide('bob', h2.id, { decision: 'deny', reason: 'no' });
    await assert.rejects(p2);

    again.send({ type: 'resume', epoch: 'some-other-run', after: 3 });
    const resync = await again.waitNew((m) => m.type === 'resync');
    assert.match((resync as Extract<ServerMessage, { type: 'resync' }>).reason, /restarted/);
    await again.close();
  });

  it('lists the hold history by state', async () => {
    const res = await fetch(`${t.control}/api/holds?state=denied`, { headers: { cookie: cookies['alice']! } });
    const body = (await res.json()) as { total: number; holds: HoldView[] };
    assert.ok(body.total >= 3);
    assert.ok(body.holds.every((h) => h.state === 'denied'));
    const mine = (await (await fetch(`${t.control}/api/holds`, { headers: { cookie: cookies['mallory']! } })).json()) as { total: number };
    assert.equal(mine.total, 0, 'a user outside the approver groups sees none of these holds');
    assert.equal((await fetch(`${t.control}/api/holds?state=bogus`, { headers: { cookie: cookies['alice']! } })).status, 400);
  });
});
