// Persons and live sessions as units: the hold queue counts persons (and, under
// separationOfDuties: idp, only IdP-backed ones); the person directory records what it creates and
// links, sees a lock made by another process; the live-session registry ends sessions whose
// credential expired, was revoked, or whose person was locked.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HoldSpec } from '../../shared/config';
import type { Identity } from '../../shared/identity';
import type { ServerMessage } from '../../shared/messages';
import { HoldDecisionError, HoldQueue } from '../../proxy/approvals/hold-queue';
import { AuditStore } from '../../proxy/audit/store';
import { EventBus } from '../../proxy/bus';
import { LiveSessions } from '../../proxy/identity/live-sessions';
import { PersonDirectory } from '../../proxy/identity/persons';
import { tempDir } from '../support/tmp';

const id = (subject: string, person: string | undefined, groups = ['dba']): Identity => ({ subject, name: subject, groups, roles: ['user'], via: 'api-key', ...(person ? { person } : {}) });

async function pendingHold(queue: HoldQueue, messages: ServerMessage[], requester: Identity): Promise<string> {
  void queue.request({ identity: requester, connection: 'db', protocol: 'postgres', session: null, rule: 'r', summary: 'DROP TABLE t', spec: HoldSpec.parse({ approvers: ['dba'], min: 2 }), signal: new AbortController().signal });
  for (let i = 0; i < 200; i++) {
    const m = messages.findLast((x) => x.type === 'hold.created');
    if (m && m.type === 'hold.created' && m.hold.requester === requester.subject) return m.hold.id;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error('no hold');
}

async function refusedWith(fn: () => Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(fn, (err: unknown) => err instanceof HoldDecisionError && err.code === code, code);
}

describe('persons', () => {
  it('counts persons toward k-of-N and self-approval, whatever credential votes', async () => {
    const store = AuditStore.open(tempDir());
    const bus = new EventBus();
    const messages: ServerMessage[] = [];
    bus.subscribe((m) => messages.push(m));
    const queue = new HoldQueue({ store, bus });
    const h = await pendingHold(queue, messages, id('key:a1', 'p_alice'));
    await refusedWith(() => queue.decide(h, id('key:a2', 'p_alice'), { decision: 'approve' }), 'self_approval');
    await refusedWith(() => queue.decide(h, id('https://idp#alice', 'p_alice'), { decision: 'approve' }), 'self_approval');
    await queue.decide(h, id('key:b1', 'p_bob'), { decision: 'approve' });
    await refusedWith(() => queue.decide(h, id('key:b2', 'p_bob'), { decision: 'approve' }), 'already_voted');
    assert.equal(queue.get(h)!.state, 'pending');
    assert.deepEqual(queue.get(h)!.votes.map((v) => v.person), ['p_bob']);
    await queue.decide(h, id('key:c1', 'p_carol'), { decision: 'approve' });
    assert.equal(queue.get(h)!.state, 'approved');
    await queue.close();
    store.close();
  });

  it('under separationOfDuties idp, only IdP-backed persons approve (anyone may still deny)', async () => {
    const store = AuditStore.open(tempDir());
    const bus = new EventBus();
    const messages: ServerMessage[] = [];
    bus.subscribe((m) => messages.push(m));
    const queue = new HoldQueue({ store, bus, separationOfDuties: 'idp', idpBacked: (p) => p.startsWith('idp_') });
    const h = await pendingHold(queue, messages, id('key:dev', 'p_dev'));
    await refusedWith(() => queue.decide(h, id('key:minted', 'p_local'), { decision: 'approve' }), 'not_idp_backed');
    await queue.decide(h, id('https://idp#x', 'idp_x'), { decision: 'approve' });
    await queue.decide(h, id('key:y', 'p_y'), { decision: 'deny', reason: 'no' });
    assert.equal(queue.get(h)!.state, 'denied');
    store.close();
  });

  it('records persons created and credentials linked; sees a lock made by another process', () => {
    const dir = tempDir();
    const store = AuditStore.open(dir);
    const persons = new PersonDirectory(store);
    const alice = persons.create('alice', 'key:admin', 'test');
    persons.attach('key:a1', 'api-key', alice.id, 'key:admin');
    const other = persons.ensure('https://idp#alice', 'oidc', 'alice', 'system', 'first seen');
    assert.notEqual(other, alice.id);
    assert.equal(persons.isIdpBacked(alice.id), false);
    persons.link('https://idp#alice', 'oidc', alice.id, 'key:admin');
    assert.equal(persons.personOf('https://idp#alice'), alice.id);
    assert.equal(persons.isIdpBacked(alice.id), true);
    assert.equal(persons.isIdpBacked(other), false, 'the old person lost its only IdP credential');
    const kinds = store.events(1, 100).map((e) => e.kind);
    assert.deepEqual(kinds.filter((k) => k.startsWith('person.')), ['person.created', 'person.created', 'person.linked']);
    for (const bad of ['', ' ', 'a\u0000b', 'x'.repeat(201)]) assert.throws(() => persons.create(bad, 'cli', 'test'), /printable/);

    const locked: string[] = [];
    persons.onLock((p) => locked.push(p));
    const cli = AuditStore.open(dir);
    new PersonDirectory(cli).lock(alice.id, 'cli', { keysRevoked: [], consoleSessionsEnded: 0 });
    cli.close();
    assert.equal(persons.isLocked(alice.id), false, 'not seen before the refresh');
    persons.refresh();
    assert.equal(persons.isLocked(alice.id), true);
    assert.deepEqual(locked, [alice.id], 'listeners hear of a lock made elsewhere');
    persons.refresh();
    assert.deepEqual(locked, [alice.id], 'once');
    store.close();
  });

  it('ends live sessions whose credential expired, was revoked, or whose person was locked', () => {
    const revoked = new Set<string>();
    const lockedPersons = new Set<string>();
    const live = new LiveSessions({ keyEnded: (k) => (revoked.has(k) ? 'was revoked' : undefined), personLocked: (p) => lockedPersons.has(p) });
    const ended: Record<string, string> = {};
    const open = (name: string, identity: Parameters<LiveSessions['register']>[0]['identity']) => live.register({ protocol: 'postgres', identity, terminate: (why) => (ended[name] = why) });
    const now = Date.now();
    open('token', { subject: 'https://idp#t', person: 'p1', credentialExpiresAt: now + 1000 });
    open('key', { subject: 'key:k', person: 'p2', keyId: 'k' });
    open('locked', { subject: 'key:l', person: 'p3', keyId: 'l' });
    const closeDone = open('closed', { subject: 'key:z', person: 'p3', keyId: 'z' });
    closeDone();
    assert.equal(live.sweep(now), 0);
    revoked.add('k');
    lockedPersons.add('p3');
    assert.equal(live.sweep(now + 1000), 3);
    assert.match(ended['token']!, /expired/);
    assert.match(ended['key']!, /API key .* was revoked/);
    assert.match(ended['locked']!, /locked/);
    assert.equal(ended['closed'], undefined, 'an unregistered session is left alone');
    assert.equal(live.size, 0);
    open('again', { subject: 'key:m', person: 'p9' });
    assert.equal(live.endPerson('p9', 'terminating connection: locked'), 1);
  });
});
