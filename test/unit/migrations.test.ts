import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { migrate } from '../../proxy/audit/store';
import { MIGRATIONS } from '../../proxy/audit/migrations';

describe('store migrations', () => {
  it('are numbered 1..n without gaps', () => {
    assert.deepEqual(
      MIGRATIONS.map((m) => m.version),
      MIGRATIONS.map((_, i) => i + 1),
    );
  });

  for (const m of MIGRATIONS) {
    it(`migration ${m.version} (${m.name}) applies on top of ${m.version - 1} and bumps user_version`, () => {
      const db = new Database(':memory:');
      migrate(db, MIGRATIONS.slice(0, m.version - 1));
      const before = db.pragma('user_version', { simple: true });
      assert.equal(before, m.version - 1);
      migrate(db, MIGRATIONS.slice(0, m.version));
      assert.equal(db.pragma('user_version', { simple: true }), m.version);
      assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
      db.close();
    });
  }

  it('is idempotent: a second run changes nothing', () => {
    const db = new Database(':memory:');
    migrate(db);
    assert.equal(migrate(db), MIGRATIONS.length);
    db.close();
  });

  it('rolls back a failing migration whole', () => {
    const db = new Database(':memory:');
    const broken = [...MIGRATIONS, { version: MIGRATIONS.length + 1, name: 'broken', sql: 'CREATE TABLE ok_table (x); CREATE TABLE events (dup);' }];
    assert.throws(() => migrate(db, broken), /already exists/);
    assert.equal(db.pragma('user_version', { simple: true }), MIGRATIONS.length);
    assert.equal((db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE name = 'ok_table'").get() as { n: number }).n, 0);
    db.close();
  });
});
