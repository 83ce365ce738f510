/**
 * The group configuration's change order (migration 9, proxy/audit/shared-store/config-changes.ts)
 * against the real PostgreSQL server on 127.0.0.1:5432: the migration on a store at version 5
 * numbers the rows already there; every write is announced on `custody_config` on commit and not
 * before; a writer holds the change order until it commits, so a second writer's numbers come
 * after; a read takes only the rows changed after the cursor, and a transaction that wrote two
 * tables is read whole.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { ConfigMirror } from '../../proxy/audit/shared-store/config-changes';
import { CONFIG_CHANNEL, migrateSharedStore, PG_MIGRATIONS } from '../../proxy/audit/shared-store/schema';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { until } from '../support/until';

let db: TestDatabase;
let c: pg.Client;

const key = (id: string) => [id, `name-${id}`, 'h'.repeat(64), '["admin"]', 1, 'by', 'SHA256:g'];
const insertKey = (client: pg.Client, id: string) => client.query('INSERT INTO custody_api_keys (id, name, hash, groups, created_at, created_by, origin) VALUES ($1, $2, $3, $4, $5, $6, $7)', key(id));
const revoke = (client: pg.Client, id: string, at: number) =>
  client.query(
    "INSERT INTO custody_api_key_changes (id, kind, at, gateway, signature) VALUES ($1, 'revoked', $2, 'SHA256:g', 's') ON CONFLICT (id, kind, gateway) DO UPDATE SET at = LEAST(custody_api_key_changes.at, EXCLUDED.at)",
    [id, at],
  );

before(async () => {
  db = await createTestDatabase('custody_test_scale_config_changes');
  c = await db.client();
});
after(async () => {
  await db?.drop();
});

describe('the group configuration: one change order, announced on commit', () => {
  it('migration 9 numbers the rows a store at version 5 already holds', async () => {
    assert.deepEqual(await migrateSharedStore(c, PG_MIGRATIONS.filter((m) => m.version <= 5)), [1, 2, 3, 4, 5]);
    await insertKey(c, 'old1');
    await c.query("INSERT INTO custody_persons (id, name, created_at, created_by, origin) VALUES ('person_old', 'Old', 1, 'by', 'SHA256:g')");
    assert.deepEqual(await migrateSharedStore(c, PG_MIGRATIONS.filter((m) => m.version <= 9)), [6, 7, 8, 9]);
    // The later ones too: the mirror reads every table of the change order (migration 14 adds SSH keys').
    await migrateSharedStore(c);
    const mirror = new ConfigMirror();
    assert.equal(await mirror.read(c), 2);
    assert.ok(mirror.keys.has('old1') && mirror.persons.has('person_old'));
    assert.ok(mirror.cursor > 0);
    assert.equal(await mirror.read(c), 0, 'nothing changed since');
  });

  it('a write is announced on commit, naming its table, and not before', async () => {
    const listener = await db.client();
    const heard: string[] = [];
    listener.on('notification', (n) => n.channel === CONFIG_CHANNEL && heard.push(n.payload ?? ''));
    await listener.query(`LISTEN ${CONFIG_CHANNEL}`);
    const w = await db.client();
    await w.query('BEGIN');
    await insertKey(w, 'k1');
    await w.query("INSERT INTO custody_api_key_signatures (id, gateway, signature) VALUES ('k1', 'SHA256:g', 's')");
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(heard, [], 'nothing is announced before the commit');
    await w.query('COMMIT');
    await until('the commit is announced', async () => heard.length >= 2);
    assert.deepEqual(heard.sort(), ['custody_api_key_signatures', 'custody_api_keys']);
    await listener.query(`UNLISTEN ${CONFIG_CHANNEL}`);
  });

  it('a writer holds the change order until it commits: a reader never moves past a row still in flight', async () => {
    const mirror = new ConfigMirror();
    await mirror.read(c);
    const t1 = await db.client();
    const t2 = await db.client();
    await t1.query('BEGIN');
    await insertKey(t1, 'slow');
    let t2done = false;
    const second = (async () => {
      await t2.query('BEGIN');
      await insertKey(t2, 'fast');
      await t2.query('COMMIT');
      t2done = true;
    })();
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(t2done, false, 'the second writer waits for the first to commit');
    // A read meanwhile sees neither, and keeps its cursor.
    assert.equal(await mirror.read(c), 0);
    await t1.query('COMMIT');
    await second;
    const numbers = (await c.query<{ id: string; change: string }>("SELECT id, change FROM custody_api_keys WHERE id IN ('slow', 'fast')")).rows;
    const n = Object.fromEntries(numbers.map((r) => [r.id, Number(r.change)]));
    assert.ok(n['fast']! > n['slow']!, `committed in order: ${JSON.stringify(n)}`);
    assert.equal(await mirror.read(c), 2);
    assert.ok(mirror.keys.has('slow') && mirror.keys.has('fast'));
  });

  it('a read takes only what changed after the cursor; an update is read again, a transaction over two tables whole', async () => {
    const mirror = new ConfigMirror();
    const all = await mirror.read(c);
    assert.ok(all >= 5);
    await revoke(c, 'k1', 5000);
    assert.equal(await mirror.read(c), 1);
    assert.equal(mirror.keyChanges.get('k1/revoked/SHA256:g')?.at, 5000);
    // An earlier revocation by the same gateway updates its row: read again, with its new number.
    await revoke(c, 'k1', 4000);
    assert.equal(await mirror.read(c), 1);
    assert.equal(mirror.keyChanges.get('k1/revoked/SHA256:g')?.at, 4000);
    await c.query('BEGIN');
    await c.query("INSERT INTO custody_persons (id, name, created_at, created_by, origin) VALUES ('person_n', 'N', 1, 'by', 'SHA256:g')");
    await c.query("INSERT INTO custody_person_locks (id, gateway, at, locked_by, signature) VALUES ('person_n', 'SHA256:g', 7, 'by', 's')");
    await c.query('COMMIT');
    assert.equal(await mirror.read(c), 2);
    assert.equal(mirror.locks.get('person_n/SHA256:g')?.at, 7);
    assert.equal(await mirror.read(c), 0);
  });
});
