/**
 * What someone who can write to the shared store, and holds no gateway's key, can write there to
 * pass as a member of the group (test/integration/scale-member-trust.test.ts): a gateway row with a
 * key of their own and a request that key signs, a chain of their own with a checkpoint that key
 * signs, and a real gateway's row rewritten in the store so its own hashes recompute.
 */
import { generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import type pg from 'pg';
import { canonicalize } from '../../shared/canonical-json';
import { GENESIS_HASH, sha256hex } from '../../proxy/audit/chain';
import { keyFingerprint } from '../../proxy/audit/checkpoint-signer';
import { enrolmentRequestText } from '../../proxy/audit/shared-store/enrolment';
import { type PgEventRow, rowChainHash } from '../../proxy/audit/shared-store/schema';
import { MerkleAccumulator } from '../../proxy/audit/merkle';
import { formatCheckpointText, signNote } from '../../proxy/audit/signed-note';

export interface ForgedKey {
  id: string;
  /** base64 raw Ed25519 public key */
  publicKey: string;
  keyName: string;
  privateKey: KeyObject;
}

export function forgedKey(keyName: string): ForgedKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const raw = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  return { id: keyFingerprint(raw), publicKey: raw.toString('base64'), keyName, privateKey };
}

/** `text` signed by `k`, base64 (as gateways sign the rows they share). */
export function signAs(k: ForgedKey, text: string): string {
  return sign(null, Buffer.from(text), k.privateKey).toString('base64');
}

/** A gateway row for `k`, with a request `k` signs (so the row's key is what it claims), in `status`. */
export async function writeGatewayRow(sql: pg.Client, k: ForgedKey, status: 'enrolled' | 'approved' | 'removed' | 'pending', extra: { approvedBy?: string; approvalSeq?: number } = {}): Promise<void> {
  const now = Date.now();
  const request = signNote(enrolmentRequestText(k.id, 'mallory', now), k.keyName, k.privateKey);
  await sql.query(
    'INSERT INTO custody_gateways (id, public_key, key_name, name, status, request, requested_at, last_seen, approved_by, approval_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9)',
    [k.id, k.publicKey, k.keyName, 'mallory', status, request, now, extra.approvedBy ?? null, extra.approvalSeq ?? null],
  );
}

/** The `gateway.approved` payload a real approval of `k` by `by` carries. */
export function approvalOf(k: Pick<ForgedKey, 'id' | 'publicKey' | 'keyName'>, by: string): Record<string, unknown> {
  return { id: k.id, fingerprint: k.id, publicKey: k.publicKey, keyName: k.keyName, name: 'mallory', requestedAt: Date.now(), by, actorName: 'mallory' };
}

/** A stored row of chain `gateway` at `seq` after `prev`, whose payload and chain hashes recompute. */
function eventRow(seq: number, prev: string, kind: string, payload: Record<string, unknown>): PgEventRow {
  const text = canonicalize(payload);
  const row: PgEventRow = { seq: String(seq), time: String(Date.now()), kind, session: null, actor: 'system', connection: null, payload: text, purged: false, spans: null, payload_hash: sha256hex(`{"payload":${text},"spans":[]}`), prev_hash: prev, hash: '' };
  row.hash = rowChainHash(prev, row);
  return row;
}

async function insertEvent(sql: pg.Client, gateway: string, r: PgEventRow): Promise<void> {
  await sql.query('INSERT INTO custody_events (gateway, seq, time, kind, session, actor, connection, payload, purged, spans, payload_hash, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)', [
    gateway,
    r.seq,
    r.time,
    r.kind,
    r.session,
    r.actor,
    r.connection,
    r.payload,
    r.purged,
    r.spans,
    r.payload_hash,
    r.prev_hash,
    r.hash,
  ]);
}

