/**
 * No reply reaches a PostgreSQL client before its result is in the journal (issue 16, item 3): the
 * moment a client sees a statement complete, its `pg.result` has been journaled. And when the
 * result cannot be journaled after the server acted, the client gets FATAL and the connection
 * closes — never an ErrorResponse that invites a retry of a statement that already committed —
 * while the database shows the statement ran.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import type { AuditEventInput } from '../../shared/events';
import { AuditStore, type StoreUnavailableError } from '../../proxy/audit/store';
import { type Harness, startHarness } from './pg-harness';

type Done = (err: StoreUnavailableError | null) => void;

describe('results are journaled before their replies go out', () => {
  let h: Harness;
  let direct: pg.Client;
  const table = `custody_rj_${randomBytes(4).toString('hex')}`;
  /** Results journaled so far, by statement text. */
  const journaled: string[] = [];
  let failResults = false;
  before(async () => {
    h = await startHarness();
    const store = h.store as unknown as { appendAsync(inputs: AuditEventInput[], done: Done): void };
    const real = store.appendAsync.bind(store);
    let lastSql = new Map<number, string>();
    store.appendAsync = (inputs, done) => {
      for (const e of inputs) {
        const p = e.payload as { n?: number; sql?: string };
        if (e.kind === 'pg.statement' && p.n !== undefined) lastSql.set(p.n, p.sql ?? '');
      }
      if (failResults && inputs.some((e) => e.kind === 'pg.result')) {
        done(Object.assign(new Error('disk full (injected)'), { name: 'StoreUnavailableError' }) as StoreUnavailableError);
        return;
      }
      real(inputs, (err) => {
        if (!err) for (const e of inputs) if (e.kind === 'pg.result') journaled.push(lastSql.get((e.payload as { n: number }).n) ?? '?');
        done(err);
      });
    };
    lastSql = new Map();
    // As at a gateway's start: room is reserved to note results that cannot be journaled.
    h.store.recordUnrecordedResults();
    direct = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database: 'postgres' });
    await direct.connect();
    await direct.query(`CREATE TABLE ${table} (id int)`);
  });
  after(async () => {
    await direct.query(`DROP TABLE IF EXISTS ${table}`);
    await direct.end();
    await h.close();
  });

  it('the client sees a statement complete only after its result is in the journal', async () => {
    const c = new pg.Client({ host: h.host, port: h.port, user: 'agent', password: h.key, database: 'postgres' });
    await c.connect();
    try {
      for (let i = 0; i < 20; i++) {
        const sql = `INSERT INTO ${table} VALUES (${i})`;
        await c.query(sql);
        assert.ok(journaled.includes(sql), `the client saw "${sql}" complete before its result was journaled`);
        const select = `SELECT count(*) FROM ${table} WHERE id <= ${i}`;
        const r = await c.query({ text: select, rowMode: 'array' });
        assert.equal(String(r.rows[0]?.[0]), String(i + 1));
        assert.ok(journaled.includes(select), 'a result with rows, too');
      }
    } finally {
      await c.end();
    }
  });

  it('a result that cannot be journaled ends the session with FATAL, not an error that invites a retry', async () => {
    const c = new pg.Client({ host: h.host, port: h.port, user: 'agent', password: h.key, database: 'postgres' });
    c.on('error', () => {});
    await c.connect();
    failResults = true;
    try {
      const err = (await c.query(`INSERT INTO ${table} VALUES (1000)`).then(
        () => assert.fail('the client was told the INSERT completed, though its result is not in the log'),
        (e: unknown) => e,
      )) as Error & { severity?: string };
      // Either the FATAL itself, or the connection ending with it: never a plain ERROR.
      assert.notEqual(err.severity, 'ERROR', err.message);
      if (err.severity) assert.equal(err.severity, 'FATAL');
      assert.match(err.message, /audit log cannot record results|Connection terminated/);
    } finally {
      failResults = false;
      await c.end().catch(() => {});
    }
    // The server acted: the row is there.
    const rows = await direct.query({ text: `SELECT count(*) FROM ${table} WHERE id = 1000`, rowMode: 'array' });
    assert.equal(String(rows.rows[0]?.[0]), "1");
    // The next start records that the statement's result is missing, in its session.
    const next = AuditStore.open(h.dataDir);
    try {
      assert.equal(next.recordUnrecordedResults(), 1);
      const [event] = next.db.prepare("SELECT session, payload FROM events WHERE kind = 'result.unrecorded'").all() as { session: string; payload: string }[];
      assert.ok(event, 'a result.unrecorded event');
      assert.deepEqual(
        { result: (JSON.parse(event.payload) as { result: string }).result, client: (JSON.parse(event.payload) as { client: string }).client },
        { result: 'pg.result', client: 'FATAL, connection closed' },
      );
      h.store.settle();
      const statements = next.db.prepare("SELECT payload FROM events WHERE kind = 'pg.statement' AND session = ?").all(event.session) as { payload: string }[];
      assert.ok(statements.some((row) => row.payload.includes('VALUES (1000)')), 'in the session that ran the statement');
    } finally {
      next.close();
    }
  });
});
