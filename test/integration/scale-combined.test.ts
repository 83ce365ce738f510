/**
 * The group's combined checkpoint (docs/SCALE-OUT.md, "The log's shape"), against the real
 * PostgreSQL server: three gateways on one store make a combined checkpoint every interval, each
 * signed by its maker and cosigned by the two others within seconds, and its heads are what the
 * store's rows give (recomputed here from `custody_events`); `custody verify --store` passes; a
 * gateway restarted on its data dir cosigns again. A
 * combined checkpoint signed with A's own key that says C's chain is shorter than before is refused
 * by B and C. Rows deleted from the tail of A's chain by SQL, after a combined checkpoint committed
 * to them, are refused by B and C: each records `group.checkpoint.refused` naming A's chain in its
 * own chain (found in the store), `/api/health` is degraded saying so, the Audit status carries it,
 * no later combined checkpoint is cosigned, and `custody verify --store` fails naming the chain and
 * the first deleted seq.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import type { CombinedCheckpointHealth, HealthResponse } from '../../shared/api';
import { cosignerKeyId, findCosignature } from '../../proxy/audit/cosignature';
import { leafHash, MerkleAccumulator, rootOfLeafHashes } from '../../proxy/audit/merkle';
import { decodeRanges, latestSignedBy, parseCombinedText } from '../../proxy/audit/shared-store/combined-checkpoint';
import { ed25519KeyId, ed25519PublicKeyObject, parseNote, verifyNote } from '../../proxy/audit/signed-note';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { Config } from '../../shared/config';
import { custodyAsync as custody } from '../support/custody-process';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { approveMember, type StoreMember, startStoreMember } from '../support/store-member';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';

const root = tempDir('custody-scale-combined-');
let db: TestDatabase;
let sql: pg.Client;
const members: StoreMember[] = [];
/** Each gateway's first key (printed at its first start only): kept across a restart. */
const adminKeys = new Map<string, string>();

const configOf = () => ({ listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, store: { url: db.url }, audit: { groupCheckpointInterval: '1s' } });

async function startMember(name: string): Promise<StoreMember> {
  const m = await startStoreMember(join(root, name), configOf());
  members.push(m);
  adminKeys.set(m.id, m.gw.firstKey!);
  return m;
}

/** Stops `m` and starts it again on the same data dir (same key, same chain). */
async function restart(m: StoreMember, name: string): Promise<StoreMember> {
  await m.gw.stop();
  const dir = join(root, name);
  const gw = await Gateway.start({ config: Config.parse({ dataDir: dir, ...configOf() }), dataDir: dir, configFile: m.configFile, log: silentLogger });
  const again = { ...m, gw, http: `http://${gw.address('http')}`, control: `http://${gw.address('control')}` };
  members[members.indexOf(m)] = again;
  return again;
}

interface Combined {
  interval: number;
  maker: string;
  madeAt: number;
  note: string;
  cosigners: { gateway: string; line: string; at: number }[];
}

async function combinedRows(): Promise<Combined[]> {
  const rows = (await sql.query<{ interval_start: string; maker: string; made_at: string; note: string }>('SELECT interval_start, maker, made_at, note FROM custody_combined_checkpoints ORDER BY interval_start')).rows;
  const cos = (await sql.query<{ interval_start: string; gateway: string; cosignature: string; cosigned_at: string }>('SELECT interval_start, gateway, cosignature, cosigned_at FROM custody_combined_cosignatures')).rows;
  return rows.map((r) => ({
    interval: Number(r.interval_start),
    maker: r.maker,
    madeAt: Number(r.made_at),
    note: r.note,
    cosigners: cos.filter((c) => c.interval_start === r.interval_start).map((c) => ({ gateway: c.gateway, line: c.cosignature, at: Number(c.cosigned_at) })),
  }));
}

/** The chain lines of a note's text: gateway → size and base64 root. */
function chainsOf(note: string): Map<string, { size: number; root: string }> {
  const out = new Map<string, { size: number; root: string }>();
  for (const line of parseNote(note).text.split('\n')) {
    const m = /^chain (\S+) (\d+) (\S+)$/.exec(line);
    if (m) out.set(m[1]!, { size: Number(m[2]), root: m[3]! });
  }
  return out;
}

