/**
 * Where the group part of a bundle cuts each chain (proxy/audit/shared-store/group-export.ts), on a
 * store built row by row on the real PostgreSQL server: two gateways X and Y (X the first enrolled,
 * Y approved in X's chain), each chain with rows past its newest signed checkpoint.
 *
 * - A chain is cut at its newest signed checkpoint: the rows after it are left out.
 * - A row inside X's cut that cites an event of Y past Y's checkpoint (a vote exported the moment
 *   it was cast) takes Y's cut to that event, so the reference resolves in the bundle and verify
 *   passes; the same check of the store passes too.
 * - The bundle's hashes and rows are the store's, and the group part verifies with X pinned.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { GROUP_BUNDLE_FILES, type GroupSection } from '../../proxy/audit/bundle-format';
import { canonicalEventBody, canonicalPayload, chainHashOfText, GENESIS_HASH, sha256hex } from '../../proxy/audit/chain';
import { keyFingerprint } from '../../proxy/audit/checkpoint-signer';
import { MerkleAccumulator } from '../../proxy/audit/merkle';
import { enrolmentRequestText } from '../../proxy/audit/shared-store/enrolment';
import { writeGroupChains } from '../../proxy/audit/shared-store/group-export';
import { migrateSharedStore } from '../../proxy/audit/shared-store/schema';
import { ed25519RawPublicKey, formatCheckpointText, signNote } from '../../proxy/audit/signed-note';
import { groupBundleSource } from '../../proxy/audit/verify/group-bundle';
import { verifyChains, verifySharedStore } from '../../proxy/audit/verify/shared-store';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { tempDir } from '../support/tmp';

let db: TestDatabase;
let sql: pg.Client;

interface Chain {
  id: string;
  name: string;
  key: KeyObject;
  hashes: string[];
  acc: MerkleAccumulator;
}

function gateway(name: string): Chain {
  const key = generateKeyPairSync('ed25519').privateKey;
  return { id: keyFingerprint(ed25519RawPublicKey(key)), name, key, hashes: [], acc: new MerkleAccumulator() };
}

async function enrol(c: Chain, status: 'enrolled' | 'approved'): Promise<void> {
  await sql.query('INSERT INTO custody_gateways (id, public_key, key_name, name, status, request, requested_at, last_seen) VALUES ($1, $2, $3, $3, $4, $5, 1, 1)', [
    c.id,
    ed25519RawPublicKey(c.key).toString('base64'),
    c.name,
    status,
    signNote(enrolmentRequestText(c.id, c.name, 1), c.name, c.key),
  ]);
}

/** Appends an event to the chain's rows in the store; returns its seq and hash. */
async function append(c: Chain, kind: string, payload: unknown): Promise<{ seq: number; hash: string }> {
  const seq = c.hashes.length + 1;
  const text = canonicalPayload(payload);
  const payloadHash = sha256hex(`{"payload":${text},"spans":[]}`);
  const prev = c.hashes[seq - 2] ?? GENESIS_HASH;
  const hash = chainHashOfText(prev, canonicalEventBody({ seq, time: 1000 + seq, kind: kind as never, session: null, actor: 'system', connection: null, payloadHash }));
  await sql.query('INSERT INTO custody_events (gateway, seq, time, kind, session, actor, connection, payload, purged, spans, payload_hash, prev_hash, hash) VALUES ($1, $2, $3, $4, NULL, $5, NULL, $6, false, $7, $8, $9, $10)', [
    c.id,
    seq,
    1000 + seq,
    kind,
    'system',
    text,
    '[]',
    payloadHash,
    prev,
    hash,
  ]);
  c.hashes.push(hash);
  c.acc.pushEventHashHex(hash);
  return { seq, hash };
}

