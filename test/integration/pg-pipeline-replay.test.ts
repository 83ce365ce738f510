/**
 * Random pipelines (Parse/Bind/Describe/Execute/Close/Sync/Flush and simple queries with PREPARE,
 * EXECUTE, DEALLOCATE [ALL], BEGIN/COMMIT, reused names, statements that fail) replayed through the
 * gateway against the real server, with no rule in the way, so everything the server accepts runs.
 *
 * A statement-level trigger stores `current_query()` of every write the server ran. Checked: each
 * one is the recorded SQL of a statement the gateway let through, decided with the class of what
 * ran; each write the log says changed rows was captured by the server; and the real server never
 * disagreed with the gateway's prediction (no session ended on a mismatch).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import pg from 'pg';
import { BackendCode } from '../../proxy/postgres/message-codes';
import { type WireStep, WireClient } from '../support/pg-wire-client';
import { type Harness, startHarness } from './pg-harness';

const names = ['', 's1', 's2'];
const portals = ['', 'p1'];
const parseSql = ['DELETE FROM $T WHERE id > 100', 'INSERT INTO $T VALUES (200, $$p$$)', 'UPDATE $T SET note = $$u$$ WHERE id > 100', 'SELECT 1', 'SELECT 1/0', 'SELEC broken', 'EXECUTE s1'];
const querySql = [
  'PREPARE s1 AS INSERT INTO $T VALUES (300, $$q$$)',
  'PREPARE s2 AS DELETE FROM $T WHERE id > 100',
  'PREPARE s1 AS UPDATE $T SET note = $$v$$ WHERE id > 100',
  'DEALLOCATE s1',
  'DEALLOCATE ALL',
  'EXECUTE s1',
  'EXECUTE s2',
  'BEGIN',
  'COMMIT',
  'SELECT 1/0',
  'INSERT INTO $T VALUES (400, $$r$$)',
];

const step: fc.Arbitrary<WireStep> = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(fc.constant('P'), fc.constantFrom(...names), fc.constantFrom(...parseSql)) },
  { weight: 4, arbitrary: fc.tuple(fc.constant('B'), fc.constantFrom(...portals), fc.constantFrom(...names)) },
  { weight: 1, arbitrary: fc.tuple(fc.constant('D'), fc.constantFrom('S', 'P'), fc.constantFrom(...names, 'p1')) },
  { weight: 4, arbitrary: fc.tuple(fc.constant('E'), fc.constantFrom(...portals)) },
  { weight: 1, arbitrary: fc.tuple(fc.constant('C'), fc.constantFrom('S', 'P'), fc.constantFrom(...names, 'p1')) },
  { weight: 4, arbitrary: fc.constant(['S'] as WireStep) },
  { weight: 1, arbitrary: fc.constant(['H'] as WireStep) },
  { weight: 3, arbitrary: fc.tuple(fc.constant('Q'), fc.constantFrom(...querySql)) },
) as fc.Arbitrary<WireStep>;

interface StatementPayload {
  n: number;
  sql: string;
  classes: string[];
  refused?: unknown;
}

describe('random pipelines replayed against the real server', () => {
  let h: Harness;
  let admin: pg.Client;
  before(async () => {
    h = await startHarness();
    admin = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database: 'postgres' });
    await admin.connect();
  });
  after(async () => {
    await admin.end();
    await h.close();
  });

  it('records exactly what the server ran, and never disagrees with it', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 30 }), async (raw) => {
        // Every pipeline ends with a Sync, so the server answers all of it.
        const steps: WireStep[] = [...raw, ['S']];
        const t = `custody_rp_${randomBytes(4).toString('hex')}`;
        const log = `${t}_log`;
        await admin.query(`
          CREATE TABLE ${t} (id int, note text);
          CREATE TABLE ${log} (q text, op text);
          CREATE FUNCTION ${t}_cap() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN INSERT INTO ${log} VALUES (current_query(), TG_OP); RETURN NULL; END $f$;
          CREATE TRIGGER ${t}_cap AFTER INSERT OR UPDATE OR DELETE ON ${t} FOR EACH STATEMENT EXECUTE FUNCTION ${t}_cap();
        `);
        try {
          const filled = steps.map((s) => s.map((v) => (typeof v === 'string' ? v.replaceAll('$T', t) : v)) as WireStep);
          const from = h.store.events(1, 1_000_000).length + 1;
          const c = await WireClient.open(h.port, { user: 'tester', database: 'postgres' }, h.key);
          const replies = await c.run(filled);
          await c.close();
          // CommandCompletes before the last ErrorResponse the client saw: their writes may have been
          // rolled back with their transaction (an error later in the same pipeline or block).
          const lastError = replies.map((r) => r.code).lastIndexOf(BackendCode.ErrorResponse);
          const maybeRolledBack = replies.slice(0, Math.max(0, lastError)).filter((r) => r.code === BackendCode.CommandComplete).length;
          await h.idle();
          const events = h.store.events(from, 1_000_000);
          const fatal = events.filter((e) => e.kind === 'pg.error' && (e.payload as { fatal?: boolean }).fatal);
          assert.deepEqual(fatal.map((e) => e.payload), [], 'the session ended on an error');
          const statements = events.filter((e) => e.kind === 'pg.statement').map((e) => e.payload as StatementPayload);
          const captured = (await admin.query(`SELECT q, op FROM ${log}`)).rows as { q: string; op: string }[];
          for (const { q, op } of captured) {
            const run = statements.find((s) => !s.refused && s.sql === q && s.classes.includes(op.toLowerCase()));
            assert.ok(run, `the server ran ${op} "${q}", but the log records no such statement: ${JSON.stringify(statements)}`);
          }
          const completed = events.filter((x) => x.kind === 'pg.result' && (x.payload as { command: string | null }).command);
          for (const [i, e] of completed.entries()) {
            const r = e.payload as { n: number; command: string | null; rows: number };
            const word = r.command?.split(' ')[0];
            if (!word || !['INSERT', 'UPDATE', 'DELETE'].includes(word) || r.rows === 0) continue;
            // A write that completed and was then rolled back with its transaction took its capture with it.
            if (i < maybeRolledBack) continue;
            const st = statements.find((s) => s.n === r.n)!;
            assert.ok(
              captured.some((x) => x.q === st.sql),
              `statement ${st.n} "${st.sql}" is recorded as ${r.command}, but the server captured no such statement`,
            );
          }
        } finally {
          await admin.query(`DROP TABLE IF EXISTS ${t}; DROP TABLE IF EXISTS ${log}; DROP FUNCTION IF EXISTS ${t}_cap()`);
        }
      }),
      { numRuns: 40, ...(process.env.REPLAY_SEED ? { seed: Number(process.env.REPLAY_SEED), path: process.env.REPLAY_PATH } : {}) },
    );
  });
});
