/**
 * RFC 6962 Merkle tree over the audit log's event hashes (RFC 9162 §2.1 is the same construction).
 *
 *   leaf hash  = SHA-256(0x00 ‖ leafdata)      leafdata = the event's 32-byte chain hash
 *   node hash  = SHA-256(0x01 ‖ left ‖ right)
 *   MTH({})    = SHA-256("")
 *
 * `MerkleTree` keeps every level in one Buffer per level (2n hashes in total for n leaves), so the
 * root, inclusion proofs (RFC 9162 §2.1.3.1) and consistency proofs (§2.1.4.1) for any tree size up
 * to n cost O(log n) lookups. `MerkleAccumulator` is the streaming form (a compact range): O(log n)
 * memory, used by the verifier and the checkpoint writer. The verifiers follow §2.1.3.2 and §2.1.4.2.
 */
import { hash as oneShotHash } from 'node:crypto';

export const HASH_SIZE = 32;
const EMPTY_ROOT = oneShotHash('sha256', Buffer.alloc(0), 'buffer');

/** SHA-256(0x00 ‖ data). */
export function leafHash(data: Uint8Array): Buffer {
  const buf = Buffer.allocUnsafe(1 + data.length);
  buf[0] = 0;
  buf.set(data, 1);
  return oneShotHash('sha256', buf, 'buffer');
}

/** Scratch buffer for node hashing; reused so a million nodes do not allocate a million inputs. */
const NODE_INPUT = Buffer.alloc(1 + 2 * HASH_SIZE);
NODE_INPUT[0] = 1;
const LEAF_INPUT = Buffer.alloc(1 + HASH_SIZE);

/** SHA-256(0x01 ‖ left ‖ right). */
export function nodeHash(left: Uint8Array, right: Uint8Array): Buffer {
  NODE_INPUT.set(left, 1);
  NODE_INPUT.set(right, 1 + HASH_SIZE);
  return oneShotHash('sha256', NODE_INPUT, 'buffer');
}

/** Leaf hash of a 32-byte event hash, without allocating the input. */
export function eventLeafHash(eventHash: Uint8Array): Buffer {
  if (eventHash.length !== HASH_SIZE) return leafHash(eventHash);
  LEAF_INPUT.set(eventHash, 1);
  return oneShotHash('sha256', LEAF_INPUT, 'buffer');
}

/** Root of the empty tree: SHA-256 of the empty string (RFC 6962 §2.1). */
export function emptyRoot(): Buffer {
  return Buffer.from(EMPTY_ROOT);
}

/** Largest power of two strictly less than n (n ≥ 2). */
function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/**
 * Streaming root computation: push leaf hashes in order; `root()` at any point is the RFC 6962 root
 * of the leaves pushed so far. Holds one hash per set bit of the size (a compact range). Hashes are
 * kept as 32-character latin1 strings: Node hashes to a string about three times faster than it
 * allocates a Buffer, which matters at a million leaves.
 */
export class MerkleAccumulator {
  private stack: string[] = [];
  private heights: number[] = [];
  private count = 0;

  get size(): number {
    return this.count;
  }

  private push(leaf: string, startHeight = 0): void {
    let hash = leaf;
    let height = startHeight;
    while (this.heights.length && this.heights[this.heights.length - 1] === height) {
      NODE_INPUT.write(this.stack.pop()!, 1, HASH_SIZE, 'latin1');
      NODE_INPUT.write(hash, 1 + HASH_SIZE, HASH_SIZE, 'latin1');
      hash = oneShotHash('sha256', NODE_INPUT, 'binary');
      this.heights.pop();
      height++;
    }
    this.stack.push(hash);
    this.heights.push(height);
    this.count += 2 ** startHeight;
  }