/** A chain's RFC 6962 root over the store's rows 1..size, recomputed from `custody_events`. */
async function storeRoot(gateway: string, size: number): Promise<string> {
  const rows = (await sql.query<{ seq: string; hash: string }>('SELECT seq, hash FROM custody_events WHERE gateway = $1 AND seq <= $2 ORDER BY seq', [gateway, size])).rows;
  assert.equal(rows.length, size, `the store holds seq 1–${size} of ${gateway}`);
  const acc = new MerkleAccumulator();
  for (const r of rows) acc.pushEventHashHex(r.hash);
  return acc.root().toString('base64');
}

async function keyOf(id: string): Promise<{ publicKey: Buffer; keyName: string }> {
  const r = (await sql.query<{ public_key: string; key_name: string }>('SELECT public_key, key_name FROM custody_gateways WHERE id = $1', [id])).rows[0]!;
  return { publicKey: Buffer.from(r.public_key, 'base64'), keyName: r.key_name };
}

const others = (maker: string) => members.filter((m) => m.id !== maker).map((m) => m.id);
const fullyCosigned = (c: Combined) => others(c.maker).every((id) => c.cosigners.some((s) => s.gateway === id)) && chainsOf(c.note).size === members.length;
const escape = (s: string) => s.replace(/[+/]/g, '\\$&');

async function health(m: StoreMember): Promise<HealthResponse> {
  return (await (await fetch(`${m.control}/api/health`)).json()) as HealthResponse;
}

