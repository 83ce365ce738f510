/**
 * Column masking follows the data, through the whole gateway against the real PostgreSQL: a result
 * column computed from a masked column (expressions, casts, concatenation, subqueries, CTEs, set
 * operations, `COPY (query) TO`) reaches the client masked, in the simple and the extended protocol;
 * and a statement that uses a masked column other than as a plain projection is classed
 * `reads_masked`, which a deny rule refuses before it runs (checked in the catalog for the ones that
 * would write). Both corpora are data: test/fixtures/masking-lineage.txt and masking-reads-masked.txt.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { Config } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { UPSTREAM } from './pg-harness';

const run = promisify(execFile);
const table = `custody_lin_${randomBytes(4).toString('hex')}`;
const SSN = '123-45-6789';
const EMAIL = 'jane.doe@example.com';
/** Anything that would show the value or a transform of it. */
const LEAKS = [SSN, '123456789', '9876-54-321', '6789', 'jane.doe', 'JANE.DOE', 'example.com', 'EXAMPLE.COM', 'abc-de-fghi', 'MTIz', Buffer.from(SSN).toString('hex')];

function lines(file: string): string[] {
  return readFileSync(new URL(`../fixtures/${file}`, import.meta.url), 'utf8')
    .split('\n')
    .filter((l) => l.trim() && !l.startsWith('#'))
    .map((l) => l.replaceAll('{t}', table));
}

async function direct(sql: string): Promise<string> {
  const { stdout } = await run('psql', ['host=127.0.0.1 port=5432 user=postgres dbname=postgres', '-X', '-Atc', sql], { timeout: 30_000 });
  return stdout.trim();
}

/** The raw value or a transform of it in `text`, if any. */
function leak(text: string): string | undefined {
  return LEAKS.find((l) => text.includes(l));
}