  /**
   * Appends a whole perfect subtree of 2^height leaves at once. Valid only where the tree so far
   * holds a multiple of 2^height leaves (the subtree then is a node of the final tree).
   */
  pushSubtree(hash: Uint8Array, height: number): void {
    if (this.count % 2 ** height !== 0) throw new RangeError(`a subtree of height ${height} cannot follow ${this.count} leaves`);
    this.push(Buffer.from(hash).toString('latin1'), height);
  }

  /** The compact range held: perfect subtrees, largest first (hashes as 32-byte Buffers). */
  subtrees(): { hash: Buffer; height: number }[] {
    return this.stack.map((h, i) => ({ hash: Buffer.from(h, 'latin1'), height: this.heights[i]! }));
  }

  pushLeafHash(h: Uint8Array): void {
    this.push(Buffer.from(h).toString('latin1'));
  }

  /** Pushes the leaf for a 32-byte event hash given as bytes. */
  pushEventHash(eventHash: Uint8Array): void {
    LEAF_INPUT.set(eventHash, 1);
    this.push(oneShotHash('sha256', LEAF_INPUT, 'binary'));
  }

  /** Pushes the leaf for a 32-byte event hash given as 64 hex digits (as the store keeps it). */
  pushEventHashHex(hex: string): void {
    LEAF_INPUT.write(hex, 1, HASH_SIZE, 'hex');
    this.push(oneShotHash('sha256', LEAF_INPUT, 'binary'));
  }

  root(): Buffer {
    if (!this.stack.length) return emptyRoot();
    let r: Buffer = Buffer.from(this.stack[this.stack.length - 1]!, 'latin1');
    for (let i = this.stack.length - 2; i >= 0; i--) r = nodeHash(Buffer.from(this.stack[i]!, 'latin1'), r);
    return r;
  }

  /** A copy that can be extended independently (a checkpoint root at one size while reading on). */
  clone(): MerkleAccumulator {
    const c = new MerkleAccumulator();
    c.stack = [...this.stack];
    c.heights = [...this.heights];
    c.count = this.count;
    return c;
  }
}

/** Root of the leaves in `leafHashes` (concatenated 32-byte leaf hashes). */
export function rootOfLeafHashes(leafHashes: Buffer): Buffer {
  const acc = new MerkleAccumulator();
  for (let off = 0; off < leafHashes.length; off += HASH_SIZE) acc.pushLeafHash(leafHashes.subarray(off, off + HASH_SIZE));
  return acc.root();
}

/**
 * A tree held level by level: `levels[k]` holds the hashes of the subtrees of 2^k leaves, left to
 * right; the last one at a level covers the remaining leaves when n is not a multiple of 2^k (an
 * odd node is carried up unchanged, which is exactly RFC 6962's split at the largest power of two).
 * Proofs for any size m ≤ n come from the same levels.
 *
 * A tree built with `continuing` holds only the leaves from `start` on, over the compact range of
 * the first `start` leaves (their perfect subtrees, one per set bit of `start`): level k then holds
 * the nodes from index ⌊start / 2^k⌋. Every node an inclusion proof of those leaves needs, or the
 * consistency proof from `start` to n, is either held or one of that range's subtrees: a sibling
 * left of ⌊start / 2^k⌋ · 2^k at level k is the subtree of 2^k leaves the range holds when bit k of
 * `start` is set. So an archive segment costs O(its leaves + log n), whatever came before it.
 */
export class MerkleTree {
  readonly size: number;
  private readonly levels: Buffer[];
  /** Index of the first node held at each level (all zero for a whole tree). */
  private readonly firsts: number[];
  /** The compact range below `firsts`: the subtree of 2^k leaves just left of level k's first node, where bit k of the start is set. */
  private readonly below: Map<number, Buffer>;
  private hashed: number;

  private constructor(levels: Buffer[], size: number, firsts: number[], below: Map<number, Buffer>, hashed: number) {
    this.levels = levels;
    this.size = size;
    this.firsts = firsts;
    this.below = below;
    this.hashed = hashed;
  }

  /** SHA-256 computations so far: building the levels, and nodes proofs combined since. */
  get hashCount(): number {
    return this.hashed;
  }

