/**
 * Admission to a shared store, against someone who can write to it with SQL and holds no key of the
 * group (docs/SCALE-OUT.md, "Who may sign: enrolment", "Admission"). A gateway that is waiting for
 * approval must go on serving nothing until a member of the group approves it in its own chain,
 * under a checkpoint that member's key signs; a row in the store's gateways table, or an approval
 * event written by hand, is no approval.
 *
 * Each attempt below runs on a store of its own with its founder A, and two gateways waiting to
 * join: one with the default config, one with `store.trust` pinning A's key. The attempt forges
 * their admission, and the test then checks the effect: a request through each still gets 503
 * and the upstream sees nothing. One attempt replaces A as the group's enrolled gateway in the
 * table, which a gateway without pinned keys cannot tell from the real group (trust on first use,
 * as `custody verify` without `--keys`): only the gateway with `store.trust` refuses it.
 * The attempts are data: a new one is one entry.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type pg from 'pg';
import { Config } from '../../shared/config';
import type { Gateway } from '../../proxy/gateway';
import { startEchoUpstream, type EchoUpstream } from '../support/echo-upstream';
import { appendToChain, approvalOf, forgedKey, rewriteInChain, writeForgedRoot } from '../support/forged-member';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { approveMember, type StoreMember, startStoreMember } from '../support/store-member';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';

const root = tempDir('custody-scale-admission-');
let echo: EchoUpstream;
const running: Gateway[] = [];
const databases: TestDatabase[] = [];

/** A gateway waiting to join, as the store lists it. */
interface Joiner {
  id: string;
  publicKey: string;
  keyName: string;
}

const markApproved = (sql: pg.Client, g: Joiner, by: string, seq: number) => sql.query("UPDATE custody_gateways SET status = 'approved', approved_by = $2, approval_seq = $3 WHERE id = $1", [g.id, by, seq]);

/**
 * One forgery of the joiners' admission, with SQL only (`a` is the founder). `withoutTrust`: what a
 * gateway without `store.trust` does with it ('refused', or 'admitted' where it cannot tell).
 */
const attempts: { name: string; withoutTrust: 'refused' | 'admitted'; forge: (sql: pg.Client, a: StoreMember, joiners: Joiner[]) => Promise<void> }[] = [
  {
    name: "its own row set to 'enrolled'",
    withoutTrust: 'refused',
    forge: async (sql, _a, joiners) => {
      for (const g of joiners) await sql.query("UPDATE custody_gateways SET status = 'enrolled' WHERE id = $1", [g.id]);
    },
  },
  {
    name: "its own row set to 'removed' (a removed gateway that never joined)",
    withoutTrust: 'refused',
    forge: async (sql, _a, joiners) => {
      for (const g of joiners) await sql.query("UPDATE custody_gateways SET status = 'removed' WHERE id = $1", [g.id]);
    },
  },
  {
    name: "'approved', by a forged second 'enrolled' member, in a chain that member's key signs",
    withoutTrust: 'refused',
    forge: async (sql, _a, joiners) => {
      const m = forgedKey('custody/mallory-root');
      await writeForgedRoot(sql, m, joiners);
      for (const [i, g] of joiners.entries()) await markApproved(sql, g, m.id, i + 2);
    },
  },
  {
    name: "'approved', by A, with the approval rewritten into a row of A's chain (its own hashes recompute)",
    withoutTrust: 'refused',
    forge: async (sql, a, joiners) => {
      for (const [i, g] of joiners.entries()) {
        await rewriteInChain(sql, a.id, i + 2, 'gateway.approved', approvalOf(g, a.id));
        await markApproved(sql, g, a.id, i + 2);
      }
    },
  },
  {
    name: "the same, with a checkpoint of A's chain over it signed by the forger's key",
    withoutTrust: 'refused',
    forge: async (sql, a, joiners) => {
      const m = forgedKey('custody/mallory-cp');
      for (const [i, g] of joiners.entries()) {
        await rewriteInChain(sql, a.id, i + 2, 'gateway.approved', approvalOf(g, a.id), m);
        await markApproved(sql, g, a.id, i + 2);
      }
    },
  },
  {
    name: "'approved', by A, with the approval appended to A's chain in the store (linked, hashes recompute) and no checkpoint of A over it",
    withoutTrust: 'refused',
    forge: async (sql, a, joiners) => {
      for (const g of joiners) await markApproved(sql, g, a.id, await appendToChain(sql, a.id, 'gateway.approved', approvalOf(g, a.id)));
    },
  },
  {
    name: "A's row set to 'pending' and a forged member 'enrolled' in its place, approving them in a chain its key signs",
    withoutTrust: 'admitted',
    forge: async (sql, a, joiners) => {
      await sql.query("UPDATE custody_gateways SET status = 'pending' WHERE id = $1", [a.id]);
      const m = forgedKey('custody/mallory-new-root');
      await writeForgedRoot(sql, m, joiners);
      for (const [i, g] of joiners.entries()) await markApproved(sql, g, m.id, i + 2);
    },
  },
];

