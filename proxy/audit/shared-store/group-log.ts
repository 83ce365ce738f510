/**
 * The group's log of combined checkpoints, for witnesses (docs/SCALE-OUT.md, "Witnesses of the
 * combined checkpoints"). A combined checkpoint's own tree is not append-only over time (its leaves
 * are the chains' heads, which move), so it is never sent to a witness as a log. The sequence of
 * combined checkpoints is: leaf i is the signed note of the i-th combined checkpoint (oldest
 * first, by interval), leaf hash SHA-256(0x00 ‖ note), and its tree head is a C2SP checkpoint
 *
 *   custody-group-log/<group id>
 *   <number of combined checkpoints>
 *   <base64 RFC 6962 root>
 *   time <RFC 3339>                  when the newest combined checkpoint was made
 *   key <sender's fingerprint>
 *
 * signed with the sending gateway's checkpoint key under the key name `custody-group-log/<group id>`
 * (so `custody witness serve --log-key` takes each member's key under that name, as
 * `custody verify --store URL --show-keys` prints it). The sender is the gateway that made the
 * newest combined checkpoint (combined-worker.ts), with the witness client of its own chain
 * (witnessing.ts) and a consistency proof from the size the witness last cosigned; the
 * cosignatures are kept in `custody_group_witness_cosignatures` (migration 12), with the compact
 * range at that size, so the next head and proof read only the combined checkpoints made since.
 */
import type pg from 'pg';
import type { WitnessStatus } from '../../../shared/evidence';
import { leafHash, MerkleAccumulator, MerkleTree } from '../merkle';
import { ed25519KeyId, ed25519PublicKeyObject, formatCheckpointText, keyIdHex, type NoteVerifier } from '../signed-note';
import type { CosignedHead, LogHead, WitnessedLog } from '../witnessing';

export const GROUP_LOG_ORIGIN_PREFIX = 'custody-group-log/';

export function groupLogOrigin(group: string): string {
  return `${GROUP_LOG_ORIGIN_PREFIX}${group}`;
}

/** The leaf hash of a combined checkpoint in the group log: over its signed note, as stored. */
export function groupLogLeaf(note: string): Buffer {
  return leafHash(Buffer.from(note, 'utf8'));
}

/** A member's checkpoint key as a signer of the group log's heads (the key name is the log's origin). */
export function groupLogVerifier(group: string, publicKey: Buffer): NoteVerifier {
  const name = groupLogOrigin(group);
  return { name, keyId: ed25519KeyId(name, publicKey), publicKey, key: ed25519PublicKeyObject(publicKey) };
}

/** A head of the group log as sent: with where it ends and its compact range, kept with the cosignature. */
export interface GroupLogHead extends LogHead {
  lastInterval: number;
  range: { hash: Buffer; height: number }[];
}

type Range = { hash: Buffer; height: number }[];

const PAGE = 5000;

function encodeRange(range: Range): string {
  return JSON.stringify(range.map((r) => [r.height, r.hash.toString('base64')]));
}

/** A stored compact range, when it folds to `size` leaves with root `rootHex`. */
function decodeRange(text: string, size: number, rootHex: string): Range | undefined {
  try {
    const acc = new MerkleAccumulator();
    const range: Range = [];
    for (const [height, b64] of JSON.parse(text) as [number, string][]) {
      const hash = Buffer.from(String(b64), 'base64');
      if (hash.length !== 32 || !Number.isInteger(height)) return undefined;
      acc.pushSubtree(hash, height);
      range.push({ hash, height });
    }
    return acc.size === size && acc.root().toString('hex') === rootHex ? range : undefined;
  } catch {
    return undefined;
  }
}

/** Combined checkpoints after `afterInterval` (up to `upTo`), oldest first: their leaf hashes. */
async function leavesAfter(c: pg.ClientBase, afterInterval: number, upTo = Number.MAX_SAFE_INTEGER): Promise<{ leaves: Buffer[]; lastInterval: number; lastMadeAt: number | undefined }> {
  const leaves: Buffer[] = [];
  let last = afterInterval;
  let lastMadeAt: number | undefined;
  for (;;) {
    const rows = (await c.query<{ interval_start: string; made_at: string; note: string }>('SELECT interval_start, made_at, note FROM custody_combined_checkpoints WHERE interval_start > $1 AND interval_start <= $2 ORDER BY interval_start LIMIT $3', [last, upTo, PAGE])).rows;
    for (const r of rows) {
      leaves.push(groupLogLeaf(r.note));
      last = Number(r.interval_start);
      lastMadeAt = Number(r.made_at);
    }
    if (rows.length < PAGE) return { leaves, lastInterval: last, lastMadeAt };
  }
}

