/**
 * SSH keys are the group's (docs/SCALE-OUT.md, "Keys are the group's"), against the real PostgreSQL
 * server, a real sshd and OpenSSH's own client: an SSH key registered on gateway A for an API key
 * logs in through gateway B; removed on A, or its API key revoked on A, B refuses it. What someone
 * who can write to the store writes there (one entry each: a row with no signature, a row signed
 * under a gateway row of their own, a genuine row moved to another API key, a removal deleted)
 * lets nobody log in through B. Checked by what `ssh` got back from the host, not by what the
 * gateways say.
 */
import assert from 'node:assert/strict';
import { sign } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { canonicalize } from '../../shared/canonical-json';
import type { Gateway } from '../../proxy/gateway';
import { parseSshPublicKey } from '../../proxy/identity/ssh-keys';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { freePort } from '../support/ports';
import { boxConfig, sshKeygen, sshThrough } from '../support/ssh-box';
import { startSshd, type Sshd } from '../support/sshd';
import { approveMember, forgedMember, restartStoreMember, type StoreMember, startStoreMember } from '../support/store-member';
import { startRelay } from '../support/tcp-relay';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';

const root = tempDir('custody-scale-ssh-keys-');
const work = join(root, 'keys');
let db: TestDatabase;
let sshd: Sshd;
let relay: Awaited<ReturnType<typeof startRelay>>;
let a: StoreMember;
let b: StoreMember;
const running: Gateway[] = [];
let pairs = 0;

async function startMember(name: string, url: string): Promise<StoreMember> {
  const m = await startStoreMember(join(root, name), { listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, ...boxConfig(sshd), store: { url, staleAfter: '2s' } });
  running.push(m.gw);
  return m;
}