const config = (url: string, trust?: string[]) => ({
  listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
  connections: [{ name: 'echo', kind: 'http', upstream: echo.url }],
  store: { url, staleAfter: '5s', ...(trust ? { trust } : {}) },
});

/** A request through `m` with its own first key: its status, and whether the upstream saw it. */
async function send(m: StoreMember): Promise<{ status: number; reached: boolean; body: string }> {
  const tag = `t-${randomBytes(6).toString('hex')}`;
  const r = await fetch(`${m.http}/echo/open/${tag}`, { headers: { authorization: `Bearer ${m.gw.firstKey}` } });
  return { status: r.status, body: await r.text(), reached: echo.requests.some((q) => q.target.includes(tag)) };
}

async function start(dir: string, raw: Record<string, unknown>): Promise<StoreMember> {
  const m = await startStoreMember(join(root, dir), raw);
  running.push(m.gw);
  return m;
}

/** A store of its own with its founder A, which has shipped a few events. */
async function group(name: string): Promise<{ db: TestDatabase; sql: pg.Client; a: StoreMember }> {
  const db = await createTestDatabase(`custody_test_scale_admission_${name}`);
  databases.push(db);
  const a = await start(`${name}-a`, config(db.url));
  // Admitted, and current (it has heard from the store on every connection it needs).
  await until('A serving', async () => (await send(a)).status === 200);
  for (let i = 0; i < 2; i++) assert.equal((await send(a)).status, 200);
  const sql = await db.client();
  await until("A's chain in the store", async () => Number((await sql.query<{ n: string }>('SELECT count(*) AS n FROM custody_events WHERE gateway = $1', [a.id])).rows[0]!.n) >= 6);
  return { db, sql, a };
}

async function joiner(sql: pg.Client, m: StoreMember): Promise<Joiner> {
  await until('the joiner pending', async () => m.gw.services.sharedStore?.health().phase === 'pending');
  const r = (await sql.query<{ public_key: string; key_name: string }>('SELECT public_key, key_name FROM custody_gateways WHERE id = $1', [m.id])).rows[0]!;
  return { id: m.id, publicKey: r.public_key, keyName: r.key_name };
}

before(async () => {
  echo = await startEchoUpstream();
});

/** Stops the gateways started so far (each test's, at its end: the server's connections are few). */
async function stopAll(): Promise<void> {
  await Promise.all(running.splice(0).map((gw) => gw.stop()));
}

after(async () => {
  await stopAll();
  await echo?.close();
  for (const db of databases) await db.drop();
});

