/**
 * Clients that vanish at every protocol state release everything at once: the server's own
 * pg_stat_activity shows no backend left for them (a running statement is cancelled, not left to
 * finish), the gateway holds no socket or session, and a held statement's hold is cancelled — its
 * card leaves the inboxes (`hold.resolved` on the bus), a later approval is refused as too late,
 * and the statement never runs.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { HoldQueue } from '../../proxy/approvals/hold-queue';
import type { EventBus } from '../../proxy/bus';
import type { Identity } from '../../shared/identity';
import { type WireStep, WireClient, encodeStep } from '../support/pg-wire-client';
import { type Harness, startHarness, until } from './pg-harness';

const ada: Identity = { subject: 'key:ada', name: 'Ada', groups: ['dba'], roles: ['approver', 'user'], via: 'api-key' };
const N = 3;

describe('PostgreSQL clients that vanish', () => {
  let h: Harness;
  let admin: pg.Client;
  let queue: HoldQueue;
  let bus: EventBus;
  let t: string;
  before(async () => {
    h = await startHarness({
      policies: [{ name: 'hold-delete', match: { sql: ['delete', 'delete_without_where'] }, action: 'hold', hold: { approvers: ['dba'], timeout: '1m' } }],
      holds: (store, b) => {
        bus = b;
        return (queue = new HoldQueue({ store, bus: b }));
      },
    });
    admin = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database: 'postgres' });
    await admin.connect();
    t = `custody_vanish_${randomBytes(4).toString('hex')}`;
    await admin.query(`CREATE TABLE ${t} (id int); INSERT INTO ${t} SELECT generate_series(1, 3)`);
  });
  after(async () => {
    await admin.query(`DROP TABLE IF EXISTS ${t}`);
    await admin.end();
    await h.close();
  });

  const backends = async (app: string) => Number((await admin.query(`SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1`, [app])).rows[0].n);

  /** What each client sends before it vanishes (the gateway has answered what it could by then). */
  const states: [string, (t: string) => Buffer][] = [
    ['logged in, nothing sent', () => Buffer.alloc(0)],
    ['Parse without Sync', (t) => encodeStep(['P', 's1', `SELECT * FROM ${t}`])],
    ['Parse and Bind without Sync', (t) => Buffer.concat((['P', 'B'] as const).map((k) => encodeStep(k === 'P' ? ['P', 's1', `SELECT * FROM ${t}`] : ['B', '', 's1'])))],
    ['Parse, Bind and Execute without Sync', () => Buffer.concat([encodeStep(['P', '', 'SELECT pg_sleep(30)']), encodeStep(['B', '', '']), encodeStep(['E', ''])])],
    ['a statement running after Flush', () => Buffer.concat([encodeStep(['P', '', 'SELECT pg_sleep(30)']), encodeStep(['B', '', '']), encodeStep(['E', '']), encodeStep(['H'])])],
    ['a simple query running', () => encodeStep(['Q', 'SELECT pg_sleep(30)'])],
    ['a pipeline with a Sync in the middle', () => Buffer.concat(([['P', '', 'SELECT 1'], ['S'], ['P', '', 'SELECT pg_sleep(30)'], ['B', '', ''], ['E', '']] as WireStep[]).map(encodeStep))],
    ['half a message', () => encodeStep(['Q', 'SELECT 1']).subarray(0, 7)],
    ['an open transaction', () => encodeStep(['Q', 'BEGIN; SELECT 1'])],
    ['COPY FROM STDIN under way', (t) => Buffer.concat([encodeStep(['Q', `COPY ${t} FROM STDIN`]), Buffer.from([0x64, 0, 0, 0, 6, 0x39, 0x0a])])],
  ];

  for (const [state, bytes] of states) {
    for (const how of ['destroy', 'end'] as const) {
      it(`${state} (${how === 'destroy' ? 'socket destroyed' : 'FIN after the bytes'}): upstream and sockets released at once`, async () => {
        const app = `vanish_${randomBytes(3).toString('hex')}`;
        const clients = await Promise.all(Array.from({ length: N }, () => WireClient.open(h.port, { user: 'tester', database: 'postgres', application_name: app }, h.key)));
        for (const c of clients) c.socket.write(bytes(t));
        await until('the upstream backends to be busy or idle', async () => ((await backends(app)) === N ? true : undefined));
        await new Promise((r) => setTimeout(r, 200));
        const started = Date.now();
        for (const c of clients) {
          if (how === 'destroy') c.socket.destroy();
          else c.socket.end();
        }
        await until('the server backends to go', async () => ((await backends(app)) === 0 ? true : undefined), 3000);
        await until('the gateway sessions to end', () => (h.listener.sessions === 0 ? true : undefined), 3000);
        await until('the gateway sockets to close', async () => ((await h.listener.openSockets()) === 0 ? true : undefined), 3000);
        assert.ok(Date.now() - started < 3000, `released after ${Date.now() - started} ms`);
      });
    }
  }

  for (const how of ['destroy', 'terminate', 'cancel'] as const)
  it(`a held statement dies with its client (${how}): hold cancelled, card gone, a later approval runs nothing`, async () => {
    const resolved: { id: string; state: string }[] = [];
    const unsubscribe = bus.subscribe((m) => {
      if (m.type === 'hold.resolved') resolved.push({ id: m.hold.id, state: m.hold.state });
    });
    try {
      const app = `vanish_${randomBytes(3).toString('hex')}`;
      const c = await WireClient.open(h.port, { user: 'tester', database: 'postgres', application_name: app }, h.key);
      c.send([['Q', `DELETE FROM ${t}`]]);
      const hold = await until('the hold', () => queue.list({ state: 'pending' }).holds[0]);
      if (how === 'destroy') c.socket.destroy();
      else if (how === 'terminate') c.socket.end(encodeStep(['X']));
      else {
        // A CancelRequest on a new connection, with the key the gateway gave this client.
        const cancel = Buffer.alloc(16);
        cancel.writeInt32BE(16, 0);
        cancel.writeInt32BE(80877102, 4);
        cancel.writeInt32BE(c.pid, 8);
        c.secret.copy(cancel, 12);
        const s = connect({ host: '127.0.0.1', port: h.port });
        s.on('error', () => {});
        s.end(cancel);
      }
      await until('the hold to be cancelled', () => (queue.get(hold.id)?.state === 'cancelled' ? true : undefined), 3000);
      assert.deepEqual(resolved, [{ id: hold.id, state: 'cancelled' }], 'the card leaves every inbox');
      assert.equal(queue.list({ state: 'pending' }).total, 0);
      await assert.rejects(queue.decide(hold.id, ada, { decision: 'approve', reason: 'ok' }), /already cancelled/);
      if (how === 'cancel') {
        // Cancelled, not disconnected: the client is told so, and its session goes on.
        const replies = await c.run([['Q', 'SELECT 1']]);
        assert.ok(c.replies.some((m) => m.code === 0x45), 'the held statement answered with an error');
        assert.equal(replies.at(-1)?.code, 0x5a);
        await c.close();
      }
      await until('the server backend to go', async () => ((await backends(app)) === 0 ? true : undefined), 3000);
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(Number((await admin.query(`SELECT count(*) AS n FROM ${t}`)).rows[0].n), 3, 'the DELETE never ran');
    } finally {
      unsubscribe();
    }
  });
});

