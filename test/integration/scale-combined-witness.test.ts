/**
 * Witnesses of the group's combined checkpoints (docs/SCALE-OUT.md, "Witnesses of the combined
 * checkpoints"), against the real PostgreSQL server and real `custody witness serve` processes:
 * three gateways on one store, with a witness in `audit.witnesses[]`. The sequence of combined
 * checkpoints is a log of its own (origin custody-group-log/<group id>, leaf i = the i-th combined
 * checkpoint's signed note); its head goes to the witness with a consistency proof.
 *
 * - The witness is down at first: traffic and combined checkpoints go on, every gateway's health
 *   shows the witness failing.
 * - Once it is up, it cosigns the group log; the cosigned head's root is what the store's combined
 *   checkpoints give (recomputed here), and `custody verify --store --witness-key` passes.
 * - A witness refuses a forked group log (same size, another root; and a longer log that does not
 *   extend what it cosigned).
 * - The newest combined checkpoints deleted by SQL pass plain `verify --store`, but not with the
 *   witness key (`deleted`, naming them); when the gateways go on and the log reaches that size
 *   again with other checkpoints, the witness refuses it, health says so, and verify reports
 *   `replaced`.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import type { HealthResponse } from '../../shared/api';
import { rawSigner } from '../../proxy/audit/checkpoint-signer';
import { formatCosignerKey, findCosignature, parseCosignerKey } from '../../proxy/audit/cosignature';
import { leafHash, MerkleAccumulator, MerkleTree } from '../../proxy/audit/merkle';
import { assembleNote, ed25519KeyId, ed25519RawPublicKey, formatCheckpointText, parseCheckpointText } from '../../proxy/audit/signed-note';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { Config } from '../../shared/config';
import { custodyAsync as custody } from '../support/custody-process';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { approveMember, type StoreMember, startStoreMember } from '../support/store-member';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';
import { type RunningWitness, startWitness } from '../support/witness-process';

const root = tempDir('custody-scale-combined-witness-');
let db: TestDatabase;
let sql: pg.Client;
const members: StoreMember[] = [];
const names = new Map<StoreMember, string>();
const adminKeys = new Map<string, string>();
let witnessPort = 0;
let witnessKey = '';
let witness: RunningWitness | undefined;
let group = '';

const WITNESS = 'witness.test/w1';
const configOf = () => ({
  listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
  store: { url: db.url },
  audit: { groupCheckpointInterval: '1s', witnesses: [{ name: 'w1', url: `http://127.0.0.1:${witnessPort}`, key: witnessKey }] },
});

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function startMember(name: string): Promise<StoreMember> {
  const m = await startStoreMember(join(root, name), configOf());
  members.push(m);
  names.set(m, name);
  adminKeys.set(m.id, m.gw.firstKey!);
  return m;
}

async function restart(m: StoreMember): Promise<StoreMember> {
  const dir = join(root, names.get(m)!);
  const gw = await Gateway.start({ config: Config.parse({ dataDir: dir, ...configOf() }), dataDir: dir, configFile: m.configFile, log: silentLogger });
  const again = { ...m, gw, http: `http://${gw.address('http')}`, control: `http://${gw.address('control')}` };
  members[members.indexOf(m)] = again;
  names.set(again, names.get(m)!);
  return again;
}

async function health(m: StoreMember): Promise<HealthResponse> {
  return (await (await fetch(`${m.control}/api/health`)).json()) as HealthResponse;
}

async function makeKey(m: StoreMember, name: string): Promise<void> {
  const r = await fetch(`${m.control}/api/keys`, { method: 'POST', headers: { authorization: `Bearer ${adminKeys.get(m.id)}`, 'content-type': 'application/json' }, body: JSON.stringify({ name }) });
  assert.ok(r.ok, await r.text());
}

/** The combined checkpoints' notes, oldest first: the group log's leaves. */
async function groupLogNotes(): Promise<{ interval: number; note: string; cosigners: number }[]> {
  return (
    await sql.query<{ interval_start: string; note: string; n: string }>(
      'SELECT c.interval_start, c.note, (SELECT count(*) FROM custody_combined_cosignatures s WHERE s.interval_start = c.interval_start) AS n FROM custody_combined_checkpoints c ORDER BY c.interval_start',
    )
  ).rows.map((r) => ({ interval: Number(r.interval_start), note: r.note, cosigners: Number(r.n) }));
}