describe('admission to a shared store cannot be forged with SQL', () => {
  it('store.trust names gateways by their key fingerprints', () => {
    const base = { store: { url: 'postgres://custody@db.internal:5432/custody' } };
    assert.equal(Config.safeParse({ ...base, store: { ...base.store, trust: ['SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s'] } }).success, true);
    for (const bad of [[], ['uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s'], ['SHA256:short'], 'SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s']) {
      const r = Config.safeParse({ ...base, store: { ...base.store, trust: bad } });
      assert.equal(r.success, false, JSON.stringify(bad));
    }
  });

  it('a gateway approved by the founder in its chain is admitted, with store.trust pinning the founder and without', async (t) => {
    t.after(stopAll);
    const { a } = await group('genuine');
    const dbUrl = databases.at(-1)!.url;
    for (const [i, raw] of [config(dbUrl), config(dbUrl, [a.id])].entries()) {
      const g = await start(`genuine-${i}`, raw);
      assert.equal((await send(g)).status, 503, 'it serves nothing before its approval');
      await approveMember(a, g, async () => (await send(g)).status === 200);
      const r = await send(g);
      assert.equal(r.status, 200);
      assert.equal(r.reached, true);
    }
  });

  it('a group whose founder was removed still admits a gateway another member approved', async (t) => {
    t.after(stopAll);
    const { a, db } = await group('founder_removed');
    const b = await start('founder_removed-b', config(db.url));
    await approveMember(a, b, async () => (await send(b)).status === 200);
    const removed = await promisify(execFile)(process.execPath, ['bin/custody.mjs', 'gateways', 'remove', a.id, '--reason', 'host lost', '--config', b.configFile], { encoding: 'utf8', timeout: 60_000 });
    assert.match(removed.stdout, /removed/);
    await until('A refuses', async () => (await send(a)).status === 503);
    const c = await start('founder_removed-c', config(db.url));
    assert.equal((await send(c)).status, 503);
    await approveMember(b, c, async () => (await send(c)).status === 200);
    assert.equal((await send(c)).reached, true);
  });

  it('a gateway whose store.trust does not name it does not found a group on an empty store', async (t) => {
    t.after(stopAll);
    const db = await createTestDatabase('custody_test_scale_admission_found');
    databases.push(db);
    const other = forgedKey('custody/elsewhere');
    const g = await start('found', config(db.url, [other.id]));
    await until('pending', async () => g.gw.services.sharedStore?.health().phase === 'pending');
    const r = await send(g);
    assert.equal(r.status, 503);
    assert.equal(r.reached, false);
    assert.match(r.body, /store\.trust/);
    const sql = await db.client();
    assert.deepEqual((await sql.query<{ status: string }>('SELECT status FROM custody_gateways WHERE id = $1', [g.id])).rows.map((x) => x.status), ['pending']);
  });

  for (const t of attempts)
    it(`refuses: ${t.name}`, async (ctx) => {
      ctx.after(stopAll);
      const name = `f${attempts.indexOf(t)}`;
      const { sql, a, db } = await group(name);
      const [plain, pinned] = await Promise.all([start(`${name}-plain`, config(db.url)), start(`${name}-pinned`, config(db.url, [a.id]))]);
      const joiners = await Promise.all([joiner(sql, plain), joiner(sql, pinned)]);
      await t.forge(sql, a, joiners);
      // Every joiner looks at the store once a second.
      await new Promise((r) => setTimeout(r, 3000));
      for (const [m, label, expect] of [
        [plain, 'without store.trust', t.withoutTrust],
        [pinned, 'with store.trust', 'refused'],
      ] as const) {
        const r = await send(m);
        if (expect === 'refused') {
          assert.equal(r.status, 503, `${label}: answered ${r.status} ${r.body}`);
          assert.equal(r.reached, false, `${label}: the upstream received the request`);
          assert.equal(m.gw.services.sharedStore?.health().phase, 'pending', `${label}: admitted`);
        } else {
          // Trust on first use: documented, and the reason store.trust exists.
          assert.equal(r.status, 200, `${label}: answered ${r.status} ${r.body}`);
        }
      }
    });
});