/**
 * The group log in the shared store, as the witness client sends it (witnessing.ts). `client`
 * gives a connection of its own (the witness client runs beside the combined worker's snapshots).
 */
export class GroupLog implements WitnessedLog<GroupLogHead> {
  readonly unit = 'combined checkpoints';
  /** The log as far as read: its compact range, the newest combined checkpoint in it and its leaf. */
  private known: { acc: MerkleAccumulator; lastInterval: number; lastLeaf?: Buffer; lastMadeAt?: number } | undefined;
  private signed: { size: number; root: string; note: string } | undefined;

  constructor(
    private readonly client: () => Promise<pg.ClientBase>,
    private readonly group: string,
    /** This gateway's id (the `key` line) and a signer of note text under a key name. */
    private readonly sender: { id: string; signNote: (text: string, keyName: string) => Promise<string> },
  ) {}

  /** The newest head: the log read on from where it was last read (checked to be still there). */
  async latest(): Promise<GroupLogHead | undefined> {
    const c = await this.client();
    await this.catchUp(c);
    const k = this.known!;
    if (k.acc.size === 0) return undefined;
    const root = k.acc.root().toString('hex');
    if (this.signed?.size !== k.acc.size || this.signed.root !== root) {
      const origin = groupLogOrigin(this.group);
      const text = formatCheckpointText({ origin, treeSize: k.acc.size, rootHash: Buffer.from(root, 'hex'), ...(k.lastMadeAt !== undefined ? { time: k.lastMadeAt } : {}), key: this.sender.id });
      this.signed = { size: k.acc.size, root, note: await this.sender.signNote(text, origin) };
    }
    return { treeSize: k.acc.size, rootHash: root, note: this.signed.note, lastInterval: k.lastInterval, range: k.acc.subtrees() };
  }

  private async catchUp(c: pg.ClientBase): Promise<void> {
    if (this.known?.lastLeaf) {
      // The newest combined checkpoint read before must still be there, unchanged; else read the log again from its start.
      const r = (await c.query<{ note: string }>('SELECT note FROM custody_combined_checkpoints WHERE interval_start = $1', [this.known.lastInterval])).rows[0];
      if (!r || !groupLogLeaf(r.note).equals(this.known.lastLeaf)) this.known = undefined;
    }
    if (!this.known) this.known = await this.start(c);
    const k = this.known;
    const more = await leavesAfter(c, k.lastInterval);
    for (const l of more.leaves) k.acc.pushLeafHash(l);
    if (more.leaves.length) {
      k.lastInterval = more.lastInterval;
      k.lastLeaf = more.leaves[more.leaves.length - 1];
      k.lastMadeAt = more.lastMadeAt;
    }
  }

  /** Where to start reading: the largest head a witness cosigned whose range folds to its root and whose newest combined checkpoint is still there; else the log's start. */
  private async start(c: pg.ClientBase): Promise<NonNullable<GroupLog['known']>> {
    const rows = (await c.query<{ tree_size: string; root_hash: string; last_interval: string; range: string }>('SELECT tree_size, root_hash, last_interval, range FROM custody_group_witness_cosignatures ORDER BY tree_size DESC LIMIT 1')).rows;
    for (const r of rows) {
      const range = decodeRange(r.range, Number(r.tree_size), r.root_hash);
      const last = (await c.query<{ note: string; made_at: string }>('SELECT note, made_at FROM custody_combined_checkpoints WHERE interval_start = $1', [r.last_interval])).rows[0];
      if (!range || !last) continue;
      const acc = new MerkleAccumulator();
      for (const s of range) acc.pushSubtree(s.hash, s.height);
      return { acc, lastInterval: Number(r.last_interval), lastLeaf: groupLogLeaf(last.note), lastMadeAt: Number(last.made_at) };
    }
    return { acc: new MerkleAccumulator(), lastInterval: -1 };
  }

  async lastCosigned(w: NoteVerifier): Promise<CosignedHead | undefined> {
    const c = await this.client();
    const r = (await c.query<{ tree_size: string; root_hash: string; cosigned_at: string }>('SELECT tree_size, root_hash, cosigned_at FROM custody_group_witness_cosignatures WHERE witness = $1 AND key_id = $2 ORDER BY tree_size DESC LIMIT 1', [w.name, keyIdHex(w.keyId)])).rows[0];
    return r && { tree_size: Number(r.tree_size), root_hash: r.root_hash, cosigned_at: Number(r.cosigned_at) };
  }