function rootOf(notes: readonly string[]): Buffer {
  const acc = new MerkleAccumulator();
  for (const n of notes) acc.pushLeafHash(leafHash(Buffer.from(n, 'utf8')));
  return acc.root();
}

interface WitnessRow {
  treeSize: number;
  rootHash: string;
  checkpoint: string;
  signature: string;
}

async function witnessRows(): Promise<WitnessRow[]> {
  return (await sql.query<{ tree_size: string; root_hash: string; checkpoint: string; signature: string }>('SELECT tree_size, root_hash, checkpoint, signature FROM custody_group_witness_cosignatures WHERE witness = $1 ORDER BY tree_size', [WITNESS])).rows.map((r) => ({
    treeSize: Number(r.tree_size),
    rootHash: r.root_hash,
    checkpoint: r.checkpoint,
    signature: r.signature,
  }));
}

function witnessState(w: RunningWitness): { size: number; root: string } | undefined {
  try {
    return (JSON.parse(readFileSync(w.stateFile, 'utf8')) as { logs: Record<string, { size: number; root: string }> }).logs[`custody-group-log/${group}`];
  } catch {
    return undefined;
  }
}

/** A head of the group log over `notes`, signed with `m`'s checkpoint key under the group log's name (as a gateway sends it). */
async function signedHead(m: StoreMember, leaves: Buffer[]): Promise<{ note: string; tree: MerkleTree }> {
  const tree = MerkleTree.fromLeafHashes(Buffer.concat(leaves));
  const name = `custody-group-log/${group}`;
  const spec = m.gw.services.audit!.trail.signer.signingKeyForThread();
  const publicKey = m.gw.services.audit!.trail.signer.publicKey;
  const text = formatCheckpointText({ origin: name, treeSize: tree.size, rootHash: tree.root(), time: Date.now(), key: m.id });
  return { note: assembleNote(text, name, ed25519KeyId(name, publicKey), await rawSigner(spec)(Buffer.from(text, 'utf8'))), tree };
}

async function addCheckpoint(w: RunningWitness, old: number, proof: Buffer[], note: string): Promise<{ status: number; body: string }> {
  const r = await fetch(`${w.url}/add-checkpoint`, { method: 'POST', body: `old ${old}\n${proof.map((p) => `${p.toString('base64')}\n`).join('')}\n${note}` });
  return { status: r.status, body: await r.text() };
}

