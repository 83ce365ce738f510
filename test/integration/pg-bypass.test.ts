/**
 * The adversarial corpus (test/fixtures/pg-bypass/attempts.jsonl, one attempt a line) run through
 * the gateway against the real PostgreSQL, under the README's deny rule and under a `read_only`
 * allow-list with a catch-all deny. Each attempt gets a fresh schema `{s}` holding table `t`
 * (3 rows, a primary key, columns id and note) plus the attempt's own setup, run directly; after the
 * attempt, the database's own state says whether anything forbidden ran. Lines marked `allowed`
 * are reads (or, under the deny rule, harmless writes) that must run. Passwords written into
 * statements are masked in the log and on the hold card.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import pg from 'pg';
import { type ConfigInput, Connection } from '../../shared/config';
import type { HoldGate, HoldOutcome } from '../../proxy/approvals/types';
import { ROUTINE_CACHE_TTL_MS, RoutineCatalog } from '../../proxy/postgres/catalog';
import { classifySql } from '../../proxy/postgres/classify';
import { foldEffects } from '../../proxy/postgres/effects';
import { upstreamTarget } from '../../proxy/postgres/upstream';
import { eventsOf, type Harness, startHarness, UPSTREAM } from './pg-harness';

interface Attempt {
  name: string;
  setup?: string;
  attempt: string | string[];
  /** Run through the extended protocol (Parse/Bind/Execute) instead of a simple Query. */
  extended?: boolean;
  /** Parameters to bind (extended protocol). */
  params?: string[];
  check?: string;
  expect?: string;
  /** Must run without error. */
  allowed?: boolean;
  modes?: Mode[];
}
type Mode = 'deny' | 'read_only';

const run = promisify(execFile);

const corpus: Attempt[] = readFileSync(join(import.meta.dirname, '../fixtures/pg-bypass/attempts.jsonl'), 'utf8')
  .split('\n')
  .filter((l) => l.trim())
  .map((l) => JSON.parse(l) as Attempt);

const BASE_SETUP = "CREATE SCHEMA {s}; CREATE TABLE {s}.t (id int PRIMARY KEY, note text); INSERT INTO {s}.t SELECT g, 'n' || g FROM generate_series(1, 3) g";
/** Rows, untouched rows, columns, constraints. */
const BASE_CHECK =
  "SELECT (SELECT count(*) FROM {s}.t) || '/' || (SELECT count(*) FROM {s}.t WHERE note = 'n' || id) || '/' || " +
  "(SELECT count(*) FROM information_schema.columns WHERE table_schema = '{s}' AND table_name = 't') || '/' || " +
  "(SELECT count(*) FROM pg_constraint WHERE conrelid = '{s}.t'::regclass)";
const BASE_EXPECT = '3/3/2/1';

const POLICIES: Record<Mode, ConfigInput['policies']> = {
  // The README's rule.
  deny: [{ name: 'no-destructive-sql', match: { connections: ['warehouse'], sql: ['drop', 'truncate', 'delete_without_where', 'update_without_where'] }, action: 'deny' }],
  read_only: [
    { name: 'reads-run', match: { connections: ['warehouse'], sql: ['read_only'] }, action: 'allow' },
    { name: 'nothing-else', match: { connections: ['warehouse'] }, action: 'deny' },
  ],
};

for (const mode of ['deny', 'read_only'] as const) {
  describe(`bypass corpus under the ${mode === 'deny' ? "README's deny rule" : 'read_only allow-list'}`, () => {
    let h: Harness;
    let direct: pg.Client;
    before(async () => {
      h = await startHarness({ policies: POLICIES[mode] });
      direct = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database: 'postgres' });
      await direct.connect();
    });
    after(async () => {
      await direct.end();
      await h.close();
    });

    for (const a of corpus) {
      if (a.modes && !a.modes.includes(mode)) continue;
      it(`${a.allowed ? 'runs' : 'stops'}: ${a.name}`, async () => {
        const s = `custody_bp_${randomBytes(4).toString('hex')}`;
        const fill = (sql: string) => sql.replaceAll('{s}', s).replaceAll('{n}', s.slice(-8));
        await direct.query(fill(BASE_SETUP));
        try {
          if (a.setup) await direct.query(fill(a.setup));
          const client = new pg.Client({ host: h.host, port: h.port, user: 'agent', password: h.key, database: 'postgres' });
          client.on('error', () => {});
          await client.connect();
          const errors: string[] = [];
          try {
            for (const sql of Array.isArray(a.attempt) ? a.attempt : [a.attempt]) {
              try {
                if (a.params) await client.query(fill(sql), a.params);
                else await client.query(a.extended ? { name: `bp_${s}`, text: fill(sql) } : fill(sql));
              } catch (err) {
                errors.push((err as Error).message);
              }
            }
          } finally {
            await client.end().catch(() => {});
          }
          if (a.allowed) assert.deepEqual(errors, [], 'a statement that must run was refused');
          const check = await direct.query({ text: fill(a.check ?? BASE_CHECK), rowMode: 'array' });
          assert.equal(String(check.rows[0]?.[0]), a.expect ?? BASE_EXPECT, `the database changed (gateway said: ${errors.join(' | ') || 'nothing'})`);
        } finally {
          await direct.query(`DROP SCHEMA ${s} CASCADE`);
        }
      });
    }
  });
}