  /**
   * From the compact range kept with a cosignature at `old` and the leaves after it; from the log's
   * start when there is none, or when it no longer leads to this head (combined checkpoints it
   * stood on were deleted: the proof is then of the log as it is, which a witness refuses).
   */
  async consistencyProof(old: number, head: GroupLogHead): Promise<Buffer[]> {
    const c = await this.client();
    const kept = (await c.query<{ root_hash: string; last_interval: string; range: string }>('SELECT root_hash, last_interval, range FROM custody_group_witness_cosignatures WHERE tree_size = $1 LIMIT 1', [old])).rows[0];
    const range = kept && decodeRange(kept.range, old, kept.root_hash);
    const bases = [...(kept && range ? [{ size: old, lastInterval: Number(kept.last_interval), range }] : []), { size: 0, lastInterval: -1, range: [] as Range }];
    for (const base of bases) {
      const { leaves } = await leavesAfter(c, base.lastInterval, head.lastInterval);
      const tree = MerkleTree.fromLeafHashes(Buffer.concat(leaves), base.range, base.size);
      if (tree.size === head.treeSize && tree.root().toString('hex') === head.rootHash) return tree.consistencyProof(old);
    }
    throw new Error(`the group log changed while its head of ${head.treeSize} combined checkpoints was sent; it is sent again`);
  }

  async record(w: NoteVerifier, head: GroupLogHead, text: string, line: string, time: number): Promise<void> {
    const c = await this.client();
    await c.query(
      `INSERT INTO custody_group_witness_cosignatures (witness, key_id, tree_size, root_hash, last_interval, range, checkpoint, signature, cosigned_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
       ON CONFLICT (witness, key_id, tree_size) DO UPDATE SET root_hash = $4, last_interval = $5, range = $6, checkpoint = $7, signature = $8, cosigned_at = $9`,
      [w.name, keyIdHex(w.keyId), head.treeSize, head.rootHash, head.lastInterval, encodeRange(head.range), text, line, time],
    );
  }
}

/**
 * Each witness's standing on the group log, for health: what it last cosigned (from the store, so
 * every gateway shows the same), how many combined checkpoints were made since, and this gateway's
 * last try. A witness that has cosigned nothing made more than `staleMs` ago while newer ones wait
 * is failing, whoever's tries failed.
 */
export async function groupWitnessStatus(
  c: pg.ClientBase,
  attempts: readonly { name: string; url: string; verifier: NoteVerifier; lastError: string | null; failures: number; nextRetryAt: number | null }[],
  staleMs: number,
): Promise<WitnessStatus[]> {
  const out: WitnessStatus[] = [];
  for (const a of attempts) {
    const last = (
      await c.query<{ tree_size: string; root_hash: string; cosigned_at: string; last_interval: string }>(
        'SELECT tree_size, root_hash, cosigned_at, last_interval FROM custody_group_witness_cosignatures WHERE witness = $1 AND key_id = $2 ORDER BY tree_size DESC LIMIT 1',
        [a.verifier.name, keyIdHex(a.verifier.keyId)],
      )
    ).rows[0];
    const since = (await c.query<{ n: string; oldest: string | null }>('SELECT count(*) AS n, min(made_at) AS oldest FROM custody_combined_checkpoints WHERE interval_start > $1', [last ? Number(last.last_interval) : -1])).rows[0]!;
    const behind = Number(since.n);
    const stale = behind > 0 && since.oldest !== null && Date.now() - Number(since.oldest) > staleMs;
    const lastError = a.lastError ?? (stale ? `the witness has not cosigned the group log since ${last ? `its head of ${last.tree_size} combined checkpoints (${new Date(Number(last.cosigned_at)).toISOString()})` : 'it started'}: ${behind} combined checkpoints wait` : null);
    out.push({
      name: a.name,
      url: a.url,
      state: lastError ? 'failing' : last ? 'ok' : 'pending',
      lastCosigned: last ? { treeSize: Number(last.tree_size), rootHash: last.root_hash, cosignedAt: Number(last.cosigned_at) } : null,
      behind,
      lastError,
      failures: a.failures,
      nextRetryAt: a.nextRetryAt,
    });
  }
  return out;
}