  /** From concatenated 32-byte event hashes (the leafdata); leaf hashes are computed here. */
  static fromEventHashes(eventHashes: Buffer): MerkleTree {
    return MerkleTree.continuing([], 0, eventHashes);
  }

  /**
   * The tree of `start + eventHashes.length / 32` leaves, from the compact range of its first
   * `start` leaves (`MerkleAccumulator.subtrees()` of that tree, largest first) and the event
   * hashes of the rest. Holds, and costs, only the leaves from `start` on.
   */
  static continuing(range: readonly { hash: Uint8Array; height: number }[], start: number, eventHashes: Buffer): MerkleTree {
    const n = eventHashes.length / HASH_SIZE;
    if (!Number.isInteger(n)) throw new Error('event hashes must be a multiple of 32 bytes');
    const leaves = Buffer.allocUnsafe(eventHashes.length);
    for (let i = 0; i < n; i++) {
      eventHashes.copy(LEAF_INPUT, 1, i * HASH_SIZE, (i + 1) * HASH_SIZE);
      leaves.write(oneShotHash('sha256', LEAF_INPUT, 'binary'), i * HASH_SIZE, HASH_SIZE, 'latin1');
    }
    return MerkleTree.fromLeafHashes(leaves, range, start, n);
  }

  /** From concatenated 32-byte leaf hashes (kept, not copied), optionally continuing a compact range of `start` leaves. */
  static fromLeafHashes(leafHashes: Buffer, range: readonly { hash: Uint8Array; height: number }[] = [], start = 0, hashed = 0): MerkleTree {
    const n = leafHashes.length / HASH_SIZE;
    if (!Number.isInteger(n)) throw new Error('leaf hashes must be a multiple of 32 bytes');
    const below = new Map<number, Buffer>();
    let covered = 0;
    for (const r of range) {
      below.set(r.height, Buffer.from(r.hash));
      covered += 2 ** r.height;
    }
    if (covered !== start || range.some((r, i) => i > 0 && r.height >= range[i - 1]!.height)) throw new RangeError(`that compact range does not cover the first ${start} leaves`);
    const size = start + n;
    const levels = [leafHashes];
    const firsts = [start];
    let prev = leafHashes;
    let first = start;
    let count = size;
    for (let k = 1; count > 1; k++) {
      const nextFirst = Math.floor(first / 2);
      const next = Math.ceil(count / 2);
      const level = Buffer.allocUnsafe((next - nextFirst) * HASH_SIZE);
      for (let i = nextFirst; i < next; i++) {
        const left = 2 * i;
        const right = left + 1;
        const out = (i - nextFirst) * HASH_SIZE;
        if (right >= count) {
          prev.copy(level, out, (left - first) * HASH_SIZE, (left - first + 1) * HASH_SIZE); // carried up
          continue;
        }
        if (left >= first) prev.copy(NODE_INPUT, 1, (left - first) * HASH_SIZE, (right - first + 1) * HASH_SIZE);
        else {
          below.get(k - 1)!.copy(NODE_INPUT, 1);
          prev.copy(NODE_INPUT, 1 + HASH_SIZE, (right - first) * HASH_SIZE, (right - first + 1) * HASH_SIZE);
        }
        level.write(oneShotHash('sha256', NODE_INPUT, 'binary'), out, HASH_SIZE, 'latin1');
        hashed++;
      }
      levels.push(level);
      firsts.push(nextFirst);
      prev = level;
      first = nextFirst;
      count = next;
    }
    return new MerkleTree(levels, size, firsts, below, hashed);
  }

  /** The leaf hash at `index`. */
  leaf(index: number): Buffer {
    return this.node(0, index);
  }

