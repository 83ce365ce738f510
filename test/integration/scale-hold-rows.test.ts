/**
 * The shared store's hold tables (proxy/audit/shared-store/hold-rows.ts, migration 3) against the
 * real PostgreSQL server on 127.0.0.1:5432: the migration on a store at version 2, a final state
 * never overwritten, NOTIFY on commit, a reader's cursor that misses nothing under concurrent
 * writers, rows under a non-member's name ignored, a vote row's signature over the text its reader
 * checks, and leases: holds are claimed once, only after their owner's lease expired, and only by a
 * member.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign, verify } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import type { HoldView } from '../../shared/holds';
import { claimOrphanedHolds, HOLDS_CHANNEL, readHoldChanges, readPendingHolds, renewLease, signVoteRow, writeHoldRow, writeVoteRow } from '../../proxy/audit/shared-store/hold-rows';
import { migrateSharedStore, PG_MIGRATIONS } from '../../proxy/audit/shared-store/schema';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';

let db: TestDatabase;
let c: pg.Client;

const view = (id: string, state: HoldView['state'] = 'pending'): HoldView => ({
  id,
  state,
  session: null,
  connection: 'echo',
  protocol: 'http',
  requester: 'key:r',
  requesterName: 'r',
  rule: 'hold-one',
  summary: 'GET /x',
  approvers: ['ops'],
  min: 1,
  denyMin: 1,
  reasonRequired: false,
  createdAt: 1,
  expiresAt: 2,
  votes: [],
});
const hold = (id: string, gateway: string, state: HoldView['state'] = 'pending') => ({ id, gateway, view: view(id, state), created: { seq: 1, hash: 'a'.repeat(64) } });

async function member(id: string, status: 'enrolled' | 'approved' | 'pending'): Promise<void> {
  await c.query("INSERT INTO custody_gateways (id, public_key, key_name, name, status, request, requested_at, last_seen) VALUES ($1, 'k', 'n', $1, $2, 'r', 0, 0)", [id, status]);
}

before(async () => {
  db = await createTestDatabase('custody_test_scale_hold_rows');
  c = await db.client();
});
after(async () => {
  await db?.drop();
});

describe('hold rows in the shared store', () => {
  it('migration 3 and later apply on a store migrated to version 2, once', async () => {
    assert.deepEqual(await migrateSharedStore(c, PG_MIGRATIONS.slice(0, 2)), [1, 2]);
    assert.deepEqual(await migrateSharedStore(c), PG_MIGRATIONS.slice(2).map((m) => m.version));
    assert.deepEqual(await migrateSharedStore(c), []);
    await member('gw-a', 'enrolled');
    await member('gw-b', 'approved');
    await member('gw-p', 'pending');
  });

  it('announces each write on commit and never overwrites a final state', async () => {
    const listener = await db.client();
    const heard: string[] = [];
    listener.on('notification', (n) => heard.push(`${n.channel}:${n.payload}`));
    await listener.query(`LISTEN ${HOLDS_CHANNEL}`);
    assert.equal(await writeHoldRow(c, hold('hold_1', 'gw-a')), true);
    assert.equal(await writeHoldRow(c, { ...hold('hold_1', 'gw-a', 'denied'), resolved: { gateway: 'gw-a', seq: 3, hash: 'b'.repeat(64) } }), true);
    assert.equal(await writeHoldRow(c, hold('hold_1', 'gw-a', 'approved')), false, 'a final state stays');
    assert.equal(await writeVoteRow(c, { hold: 'hold_1', event: { gateway: 'gw-b', seq: 7, hash: 'c'.repeat(64) }, vote: { by: 'key:x', person: 'person_x', byName: 'x', decision: 'deny', reason: '', at: 1 } }), true);
    assert.equal(await writeVoteRow(c, { hold: 'hold_1', event: { gateway: 'gw-b', seq: 7, hash: 'c'.repeat(64) }, vote: { by: 'key:x', person: 'person_x', byName: 'x', decision: 'deny', reason: '', at: 1 } }), false, 'a retried vote is one row');
    const row = (await c.query<{ state: string; resolved_by: string }>('SELECT state, resolved_by FROM custody_holds WHERE id = $1', ['hold_1'])).rows[0]!;
    assert.deepEqual(row, { state: 'denied', resolved_by: 'gw-a' });
    for (let i = 0; i < 50 && heard.length < 3; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(heard, [`${HOLDS_CHANNEL}:hold_1`, `${HOLDS_CHANNEL}:hold_1`, `${HOLDS_CHANNEL}:hold_1`], 'two hold writes and one vote; nothing for the refused ones');
  });

  it('a reader following its cursor misses nothing while two writers race, and ignores rows of non-members', async () => {
    const start = await readPendingHolds(c);
    const w1 = await db.client();
    const w2 = await db.client();
    const seen = new Set<string>();
    let cursor = start.cursor;
    let done = false;
    const reader = (async () => {
      for (;;) {
        const last = done;
        const ch = await readHoldChanges(c, cursor);
        for (const h of ch.holds) seen.add(h.id);
        cursor = ch.cursor;
        if (last) return;
      }
    })();
    await Promise.all([
      (async () => {
        for (let i = 0; i < 60; i++) await writeHoldRow(w1, hold(`hold_w1_${i}`, 'gw-a'));
      })(),
      (async () => {
        for (let i = 0; i < 60; i++) await writeHoldRow(w2, hold(`hold_w2_${i}`, i % 10 === 0 ? 'gw-p' : 'gw-b'));
      })(),
    ]);
    done = true;
    await reader;
    const expected = [...Array.from({ length: 60 }, (_, i) => `hold_w1_${i}`), ...Array.from({ length: 60 }, (_, i) => `hold_w2_${i}`).filter((_, i) => i % 10 !== 0)];
    assert.deepEqual([...seen].sort(), expected.sort(), 'every member write seen once the cursor caught up; none under the pending gateway');
    const snap = await readPendingHolds(c);
    assert.equal(snap.holds.length, 114, 'pending holds of members');
    assert.equal(snap.cursor, cursor);
  });

  it("a vote row's signature is over the text its reader checks, and a changed column no longer verifies", async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    await writeHoldRow(c, hold('hold_signed', 'gw-a'));
    const cursor = (await readPendingHolds(c)).cursor;
    const row = { hold: 'hold_signed', event: { gateway: 'gw-b', seq: 8, hash: 'e'.repeat(64) }, vote: { by: 'key:y', person: 'person_y', byName: 'y', decision: 'approve' as const, reason: 'ok', at: 2, grantMs: 60_000 } };
    const signature = await signVoteRow(row, (m) => Promise.resolve(sign(null, m, privateKey)));
    assert.equal(await writeVoteRow(c, row, signature), true);
    const read = (await readHoldChanges(c, cursor)).votes.filter((v) => v.hold === 'hold_signed');
    assert.equal(read.length, 1);
    assert.equal(read[0]!.signed.signature, signature, 'the signature is stored with the row');
    assert.ok(verify(null, Buffer.from(read[0]!.signed.text), publicKey, Buffer.from(signature, 'base64')), 'the text read verifies under the signing key');
    await c.query("UPDATE custody_hold_votes SET person = 'person_z' WHERE hold = 'hold_signed'");
    const changed = (await readPendingHolds(c)).votes.find((v) => v.hold === 'hold_signed')!;
    assert.equal(verify(null, Buffer.from(changed.signed.text), publicKey, Buffer.from(signature, 'base64')), false, 'a person changed by hand no longer verifies');
    await writeHoldRow(c, hold('hold_signed', 'gw-a', 'approved'));
  });

  it('claims a pending hold once its owner\'s lease has expired, once, and only for a member', async () => {
    await writeHoldRow(c, hold('hold_orphan', 'gw-a'));
    await renewLease(c, 'gw-a');
    await c.query("UPDATE custody_holds SET state = 'approved' WHERE id LIKE 'hold_w%'");
    assert.deepEqual(await claimOrphanedHolds(c, 'gw-b'), [], 'the lease is live');
    await c.query("UPDATE custody_leases SET expires_at = expires_at - 60000 WHERE gateway = 'gw-a'");
    await c.query("UPDATE custody_gateways SET shipped_seq = 9, shipped_hash = $1 WHERE id = 'gw-a'", ['d'.repeat(64)]);
    assert.deepEqual(await claimOrphanedHolds(c, 'gw-p'), [], 'a pending gateway claims nothing');
    const claimed = await claimOrphanedHolds(c, 'gw-b');
    assert.deepEqual(
      claimed.map((o) => [o.hold.id, o.lastEvent]),
      [['hold_orphan', { gateway: 'gw-a', seq: 9, hash: 'd'.repeat(64) }]],
    );
    assert.deepEqual(await claimOrphanedHolds(c, 'gw-b'), [], 'claimed once');
    await renewLease(c, 'gw-a');
    assert.deepEqual(await claimOrphanedHolds(c, 'gw-b'), [], 'the owner is back');
  });
});
