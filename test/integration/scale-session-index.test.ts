/**
 * The store's session index (docs/SCALE-OUT.md, "The team's sessions in every console") agrees with
 * the gateway's own SQLite index, row for row, on a real PostgreSQL store:
 *
 * - kept by the shipper, batch by batch (a session split across shipments counted once per event);
 * - filled by migration 6's backfill from events shipped before it existed;
 * - read back by the console's queries with the filters the SQLite index applies.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import type { AuditEventInput, SessionSummary } from '../../shared/events';
import { migrateSharedStore, SESSION_INDEX_BACKFILL } from '../../proxy/audit/shared-store/schema';
import { listTeamSessions, teamSession } from '../../proxy/audit/shared-store/session-index';
import { shipOnce } from '../../proxy/audit/shared-store/shipping';
import { AuditStore } from '../../proxy/audit/store';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { tempDir } from '../support/tmp';

const GATEWAY = 'SHA256:index-test';
let db: TestDatabase;
let c: pg.Client;
let store: AuditStore;

const span = (type: string) => ({ type, start: 0, end: 4, rule: 'pii', path: '/body' });

/** A few sessions of every protocol, with masked values, denials, holds and errors. */
function sessionEvents(i: number): AuditEventInput[] {
  const session = `ses_index${i}`;
  const protocol = (['http', 'postgres', 'ssh'] as const)[i % 3];
  const request = protocol === 'http' ? 'http.request' : protocol === 'postgres' ? 'pg.statement' : 'ssh.request';
  const base = { session, actor: `key:user${i}`, connection: `conn${i % 2}` };
  return [
    { ...base, kind: 'session.start', payload: { protocol, actorName: `user ${i}` } },
    { ...base, kind: request, payload: { n: 1 }, spans: i % 2 ? [span('EMAIL'), span('CREDIT_CARD')] : [] },
    { ...base, kind: 'policy.decision', payload: { action: i % 2 ? 'deny' : 'allow', rule: 'r' } },
    ...(i % 3 === 0 ? [{ ...base, kind: 'hold.created', payload: { id: `hold${i}` } } as AuditEventInput, { ...base, kind: 'hold.resolved', payload: { id: `hold${i}`, state: 'expired' } } as AuditEventInput] : []),
    { ...base, kind: protocol === 'http' ? 'http.error' : protocol === 'postgres' ? 'pg.error' : 'ssh.error', payload: { message: 'x' } },
    { ...base, kind: request, payload: { n: 2 }, spans: [span('EMAIL')] },
    ...(i % 4 === 3 ? [] : [{ ...base, kind: 'session.end', payload: { protocol } } as AuditEventInput]),
  ];
}

function local(): SessionSummary[] {
  store.flushSessions();
  return store.listSessions({ limit: 1000 }).sessions.sort((a, b) => a.id.localeCompare(b.id));
}

async function remote(): Promise<SessionSummary[]> {
  const r = await listTeamSessions(c, 'SHA256:someone-else', {}, 1000);
  return r.sessions.map(({ gateway: _g, gatewayName: _n, ...s }) => s).sort((a, b) => a.id.localeCompare(b.id));
}

async function shipInBatches(size: number): Promise<void> {
  for (;;) {
    const r = await shipOnce(c, store.db, GATEWAY, size);
    if (r.events < size) return;
  }
}

before(async () => {
  db = await createTestDatabase('custody_test_session_index');
  c = await db.client();
  await migrateSharedStore(c);
  await c.query("INSERT INTO custody_gateways (id, public_key, key_name, name, status, request, requested_at, last_seen) VALUES ($1, 'k', 'n', 'index-host', 'enrolled', 'r', 0, 0)", [GATEWAY]);
  store = AuditStore.open(tempDir('custody-session-index-'));
});

after(async () => {
  store?.close();
  await db?.drop();
});

describe("the store's session index", () => {
  it('is kept by the shipper as the SQLite index counts, with sessions split across shipments', async () => {
    // Interleaved sessions, shipped 3 events at a time: every session spans several shipments.
    const all = Array.from({ length: 8 }, (_, i) => sessionEvents(i));
    for (let step = 0; all.some((e) => e.length); step++) for (const events of all) if (events.length) store.append(events.shift()!);
    await shipInBatches(3);
    const want = local();
    assert.equal(want.length, 8);
    assert.ok(want.some((s) => s.masked > 0 && s.denied > 0 && s.holds > 0 && s.errors > 0), 'the sample exercises every count');
    assert.deepEqual(await remote(), want);
    // Filters as the SQLite index applies them.
    const masked = await listTeamSessions(c, 'SHA256:someone-else', { hadMasking: true, protocol: 'http' }, 100);
    assert.deepEqual(masked.sessions.map((s) => s.id).sort(), store.listSessions({ hadMasking: true, protocol: 'http' }).sessions.map((s) => s.id).sort());
    assert.equal((await listTeamSessions(c, 'SHA256:someone-else', { user: 'user 3' }, 100)).total, 1);
    assert.equal((await listTeamSessions(c, GATEWAY, {}, 100)).total, 0, "a gateway's own sessions are not read back from the store");
    const one = await teamSession(c, 'SHA256:someone-else', 'ses_index5');
    assert.equal(one?.gatewayName, 'index-host');
  });

  it("migration 6's backfill counts the shipped events the same way", async () => {
    await c.query('DELETE FROM custody_sessions');
    await c.query(SESSION_INDEX_BACKFILL);
    assert.deepEqual(await remote(), local());
  });
});