describe('combined checkpoints of every chain, cosigned by every other gateway', () => {
  let a: StoreMember;
  let b: StoreMember;
  let c: StoreMember;

  before(async () => {
    db = await createTestDatabase('custody_test_scale_combined');
    sql = await db.client();
    a = await startMember('a');
    b = await startMember('b');
    await approveMember(a, b, async () => b.gw.services.sharedStore?.refusal() === undefined);
    c = await startMember('c');
    await approveMember(a, c, async () => c.gw.services.sharedStore?.refusal() === undefined);
  });
  after(async () => {
    for (const m of members) await m.gw.stop();
    await db?.drop();
  });

  it('each interval one gateway makes a combined checkpoint of the three chains; the two others cosign it within seconds', async () => {
    // Events on every chain (a key made on each), so the heads move.
    for (const m of members) {
      const r = await fetch(`${m.control}/api/keys`, { method: 'POST', headers: { authorization: `Bearer ${adminKeys.get(m.id)}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: `k-${m.id.slice(7, 12)}` }) });
      assert.ok(r.ok, await r.text());
    }
    const since = Date.now();
    const done = await until('five combined checkpoints of three chains, cosigned by both others', async () => {
      const rows = (await combinedRows()).filter((r) => r.madeAt > since && fullyCosigned(r));
      return rows.length >= 5 && rows;
    }, 30_000);
    const group = (await sql.query<{ group_id: string }>('SELECT group_id FROM custody_group')).rows[0]!.group_id;
    const delays = done.map((r) => Math.max(...r.cosigners.map((s) => s.at)) - r.madeAt);
    console.log(`# cosigned by both other gateways ${Math.min(...delays)}–${Math.max(...delays)} ms after it was made (${done.length} checkpoints); makers: ${[...new Set(done.map((r) => r.maker.slice(7, 15)))].join(', ')}`);
    for (const d of delays) assert.ok(d < 5000, `cosigned ${d} ms after it was made`);

    const latest = done[done.length - 1]!;
    const maker = await keyOf(latest.maker);
    const verifier = { name: maker.keyName, keyId: ed25519KeyId(maker.keyName, maker.publicKey), publicKey: maker.publicKey, key: ed25519PublicKeyObject(maker.publicKey) };
    const check = verifyNote(parseNote(latest.note), verifier);
    assert.ok(check.ok, 'signed by its maker');
    const lines = check.text.split('\n');
    assert.equal(lines[0], `custody-group/${group}`);
    assert.equal(lines[1], '3');
    const chainLines = lines.filter((l) => l.startsWith('chain '));
    assert.deepEqual(
      chainLines.map((l) => l.split(' ')[1]),
      members.map((m) => m.id).sort(),
      'one line a chain, sorted by gateway id',
    );
    // The root: RFC 6962 over the chain lines as leaves.
    assert.equal(lines[2], rootOfLeafHashes(Buffer.concat(chainLines.map((l) => leafHash(Buffer.from(l))))).toString('base64'));
    // Each head is what the store's rows give.
    for (const [id, head] of chainsOf(latest.note)) {
      assert.ok(head.size > 0);
      assert.equal(head.root, await storeRoot(id, head.size), `chain ${id} at ${head.size}`);
    }
    for (const s of latest.cosigners) {
      const k = await keyOf(s.gateway);
      const w = { name: k.keyName, keyId: cosignerKeyId(k.keyName, k.publicKey), publicKey: k.publicKey, key: ed25519PublicKeyObject(k.publicKey) };
      assert.ok(findCosignature(check.text, s.line, w).ok, `the cosignature of ${s.gateway} verifies`);
    }
    // Heads grow: the key made on each gateway is under a later checkpoint than the first one.
    for (const m of members) {
      const kinds = (await sql.query<{ seq: string }>("SELECT seq FROM custody_events WHERE gateway = $1 AND kind = 'key.created' ORDER BY seq DESC LIMIT 1", [m.id])).rows;
      assert.ok(chainsOf(latest.note).get(m.id)!.size >= Number(kinds[0]!.seq), `the key made on ${m.id} is covered`);
    }
    for (const m of members) {
      const h = await health(m);
      assert.equal(h.status, 'ok');
      assert.equal(h.combinedCheckpoint?.state, 'ok');
    }
  });

  it('custody verify --store passes on the untampered store, combined checkpoints included', async () => {
    const r = await custody('verify', '--store', db.url);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /3 chains/);
    assert.match(r.stdout, /combined checkpoints: \d+ verified with \d+ cosignatures/);
  });

  it('a gateway restarted takes up from the checkpoint it last signed and cosigns again', async () => {
    c = await restart(c, 'c');
    const restartedAt = Date.now();
    await until('a checkpoint made after the restart, cosigned by both others', async () => (await combinedRows()).some((r) => r.madeAt > restartedAt && fullyCosigned(r)), 20_000);
    // The ranges kept with what it signed fold to the signed heads (what a restart takes up from).
    const signed = await latestSignedBy(sql, c.id);
    assert.ok(signed);
    assert.ok(decodeRanges(parseCombinedText(parseNote(signed.row.note).text), signed.row.ranges), 'its ranges fold to the signed roots');
    assert.equal((await health(c)).combinedCheckpoint?.state, 'ok');
  });

  it('a combined checkpoint signed with A\'s key that shortens C\'s chain is refused by B and C', async () => {
    const latest = (await combinedRows()).filter(fullyCosigned).pop()!;
    const heads = chainsOf(latest.note);
    const cHead = heads.get(c.id)!;
    const group = (await sql.query<{ group_id: string }>('SELECT group_id FROM custody_group')).rows[0]!.group_id;
    // Honest roots, but C one event shorter than the checkpoint before.
    const forged = [...heads].map(([id, h]) => ({ id, size: id === c.id ? h.size - 1 : h.size }));
    const chainLines: string[] = [];
    for (const h of forged.sort((x, y) => (x.id < y.id ? -1 : 1))) chainLines.push(`chain ${h.id} ${h.size} ${await storeRoot(h.id, h.size)}`);
    const rootB64 = rootOfLeafHashes(Buffer.concat(chainLines.map((l) => leafHash(Buffer.from(l))))).toString('base64');
    const time = Date.now();
    const text = `custody-group/${group}\n3\n${rootB64}\ntime ${new Date(time).toISOString()}\nkey ${a.id}\n${chainLines.map((l) => `${l}\n`).join('')}`;
    const note = await a.gw.services.audit!.trail.signer.signText(text);
    // Newest for a while: the gateways' own rows for the next intervals come after it.
    const interval = Math.ceil((Date.now() + 1500) / 1000) * 1000 - 1;
    await sql.query('INSERT INTO custody_combined_checkpoints (interval_start, maker, made_at, chains, root_hash, note, ranges) VALUES ($1, $2, $3, 3, $4, $5, $6)', [interval, a.id, time, Buffer.from(rootB64, 'base64').toString('hex'), note, '{}']);
    for (const m of [b, c]) {
      const refused = await until(`${m === b ? 'B' : 'C'} records the refusal`, async () => {
        const r = (await sql.query<{ payload: string }>("SELECT payload FROM custody_events WHERE gateway = $1 AND kind = 'group.checkpoint.refused'", [m.id])).rows.map((x) => JSON.parse(x.payload) as { role: string; chain: string; problem: string; checkpoint?: { interval: number } });
        return r.find((x) => x.checkpoint?.interval === interval);
      });
      assert.equal(refused.role, 'cosign');
      assert.equal(refused.chain, c.id);
      assert.equal(refused.problem, 'shorter');
    }
    const forgedRow = (await combinedRows()).find((r) => r.interval === interval)!;
    assert.deepEqual(forgedRow.cosigners, [], 'nobody cosigned it');
    assert.ok(cHead.size > 0);
    // The group goes on: later checkpoints are made and cosigned again.
    await until('a later checkpoint cosigned by both others', async () => (await combinedRows()).some((r) => r.interval > interval && fullyCosigned(r)));
  });

  it('rows deleted from the tail of A\'s chain by SQL: B and C refuse, record it, say so in health, and verify names the chain', async () => {
    // A quiet moment: the two newest checkpoints cosigned by both others cover A's whole chain in the store.
    const committed = await until('two cosigned checkpoints covering all of A', async () => {
      const last = (await combinedRows()).filter(fullyCosigned).slice(-2);
      const end = Number((await sql.query<{ n: string }>('SELECT max(seq) AS n FROM custody_events WHERE gateway = $1', [a.id])).rows[0]!.n);
      const sizes = last.map((r) => chainsOf(r.note).get(a.id)!.size);
      return last.length === 2 && sizes.every((n) => n === end) && { size: end, interval: last[1]!.interval };
    }, 30_000);
    const deletedAt = Date.now();
    const deleted = await sql.query('DELETE FROM custody_events WHERE gateway = $1 AND seq > $2', [a.id, committed.size - 3]);
    assert.equal(deleted.rowCount, 3);

    for (const m of [b, c]) {
      const name = m === b ? 'B' : 'C';
      const refusal = await until(`${name} records the refusal in its chain, in the store`, async () => {
        const r = (await sql.query<{ payload: string }>("SELECT payload FROM custody_events WHERE gateway = $1 AND kind = 'group.checkpoint.refused'", [m.id])).rows.map((x) => JSON.parse(x.payload) as { chain: string; problem: string; message: string; committed?: { size: number } });
        return r.find((x) => x.chain === a.id);
      }, 15_000);
      assert.equal(refusal.problem, 'shorter');
      assert.match(refusal.message, new RegExp(`seq ${committed.size - 2}`));
      const h = await health(m);
      assert.equal(h.status, 'degraded');
      assert.equal(h.combinedCheckpoint?.state, 'refused');
      assert.match(h.combinedCheckpoint!.cause!, new RegExp(escape(a.id)));
      const status = (await (await fetch(`${m.control}/api/audit/status`, { headers: { authorization: `Bearer ${adminKeys.get(m.id)}` } })).json()) as { combinedCheckpoint?: CombinedCheckpointHealth };
      assert.equal(status.combinedCheckpoint?.state, 'refused', 'the Audit page gets the refusal (its banner)');
    }
    console.log(`# deleted tail refused by B and C within ${Date.now() - deletedAt} ms`);
    // Three more intervals: nothing signed after the deletion is cosigned by B or C.
    await new Promise((r) => setTimeout(r, 3000));
    const later = (await combinedRows()).filter((r) => r.madeAt > deletedAt);
    for (const r of later) assert.deepEqual(r.cosigners.filter((s) => s.gateway === b.id || s.gateway === c.id), [], `the checkpoint of ${new Date(r.madeAt).toISOString()} by ${r.maker} is not cosigned by B or C`);

    const v = await custody('verify', '--store', db.url);
    assert.equal(v.status, 1);
    assert.match(v.stderr, new RegExp(`truncated — chain ${escape(a.id)} at seq ${committed.size - 2}: the combined checkpoint of .* committed to ${committed.size} events`));
  });
});
