/**
 * Rows of a long result are journaled before they reach the client (issue 16, item 3): a result
 * that spans several reads of the server's socket gets a `pg.rows` (rows sent so far) journaled
 * before each read's rows go out, and its `pg.result` before the last. Checked from the client's
 * side: at every row the client receives, the journal already counts at least that many rows of its
 * statement. And when rows cannot be journaled, the client gets FATAL, never the rest.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import type { AuditEventInput } from '../../shared/events';
import type { StoreUnavailableError } from '../../proxy/audit/store';
import { type Harness, startHarness } from './pg-harness';

type Done = (err: StoreUnavailableError | null) => void;
const ROWS = 60_000;
const SQL = `SELECT g, repeat('x', 40) AS pad FROM generate_series(1, ${ROWS}) AS g`;

describe('rows of a long result are journaled before they are sent', () => {
  let h: Harness;
  /** The most rows of the long SELECT journaled so far (pg.rows or pg.result). */
  let journaledRows = 0;
  let pgRowsEvents = 0;
  let failRows = false;
  let statementN: number | undefined;
  before(async () => {
    h = await startHarness();
    const store = h.store as unknown as { appendAsync(inputs: AuditEventInput[], done: Done): void };
    const real = store.appendAsync.bind(store);
    store.appendAsync = (inputs, done) => {
      for (const e of inputs) {
        const p = e.payload as { n?: number; sql?: string };
        if (e.kind === 'pg.statement' && p.sql?.includes('generate_series')) statementN = p.n;
      }
      if (failRows && inputs.some((e) => e.kind === 'pg.rows')) {
        done(Object.assign(new Error('disk full (injected)'), { name: 'StoreUnavailableError' }) as StoreUnavailableError);
        return;
      }
      real(inputs, (err) => {
        if (!err)
          for (const e of inputs) {
            const p = e.payload as { n: number; rows: number };
            if ((e.kind === 'pg.rows' || e.kind === 'pg.result') && p.n === statementN) {
              journaledRows = Math.max(journaledRows, p.rows);
              if (e.kind === 'pg.rows') pgRowsEvents++;
            }
          }
        done(err);
      });
    };
    h.store.recordUnrecordedResults();
  });
  after(() => h.close());

  it('every row the client receives is already counted in the journal', async () => {
    const c = new pg.Client({ host: h.host, port: h.port, user: 'agent', password: h.key, database: 'postgres' });
    await c.connect();
    try {
      let received = 0;
      let ahead = 0;
      const q = c.query(new pg.Query(SQL));
      await new Promise<void>((resolve, reject) => {
        q.on('row', () => {
          received++;
          if (received > journaledRows) ahead++;
        });
        q.on('end', () => resolve());
        q.on('error', reject);
      });
      assert.equal(received, ROWS);
      assert.equal(ahead, 0, `${ahead} rows reached the client before the journal counted them`);
      assert.ok(pgRowsEvents >= 2, `the result spanned several reads: ${pgRowsEvents} pg.rows events`);
      assert.equal(journaledRows, ROWS, 'the pg.result counts every row');
      // A short statement needs no pg.rows: its result comes in one read.
      const before = pgRowsEvents;
      assert.equal((await c.query('SELECT 1 AS one')).rows[0].one, 1);
      assert.equal(pgRowsEvents, before);
    } finally {
      await c.end();
    }
  });

  it('when rows cannot be journaled, the client gets FATAL and not the rest of the result', async () => {
    const c = new pg.Client({ host: h.host, port: h.port, user: 'agent', password: h.key, database: 'postgres' });
    const ended = new Promise<Error & { code?: string }>((resolve) => c.on('error', resolve));
    await c.connect();
    let received = 0;
    failRows = true;
    try {
      const q = c.query(new pg.Query(SQL));
      q.on('row', () => received++);
      const err = await new Promise<Error & { code?: string }>((resolve) => {
        q.on('error', resolve);
        q.on('end', () => resolve(new Error('the query completed')));
      });
      assert.match(err.message, /audit log cannot record|terminat|Connection terminated/i, err.message);
      assert.ok(received < ROWS, `the client got ${received} of ${ROWS} rows`);
      const fatal = await Promise.race([ended, new Promise<undefined>((r) => setTimeout(() => r(undefined), 2000))]);
      if (fatal?.code !== undefined) assert.equal(fatal.code, '58000');
    } finally {
      failRows = false;
      await c.end().catch(() => {});
    }
  });
});
