/**
 * Protocol-level bypass attempts (test/fixtures/pg-bypass/pipelines.jsonl, one attempt per line),
 * each sent as one pipelined write through the gateway to the real server, under a rule that holds
 * delete/drop/truncate (approvers approve the first `approve` holds of an attempt and deny the rest).
 *
 * Checked by the server's own state, never the gateway's account: the table and its three rows
 * must survive (catalog and row count), and a statement-level trigger stores `current_query()` of
 * every write that did run, which must be the recorded SQL of a statement the gateway let through,
 * decided with the class of what ran.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import type { HoldGate, HoldOutcome } from '../../proxy/approvals/types';
import type { HoldView } from '../../shared/holds';
import { type WireStep, WireClient } from '../support/pg-wire-client';
import { type Harness, startHarness } from './pg-harness';

interface Attempt {
  name: string;
  steps: WireStep[];
  /** Holds approved before the rest are denied (an approver let a PREPARE through). */
  approve?: number;
}

const corpus: Attempt[] = readFileSync(new URL('../fixtures/pg-bypass/pipelines.jsonl', import.meta.url), 'utf8')
  .split('\n')
  .filter((l) => l.trim() && !l.startsWith('//'))
  .map((l) => JSON.parse(l) as Attempt);

interface StatementPayload {
  n: number;
  sql: string;
  classes: string[];
  refused?: unknown;
  executes?: { name: string; sql: string | null }[];
}