  /** The compact range of the whole tree: its perfect subtrees, one per set bit of the size, largest first (what `continuing` takes). */
  compactRange(): { hash: Buffer; height: number }[] {
    const out: { hash: Buffer; height: number }[] = [];
    for (let k = Math.floor(Math.log2(Math.max(1, this.size))) + 1; k >= 0; k--) {
      if (Math.floor(this.size / 2 ** k) % 2) out.push({ hash: Buffer.from(this.node(k, Math.floor(this.size / 2 ** k) - 1)), height: k });
    }
    return out;
  }

  /** A read-only view into the level (no copy), or the compact range's subtree just left of it. */
  private node(level: number, index: number): Buffer {
    const first = this.firsts[level]!;
    if (index >= first) return this.levels[level]!.subarray((index - first) * HASH_SIZE, (index - first + 1) * HASH_SIZE);
    const held = index === first - 1 ? this.below.get(level) : undefined;
    if (!held) throw new RangeError(`the node of 2^${level} leaves at ${index * 2 ** level} lies before the leaves this tree holds`);
    return held;
  }

  /** MTH(D[start:end]) for 0 ≤ start < end ≤ size, using stored levels wherever a stored node covers exactly that range. */
  rangeHash(start: number, end: number): Buffer {
    const width = end - start;
    if (width === 1) return this.leaf(start);
    let k = 0;
    let span = 1;
    while (span < width) {
      span *= 2;
      k++;
    }
    if (start % span === 0 && (width === span || end === this.size)) return this.node(k, start / span);
    const split = splitPoint(width);
    this.hashed++;
    return nodeHash(this.rangeHash(start, start + split), this.rangeHash(start + split, end));
  }

  /** RFC 6962 root of the first `size` leaves. */
  root(size = this.size): Buffer {
    this.checkSize(size);
    return size === 0 ? emptyRoot() : Buffer.from(this.rangeHash(0, size));
  }

  /** Audit path for leaf `index` in the tree of the first `size` leaves (RFC 9162 §2.1.3.1), leaf to root. */
  inclusionProof(index: number, size = this.size): Buffer[] {
    this.checkSize(size);
    if (!Number.isInteger(index) || index < 0 || index >= size) throw new RangeError(`leaf index ${index} is outside a tree of ${size}`);
    const path: Buffer[] = [];
    if (size === this.size) {
      // Whole tree: the sibling at each level is stored; a missing sibling means the node is carried up.
      let idx = index;
      for (let k = 0; k < this.levels.length - 1; k++) {
        const sib = idx % 2 ? idx - 1 : idx + 1;
        if (sib < this.firsts[k]! + this.levels[k]!.length / HASH_SIZE) path.push(this.node(k, sib));
        idx = Math.floor(idx / 2);
      }
      return path;
    }
    const walk = (m: number, start: number, end: number): void => {
      const n = end - start;
      if (n <= 1) return;
      const k = splitPoint(n);
      if (m < k) {
        walk(m, start, start + k);
        path.push(this.rangeHash(start + k, end));
      } else {
        walk(m - k, start + k, end);
        path.push(this.rangeHash(start, start + k));
      }
    };
    walk(index, 0, size);
    return path;
  }

  /** Consistency proof from the tree of `first` leaves to the tree of `second` (RFC 9162 §2.1.4.1). */
  consistencyProof(first: number, second = this.size): Buffer[] {
    this.checkSize(second);
    if (!Number.isInteger(first) || first < 0 || first > second) throw new RangeError(`cannot prove consistency from ${first} to ${second}`);
    if (first === 0 || first === second) return [];
    const proof: Buffer[] = [];
    const sub = (m: number, start: number, end: number, whole: boolean): void => {
      const n = end - start;
      if (m === n) {
        if (!whole) proof.push(this.rangeHash(start, end));
        return;
      }
      const k = splitPoint(n);
      if (m <= k) {
        sub(m, start, start + k, whole);
        proof.push(this.rangeHash(start + k, end));
      } else {
        sub(m - k, start + k, end, false);
        proof.push(this.rangeHash(start, start + k));
      }
    };
    sub(first, 0, second, true);
    return proof;
  }