describe('a statement held inside an open transaction', () => {
  let h: Harness;
  let queue: HoldQueue;
  let admin: pg.Client;
  before(async () => {
    h = await startHarness({
      // The server ends sessions idle in a transaction for 4 s; the rule's hold timeout is a minute.
      upstream: 'postgres://postgres@127.0.0.1:5432/postgres?options=-c%20idle_in_transaction_session_timeout%3D4s',
      policies: [{ name: 'hold-delete', match: { sql: ['delete', 'delete_without_where'] }, action: 'hold', hold: { approvers: ['dba'], timeout: '1m' } }],
      holds: (store, b) => (queue = new HoldQueue({ store, bus: b })),
    });
    admin = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database: 'postgres' });
    await admin.connect();
  });
  after(async () => {
    await admin.end();
    await h.close();
  });

  it('is flagged as keeping its locks, and its timeout is capped below idle_in_transaction_session_timeout', async () => {
    const t = `custody_txhold_${randomBytes(4).toString('hex')}`;
    await admin.query(`CREATE TABLE ${t} (id int); INSERT INTO ${t} SELECT generate_series(1, 3)`);
    const c = new pg.Client({ host: h.host, port: h.port, user: 'tester', password: h.key, database: 'postgres' });
    await c.connect();
    try {
      // Outside a transaction: no flag, the rule's own timeout.
      const outside = c.query(`DELETE FROM ${t} WHERE id = 1`).catch((e: Error) => e);
      const first = await until('the first hold', () => queue.list({ state: 'pending' }).holds[0]);
      assert.equal(first.inTransaction, undefined);
      assert.equal(first.expiresAt - first.createdAt, 60_000);
      queue.decide(first.id, ada, { decision: 'deny', reason: 'no' });
      await outside;

      await c.query('BEGIN');
      const inside = c.query(`DELETE FROM ${t}`).catch((e: Error) => e);
      const hold = await until('the hold', () => queue.list({ state: 'pending' }).holds[0]);
      assert.equal(hold.inTransaction, true);
      assert.ok(hold.expiresAt - hold.createdAt < 4000, `hold timeout ${hold.expiresAt - hold.createdAt} ms`);
      const err = await inside;
      assert.ok(err instanceof Error && /expired/.test(err.message), `the statement expired: ${String(err)}`);
      await c.query('ROLLBACK');
      assert.equal(Number((await admin.query(`SELECT count(*) AS n FROM ${t}`)).rows[0].n), 3);
    } finally {
      await c.end().catch(() => {});
      await admin.query(`DROP TABLE IF EXISTS ${t}`);
    }
  });
});
