/**
 * Real clients through the PostgreSQL proxy against the real server: psql (TLS, \copy, Ctrl-C),
 * node-postgres (prepared statements, pipelining), postgres.js, and pgbench.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import postgres from 'postgres';
import { eventsOf, type Harness, startHarness } from './pg-harness';

const run = promisify(execFile);

async function psql(h: Harness, args: string[], extra = ''): Promise<string> {
  const { stdout } = await run('psql', [`${h.conninfo} ${extra}`, '-X', '-v', 'ON_ERROR_STOP=1', ...args], { timeout: 30_000 });
  return stdout;
}

async function direct(sql: string, db = 'postgres'): Promise<string> {
  const { stdout } = await run('psql', [`host=127.0.0.1 port=5432 user=postgres dbname=${db}`, '-X', '-Atc', sql], { timeout: 30_000 });
  return stdout;
}

describe('psql through the gateway', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  it('runs queries over TLS (sslmode=require) and records them', async () => {
    const out = await psql(h, ['-At', '-c', 'select 40 + 2', '-c', '\\conninfo'], 'sslmode=require');
    assert.match(out, /^42$/m);
    assert.match(out, /SSL connection \(protocol: TLSv1\.[23]/);
    await h.idle();
    const start = eventsOf(h.store, 'session.start').at(-1)!;
    assert.equal((start.payload as { client: { tls: boolean } }).client.tls, true);
    const stmt = eventsOf(h.store, 'pg.statement').find((e) => (e.payload as { sql: string }).sql === 'select 40 + 2')!;
    assert.ok(stmt, 'the statement is recorded');
    const result = eventsOf(h.store, 'pg.result').find((e) => e.session === stmt.session && (e.payload as { n: number }).n === (stmt.payload as { n: number }).n)!;
    assert.deepEqual((result.payload as { sample: unknown }).sample, [['42']]);
    assert.equal((result.payload as { rows: number }).rows, 1);
  });

  it('runs a multi-statement simple query and records each statement', async () => {
    const out = await psql(h, ['-At', '-c', "select 1; select 'two'; select 3"]);
    assert.equal(out.trim(), '1\ntwo\n3');
    const sqls = eventsOf(h.store, 'pg.statement').map((e) => (e.payload as { sql: string }).sql);
    assert.ok(sqls.includes("select 'two'") && sqls.includes('select 3'));
  });

  it('copies in and out with \\copy', async () => {
    const table = `custody_copy_${randomBytes(4).toString('hex')}`;
    const dir = h.dataDir;
    const src = join(dir, 'in.csv');
    writeFileSync(src, '1,alpha\n2,beta\n3,"gam,ma"\n');
    try {
      await psql(h, ['-c', `create table ${table} (id int, name text)`]);
      await psql(h, ['-c', `\\copy ${table} from '${src}' with (format csv)`]);
      const dst = join(dir, 'out.csv');
      await psql(h, ['-c', `\\copy (select * from ${table} order by id) to '${dst}' with (format csv)`]);
      assert.equal(readFileSync(dst, 'utf8'), '1,alpha\n2,beta\n3,"gam,ma"\n');
      assert.equal((await direct(`select count(*) from ${table}`)).trim(), '3');
    } finally {
      await direct(`drop table if exists ${table}`);
    }
    const copies = eventsOf(h.store, 'pg.statement').filter((e) => (e.payload as { classes: string[] }).classes.includes('copy'));
    assert.equal(copies.length, 2);
  });

  it('cancels a long query when psql is interrupted (CancelRequest routed to the right backend)', async () => {
    const started = Date.now();
    const child = spawn('psql', [h.conninfo, '-X', '-c', 'select pg_sleep(30)'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // Wait until the statement is running upstream, then press Ctrl-C.
    for (let i = 0; i < 100; i++) {
      const running = await direct("select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'");
      if (running.trim() !== '0') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    assert.notEqual(code, 0);
    assert.match(stderr, /canceling statement due to user request/);
    assert.ok(Date.now() - started < 15_000, 'cancelled well before the 30 s sleep ended');
    await h.idle();
    const err = eventsOf(h.store, 'pg.error').find((e) => (e.payload as { code?: string }).code === '57014');
    assert.ok(err, 'the cancellation is recorded as the statement error');
  });
});

describe('node-postgres through the gateway', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness();
  });
  after(() => h.close());

  it('runs prepared statements, parameters and pipelined queries', async () => {
    const client = new pg.Client({ host: h.host, port: h.port, user: 'agent', password: h.key, database: 'postgres' });
    await client.connect();
    try {
      const prepared = { name: 'add', text: 'select $1::int + $2::int as sum' };
      for (let i = 0; i < 3; i++) assert.equal((await client.query({ ...prepared, values: [i, 10] })).rows[0].sum, i + 10);
      // pg queues these and writes them without waiting: replies are paired through the FIFO.
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => client.query('select $1::text as v, pg_backend_pid() as pid', [`v${i}`])));
      assert.deepEqual(results.map((r) => r.rows[0].v), Array.from({ length: 20 }, (_, i) => `v${i}`));
      await assert.rejects(client.query('select * from no_such_table_here'), /does not exist/);
      assert.equal((await client.query('select 1 as one')).rows[0].one, 1, 'the session stays usable after an error');
      await client.query('begin');
      await client.query('select 1');
      await client.query('rollback');
    } finally {
      await client.end();
    }
    await h.idle();
    const stmts = eventsOf(h.store, 'pg.statement').filter((e) => (e.payload as { protocol: string }).protocol === 'extended');
    const withParams = stmts.find((e) => JSON.stringify((e.payload as { params?: unknown }).params) === '["v7"]');
    assert.ok(withParams, 'parameters are recorded');
    const errors = eventsOf(h.store, 'pg.error').filter((e) => (e.payload as { code?: string }).code === '42P01');
    assert.equal(errors.length, 1);
  });

  it('reads large results in several chunks intact', async () => {
    const client = new pg.Client({ host: h.host, port: h.port, user: 'agent', password: h.key, database: 'postgres' });
    await client.connect();
    try {
      const r = await client.query("select g, repeat('x', 500) || g as pad from generate_series(1, 5000) g");
      assert.equal(r.rows.length, 5000);
      assert.equal(r.rows[4999].pad, `${'x'.repeat(500)}5000`);
    } finally {
      await client.end();
    }
    await h.idle();
    const result = eventsOf(h.store, 'pg.result').find((e) => (e.payload as { rows: number }).rows === 5000)!;
    assert.equal((result.payload as { sample: unknown[] }).sample.length, 50, 'the first N rows are recorded');
  });
});

describe('postgres.js through the gateway', () => {
  it('runs pipelined parameterized queries and transactions', async () => {
    const h = await startHarness();
    after(() => h.close());
    const sql = postgres({ host: h.host, port: h.port, user: 'agent', pass: h.key, database: 'postgres', max: 1, onnotice: () => {} });
    try {
      const rows = await Promise.all(Array.from({ length: 30 }, (_, i) => sql`select ${i}::int as i, ${'t' + i}::text as t`));
      assert.deepEqual(rows.map((r) => r[0]!.i), Array.from({ length: 30 }, (_, i) => i));
      const rows5 = await sql.begin(async (tx) => tx`select 5 as n`);
      assert.equal(rows5[0]!['n'], 5);
      await assert.rejects(sql`select 1/0`, /division by zero/);
      assert.equal((await sql`select 'ok' as s`)[0]!.s, 'ok');
    } finally {
      await sql.end();
    }
  });
});

describe('pgbench through the gateway', () => {
  it('initializes and runs a short select-only benchmark', async () => {
    const db = 'custody_pgbench_test';
    const exists = await direct(`select 1 from pg_database where datname = '${db}'`);
    if (!exists.trim()) await direct(`create database ${db}`);
    const h = await startHarness({ upstream: `postgres://postgres@127.0.0.1:5432/${db}` });
    // The server is shared: leave no database behind.
    after(async () => {
      await h.close();
      await direct(`drop database if exists ${db} with (force)`);
    });
    const env = { ...process.env, PGPASSWORD: h.key };
    const common = ['-h', h.host, '-p', String(h.port), '-U', 'bench'];
    await run('pgbench', ['-i', '-s', '1', '-q', ...common, db], { env, timeout: 120_000 });
    const { stdout } = await run('pgbench', ['-S', '-T', '3', '-c', '2', '-n', ...common, db], { env, timeout: 60_000 });
    const tps = Number(/tps = ([\d.]+)/.exec(stdout)?.[1]);
    assert.ok(tps > 50, `pgbench reached ${tps} tps through the gateway`);
    assert.match(stdout, /number of failed transactions: 0/);
    // pgbench's clients end cleanly (Terminate): nothing of theirs is recorded as an error.
    await h.idle();
    const errors = h.store.events(1, 1_000_000).filter((e) => e.kind === 'pg.error');
    assert.deepEqual(errors.map((e) => e.payload), [], 'a clean client exit records no pg.error');
  });
});