describe('psql under the read_only allow-list', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ policies: POLICIES.read_only });
  });
  after(() => h.close());

  it("runs psql's catalog commands (\\dt, \\df, \\l, \\dv) unheld", async () => {
    const { stdout } = await run('psql', [`host=${h.host} port=${h.port} user=agent password=${h.key} dbname=postgres`, '-X', '-v', 'ON_ERROR_STOP=1', '-c', '\\dt pg_catalog.pg_class', '-c', '\\df pg_catalog.lower', '-c', '\\l', '-c', '\\dv information_schema.tables'], { timeout: 60_000 });
    assert.match(stdout, /pg_class/);
    assert.match(stdout, /lower/);
    assert.match(stdout, /postgres/);
  });
});

describe('passwords inside statements', () => {
  let h: Harness;
  const summaries: string[] = [];
  const holds: HoldGate = {
    request: (req) => {
      summaries.push(req.summary);
      return Promise.resolve({ state: 'approved', hold: {} as HoldOutcome['hold'], reason: 'ok', decidedBy: ['ada'] });
    },
  };
  before(async () => {
    h = await startHarness({ policies: [{ name: 'hold-roles', match: { connections: ['warehouse'], sql: ['dcl'] }, action: 'hold', hold: { approvers: ['dba'] } }], holds });
  });
  after(() => h.close());

  it('are masked in the log and on the hold card, and the statement runs with the real password', async () => {
    const role = `custody_pw_${randomBytes(4).toString('hex')}`;
    const secret = `Sec-${randomBytes(6).toString('hex')}`;
    const client = new pg.Client({ host: h.host, port: h.port, user: 'agent', password: h.key, database: 'postgres' });
    await client.connect();
    try {
      // md5 hashes can be compared below: the server must have received the real password.
      await client.query("SET password_encryption = 'md5'");
      await client.query(`CREATE ROLE ${role} LOGIN PASSWORD '${secret}'`);
      await client.query(`ALTER ROLE ${role} WITH ENCRYPTED PASSWORD $p$${secret}2$p$`);
    } finally {
      await client.end();
    }
    const direct = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database: 'postgres' });
    await direct.connect();
    try {
      const stored = await direct.query<{ ok: boolean }>("SELECT rolpassword = 'md5' || md5($2 || $1) AS ok FROM pg_authid WHERE rolname = $1", [role, `${secret}2`]);
      assert.equal(stored.rows[0]?.ok, true, 'the server did not get the password as written');
      await h.idle();
      const recorded = eventsOf(h.store, 'pg.statement').map((e) => (e.payload as { sql: string }).sql);
      const mine = recorded.filter((s) => s.includes(role));
      assert.equal(mine.length, 2);
      for (const text of [...mine, ...summaries]) assert.ok(!text.includes(secret), `password in: ${text}`);
      assert.ok(mine.every((s) => s.includes("PASSWORD '[REDACTED]'")), mine.join(' | '));
      assert.equal(summaries.length, 2);
      assert.ok(summaries.every((s) => s.includes("'[REDACTED]'")));
      // Nor anywhere else in the log.
      assert.ok(!JSON.stringify(h.store.events(1, 100_000)).includes(secret));
    } finally {
      await direct.query(`DROP ROLE IF EXISTS ${role}`);
      await direct.end();
    }
  });
});