/** A whole chain for `k` (seq 1 on), every hash recomputing, and a checkpoint over all of it signed by `k`. */
export async function writeChain(sql: pg.Client, k: ForgedKey, events: { kind: string; payload: Record<string, unknown> }[]): Promise<void> {
  const acc = new MerkleAccumulator();
  let prev = GENESIS_HASH;
  for (const [i, e] of events.entries()) {
    const r = eventRow(i + 1, prev, e.kind, e.payload);
    await insertEvent(sql, k.id, r);
    acc.pushEventHashHex(r.hash);
    prev = r.hash;
  }
  const time = Date.now();
  const note = signNote(formatCheckpointText({ origin: `custody/${k.id}`, treeSize: events.length, rootHash: acc.root(), time, key: k.id }), k.keyName, k.privateKey);
  await sql.query('INSERT INTO custody_checkpoints (gateway, tree_size, time, root_hash, note) VALUES ($1, $2, $3, $4, $5)', [k.id, events.length, time, acc.root().toString('hex'), note]);
}

/**
 * A forged member that claims to have founded the group: an `enrolled` row for `root`, and a chain
 * `root` signs holding its `gateway.enrolled` and then an approval of each of `approved`, the i-th
 * at seq i + 2.
 */
export async function writeForgedRoot(sql: pg.Client, root: ForgedKey, approved: Pick<ForgedKey, 'id' | 'publicKey' | 'keyName'>[]): Promise<void> {
  await writeGatewayRow(sql, root, 'enrolled');
  await writeChain(sql, root, [
    { kind: 'gateway.enrolled', payload: { group: 'forged', id: root.id, fingerprint: root.id, publicKey: root.publicKey, keyName: root.keyName, name: 'mallory', first: true } },
    ...approved.map((k) => ({ kind: 'gateway.approved', payload: approvalOf(k, root.id) })),
  ]);
}

/**
 * The row at `seq` of a real gateway's chain in the store rewritten into another event, keeping its
 * previous hash, so its own hashes recompute (only the next row's link to it breaks): what needs no
 * key. `checkpointBy` also writes a checkpoint of the chain up to it, signed by a key that is not
 * the chain's.
 */
export async function rewriteInChain(sql: pg.Client, gateway: string, seq: number, kind: string, payload: Record<string, unknown>, checkpointBy?: ForgedKey): Promise<void> {
  const prev = (await sql.query<{ prev_hash: string }>('SELECT prev_hash FROM custody_events WHERE gateway = $1 AND seq = $2', [gateway, seq])).rows[0]?.prev_hash;
  if (prev === undefined) throw new Error(`the store has no row at seq ${seq} of chain ${gateway}`);
  const r = eventRow(seq, prev, kind, payload);
  await sql.query('UPDATE custody_events SET time = $3, kind = $4, session = NULL, actor = $5, connection = NULL, payload = $6, purged = false, spans = NULL, payload_hash = $7, hash = $8 WHERE gateway = $1 AND seq = $2', [
    gateway,
    seq,
    r.time,
    r.kind,
    r.actor,
    r.payload,
    r.payload_hash,
    r.hash,
  ]);
  if (!checkpointBy) return;
  const acc = new MerkleAccumulator();
  for (const { hash } of (await sql.query<{ hash: string }>('SELECT hash FROM custody_events WHERE gateway = $1 AND seq <= $2 ORDER BY seq', [gateway, seq])).rows) acc.pushEventHashHex(hash);
  const time = Date.now();
  const note = signNote(formatCheckpointText({ origin: `custody/${gateway}`, treeSize: seq, rootHash: acc.root(), time, key: gateway }), checkpointBy.keyName, checkpointBy.privateKey);
  await sql.query('INSERT INTO custody_checkpoints (gateway, tree_size, time, root_hash, note) VALUES ($1, $2, $3, $4, $5)', [gateway, seq, time, acc.root().toString('hex'), note]);
}

/**
 * An event appended to a real gateway's chain in the store after its newest row, linked to it so
 * every hash recomputes, with no checkpoint over it: what needs no key. Returns its seq.
 */
export async function appendToChain(sql: pg.Client, gateway: string, kind: string, payload: Record<string, unknown>): Promise<number> {
  const last = (await sql.query<{ seq: string; hash: string }>('SELECT seq, hash FROM custody_events WHERE gateway = $1 ORDER BY seq DESC LIMIT 1', [gateway])).rows[0];
  if (!last) throw new Error(`the store has no rows of chain ${gateway}`);
  const r = eventRow(Number(last.seq) + 1, last.hash, kind, payload);
  await insertEvent(sql, gateway, r);
  return Number(r.seq);
}
