/**
 * The combined checkpoint's note (proxy/audit/shared-store/combined-checkpoint.ts): written and read
 * back, its root recomputed from the chain lines, malformed notes refused; stored compact ranges
 * accepted only when they fold to the signed root; and a chain extended from a signed head over
 * rows as the store returns them (here from an array): a consistent extension passes with its
 * consistency proof, a deleted tail, a gap and a broken link are named.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import type pg from 'pg';
import { GENESIS_HASH } from '../../proxy/audit/chain';
import { leafHash, MerkleAccumulator, rootOfLeafHashes } from '../../proxy/audit/merkle';
import { type ChainHead, type ChainState, chainLine, decodeRanges, EMPTY_CHAIN, encodeRanges, extendChain, formatCombinedText, parseCombinedText } from '../../proxy/audit/shared-store/combined-checkpoint';

const id = (n: number) => `SHA256:${createHash('sha256').update(String(n)).digest('base64').replace(/=+$/, '')}`;

/** A chain of `n` rows as the store holds them (hash links only). */
function chain(n: number): { seq: number; prev_hash: string; hash: string }[] {
  const rows: { seq: number; prev_hash: string; hash: string }[] = [];
  let prev = GENESIS_HASH;
  for (let seq = 1; seq <= n; seq++) {
    const hash = createHash('sha256').update(`${prev}${seq}`).digest('hex');
    rows.push({ seq, prev_hash: prev, hash });
    prev = hash;
  }
  return rows;
}

function rootOf(rows: { hash: string }[]): Buffer {
  const acc = new MerkleAccumulator();
  for (const r of rows) acc.pushEventHashHex(r.hash);
  return acc.root();
}

/** Answers extendChain's two queries from `rows`, as PostgreSQL would. */
function fakeStore(rows: { seq: number; prev_hash: string; hash: string }[]): pg.ClientBase {
  return {
    query: async (sql: string, params: unknown[]) => {
      if (sql.includes('max(seq)')) {
        const below = rows.filter((r) => r.seq < Number(params[1]));
        return { rows: [{ n: below.length ? String(Math.max(...below.map((r) => r.seq))) : null }] };
      }
      const [, from, to, limit] = params.map(Number) as [number, number, number, number];
      return { rows: rows.filter((r) => r.seq >= from && r.seq <= to).sort((a, b) => a.seq - b.seq).slice(0, limit).map((r) => ({ ...r, seq: String(r.seq) })) };
    },
  } as unknown as pg.ClientBase;
}

describe('combined checkpoint notes', () => {
  const heads: ChainHead[] = [3, 1, 2].map((n) => ({ gateway: id(n), size: n * 10, root: rootOf(chain(n * 10)) }));

  it('writes the chains sorted by gateway id, with the root of their lines, and reads it back', () => {
    const text = formatCombinedText('g-1', 1_700_000_000_000, id(1), heads);
    const lines = text.split('\n');
    assert.equal(lines[0], 'custody-group/g-1');
    assert.equal(lines[1], '3');
    const chains = lines.filter((l) => l.startsWith('chain '));
    assert.deepEqual(chains, [...heads].sort((a, b) => (a.gateway < b.gateway ? -1 : 1)).map(chainLine));
    assert.equal(lines[2], rootOfLeafHashes(Buffer.concat(chains.map((l) => leafHash(Buffer.from(l))))).toString('base64'));
    const body = parseCombinedText(text);
    assert.equal(body.group, 'g-1');
    assert.equal(body.maker, id(1));
    assert.equal(body.time, 1_700_000_000_000);
    assert.deepEqual(body.heads.map((h) => [h.gateway, h.size]), chains.map((l) => [l.split(' ')[1], Number(l.split(' ')[2])]));
  });

  it('refuses a changed root, a line out of order, a missing line and another origin', () => {
    const text = formatCombinedText('g-1', 1_700_000_000_000, id(1), heads);
    const lines = text.split('\n');
    const changedSize = text.replace(/^(chain \S+ )(\d+)/m, (_, a: string, n: string) => `${a}${Number(n) + 1}`);
    assert.throws(() => parseCombinedText(changedSize), /root is not the root of its chain lines/);
    const swapped = [...lines.slice(0, 5), lines[6], lines[5], ...lines.slice(7)].join('\n');
    assert.throws(() => parseCombinedText(swapped), /not sorted/);
    assert.throws(() => parseCombinedText([...lines.slice(0, 7), ...lines.slice(8)].join('\n')), /says 3 chains but lists 2/);
    assert.throws(() => parseCombinedText(text.replace('custody-group/', 'custody/')), /origin/);
  });

  it('takes stored compact ranges only when they fold to the signed roots', () => {
    const rows = chain(13);
    const acc = new MerkleAccumulator();
    for (const r of rows) acc.pushEventHashHex(r.hash);
    const state: ChainState = { size: 13, root: acc.root(), head: rows[12]!.hash, range: acc.subtrees() };
    const body = parseCombinedText(formatCombinedText('g', 1, id(1), [{ gateway: id(1), size: 13, root: state.root }]));
    const back = decodeRanges(body, encodeRanges(new Map([[id(1), state]])));
    assert.ok(back);
    assert.equal(back.get(id(1))!.head, state.head);
    const other = { ...state, range: state.range.map((r, i) => (i === 0 ? { ...r, hash: Buffer.alloc(32, 1) } : r)) };
    assert.equal(decodeRanges(body, encodeRanges(new Map([[id(1), other]]))), undefined, 'a range that folds to another root');
    assert.equal(decodeRanges(body, encodeRanges(new Map([[id(1), { ...state, range: state.range.slice(1) }]]))), undefined, 'a range that covers fewer leaves');
    assert.equal(decodeRanges(body, '{}'), undefined);
  });
});