describe('witnesses cosign the group log of combined checkpoints', () => {
  let a: StoreMember;
  let b: StoreMember;
  let c: StoreMember;
  let logKeys: string[] = [];

  before(async () => {
    db = await createTestDatabase('custody_test_scale_combined_witness');
    sql = await db.client();
    // The witness's key is made first (the gateways are configured with it); the witness itself starts later.
    const { privateKey } = generateKeyPairSync('ed25519');
    writeFileSync(join(root, 'w1.key'), privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, { mode: 0o600 });
    witnessKey = formatCosignerKey(WITNESS, ed25519RawPublicKey(privateKey));
    witnessPort = await freePort();
    a = await startMember('a');
    b = await startMember('b');
    await approveMember(a, b, async () => b.gw.services.sharedStore?.refusal() === undefined);
    c = await startMember('c');
    await approveMember(a, c, async () => c.gw.services.sharedStore?.refusal() === undefined);
    group = (await sql.query<{ group_id: string }>('SELECT group_id FROM custody_group')).rows[0]!.group_id;
  });
  after(async () => {
    for (const m of members) await m.gw.stop();
    await witness?.stop();
    await db?.drop();
  });

  it('a witness that is down: traffic and combined checkpoints go on, and every gateway shows it failing in health', async () => {
    const since = Date.now();
    for (const m of members) await makeKey(m, `down-${names.get(m)}`);
    await until('combined checkpoints made and cosigned by both others while the witness is down', async () => {
      const rows = (await sql.query<{ n: string }>('SELECT count(*) AS n FROM custody_combined_checkpoints c WHERE made_at > $1 AND (SELECT count(*) FROM custody_combined_cosignatures s WHERE s.interval_start = c.interval_start) = 2', [since])).rows[0]!;
      return Number(rows.n) >= 3;
    }, 30_000);
    for (const m of members) {
      const h = await until(`gateway ${names.get(m)} shows the witness failing`, async () => {
        const x = await health(m);
        return x.combinedCheckpoint?.witnesses?.[0]?.state === 'failing' && x;
      }, 30_000);
      assert.equal(h.status, 'ok', 'a witness that is down degrades nothing');
      assert.equal(h.combinedCheckpoint?.state, 'ok');
      const w = h.combinedCheckpoint!.witnesses![0]!;
      assert.equal(w.name, 'w1');
      assert.equal(w.cosignedTreeSize, null);
      assert.ok(w.behind > 0, 'combined checkpoints wait for it');
    }
    // Traffic still flows.
    await makeKey(a, 'while-down');
    assert.deepEqual(await witnessRows(), []);
  });

  it('once up, the witness cosigns the group log; the cosigned root is what the store\'s combined checkpoints give', async () => {
    const shown = await custody('verify', '--store', db.url, '--show-keys');
    assert.equal(shown.status, 0, shown.stderr);
    logKeys = [...shown.stdout.matchAll(/group log key: (\S+)/g)].map((m) => m[1]!);
    assert.equal(logKeys.length, 3, shown.stdout);
    for (const k of logKeys) assert.ok(k.startsWith(`custody-group-log/${group}+`));
    witness = await startWitness(root, 'w1', logKeys, witnessPort);
    const startedAt = Date.now();
    const cosigned = await until('the witness cosigns a head covering combined checkpoints made after it started', async () => {
      const rows = await witnessRows();
      const notes = await groupLogNotes();
      const last = rows[rows.length - 1];
      return last && notes.slice(0, last.treeSize).some((n) => n.interval > startedAt) && { last, notes };
    }, 40_000);
    const { last, notes } = cosigned;
    const verifier = parseCosignerKey(witness.key);
    assert.ok(findCosignature(last.checkpoint, last.signature, verifier).ok, 'the witness cosignature verifies');
    const body = parseCheckpointText(last.checkpoint);
    assert.equal(body.origin, `custody-group-log/${group}`);
    assert.equal(body.treeSize, last.treeSize);
    assert.equal(body.rootHash.toString('base64'), rootOf(notes.slice(0, last.treeSize).map((n) => n.note)).toString('base64'), 'the root over the store\'s combined checkpoints, oldest first');
    assert.ok(members.some((m) => body.key === m.id), 'sent by a member');
    const state = witnessState(witness)!;
    assert.ok(state.size >= last.treeSize);
    // It keeps up: later heads are cosigned too, each from the size before (the witness kept one log).
    await until('a later head cosigned', async () => ((await witnessRows()).pop()?.treeSize ?? 0) > last.treeSize, 20_000);
    for (const m of members) {
      await until(`gateway ${names.get(m)} shows the witness ok`, async () => (await health(m)).combinedCheckpoint?.witnesses?.[0]?.state === 'ok', 40_000);
    }
    console.log(`# group log cosigned up to ${(await witnessRows()).pop()!.treeSize} of ${(await groupLogNotes()).length} combined checkpoints`);
  });

  it('custody verify --store --witness-key passes, with the key or a file holding it', async () => {
    const r = await custody('verify', '--store', db.url, '--witness-key', witness!.key);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /witness witness\.test\/w1: cosigned the group log of combined checkpoints at \d+ of \d+/);
    const file = join(root, 'w1.vkey');
    writeFileSync(file, `${witness!.key}\n`);
    const f = await custody('verify', '--store', db.url, '--witness-key', file);
    assert.equal(f.status, 0, f.stderr);
    // A witness that never cosigned the group log is required: refused, by name.
    const stranger = formatCosignerKey('witness.test/stranger', ed25519RawPublicKey(generateKeyPairSync('ed25519').privateKey));
    const s = await custody('verify', '--store', db.url, '--witness-key', stranger);
    assert.equal(s.status, 1);
    assert.match(s.stderr, /unwitnessed — no head of the group log \(custody-group-log\/.*\) in the store is cosigned by witness witness\.test\/stranger/);
  });

  it('a witness refuses a forked group log: another root at the size it cosigned, or a longer log that does not extend it', async () => {
    // A witness of its own, fed the real log, so the gateways' sends do not move it meanwhile.
    const w2 = await startWitness(root, 'w2', logKeys);
    try {
      const notes = (await groupLogNotes()).map((n) => n.note);
      const leaves = notes.map((n) => leafHash(Buffer.from(n, 'utf8')));
      const real = await signedHead(a, leaves);
      const ok = await addCheckpoint(w2, 0, [], real.note);
      assert.equal(ok.status, 200, ok.body);
      const size = leaves.length;
      // The newest combined checkpoint replaced by another.
      const forkLeaves = [...leaves.slice(0, -1), leafHash(Buffer.from('a combined checkpoint that was never made\n'))];
      const same = await signedHead(b, forkLeaves);
      const r1 = await addCheckpoint(w2, size, [], same.note);
      assert.equal(r1.status, 409);
      // Longer, over the forked leaves: its proof from `size` cannot verify against the root cosigned.
      const longer = await signedHead(c, [...forkLeaves, leafHash(Buffer.from('one more\n'))]);
      const r2 = await addCheckpoint(w2, size, longer.tree.consistencyProof(size), longer.note);
      assert.equal(r2.status, 422);
      assert.match(w2.stderr(), /fork: "custody-group-log\/[^"]+" presented a different root/);
      assert.match(w2.stderr(), /fork: "custody-group-log\/[^"]+" size \d+ is not consistent/);
      assert.equal(JSON.parse(readFileSync(w2.stateFile, 'utf8')).logs[`custody-group-log/${group}`].root, real.tree.root().toString('base64'), 'it still holds the real log');
    } finally {
      await w2.stop();
    }
  });

  it('the newest combined checkpoints deleted by SQL: plain verify passes, verify with the witness key names them as deleted', async () => {
    for (const m of members) await m.gw.stop();
    const cosignedSize = (await witnessRows()).pop()!.treeSize;
    const notes = await groupLogNotes();
    assert.ok(notes.length >= cosignedSize && cosignedSize > 3);
    const keep = cosignedSize - 2;
    const cut = notes[keep - 1]!.interval;
    await sql.query('DELETE FROM custody_combined_cosignatures WHERE interval_start > $1', [cut]);
    const deleted = await sql.query('DELETE FROM custody_combined_checkpoints WHERE interval_start > $1', [cut]);
    assert.ok(deleted.rowCount! >= 2);
    const plain = await custody('verify', '--store', db.url);
    assert.equal(plain.status, 0, `without the witness nothing shows it: ${plain.stderr}`);
    const v = await custody('verify', '--store', db.url, '--witness-key', witness!.key);
    assert.equal(v.status, 1);
    assert.match(v.stderr, new RegExp(`FAILED: deleted — combined checkpoints ${keep + 1}–${cosignedSize} were deleted: witness witness\\.test/w1 cosigned the group log's head of ${cosignedSize} combined checkpoints, the newest made .*, but the store holds ${keep}, the newest #${keep} \\(made `));
  });

  it('the gateways go on from there: the witness refuses the new log (a fork), health says so, and verify reports the combined checkpoints replaced', async () => {
    const cosignedSize = (await witnessRows()).pop()!.treeSize;
    const refusedBefore = witness!.stderr().length;
    for (const m of [...members]) await restart(m);
    await until('the store\'s log passes the size the witness cosigned', async () => (await groupLogNotes()).length > cosignedSize + 1, 30_000);
    await until('the witness refuses the forked log', async () => /fork: "custody-group-log\//.test(witness!.stderr().slice(refusedBefore)), 30_000);
    const h = await until('a gateway shows the witness failing', async () => {
      for (const m of members) {
        const x = await health(m);
        if (x.combinedCheckpoint?.witnesses?.[0]?.state === 'failing') return x;
      }
      return undefined;
    }, 30_000);
    assert.equal(h.status, 'ok');
    assert.equal(witnessState(witness!)!.size, cosignedSize, 'the witness still holds the log it cosigned');
    assert.equal((await witnessRows()).pop()!.treeSize, cosignedSize, 'nothing newer cosigned');
    const v = await custody('verify', '--store', db.url, '--witness-key', witness!.key);
    assert.equal(v.status, 1);
    assert.match(v.stderr, new RegExp(`FAILED: replaced — the group log was rewritten after witness witness\\.test/w1 saw it: it cosigned the head of ${cosignedSize} combined checkpoints.*but the store's first ${cosignedSize} give another root \\(a fork\\): combined checkpoints? (\\d+–)?${cosignedSize} (were|was) deleted or replaced`));
  });
  it("the newest combined checkpoints deleted together with the store's copy of the witness's newest cosignatures: verify with the witness key passes on the store alone; --ask-witness asks the witness and names them deleted", async () => {
    for (const m of members) await m.gw.stop();
    const asked = witnessState(witness!)!.size;
    const rows = await witnessRows();
    // Down to a head the witness cosigned earlier, below where the log was forked: the store alone is consistent again.
    const keep = rows.map((r) => r.treeSize).filter((n) => n < asked - 2).pop()!;
    assert.ok(keep > 0, `an earlier cosigned head below ${asked - 2}: ${rows.map((r) => r.treeSize).join(', ')}`);
    const notes = await groupLogNotes();
    const cut = notes[keep - 1]!.interval;
    await sql.query('DELETE FROM custody_combined_cosignatures WHERE interval_start > $1', [cut]);
    await sql.query('DELETE FROM custody_combined_checkpoints WHERE interval_start > $1', [cut]);
    await sql.query('DELETE FROM custody_group_witness_cosignatures WHERE tree_size > $1', [keep]);
    const alone = await custody('verify', '--store', db.url, '--witness-key', witness!.key);
    assert.equal(alone.status, 0, `the store alone no longer shows it: ${alone.stderr}`);
    const v = await custody('verify', '--store', db.url, '--witness-key', witness!.key, '--ask-witness', witness!.url);
    assert.equal(v.status, 1, v.stdout);
    assert.match(v.stderr, new RegExp(`FAILED: deleted — combined checkpoints ${keep + 1}–${asked} were deleted: witness witness\\.test/w1 cosigned the group log's head of ${asked} combined checkpoints`));
    // Asking needs the key to check the answer with, and a witness that answers.
    assert.equal((await custody('verify', '--store', db.url, '--ask-witness', witness!.url)).status, 2);
    const other = await startWitness(root, 'w3', logKeys);
    const unknown = await custody('verify', '--store', db.url, '--witness-key', witness!.key, '--ask-witness', other.url);
    assert.notEqual(unknown.status, 0);
    assert.match(unknown.stderr, /has cosigned nothing of the group log/);
    await other.stop();
  });
});
