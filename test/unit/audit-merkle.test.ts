import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  MerkleAccumulator,
  MerkleTree,
  eventLeafHash,
  rootFromInclusionProof,
  verifyConsistency,
  verifyInclusion,
} from '../../proxy/audit/merkle';

// Reference implementation written straight from RFC 6962 §2.1 (recursive MTH, PATH, PROOF/SUBPROOF),
// deliberately naive so it shares nothing with the implementation under test.
const sha = (...parts: Uint8Array[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};
const k = (n: number) => {
  let p = 1;
  while (p * 2 < n) p *= 2;
  return p;
};
function mth(d: Buffer[]): Buffer {
  if (d.length === 0) return sha();
  if (d.length === 1) return sha(Buffer.from([0]), d[0]!);
  const s = k(d.length);
  return sha(Buffer.from([1]), mth(d.slice(0, s)), mth(d.slice(s)));
}
function path(m: number, d: Buffer[]): Buffer[] {
  if (d.length <= 1) return [];
  const s = k(d.length);
  return m < s ? [...path(m, d.slice(0, s)), mth(d.slice(s))] : [...path(m - s, d.slice(s)), mth(d.slice(0, s))];
}
function subproof(m: number, d: Buffer[], b: boolean): Buffer[] {
  const n = d.length;
  if (m === n) return b ? [] : [mth(d)];
  const s = k(n);
  return m <= s ? [...subproof(m, d.slice(0, s), b), mth(d.slice(s))] : [...subproof(m - s, d.slice(s), false), mth(d.slice(0, s))];
}
const proof = (m: number, d: Buffer[]) => subproof(m, d, true);

const entries = (n: number) => Array.from({ length: n }, (_, i) => sha(Buffer.from(`event ${i}`)));
const hex = (bs: Buffer[]) => bs.map((b) => b.toString('hex'));

describe('Merkle tree (RFC 6962)', () => {
  it('matches the RFC definition for roots, audit paths and consistency proofs', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 70 }), fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: 1000 }), (total, a, b) => {
        const d = entries(total);
        const tree = MerkleTree.fromEventHashes(Buffer.concat(d));
        const n = 1 + (a % total); // a tree size within the stored tree
        const m = b % n; // a leaf index within it
        assert.equal(tree.root(n).toString('hex'), mth(d.slice(0, n)).toString('hex'));
        assert.deepEqual(hex(tree.inclusionProof(m, n)), hex(path(m, d.slice(0, n))));
        const first = 1 + (b % n);
        if (first < n) assert.deepEqual(hex(tree.consistencyProof(first, n)), hex(proof(first, d.slice(0, n))));
      }),
      { numRuns: 300 },
    );
  });

  it('verifies honest proofs and rejects altered ones', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), fc.nat(), fc.nat(), fc.nat(), (n, a, b, flip) => {
        const d = entries(n);
        const root = mth(d);
        const m = a % n;
        const leaf = eventLeafHash(d[m]!);
        const p = path(m, d);
        assert.ok(verifyInclusion(m, n, leaf, p, root));
        if (p.length) {
          const bad = p.map((x) => Buffer.from(x));
          const victim = bad[flip % bad.length]!;
          victim[flip % 32] = victim[flip % 32]! ^ (1 << (flip % 8));
          assert.ok(!verifyInclusion(m, n, leaf, bad, root), 'a flipped bit in the path must fail');
        }
        if (n > 1) assert.ok(!verifyInclusion((m + 1) % n, n, leaf, p, root) || d[(m + 1) % n]!.equals(d[m]!), 'another index must fail');
        const first = 1 + (b % n);
        const fr = mth(d.slice(0, first));
        const cp = proof(first, d);
        if (first < n) {
          assert.ok(verifyConsistency(first, n, fr, root, cp));
          assert.ok(!verifyConsistency(first, n, sha(Buffer.from('other')), root, cp), 'another old root must fail');
          const bad = cp.map((x) => Buffer.from(x));
          const victim = bad[flip % bad.length]!;
          victim[0] = victim[0]! ^ 1;
          assert.ok(!verifyConsistency(first, n, fr, root, bad), 'a flipped bit in the proof must fail');
        } else {
          assert.ok(verifyConsistency(n, n, root, root, []));
        }
      }),
      { numRuns: 300 },
    );
  });

  it('detects a rewritten prefix through the consistency proof', () => {
    const d = entries(20);
    const rewritten = [...d];
    rewritten[3] = sha(Buffer.from('forged'));
    const oldRoot = mth(d.slice(0, 10));
    const tree = MerkleTree.fromEventHashes(Buffer.concat(rewritten));
    assert.equal(verifyConsistency(10, 20, oldRoot, tree.root(), tree.consistencyProof(10)), false);
  });

  it('streams the same roots as the whole tree, including the empty tree', () => {
    const d = entries(300);
    const acc = new MerkleAccumulator();
    assert.equal(acc.root().toString('hex'), createHash('sha256').digest('hex'));
    const tree = MerkleTree.fromEventHashes(Buffer.concat(d));
    for (let i = 0; i < d.length; i++) {
      if (i % 2) acc.pushEventHash(d[i]!);
      else acc.pushEventHashHex(d[i]!.toString('hex'));
      assert.equal(acc.root().toString('hex'), tree.root(i + 1).toString('hex'));
    }
    assert.equal(rootFromInclusionProof(5, 300, tree.leaf(5), tree.inclusionProof(5))!.toString('hex'), tree.root().toString('hex'));
    assert.equal(rootFromInclusionProof(300, 300, tree.leaf(5), []), undefined);
  });

  it('refuses proofs for sizes and indexes outside the tree', () => {
    const tree = MerkleTree.fromEventHashes(Buffer.concat(entries(5)));
    assert.throws(() => tree.inclusionProof(5, 5), RangeError);
    assert.throws(() => tree.root(6), RangeError);
    assert.throws(() => tree.consistencyProof(4, 3), RangeError);
    assert.equal(verifyConsistency(3, 2, tree.root(3), tree.root(2), []), false);
  });
});