/** A checkpoint signed by the chain's key over everything appended so far. */
async function checkpoint(c: Chain): Promise<void> {
  const size = c.hashes.length;
  const root = c.acc.root();
  const note = signNote(formatCheckpointText({ origin: c.name, treeSize: size, rootHash: root, time: 5000 + size }), c.name, c.key);
  await sql.query('INSERT INTO custody_checkpoints (gateway, tree_size, time, root_hash, note) VALUES ($1, $2, $3, $4, $5)', [c.id, size, 5000 + size, root.toString('hex'), note]);
}

before(async () => {
  db = await createTestDatabase('custody_test_bundle_cut');
  sql = await db.client();
  await migrateSharedStore(sql);
  await sql.query("INSERT INTO custody_group (group_id, created_at) VALUES ('grp_cut', 1)");
});

after(async () => {
  await db?.drop();
});

describe('the group part of a bundle', () => {
  it('cuts each chain at its signed checkpoint, and reaches further where a row inside another cut cites it', async () => {
    const x = gateway('custody-x');
    const y = gateway('custody-y');
    await enrol(x, 'enrolled');
    await enrol(y, 'approved');
    await append(x, 'gateway.enrolled', { id: x.id });
    await append(x, 'gateway.approved', { id: y.id, fingerprint: y.id, name: y.name });
    await append(y, 'gateway.start', { n: 1 });
    await checkpoint(y); // Y signed through seq 1
    const created = await append(y, 'hold.created', { id: 'hold_1' }); // seq 2, past Y's checkpoint
    await append(y, 'http.request', { n: 3 }); // seq 3, cited by nobody
    await append(x, 'hold.vote', { id: 'hold_1', vote: 'approve', refs: [{ gateway: y.id, ...created }] });
    await checkpoint(x); // X signed through seq 3, its vote included
    await append(x, 'http.request', { n: 4 }); // past X's checkpoint

    const dir = tempDir('custody-group-cut-');
    const section: GroupSection = (await writeGroupChains(sql, dir, { filter: {}, store: 'test' })).section;
    const sizes = Object.fromEntries(section.chains.map((c) => [c.gateway, c.size]));
    assert.deepEqual(sizes, { [x.id]: 3, [y.id]: 2 }, "X at its checkpoint; Y at the event X's vote cites, past its own checkpoint, not beyond");
    const files = new Map(GROUP_BUNDLE_FILES.map((f) => [f, readFileSync(join(dir, f))]));
    const hashes = files.get('group-hashes.bin')!.toString('hex');
    const inOrder = section.chains.flatMap((c) => (c.gateway === x.id ? x : y).hashes.slice(0, c.size));
    assert.equal(hashes, inOrder.join(''), "the bundle's hashes are the store's");

    const pinned = new Set([x.id]);
    const report = await verifyChains(groupBundleSource(files, section).source, { store: 'bundle', pinned });
    assert.deepEqual(report.failures, []);
    assert.equal(report.events, 5);
    const store = await verifySharedStore(sql, { store: 'test', pinned });
    assert.deepEqual(store.failures, [], 'the store itself verifies too');

    // The cited hash changed in the bundle: the reference no longer resolves, named where it is cited.
    const bent = new Map(files);
    const yAt = section.chains.findIndex((c) => c.gateway === y.id);
    const offset = section.chains.slice(0, yAt).reduce((n, c) => n + c.size, 0) * 32 + 32;
    const bin = Buffer.from(files.get('group-hashes.bin')!);
    bin[offset] = bin[offset]! ^ 0xff;
    bent.set('group-hashes.bin', bin);
    const broken = await verifyChains(groupBundleSource(bent, section).source, { store: 'bundle', pinned });
    assert.ok(
      broken.failures.some((f) => f.problem === 'bad-reference' && f.chain === x.id && f.seq === 3),
      JSON.stringify(broken.failures.map((f) => f.message)),
    );
    assert.ok(broken.failures.some((f) => f.problem === 'modified' && f.chain === y.id && f.seq === 2), 'and the row whose hash it is');
  });
});
