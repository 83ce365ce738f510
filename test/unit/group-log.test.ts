/**
 * The group's log of combined checkpoints held to its witnesses (verify/combined.ts,
 * `checkGroupWitnessed`), without a store: heads cosigned by a witness key made here, then the
 * store's rows shortened, rewritten, or the cosignature altered.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, it } from 'node:test';
import { cosign, parseCosignerKey, formatCosignerKey } from '../../proxy/audit/cosignature';
import { MerkleAccumulator } from '../../proxy/audit/merkle';
import { groupLogLeaf, groupLogOrigin } from '../../proxy/audit/shared-store/group-log';
import { ed25519RawPublicKey, formatCheckpointText, keyIdHex } from '../../proxy/audit/signed-note';
import { checkGroupWitnessed, type CombinedFailure, groupLogOf, type GroupWitnessRow, type StoredCombined } from '../../proxy/audit/verify/combined';

const GROUP = 'g-1';
const { privateKey } = generateKeyPairSync('ed25519');
const W = 'witness.test/unit';
const witness = parseCosignerKey(formatCosignerKey(W, ed25519RawPublicKey(privateKey)));

function rows(n: number, tag = 'real'): StoredCombined[] {
  return Array.from({ length: n }, (_, i) => ({ interval: i * 1000, maker: 'SHA256:maker', madeAt: 1_800_000_000_000 + i * 1000, chains: 1, rootHash: '', note: `custody-group/${GROUP}\n${tag} ${i}\n`, ranges: '', cosignatures: [] }));
}

/** The witness's cosignature on the head of the first `size` rows. */
function cosigned(all: readonly StoredCombined[], size: number, origin = groupLogOrigin(GROUP)): GroupWitnessRow {
  const acc = new MerkleAccumulator();
  for (const r of all.slice(0, size)) acc.pushLeafHash(groupLogLeaf(r.note));
  const text = formatCheckpointText({ origin, treeSize: size, rootHash: acc.root(), time: all[size - 1]!.madeAt });
  return { witness: W, keyId: keyIdHex(witness.keyId), treeSize: size, checkpoint: text, signature: cosign(text, W, privateKey, 1_800_000_100), cosignedAt: 1_800_000_100_000 };
}

function check(store: readonly StoredCombined[], cos: GroupWitnessRow[]): { failures: CombinedFailure[]; report: ReturnType<typeof checkGroupWitnessed> } {
  const failures: CombinedFailure[] = [];
  const report = checkGroupWitnessed(groupLogOf(store), cos, [witness], { group: GROUP, fail: (f) => failures.push(f) });
  return { failures, report };
}

describe('the group log held to its witnesses', () => {
  const log = rows(10);
  const cos = [cosigned(log, 4), cosigned(log, 8)];

  it('passes when the store gives every cosigned root; later combined checkpoints are counted, not failed', () => {
    const { failures, report } = check(log, cos);
    assert.deepEqual(failures, []);
    assert.deepEqual(report, [{ witness: W, treeSize: 8, cosignedAt: 1_800_000_100_000, of: 10 }]);
  });

  it('unwitnessed: no head cosigned by a required witness', () => {
    const { failures } = check(log, []);
    assert.equal(failures[0]?.problem, 'unwitnessed');
    assert.match(failures[0]!.message, /no head of the group log \(custody-group-log\/g-1\) in the store is cosigned by witness witness\.test\/unit/);
  });

  it('deleted: the store holds fewer combined checkpoints than the witness cosigned', () => {
    const { failures } = check(log.slice(0, 6), cos);
    assert.equal(failures.length, 1);
    assert.equal(failures[0]!.problem, 'deleted');
    assert.match(failures[0]!.message, /^combined checkpoints 7–8 were deleted: witness witness\.test\/unit cosigned the group log's head of 8 combined checkpoints, .* but the store holds 6, the newest #6 .*; the log still gives every head it cosigned up to 4/);
  });

  it('replaced: the log reached the cosigned size again with other combined checkpoints (a fork)', () => {
    const forked = [...log.slice(0, 6), ...rows(10, 'other').slice(6)];
    const { failures } = check(forked, cos);
    assert.equal(failures.length, 1);
    assert.equal(failures[0]!.problem, 'replaced');
    assert.match(failures[0]!.message, /it cosigned the head of 8 combined checkpoints.*but the store's first 8 give another root \(a fork\): combined checkpoints 5–8 were deleted or replaced/);
  });

  it('a middle combined checkpoint rewritten is replaced from the first head that no longer holds', () => {
    const changed = log.map((r, i) => (i === 2 ? { ...r, note: `${r.note}x\n` } : r));
    const { failures } = check(changed, cos);
    assert.equal(failures[0]!.problem, 'replaced');
    assert.match(failures[0]!.message, /combined checkpoints 1–8 were deleted or replaced.*no head it cosigned is still what the log gives/);
  });

  it('an altered cosignature, or one on another log, is signature-invalid', () => {
    const bad = { ...cos[1]!, checkpoint: cos[1]!.checkpoint.replace('\n8\n', '\n9\n') };
    assert.equal(check(log, [cos[0]!, bad]).failures[0]?.problem, 'signature-invalid');
    const other = cosigned(log, 8, 'custody-group-log/another-group');
    const f = check(log, [other]).failures[0]!;
    assert.equal(f.problem, 'signature-invalid');
    assert.match(f.message, /not of this group's log/);
  });
});