async function call<T>(m: StoreMember, bearer: string, method: string, path: string, body?: unknown): Promise<T> {
  const r = await fetch(`${m.control}${path}`, { method, headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  assert.ok(r.ok, `${method} ${path}: ${r.status} ${await r.clone().text()}`);
  return (await r.json()) as T;
}

/** Whether `ssh` through `m` with the private key `file` logs in and runs `echo ok` on the host. */
async function logsIn(m: StoreMember, file: string): Promise<boolean> {
  const r = await sshThrough(m.gw, file, 'echo ok');
  return r.code === 0 && r.stdout === 'ok\n';
}

/**
 * Runs `ssh` through `m` with `file` until an attempt gets `want` (logs in, or is refused): when the
 * earliest such attempt began, and ended, after the call. An attempt takes hundreds of milliseconds
 * on a loaded host (more when it logs in: the gateway logs in to the host too), so a new one starts
 * every 150 ms while earlier ones run (four at most). The change had taken effect by the time
 * that attempt's key was looked up: after it began, before it ended.
 */
async function untilSsh(m: StoreMember, file: string, want: boolean, what: string): Promise<{ begun: number; done: number }> {
  const t0 = Date.now();
  const got: { begun: number; done: number }[] = [];
  const pending = new Set<Promise<void>>();
  while (!got.length) {
    if (Date.now() - t0 > 20_000) throw new Error(`timed out waiting for ${what}`);
    const begun = Date.now() - t0;
    const attempt: Promise<void> = logsIn(m, file).then((ok) => {
      if (ok === want) got.push({ begun, done: Date.now() - t0 });
      pending.delete(attempt);
    });
    pending.add(attempt);
    await Promise.race([...pending, ...(pending.size < 4 ? [new Promise((r) => setTimeout(r, 150))] : [])]);
  }
  // No ssh left running; an attempt that began earlier may have got there too.
  await Promise.all(pending);
  return got.reduce((x, y) => (y.begun < x.begun ? y : x));
}

interface DevKey {
  id: string;
  key: string;
}

/** An API key of group `dev` (which may `echo` on the host) made on A, once B holds it too. */
async function devKey(name: string): Promise<DevKey> {
  const k = await call<DevKey>(a, a.gw.firstKey!, 'POST', '/api/keys', { name, groups: ['dev'] });
  await until(`B holds ${name}`, async () => (await fetch(`${b.control}/api/ssh-keys`, { headers: { authorization: `Bearer ${k.key}` } })).status === 200);
  return k;
}

/** A new key pair, registered on A for `owner` (as its holder does, with its API key). */
async function registerOnA(owner: DevKey): Promise<{ file: string; fingerprint: string }> {
  const pair = sshKeygen(work, `k${++pairs}`);
  await call(a, owner.key, 'POST', '/api/ssh-keys', { publicKey: pair.pub });
  return pair;
}

const removeOnA = (fingerprint: string) => call(a, a.gw.firstKey!, 'DELETE', `/api/ssh-keys/${encodeURIComponent(fingerprint)}`);

/**
 * Returns once B has read the store past everything written so far: an SSH key registered on A now
 * logs in through B (B reads rows in the store's change order, so it has read every earlier one,
 * and applies them in that order).
 */
async function caughtUp(owner: DevKey): Promise<void> {
  const sentinel = await registerOnA(owner);
  await untilSsh(b, sentinel.file, true, 'a key registered on A after the forgery logs in through B');
}

/** B's active row for a public key, read from its database. */
function activeOnB(fingerprint: string): unknown {
  b.gw.services.store.settle();
  return b.gw.services.store.db.prepare('SELECT key_id FROM ssh_keys WHERE fingerprint = ? AND removed_at IS NULL').get(fingerprint);
}

/** A registration as the store holds one, for a new key pair, under API key `keyId`. */
function registration(keyId: string): { file: string; row: Record<string, string | number | null> } {
  const pair = sshKeygen(work, `k${++pairs}`);
  const k = parseSshPublicKey(pair.pub);
  return { file: pair.file, row: { fingerprint: k.fingerprint, key_id: keyId, algo: k.algo, public_key: k.blob.toString('base64'), comment: k.comment, created_at: Date.now(), created_by: 'mallory' } };
}

async function insertRegistration(sql: pg.Client, row: Record<string, string | number | null>, origin: string): Promise<void> {
  await sql.query('INSERT INTO custody_ssh_keys (fingerprint, created_at, key_id, algo, public_key, comment, created_by, origin) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)', [row['fingerprint'], row['created_at'], row['key_id'], row['algo'], row['public_key'], row['comment'], row['created_by'], origin]);
}

/**
 * What someone who can write to the store (and holds no trusted gateway's key) writes there, one
 * entry each. `forge` returns the private key whose login through B must fail; `victim` is an API
 * key of group dev that B holds (a login as it would run `echo`).
 */
const FORGERIES: { what: string; forge(sql: pg.Client, victim: DevKey): Promise<{ file: string; fingerprint: string }> }[] = [
  {
    what: 'an SSH key row written into the store by hand, with no signature',
    async forge(sql, victim) {
      const { file, row } = registration(victim.id);
      await insertRegistration(sql, row, a.id);
      return { file, fingerprint: String(row['fingerprint']) };
    },
  },
  {
    what: 'an SSH key row signed by a key under a gateway row written by hand',
    async forge(sql, victim) {
      const { privateKey, id: mallory } = await forgedMember(sql, 'custody/mallory-ssh');
      const { file, row } = registration(victim.id);
      await insertRegistration(sql, row, mallory);
      const text = `custody-ssh-key/v1\n${canonicalize([row['fingerprint'], row['key_id'], row['algo'], row['public_key'], row['comment'], row['created_at'], row['created_by']])}`;
      await sql.query('INSERT INTO custody_ssh_key_signatures (fingerprint, created_at, gateway, signature) VALUES ($1, $2, $3, $4)', [row['fingerprint'], row['created_at'], mallory, sign(null, Buffer.from(text), privateKey).toString('base64')]);
      return { file, fingerprint: String(row['fingerprint']) };
    },
  },
  {
    what: 'a genuine SSH key row moved to another API key (key_id changed in the store)',
    async forge(sql, victim) {
      // B is cut off from the store until the row is changed: it never held the genuine one.
      const owner = await devKey('owner');
      await relay.cut();
      try {
        const pair = await registerOnA(owner);
        await until('A signed the registration', async () => (await sql.query('SELECT 1 FROM custody_ssh_key_signatures WHERE fingerprint = $1 AND gateway = $2', [pair.fingerprint, a.id])).rowCount === 1);
        const moved = await sql.query('UPDATE custody_ssh_keys SET key_id = $1 WHERE fingerprint = $2', [victim.id, pair.fingerprint]);
        assert.equal(moved.rowCount, 1);
        return pair;
      } finally {
        await relay.restore();
      }
    },
  },
  {
    what: 'the removal rows of an SSH key deleted from the store after B applied the removal (B restarted: it reads the store afresh)',
    async forge(sql, victim) {
      const pair = await registerOnA(victim);
      await untilSsh(b, pair.file, true, 'the key logs in through B');
      await removeOnA(pair.fingerprint);
      await untilSsh(b, pair.file, false, 'B refuses the removed key');
      // B signs the removal too once it applied it: every copy goes.
      await until('both gateways signed the removal', async () => (await sql.query('SELECT 1 FROM custody_ssh_key_removals WHERE fingerprint = $1', [pair.fingerprint])).rowCount === 2);
      await sql.query('DELETE FROM custody_ssh_key_removals WHERE fingerprint = $1', [pair.fingerprint]);
      // A running gateway keeps every row it has read; restarted, B knows of the removal only from its own table.
      b = await restartStoreMember(b);
      running.push(b.gw);
      return pair;
    },
  },
];

describe('SSH keys are shared by the group', () => {
  let dev: DevKey;

  before(async () => {
    mkdirSync(work, { recursive: true });
    db = await createTestDatabase('custody_test_scale_ssh_keys');
    sshd = await startSshd();
    a = await startMember('a', db.url);
    const port = await freePort();
    relay = await startRelay(port);
    b = await startMember('b', db.url.replace('127.0.0.1:5432', `127.0.0.1:${port}`));
    await approveMember(a, b, async () => b.gw.services.sharedStore!.refusal() === undefined);
    dev = await devKey('dev-one');
  });
  after(async () => {
    for (const gw of running) await gw.stop();
    await relay?.close();
    await sshd?.close();
    await db?.drop();
  });

  it('an SSH key registered on A logs in through B within a second; removed on A, B refuses it within a second', async () => {
    const pair = await registerOnA(dev);
    const added = await untilSsh(b, pair.file, true, 'the key logs in through B');
    assert.ok(await logsIn(a, pair.file), 'it logs in through A');
    const r = await sshThrough(b.gw, pair.file, 'echo ok');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'ok\n', 'the host ran the command');
    await removeOnA(pair.fingerprint);
    const removed = await untilSsh(b, pair.file, false, 'B refuses the removed key');
    assert.equal(await logsIn(a, pair.file), false, 'A refuses it');
    console.log(`# ssh key added on A: a login through B begun ${added.begun} ms after logged in (done at ${added.done} ms); removed on A: one begun ${removed.begun} ms after was refused (done at ${removed.done} ms)`);
    assert.ok(added.begun < 1000, `the first login through B that worked began ${added.begun} ms after A registered the key`);
    assert.ok(removed.begun < 1000, `the first login B refused began ${removed.begun} ms after A removed the key`);
    assert.equal(activeOnB(pair.fingerprint), undefined);
  });

  it('an API key made on A with an SSH key registered at once: the SSH key logs in through B as that key', async () => {
    const k = await call<DevKey>(a, a.gw.firstKey!, 'POST', '/api/keys', { name: 'made-together', groups: ['dev'] });
    const pair = await registerOnA(k);
    const ms = await untilSsh(b, pair.file, true, 'the key made with its API key logs in through B');
    console.log(`# API key and ssh key made together on A: a login through B begun ${ms.begun} ms after logged in (done at ${ms.done} ms)`);
    assert.deepEqual(activeOnB(pair.fingerprint), { key_id: k.id });
  });

  it('the API key revoked on A: B refuses its SSH key', async () => {
    const k = await devKey('to-revoke');
    const pair = await registerOnA(k);
    await untilSsh(b, pair.file, true, 'the key logs in through B');
    await call(a, a.gw.firstKey!, 'POST', `/api/keys/${k.id}/revoke`);
    const ms = await untilSsh(b, pair.file, false, 'B refuses the SSH key of the revoked API key');
    console.log(`# API key revoked on A: a login through B with its ssh key begun ${ms.begun} ms after was refused (done at ${ms.done} ms)`);
    assert.ok(ms.begun < 1000, `the first login B refused began ${ms.begun} ms after the revocation`);
  });

  for (const f of FORGERIES) {
    it(`forged: ${f.what} — no login through B`, async () => {
      const sql = await db.client();
      try {
        const { file, fingerprint } = await f.forge(sql, dev);
        await caughtUp(dev);
        const r = await sshThrough(b.gw, file, 'echo ok');
        assert.notEqual(r.code, 0, `B let the forged key log in: ${r.stdout}`);
        assert.doesNotMatch(r.stdout, /ok/, 'the host ran nothing');
        assert.equal(activeOnB(fingerprint), undefined, 'B holds no active row for it');
      } finally {
        await sql.end();
      }
    });
  }
});
