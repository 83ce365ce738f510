/**
 * Persons are the group's (docs/SCALE-OUT.md, "Persons"), against the real PostgreSQL server with
 * two gateways in this process, B approved by A, and no person created with the same id on both:
 * a key created on A for a new person works on B as that person, and B can give that person
 * another key; a hold on A needing two approvers counts that person once whether they vote on A or
 * on B, and is released by a second person; a person locked on A is refused on B, and their
 * request held on B ends; rows written into the store by hand (a lock, a person and a link, signed
 * by a gateway row also written by hand) change nothing. Checked by what the upstream received.
 */
import assert from 'node:assert/strict';
import { sign } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { canonicalize } from '../../shared/canonical-json';
import type { HoldView } from '../../shared/holds';
import type { Person } from '../../shared/identity';
import { Gateway } from '../../proxy/gateway';
import { startEchoUpstream, type EchoUpstream } from '../support/echo-upstream';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { memberApi, approveMember, callApi, forgedMember, sendThrough, type StoreMember, startStoreMember } from '../support/store-member';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';

type Member = StoreMember;

const root = tempDir('custody-scale-persons-');
let db: TestDatabase;
let echo: EchoUpstream;
const running: Gateway[] = [];

async function startMember(name: string, url: string): Promise<Member> {
  const m = await startStoreMember(join(root, name), {
    listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
    connections: [{ name: 'echo', kind: 'http', upstream: echo.url }],
    policies: [{ name: 'hold-two', match: { paths: ['/two/*'] }, action: 'hold', hold: { approvers: ['ops'], min: 2, timeout: '2m' } }],
    store: { url },
  });
  running.push(m.gw);
  return m;
}

const send = (m: Member, key: string, path = 'plain') => sendThrough(m, key, echo, path);
const call = callApi;
const admin = memberApi;

const personsOn = async (m: Member) => (await admin<{ persons: Person[] }>(m, 'GET', '/api/persons')).persons;
const ownerOn = async (m: Member, keyId: string) => (await personsOn(m)).find((p) => p.credentials.some((c) => c.credential === `key:${keyId}`));