describe('extending a chain from the head last signed', () => {
  const gw = id(7);
  const rows = chain(40);

  async function signedAt(size: number): Promise<ChainState> {
    const r = await extendChain(fakeStore(rows), gw, EMPTY_CHAIN, { to: size });
    assert.ok('state' in r, JSON.stringify(r));
    return r.state;
  }

  it('extends to the new head, consistently, with the roots asked for on the way', async () => {
    const base = await signedAt(17);
    assert.ok(base.root.equals(rootOf(rows.slice(0, 17))));
    const r = await extendChain(fakeStore(rows), gw, base, { sizes: [17, 30] });
    assert.ok('state' in r, JSON.stringify(r));
    assert.equal(r.state.size, 40);
    assert.ok(r.state.root.equals(rootOf(rows)));
    assert.equal(r.state.head, rows[39]!.hash);
    assert.ok(r.rootsAt.get(30)!.equals(rootOf(rows.slice(0, 30))));
    assert.ok(r.rootsAt.get(17)!.equals(base.root));
    const to = await extendChain(fakeStore(rows), gw, base, { to: 25 });
    assert.ok('state' in to && to.state.root.equals(rootOf(rows.slice(0, 25))));
  });

  it('names a tail deleted below the head last signed', async () => {
    const base = await signedAt(30);
    const r = await extendChain(fakeStore(rows.filter((x) => x.seq <= 27)), gw, base);
    assert.ok(!('state' in r));
    assert.equal(r.problem, 'shorter');
    assert.deepEqual(r.found, { size: 27 });
    assert.match(r.message, /ends at seq 27, but .* committed to 30 events: seq 28–30 were deleted from its tail/);
    // Later rows shipped after the hole do not hide it.
    const holed = await extendChain(fakeStore(rows.filter((x) => x.seq <= 27 || x.seq > 32)), gw, base);
    assert.ok(!('state' in holed) && holed.problem === 'shorter');
  });

  it('names rows missing after the head, a broken link, a changed head row, and fewer rows than a checkpoint says', async () => {
    const base = await signedAt(10);
    const gap = await extendChain(fakeStore(rows.filter((x) => x.seq !== 20)), gw, base);
    assert.ok(!('state' in gap) && gap.problem === 'missing-rows' && /rows 20–20/.test(gap.message));
    const relinked = rows.map((x) => (x.seq === 15 ? { ...x, prev_hash: GENESIS_HASH } : x));
    const link = await extendChain(fakeStore(relinked), gw, base);
    assert.ok(!('state' in link) && link.problem === 'inconsistent' && /seq 15 .* does not follow/.test(link.message));
    const changed = rows.map((x) => (x.seq === 10 ? { ...x, hash: 'ab'.repeat(32) } : x));
    const head = await extendChain(fakeStore(changed), gw, base);
    assert.ok(!('state' in head) && head.problem === 'inconsistent');
    const short = await extendChain(fakeStore(rows.slice(0, 35)), gw, base, { to: 38 });
    assert.ok(!('state' in short) && short.problem === 'shorter' && short.found?.size === 35);
    const backwards = await extendChain(fakeStore(rows), gw, base, { to: 8 });
    assert.ok(!('state' in backwards) && backwards.problem === 'shorter');
  });
});