describe('masking follows the data', () => {
  let gw: Gateway;
  let dataDir: string;
  const clients: pg.Client[] = [];

  async function connect(connection: string): Promise<pg.Client> {
    const a = gw.address(`postgres:${connection}`);
    const c = new pg.Client({ host: '127.0.0.1', port: Number(a.slice(a.lastIndexOf(':') + 1)), user: 'dev', password: gw.firstKey!, database: 'postgres' });
    await c.connect();
    clients.push(c);
    return c;
  }

  before(async () => {
    await direct(`create table ${table} (id int, ssn text, email text, note text); insert into ${table} values (1, '${SSN}', '${EMAIL}', 'hello'); create table ${table}_sink (v text); create view ${table}_v as select id, reverse(ssn) as r, upper(email) as e, note from ${table}; create view ${table}_p as select ssn as s from ${table}; create table ${table}_people (ssn text); insert into ${table}_people values ('536-22-8145'); create function ${table}_f() returns setof text language sql as 'select ssn from ${table}_people'`);
    dataDir = mkdtempSync(join(tmpdir(), 'custody-lineage-'));
    const config = Config.parse({
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [
        { name: 'warehouse', kind: 'postgres', upstream: UPSTREAM, listen: '127.0.0.1:0', tls: { mode: 'disable' } },
        { name: 'guarded', kind: 'postgres', upstream: UPSTREAM, listen: '127.0.0.1:0', tls: { mode: 'disable' } },
        { name: 'opaque', kind: 'postgres', upstream: UPSTREAM, listen: '127.0.0.1:0', tls: { mode: 'disable' } },
      ],
      // Column rules only: no detector would recognise these values by their shape once transformed.
      masking: [
        { id: 'pii-columns', columns: [`${table}.ssn`, `${table}.email`] },
        // Where lineage cannot see (a function's result), the masked column's detectors still run.
        { id: 'ssn-shape', connections: ['opaque'], columns: [`${table}_people.ssn`], detectors: ['us_ssn'] },
      ],
      policies: [{ name: 'no-oracles', match: { connections: ['guarded'], sql: ['reads_masked'] }, action: 'deny', reason: 'masked columns may only be read as they are' }],
    });
    gw = await Gateway.start({ config, dataDir, log: silentLogger });
  });

  after(async () => {
    for (const c of clients) await c.end().catch(() => {});
    await gw?.stop();
    rmSync(dataDir, { recursive: true, force: true });
    await direct(`drop view if exists ${table}_view, ${table}_v, ${table}_p; drop function if exists ${table}_f(); drop table if exists ${table}, ${table}_sink, ${table}_people, ${table}_copy, ${table}_into`);
  });

  const derived = lines('masking-lineage.txt');
  it('has a corpus of derived columns', () => assert.ok(derived.length >= 40, String(derived.length)));

  for (const sql of derived) {
    it(`masks: ${sql.replace(table, 't')}`, async () => {
      const db = await connect('warehouse');
      // Simple protocol, and extended (a named statement makes pg send Parse/Bind/Execute).
      const simple = await db.query(sql);
      const results = [JSON.stringify(simple.rows)];
      if (!sql.startsWith('COPY')) {
        const ext = await db.query({ name: `q${randomBytes(4).toString('hex')}`, text: sql });
        results.push(JSON.stringify(ext.rows));
        // Every value of these results is computed from a masked column: each must be masked whole
        // (a redaction, or NULL where the type cannot carry one), not merely free of the raw text.
        for (const row of [...simple.rows, ...ext.rows] as Record<string, unknown>[])
          for (const [k, v] of Object.entries(row)) assert.ok(v === null || /^\[[A-Z_]+\]$/.test(String(v)), `${k} = ${JSON.stringify(v)} is not masked`);
      }
      for (const r of results) assert.equal(leak(r), undefined, `the client saw ${leak(r)} in ${r}`);
      assert.ok(simple.rows.length > 0 || sql.startsWith('COPY'), 'the statement returned rows');
    });
  }

  it('masks COPY (query) TO STDOUT rows, read by psql', async () => {
    const a = gw.address('postgres:warehouse');
    const conninfo = `host=127.0.0.1 port=${a.slice(a.lastIndexOf(':') + 1)} user=dev password=${gw.firstKey} dbname=postgres sslmode=disable`;
    for (const sql of derived.filter((s) => s.startsWith('COPY'))) {
      const { stdout } = await run('psql', [conninfo, '-X', '-Atc', sql], { timeout: 20_000 });
      assert.ok(stdout.trim().length > 0, `${sql}: no rows`);
      // One masked value per line (CSV quotes it).
      for (const l of stdout.trim().split('\n')) assert.match(l, /^"?\[[A-Z_]+\]"?$/, `${sql}: ${l}`);
      assert.equal(leak(stdout), undefined, `${sql}: ${stdout}`);
    }
  });

  for (const line of lines('masking-reads-masked.txt')) {
    const [verdict, sql] = line.split('\t') as ['reads_masked' | 'plain', string];
    it(`${verdict === 'plain' ? 'lets through' : 'refuses'}: ${sql.replace(new RegExp(table, 'g'), 't')}`, async () => {
      const db = await connect('guarded');
      const outcome = await db.query(sql).then(
        () => 'ran',
        (err: { code?: string; message: string }) => `${err.code}: ${err.message}`,
      );
      if (verdict === 'plain') {
        assert.equal(outcome, 'ran');
        return;
      }
      assert.match(outcome, /^42501: .*no-oracles|^42501/, outcome);
      // Nothing it would have written exists (by the catalog), and the sink is empty.
      assert.equal(await direct(`select count(*) from pg_class where relname in ('${table}_copy', '${table}_into', '${table}_view')`), '0');
      assert.equal(await direct(`select count(*) from ${table}_sink`), '0');
    });
  }

  it('masks a renamed column by the origin PostgreSQL reports, through a cursor too', async () => {
    const db = await connect('warehouse');
    await db.query('BEGIN');
    await db.query(`DECLARE c1 CURSOR FOR SELECT id, ssn AS x, note FROM ${table}`);
    const r = await db.query('FETCH ALL FROM c1');
    await db.query('COMMIT');
    assert.deepEqual(r.rows, [{ id: 1, x: '[SSN]', note: 'hello' }]);
    // Reading masked columns through a cursor is reads_masked: the FETCH cannot be traced back.
    const guarded = await connect('guarded');
    await guarded.query('BEGIN');
    const refused = await guarded.query(`DECLARE c2 CURSOR FOR SELECT reverse(ssn) FROM ${table}`).then(
      () => 'ran',
      (err: { code?: string }) => err.code,
    );
    await guarded.query('ROLLBACK');
    assert.equal(refused, '42501');
  });

  it('masks only the view columns computed from masked ones', async () => {
    const db = await connect('warehouse');
    const r = await db.query(`SELECT * FROM ${table}_v`);
    assert.deepEqual(r.rows, [{ id: 1, r: '[SSN]', e: '[EMAIL]', note: 'hello' }]);
  });

  it('applies the masked column\'s detectors where the sources cannot be seen (a function result)', async () => {
    const db = await connect('opaque');
    const r = await db.query(`SELECT v AS anything FROM ${table}_f() AS v`);
    assert.deepEqual(r.rows, [{ anything: '[US_SSN]' }]);
  });

  it('records the class on the statement', async () => {
    const db = await connect('guarded');
    await db.query(`SELECT id FROM ${table} WHERE ssn LIKE '1%'`).catch(() => {});
    const events = gw.services.store.events(1, 100_000).filter((e) => e.kind === 'pg.statement');
    const last = events.at(-1)!.payload as { classes: string[]; sql: string };
    assert.ok(last.classes.includes('reads_masked'), JSON.stringify(last));
  });
});
