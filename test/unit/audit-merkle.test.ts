import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import {
  leafHash,
  MerkleAccumulator,
  MerkleTree,
  eventLeafHash,
  rootFromBase64InclusionProof,
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

  it('a tree continuing a compact range gives the whole tree\'s roots and proofs for its own leaves, at a cost that does not grow with the leaves before them', () => {
    const d = entries(100);
    for (let start = 0; start <= 40; start++) {
      const acc = new MerkleAccumulator();
      for (const e of d.slice(0, start)) acc.pushEventHash(e);
      for (let size = start + 1; size <= start + 33; size++) {
        const tree = MerkleTree.continuing(acc.subtrees(), start, Buffer.concat(d.slice(start, size)));
        const whole = d.slice(0, size);
        assert.equal(tree.size, size);
        assert.equal(tree.root().toString('hex'), mth(whole).toString('hex'), `root of ${size} continuing ${start}`);
        assert.equal(tree.root(start).toString('hex'), mth(d.slice(0, start)).toString('hex'), `root of ${start} from its compact range`);
        for (let m = start; m < size; m++) assert.deepEqual(hex(tree.inclusionProof(m, size)), hex(path(m, whole)), `leaf ${m} of ${size} continuing ${start}`);
        if (start > 0) assert.deepEqual(hex(tree.consistencyProof(start, size)), hex(proof(start, whole)), `consistency ${start} → ${size}`);
        const next = new MerkleAccumulator();
        for (const e of whole) next.pushEventHash(e);
        assert.deepEqual(tree.compactRange().map((r) => [r.height, r.hash.toString('hex')]), next.subtrees().map((r) => [r.height, r.hash.toString('hex')]), `compact range of ${size}`);
      }
    }
    // What lies before the range is not held: asking for it is refused, not answered wrongly.
    const acc = new MerkleAccumulator();
    for (const e of d.slice(0, 13)) acc.pushEventHash(e);
    const tree = MerkleTree.continuing(acc.subtrees(), 13, Buffer.concat(d.slice(13, 20)));
    assert.throws(() => tree.inclusionProof(3, 20), /lies before the leaves this tree holds/);
    assert.throws(() => MerkleTree.continuing(acc.subtrees(), 12, Buffer.concat(d.slice(12, 20))), /does not cover the first 12 leaves/);

    // Hashing work: the same 64 leaves, with their proofs, after 64 leaves or after 2^16 + 64.
    const work = (before: number) => {
      const a = new MerkleAccumulator();
      const filler = sha(Buffer.from('filler'));
      for (let i = 0; i < before; i++) a.pushEventHash(filler);
      const t = MerkleTree.continuing(a.subtrees(), before, Buffer.concat(d.slice(0, 64)));
      for (let m = before; m < before + 64; m++) t.inclusionProof(m);
      t.consistencyProof(before);
      t.root(before);
      return t.hashCount;
    };
    const small = work(64);
    const large = work(65_536 + 64);
    assert.ok(large - small <= 2 * 17, `hashing ${small} vs ${large}: the cost grows only with log n`);
    assert.ok(large < 4 * 64, `hashing ${large} for 64 leaves after 65,600`);
  });

  it('reproduces the RFC 6962 known-answer vectors (certificate-transparency test data)', () => {
    const leaves = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'].map((h) => leafHash(Buffer.from(h, 'hex')));
    const roots = [
      '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
      'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
      'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
      'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
      '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
      '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
      'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
      '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
    ];
    const tree = MerkleTree.fromLeafHashes(Buffer.concat(leaves));
    roots.forEach((r, i) => assert.equal(tree.root(i + 1).toString('hex'), r));
    assert.deepEqual(hex(tree.inclusionProof(5, 8)), ['bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b', 'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0', 'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7']);
    assert.deepEqual(hex(tree.consistencyProof(6, 8)), ['0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a', 'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0', 'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7']);
    assert.deepEqual(hex(tree.consistencyProof(2, 5)), ['5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e', 'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b']);
    assert.ok(verifyConsistency(6, 8, Buffer.from(roots[5]!, 'hex'), Buffer.from(roots[7]!, 'hex'), tree.consistencyProof(6, 8)));
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
        assert.equal(rootFromBase64InclusionProof(m, n, leaf, p.map((x) => x.toString('base64')))?.toString('hex'), root.toString('hex'));
        if (p.length) {
          const bad = p.map((x) => Buffer.from(x));
          const victim = bad[flip % bad.length]!;
          victim[flip % 32] = victim[flip % 32]! ^ (1 << (flip % 8));
          assert.ok(!verifyInclusion(m, n, leaf, bad, root), 'a flipped bit in the path must fail');
          assert.ok(!rootFromBase64InclusionProof(m, n, leaf, bad.map((x) => x.toString('base64')))?.equals(root));
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