describe('PostgreSQL protocol bypass corpus (real server)', () => {
  let h: Harness;
  let admin: pg.Client;
  let approveLeft = 0;
  const gate: HoldGate = {
    request: async (req) => {
      const approved = approveLeft-- > 0;
      const outcome: HoldOutcome = {
        state: approved ? 'approved' : 'denied',
        hold: { id: 'h', summary: req.summary } as unknown as HoldView,
        reason: approved ? 'looks harmless' : 'no',
        decidedBy: ['test'],
      };
      return outcome;
    },
  };

  before(async () => {
    h = await startHarness({
      policies: [{ name: 'no-destruction', match: { sql: ['delete', 'drop', 'truncate', 'delete_without_where'] }, action: 'hold', hold: { approvers: ['dba'], timeout: '1m' } }],
      holds: gate,
    });
    admin = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database: 'postgres' });
    await admin.connect();
  });
  after(async () => {
    await admin.end();
    await h.close();
  });

  it('a function that swaps a prepared statement through dynamic SQL is held before it runs', async () => {
    // The function's body runs dynamic SQL (EXECUTE of a string), which the gateway cannot see
    // into: the call is `unknown`, which a hold rule on SQL classes holds (here: denied). The swap
    // never happens, so the Bind of s1 runs the SELECT it was parsed as. Should an approver let
    // such a call through, the write-tag check still ends the session.
    const t = `custody_bp_${randomBytes(4).toString('hex')}`;
    await admin.query(`
      CREATE TABLE ${t} (id int); INSERT INTO ${t} VALUES (1);
      CREATE FUNCTION ${t}_swap() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'DEALLOCATE s1'; EXECUTE 'PREPARE s1 AS DELETE FROM ${t}'; END $$;
    `);
    try {
      const c = await WireClient.open(h.port, { user: 'tester', database: 'postgres' }, h.key);
      const replies = await c.run([['P', 's1', 'SELECT 1'], ['S'], ['Q', `SELECT ${t}_swap()`], ['B', '', 's1'], ['E', ''], ['S']]);
      const refused = replies.find((r) => r.code === 0x45);
      assert.equal(refused?.sqlstate, '42501', `the client is told: ${JSON.stringify(replies)}`);
      assert.ok(!replies.some((r) => r.code === 0x45 && r.sqlstate === '08P01'), 'no mismatch: nothing ran that was not decided');
      await c.close();
      await h.idle();
      const { rows } = await admin.query(`SELECT count(*)::int AS n FROM ${t}`);
      assert.equal(rows[0].n, 1, 'the DELETE never ran');

      // An approver lets the call through: the swap happens where the gateway cannot see it, the
      // Bind runs the DELETE, and its tag contradicts the decision: the session ends, recorded.
      const from = h.store.events(1, 1_000_000).length + 1;
      approveLeft = 1;
      const c2 = await WireClient.open(h.port, { user: 'tester', database: 'postgres' }, h.key);
      const after = await c2.run([['P', 's1', 'SELECT 1'], ['S'], ['Q', `SELECT ${t}_swap()`], ['B', '', 's1'], ['E', ''], ['S']]);
      const fatal = after.find((r) => r.code === 0x45 && r.sqlstate === '08P01');
      assert.ok(fatal, `the client is told: ${JSON.stringify(after)}`);
      assert.match(fatal.message ?? '', /completed "DELETE 1" for a statement decided as select/);
      await c2.close();
      await h.idle();
      const errors = h.store.events(from, 1_000_000).filter((e) => e.kind === 'pg.error').map((e) => e.payload as { message: string; fatal?: boolean });
      assert.ok(errors.some((e) => e.fatal && /DELETE 1/.test(e.message)), JSON.stringify(errors));
    } finally {
      await admin.query(`DROP TABLE IF EXISTS ${t}; DROP FUNCTION IF EXISTS ${t}_swap()`);
    }
  });

  for (const attempt of corpus) {
    it(attempt.name, async () => {
      const t = `custody_bp_${randomBytes(4).toString('hex')}`;
      const log = `${t}_log`;
      await admin.query(`
        CREATE TABLE ${t} (id int, note text);
        INSERT INTO ${t} SELECT g, 'n' || g FROM generate_series(1, 3) g;
        CREATE TABLE ${log} (q text, op text);
        CREATE FUNCTION ${t}_cap() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO ${log} VALUES (current_query(), TG_OP); RETURN NULL; END $$;
        CREATE TRIGGER ${t}_cap AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ${t} FOR EACH STATEMENT EXECUTE FUNCTION ${t}_cap();
        CREATE FUNCTION ${t}_wipe() RETURNS void LANGUAGE sql AS 'TRUNCATE ${t}';
      `);
      try {
        const oid = (await admin.query(`SELECT '${t}_wipe'::regproc::oid AS oid`)).rows[0].oid as number;
        const fill = (v: string | number) => (typeof v === 'string' ? v.replaceAll('$WIPE_OID', String(oid)).replaceAll('$T', t) : v);
        const steps = attempt.steps.map((s) => s.map(fill) as WireStep);
        approveLeft = attempt.approve ?? 0;
        const from = h.store.events(1, 1_000_000).length + 1;
        const c = await WireClient.open(h.port, { user: 'tester', database: 'postgres', application_name: t }, h.key);
        await c.run(steps);
        await c.close();
        await h.idle();

        // Nothing forbidden ran: the table is there with its rows.
        const exists = (await admin.query(`SELECT to_regclass($1) IS NOT NULL AS e`, [t])).rows[0].e as boolean;
        assert.ok(exists, 'the table was dropped');
        const rows = Number((await admin.query(`SELECT count(*) AS n FROM ${t} WHERE id BETWEEN 1 AND 3`)).rows[0].n);
        assert.equal(rows, 3, 'rows were deleted or truncated');

        // What ran is what the log says ran.
        const events = h.store.events(from, 1_000_000);
        const statements = events.filter((e) => e.kind === 'pg.statement').map((e) => e.payload as StatementPayload);
        const captured = (await admin.query(`SELECT q, op FROM ${log}`)).rows as { q: string; op: string }[];
        for (const { q, op } of captured) {
          const run = statements.find((s) => !s.refused && (s.sql === q || (q.includes(';') && q.includes(s.sql))) && s.classes.includes(op.toLowerCase()));
          assert.ok(run, `the server ran ${op} "${q}", but no statement recorded as let through says so: ${JSON.stringify(statements)}`);
        }
        const results = events.filter((e) => e.kind === 'pg.result').map((e) => e.payload as { n: number; command: string | null; rows: number });
        for (const r of results) {
          const word = r.command?.split(' ')[0];
          if (!word || !['INSERT', 'UPDATE', 'DELETE'].includes(word) || r.rows === 0) continue;
          const st = statements.find((s) => s.n === r.n)!;
          const q = captured.find((x) => x.q === st.sql || x.q.includes(st.sql));
          assert.ok(q, `statement ${st.n} "${st.sql}" is recorded as ${r.command}, but the server captured no such statement`);
        }
      } finally {
        await admin.query(`DROP TABLE IF EXISTS ${t}; DROP TABLE IF EXISTS ${log}; DROP FUNCTION IF EXISTS ${t}_cap(); DROP FUNCTION IF EXISTS ${t}_wipe()`);
      }
    });
  }
});