describe('persons are shared by the group', () => {
  let a: Member;
  let b: Member;
  /** Keys by name, with their ids and owners. */
  const keys: Record<string, { key: string; id: string; person: string }> = {};

  const createKey = async (m: Member, name: string, owner: { owner?: string; newOwner?: string }, groups: string[]) => {
    keys[name] = await admin<{ key: string; id: string; person: string }>(m, 'POST', '/api/keys', { name, groups, ...owner });
    return keys[name]!;
  };

  before(async () => {
    db = await createTestDatabase('custody_test_scale_persons');
    echo = await startEchoUpstream();
    a = await startMember('a', db.url);
    b = await startMember('b', db.url);
    await approveMember(a, b, async () => (await send(b, b.gw.firstKey!)).status === 200);
  });
  after(async () => {
    for (const gw of running) await gw.stop();
    await echo?.close();
    await db?.drop();
  });

  it('a key created on A for a new person works on B as that person, and B gives that person another key', async () => {
    const carol = await createKey(a, 'carol-a', { newOwner: 'Carol' }, ['ops']);
    const t0 = Date.now();
    const onB = await until('the key works on B', async () => {
      const r = await send(b, carol.key);
      return r.status === 200 && r;
    });
    const sharedMs = Date.now() - t0;
    assert.equal(onB.reached, true);
    const owner = await ownerOn(b, carol.id);
    assert.equal(owner?.id, carol.person, 'on B the key belongs to the person made on A');
    assert.equal(owner?.name, 'Carol');
    // The person is B's too: an admin of B names her as a new key's owner, no --id anywhere.
    const carolB = await createKey(b, 'carol-b', { owner: carol.person }, ['ops']);
    assert.equal(carolB.person, carol.person);
    await until('the key made on B belongs to Carol on A', async () => (await ownerOn(a, carolB.id))?.id === carol.person);
    // A key of A's local user is, on B, a key of that gateway's local person.
    const local = await createKey(a, 'local-a', {}, []);
    await until('the local key works on B', async () => (await send(b, local.key)).status === 200);
    assert.equal((await ownerOn(b, local.id))?.id, `person_local@${a.id}`);
    assert.equal((await ownerOn(a, local.id))?.id, 'person_local', 'A still calls its local user person_local');
    console.log(`# a key and its person made on A worked on B as that person after ${sharedMs} ms`);
  });

  it('a hold on A needing two persons counts Carol once, whether she votes on A or on B, and Dave releases it', async () => {
    await createKey(a, 'rita', { newOwner: 'Rita' }, ['dev']);
    await createKey(b, 'dave-b', { newOwner: 'Dave' }, ['ops']);
    await until('Rita\'s key works on A', async () => (await send(a, keys['rita']!.key)).status === 200);
    const tag = `two/held-${Math.random().toString(36).slice(2)}`;
    const response = fetch(`${a.http}/echo/${tag}`, { headers: { authorization: `Bearer ${keys['rita']!.key}` } });
    let settled = false;
    void response.then(
      () => (settled = true),
      () => (settled = true),
    );
    const hold = await until('the hold on B', async () => (await call<{ holds: HoldView[] }>(b, keys['dave-b']!.key, 'GET', '/api/holds?state=pending')).body.holds.find((h) => h.summary.includes(tag)));
    const onA = await call(a, keys['carol-a']!.key, 'POST', `/api/holds/${hold.id}/decision`, { decision: 'approve', reason: '' });
    assert.equal(onA.status, 200, JSON.stringify(onA.body));
    // B has heard of Carol's vote on A, or A counts her once anyway: either way she is one person.
    const onB = await call(b, keys['carol-b']!.key, 'POST', `/api/holds/${hold.id}/decision`, { decision: 'approve', reason: '' });
    assert.ok(onB.status === 200 || onB.status === 409, JSON.stringify(onB.body));
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(settled, false, 'Carol counted once: still held');
    assert.equal(echo.requests.filter((q) => q.target.includes(tag)).length, 0, 'the upstream has not seen it');
    const view = (await admin<HoldView>(a, 'GET', `/api/holds/${hold.id}`));
    assert.equal(view.state, 'pending');
    assert.ok(view.votes.every((v) => v.person === keys['carol-a']!.person), JSON.stringify(view.votes));
    const dave = await call(b, keys['dave-b']!.key, 'POST', `/api/holds/${hold.id}/decision`, { decision: 'approve', reason: '' });
    assert.equal(dave.status, 200, JSON.stringify(dave.body));
    assert.equal((await response).status, 200);
    assert.equal(echo.requests.filter((q) => q.target.includes(tag)).length, 1, 'released once the second person approved');
  });

  it('a person locked on A is refused on B, and their request held on B ends', async () => {
    const carol = keys['carol-a']!.person;
    assert.equal((await send(b, keys['carol-b']!.key)).status, 200);
    // Carol's own request, held on B (she cannot approve it herself).
    const tag = `two/carol-${Math.random().toString(36).slice(2)}`;
    const held = fetch(`${b.http}/echo/${tag}`, { headers: { authorization: `Bearer ${keys['carol-b']!.key}` } });
    held.catch(() => {});
    await until('Carol\'s request held on B', async () => (await call<{ holds: HoldView[] }>(b, keys['dave-b']!.key, 'GET', '/api/holds?state=pending')).body.holds.find((h) => h.summary.includes(tag)));
    await admin(a, 'POST', `/api/persons/${carol}/lock`);
    const t0 = Date.now();
    const refused = await until('B refuses Carol', async () => {
      const r = await send(b, keys['carol-b']!.key);
      return r.status !== 200 && r;
    });
    const lockedAfter = Date.now() - t0;
    assert.equal(refused.status, 401);
    assert.equal(refused.reached, false, 'the upstream never received the refused request');
    // Announced by the store on commit (NOTIFY custody_config): within a second, not a polling round.
    assert.ok(lockedAfter < 1000, `B refused Carol ${lockedAfter} ms after A locked her`);
    const ended = await held;
    assert.notEqual(ended.status, 200, 'her held request did not go through');
    // Ended by the lock itself (her keys' revocations travel too, but end no held request).
    assert.match(await ended.text(), /the requester was locked/);
    assert.equal(echo.requests.filter((q) => q.target.includes(tag)).length, 0, 'the upstream never saw her held request');
    assert.equal((await send(b, keys['carol-a']!.key)).status, 401);
    const onB = (await personsOn(b)).find((p) => p.id === carol);
    assert.ok(onB?.lockedAt, 'B holds the lock');
    console.log(`# a person locked on A was refused by B after ${lockedAfter} ms`);
  });

  it('a lock, a person and a link written into the store by hand, signed by a gateway row also written by hand, change nothing', async () => {
    const dave = keys['dave-b']!;
    const carol = keys['carol-a']!.person;
    const sql = await db.client();
    try {
      const { privateKey, id: mallory } = await forgedMember(sql, 'custody/mallory');
      const signed = (text: string) => sign(null, Buffer.from(text), privateKey).toString('base64');
      const at = Date.now();
      // Dave locked.
      await sql.query('INSERT INTO custody_person_locks (id, gateway, at, locked_by, signature) VALUES ($1, $2, $3, $4, $5)', [dave.person, mallory, at, 'mallory', signed(`custody-person-lock/v1\n${canonicalize([dave.person, at, 'mallory'])}`)]);
      // Dave's key moved to Carol, who is locked: it would be refused if the link were taken.
      await sql.query('INSERT INTO custody_person_links (credential, gateway, person, kind, linked_at, linked_by, signature) VALUES ($1, $2, $3, $4, $5, $6, $7)', [
        `key:${dave.id}`,
        mallory,
        carol,
        'api-key',
        at + 60_000,
        'mallory',
        signed(`custody-person-link/v1\n${canonicalize([`key:${dave.id}`, carol, 'api-key', at + 60_000, 'mallory'])}`),
      ]);
      // A person of mallory's own.
      await sql.query("INSERT INTO custody_persons (id, name, created_at, created_by, origin) VALUES ('person_mallory', 'Mallory', $1, 'mallory', $2)", [at, mallory]);
      await sql.query('INSERT INTO custody_person_signatures (id, gateway, signature) VALUES ($1, $2, $3)', ['person_mallory', mallory, signed(`custody-person/v1\n${canonicalize(['person_mallory', 'Mallory', at, 'mallory'])}`)]);
    } finally {
      await sql.end();
    }
    // Several rounds of both gateways' workers.
    await new Promise((r) => setTimeout(r, 3500));
    for (const m of [a, b]) {
      const r = await send(m, dave.key);
      assert.equal(r.status, 200, `${m === a ? 'A' : 'B'} refused Dave: ${r.body}`);
      assert.equal(r.reached, true);
      const persons = await personsOn(m);
      assert.equal(persons.find((p) => p.id === dave.person)?.lockedAt, null);
      assert.equal((await ownerOn(m, dave.id))?.id, dave.person);
      assert.equal(persons.find((p) => p.id === 'person_mallory'), undefined, 'the forged person was not taken');
    }
  });
});
