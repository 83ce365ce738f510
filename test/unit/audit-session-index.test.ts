import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { AuditEventInput } from '../../shared/events';
import { AuditStore } from '../../proxy/audit/store';
import { tempDir } from '../support/tmp';

const statement = (session: string, sql: string): AuditEventInput => ({ kind: 'pg.statement', session, actor: 'alice', connection: 'db', payload: { sql } });

/** The sessions table as another connection (the CLI, the dashboard's SQL) sees it. */
function tableRow(path: string, id: string): { events: number; requests: number; errors: number; ended_at: number | null; actor_name: string | null } | undefined {
  const db = new Database(path, { readonly: true });
  try {
    return db.prepare('SELECT * FROM sessions WHERE id = ?').get(id) as ReturnType<typeof tableRow>;
  } finally {
    db.close();
  }
}

describe('session index written after the events it summarises', () => {
  it('keeps appends free of session rows, yet reads through the store see every committed event', () => {
    const store = AuditStore.open(tempDir());
    store.append({ kind: 'session.start', session: 's1', actor: 'alice', connection: 'db', payload: { protocol: 'postgres', actorName: 'Alice' } });
    store.appendMany([statement('s1', 'SELECT 1'), statement('s2', 'SELECT 2'), { kind: 'pg.error', session: 's1', actor: 'alice', connection: 'db', payload: { message: 'x' } }]);
    assert.equal(tableRow(store.path, 's1'), undefined, 'the append transaction itself does not write the session row');
    const s1 = store.session('s1');
    assert.equal(s1?.events, 3);
    assert.equal(s1?.requests, 1);
    assert.equal(s1?.errors, 1);
    assert.equal(s1?.actorName, 'Alice');
    assert.equal(s1?.protocol, 'postgres');
    store.append(statement('s2', 'SELECT 3'));
    const listed = store.listSessions();
    assert.equal(listed.total, 2);
    assert.deepEqual(
      listed.sessions.map((s) => [s.id, s.events, s.requests]).sort(),
      [
        ['s1', 3, 1],
        ['s2', 2, 2],
      ],
    );
    store.close();
  });

  it('writes the rows within the delay without any read, merging several commits like the upsert does', async () => {
    const store = AuditStore.open(tempDir());
    const t0 = Date.now();
    store.append({ ...statement('s1', 'SELECT 1'), time: t0 });
    store.append({ ...statement('s1', 'SELECT 2'), time: t0 + 5 });
    store.append({ kind: 'session.end', session: 's1', actor: 'alice', connection: 'db', payload: { protocol: 'postgres', actorName: 'Alice' }, time: t0 + 9 });
    await sleep(AuditStore.SESSION_INDEX_DELAY_MS * 4);
    const row = tableRow(store.path, 's1');
    assert.equal(row?.events, 3);
    assert.equal(row?.requests, 2);
    assert.equal(row?.ended_at, t0 + 9);
    assert.equal(row?.actor_name, 'Alice');
    // Later commits add to the written row.
    store.append({ ...statement('s1', 'SELECT 3'), time: t0 + 20 });
    await sleep(AuditStore.SESSION_INDEX_DELAY_MS * 4);
    assert.equal(tableRow(store.path, 's1')?.events, 4);
    assert.equal(store.session('s1')?.lastEventAt, t0 + 20);
    assert.equal(store.session('s1')?.endedAt, t0 + 9);
    store.close();
  });

  it('writes pending rows at close', () => {
    const dir = tempDir();
    const store = AuditStore.open(dir);
    store.appendMany([statement('s1', 'SELECT 1'), statement('s1', 'SELECT 2')]);
    store.close();
    assert.equal(tableRow(store.path, 's1')?.events, 2);
    const again = AuditStore.open(dir);
    assert.equal(again.session('s1')?.requests, 2);
    again.close();
  });

  it('drops nothing from the index when an append fails (fail closed, the events are not in the log either)', () => {
    const store = AuditStore.open(tempDir());
    store.append(statement('s1', 'SELECT 1'));
    assert.throws(() => store.appendMany([statement('s1', 'SELECT 2'), { kind: 'pg.statement', session: 's1', payload: { bad: Number.NaN } }]), /audit store unavailable/);
    assert.equal(store.session('s1')?.events, 1);
    assert.equal(store.head().size, 1);
    store.close();
  });
});