describe('the routine catalog behind the classifier', () => {
  let h: Harness;
  let direct: pg.Client;
  let s: string;
  before(async () => {
    h = await startHarness({ policies: POLICIES.deny });
    direct = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database: 'postgres' });
    await direct.connect();
    s = `custody_cat_${randomBytes(4).toString('hex')}`;
    await direct.query(BASE_SETUP.replaceAll('{s}', s));
    await direct.query(`CREATE FUNCTION ${s}.f() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM ${s}.t'`);
  });
  after(async () => {
    await direct.query(`DROP SCHEMA ${s} CASCADE`);
    await direct.end();
    await h.close();
  });
  const rows = async () => (await direct.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${s}.t`)).rows[0]!.n;

  it('drops its cache when DDL passes through: a function replaced on the same connection is seen at once', async () => {
    const client = new pg.Client({ host: h.host, port: h.port, user: 'agent', password: h.key, database: 'postgres' });
    await client.connect();
    try {
      assert.equal((await client.query(`SELECT ${s}.f() AS n`)).rows[0].n, '3', 'the read-only body runs');
      // Not destructive by itself, so the deny rule lets the replacement through…
      await client.query(`CREATE OR REPLACE FUNCTION ${s}.f() RETURNS bigint LANGUAGE sql AS 'DELETE FROM ${s}.t; SELECT 0::bigint'`);
      // …but the next call is classified by the new body.
      await assert.rejects(client.query(`SELECT ${s}.f()`), /refused by policy "no-destructive-sql"/);
      assert.equal(await rows(), '3');
      // And back: the read-only body runs again.
      await client.query(`CREATE OR REPLACE FUNCTION ${s}.f() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM ${s}.t'`);
      assert.equal((await client.query(`SELECT ${s}.f() AS n`)).rows[0].n, '3');
    } finally {
      await client.end();
    }
  });

  it('decides a prepared statement at Execute by the routine as it is then, not as it was at Parse', async () => {
    const client = new pg.Client({ host: h.host, port: h.port, user: 'agent', password: h.key, database: 'postgres' });
    await client.connect();
    const q = { name: `count_${s}`, text: `SELECT ${s}.f() AS n` };
    try {
      assert.equal((await client.query(q)).rows[0].n, '3');
      await client.query(`CREATE OR REPLACE FUNCTION ${s}.f() RETURNS bigint LANGUAGE sql AS 'DELETE FROM ${s}.t; SELECT 0::bigint'`);
      // pg binds the statement it prepared before: no new Parse.
      await assert.rejects(client.query(q), /refused by policy "no-destructive-sql"/);
      assert.equal(await rows(), '3');
      await client.query(`CREATE OR REPLACE FUNCTION ${s}.f() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM ${s}.t'`);
    } finally {
      await client.end();
    }
  });

  it('shares one lookup between sessions asking at the same moment', async () => {
    const catalog = new RoutineCatalog(upstreamTarget(Connection.parse({ name: 'w', kind: 'postgres', upstream: UPSTREAM, listen: '127.0.0.1:0' })));
    const side = (catalog as unknown as { side: { query: (sql: string, p: unknown[]) => Promise<unknown> } }).side;
    const query = side.query.bind(side);
    let queries = 0;
    side.query = (sql, p) => {
      queries++;
      return query(sql, p);
    };
    try {
      const c = classifySql(`SELECT ${s}.f() FROM ${s}.t WHERE id = 1`);
      await Promise.all(Array.from({ length: 8 }, () => catalog.resolve([c])));
      const one = queries;
      assert.ok(one > 0 && one <= 6, `${one} catalog queries for one set of names`);
      assert.ok(foldEffects(c, catalog.lookup()).statements[0]!.classes.includes('read_only'));
    } finally {
      catalog.close();
    }
  });

  it('asks again after its TTL: a function replaced outside the gateway is seen once the cache expires', async () => {
    const client = new pg.Client({ host: h.host, port: h.port, user: 'agent', password: h.key, database: 'postgres' });
    await client.connect();
    try {
      assert.equal((await client.query(`SELECT ${s}.f() AS n`)).rows[0].n, '3');
      await direct.query(`CREATE OR REPLACE FUNCTION ${s}.f() RETURNS bigint LANGUAGE sql AS 'TRUNCATE ${s}.t; SELECT 0::bigint'`);
      await new Promise((r) => setTimeout(r, ROUTINE_CACHE_TTL_MS + 500));
      await assert.rejects(client.query(`SELECT ${s}.f()`), /refused by policy "no-destructive-sql"/);
      assert.equal(await rows(), '3');
    } finally {
      await client.end();
    }
  });
});