  private checkSize(size: number): void {
    if (!Number.isInteger(size) || size < 0 || size > this.size) throw new RangeError(`tree size ${size} is outside 0..${this.size}`);
  }
}

function isPowerOfTwo(n: number): boolean {
  let v = n;
  while (v > 1 && v % 2 === 0) v /= 2;
  return v === 1;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/**
 * The root an inclusion proof leads to (RFC 9162 §2.1.3.2), or undefined when the proof has the
 * wrong shape for this index and size.
 */
export function rootFromInclusionProof(index: number, size: number, leaf: Uint8Array, proof: readonly Uint8Array[]): Buffer | undefined {
  if (!Number.isInteger(index) || !Number.isInteger(size) || index < 0 || index >= size) return undefined;
  let fn = index;
  let sn = size - 1;
  let r: Buffer = Buffer.from(leaf);
  for (const p of proof) {
    if (p.length !== HASH_SIZE || sn === 0) return undefined;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : undefined;
}

/**
 * `rootFromInclusionProof` for a proof given as base64 strings (as bundles carry them), hashing in
 * one reused buffer: a bundle verifier checks ~20 of these per exported event.
 */
export function rootFromBase64InclusionProof(index: number, size: number, leaf: Uint8Array, proof: readonly string[]): Buffer | undefined {
  if (!Number.isInteger(index) || !Number.isInteger(size) || index < 0 || index >= size || leaf.length !== HASH_SIZE) return undefined;
  let fn = index;
  let sn = size - 1;
  let r = Buffer.from(leaf).toString('latin1');
  for (const p of proof) {
    if (typeof p !== 'string' || p.length !== 44 || sn === 0) return undefined;
    const right = fn % 2 === 1 || fn === sn;
    // right: H(0x01 ‖ p ‖ r), else H(0x01 ‖ r ‖ p)
    if (NODE_INPUT.write(p, right ? 1 : 1 + HASH_SIZE, HASH_SIZE, 'base64') !== HASH_SIZE) return undefined;
    NODE_INPUT.write(r, right ? 1 + HASH_SIZE : 1, HASH_SIZE, 'latin1');
    r = oneShotHash('sha256', NODE_INPUT, 'binary');
    if (right && fn % 2 === 0) {
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? Buffer.from(r, 'latin1') : undefined;
}

/** True when `proof` shows the leaf hash `leaf` at `index` in the tree of `size` with root `root`. */
export function verifyInclusion(index: number, size: number, leaf: Uint8Array, proof: readonly Uint8Array[], root: Uint8Array): boolean {
  const r = rootFromInclusionProof(index, size, leaf, proof);
  return r !== undefined && equal(r, root);
}

/**
 * True when `proof` shows that the tree of `first` leaves with root `firstRoot` is a prefix of the
 * tree of `second` leaves with root `secondRoot` (RFC 9162 §2.1.4.2).
 */
export function verifyConsistency(first: number, second: number, firstRoot: Uint8Array, secondRoot: Uint8Array, proof: readonly Uint8Array[]): boolean {
  if (!Number.isInteger(first) || !Number.isInteger(second) || first < 0 || first > second) return false;
  if (first === second) return proof.length === 0 && equal(firstRoot, secondRoot);
  if (first === 0) return proof.length === 0; // the empty tree is a prefix of every tree
  if (proof.length === 0 || proof.some((p) => p.length !== HASH_SIZE)) return false;
  const path = [...proof];
  // A power-of-two first tree is itself a node of the second; the proof omits its hash.
  if (isPowerOfTwo(first)) path.unshift(firstRoot);
  let fn = first - 1;
  let sn = second - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr: Buffer = Buffer.from(path[0]!);
  let sr: Buffer = Buffer.from(path[0]!);
  for (let i = 1; i < path.length; i++) {
    const c = path[i]!;
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) {
          fn = Math.floor(fn / 2);
          sn = Math.floor(sn / 2);
        }
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && equal(fr, firstRoot) && equal(sr, secondRoot);
}
