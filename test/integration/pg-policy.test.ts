/**
 * Policy, holds, masking and fail-closed recording through the PostgreSQL proxy, against the real
 * server: a held DROP TABLE approved and denied (the real HoldQueue), denials answered with 42501
 * while the session stays usable, masked rows, errors and COPY output, and refusal when the audit
 * log cannot write.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import type { MaskSpan } from '../../shared/events';
import type { Identity } from '../../shared/identity';
import { HoldQueue } from '../../proxy/approvals/hold-queue';
import { type ColumnRef, MaskingError, type RowMasker } from '../../proxy/masking/types';
import { eventsOf, type Harness, maskingWith, passthroughRows, startHarness, until } from './pg-harness';

const run = promisify(execFile);

async function direct(sql: string): Promise<string> {
  const { stdout } = await run('psql', ['host=127.0.0.1 port=5432 user=postgres dbname=postgres', '-X', '-Atc', sql], { timeout: 30_000 });
  return stdout.trim();
}

function tableName(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

async function client(h: Harness): Promise<pg.Client> {
  const c = new pg.Client({ host: h.host, port: h.port, user: 'agent', password: h.key, database: 'postgres' });
  await c.connect();
  return c;
}

const ada: Identity = { subject: 'key:ada', name: 'Ada', groups: ['dba'], roles: ['approver', 'user'], via: 'api-key' };

describe('held DROP TABLE (real HoldQueue)', () => {
  let h: Harness;
  let queue: HoldQueue;
  before(async () => {
    h = await startHarness({
      policies: [{ name: 'hold-drop', match: { connections: ['warehouse'], sql: ['drop', 'delete_without_where'] }, action: 'hold', hold: { approvers: ['dba'], timeout: '1m' } }],
      holds: (store, bus) => (queue = new HoldQueue({ store, bus })),
    });
  });
  after(() => h.close());

  it('waits with everything queued behind it, then runs once approved', async () => {
    const t = tableName('custody_hold');
    await direct(`create table ${t} (id int)`);
    const c = await client(h);
    try {
      let queuedDone = false;
      const drop = c.query(`drop table ${t}`);
      const queued = c.query('select 7 as seven').then((r) => {
        queuedDone = true;
        return r;
      });
      const hold = await until('the hold', () => queue.list({ state: 'pending' }).holds[0]);
      assert.match(hold.summary, new RegExp(`drop table ${t}`));
      assert.equal(hold.protocol, 'postgres');
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(await direct(`select count(*) from pg_class where relname = '${t}'`), '1', 'not dropped while held');
      assert.equal(queuedDone, false, 'the statement behind the held one waits too');
      await queue.decide(hold.id, ada, { decision: 'approve', reason: 'planned cleanup' });
      await drop;
      assert.equal((await queued).rows[0].seven, 7);
      assert.equal(await direct(`select count(*) from pg_class where relname = '${t}'`), '0');
    } finally {
      await c.end();
      await direct(`drop table if exists ${t}`);
    }
    const stmt = eventsOf(h.store, 'pg.statement').find((e) => (e.payload as { sql: string }).sql === `drop table ${t}`)!;
    assert.equal((stmt.payload as { decision: { action: string } }).decision.action, 'hold');
  });

  it('answers a denied hold with 42501 and the reason; the session stays usable and nothing ran', async () => {
    const t = tableName('custody_hold');
    await direct(`create table ${t} (id int); insert into ${t} values (1)`);
    const c = await client(h);
    try {
      const del = c.query(`delete from ${t}`).then(
        () => null,
        (e: pg.DatabaseError) => e,
      );
      const hold = await until('the hold', () => queue.list({ state: 'pending' }).holds[0]);
      await queue.decide(hold.id, ada, { decision: 'deny', reason: 'not during business hours' });
      const err = await del;
      assert.ok(err, 'the statement failed');
      assert.equal(err.code, '42501');
      assert.match(err.message, /denied by Ada: not during business hours/);
      assert.equal((await c.query('select 1 as one')).rows[0].one, 1);
      assert.equal(await direct(`select count(*) from ${t}`), '1');
    } finally {
      await c.end();
      await direct(`drop table if exists ${t}`);
    }
  });

  it('cancels the hold when the client presses Ctrl-C', async () => {
    const t = tableName('custody_hold');
    await direct(`create table ${t} (id int)`);
    try {
      const child = spawn('psql', [h.conninfo, '-X', '-c', `drop table ${t}`], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const hold = await until('the hold', () => queue.list({ state: 'pending' }).holds[0]);
      child.kill('SIGINT');
      await new Promise((r) => child.on('exit', r));
      assert.match(stderr, /canceling statement due to user request/);
      await until('the hold to end', () => (queue.get(hold.id)?.state === 'cancelled' ? true : undefined));
      assert.equal(await direct(`select count(*) from pg_class where relname = '${t}'`), '1');
    } finally {
      await direct(`drop table if exists ${t}`);
    }
  });
});

describe('denied statements', () => {
  let h: Harness;
  before(async () => {
    h = await startHarness({ policies: [{ name: 'no-drop', match: { sql: ['drop', 'truncate'] }, action: 'deny', reason: 'dropping tables needs a change ticket' }] });
  });
  after(() => h.close());

  it('refuses in the simple protocol with 42501 and keeps the session (psql)', async () => {
    const t = tableName('custody_deny');
    await direct(`create table ${t} (id int)`);
    try {
      const { stdout, stderr } = await run('psql', [h.conninfo, '-X', '-At', '-c', `drop table ${t}`, '-c', 'select 99'], { timeout: 20_000 });
      assert.match(stderr, /statement refused by policy "no-drop": dropping tables needs a change ticket/);
      assert.equal(stdout.trim(), '99');
      assert.equal(await direct(`select count(*) from pg_class where relname = '${t}'`), '1');
    } finally {
      await direct(`drop table if exists ${t}`);
    }
  });

  it('refuses in the extended protocol; inside a transaction the transaction fails as in PostgreSQL', async () => {
    const t = tableName('custody_deny');
    await direct(`create table ${t} (id int)`);
    const c = await client(h);
    try {
      await assert.rejects(c.query(`truncate ${t}`), (e: pg.DatabaseError) => e.code === '42501');
      assert.equal((await c.query('select $1::int as v', [5])).rows[0].v, 5);
      await c.query('begin');
      await c.query(`insert into ${t} values ($1)`, [1]);
      await assert.rejects(c.query(`drop table ${t}`), /refused by policy/);
      await assert.rejects(c.query('select 1'), /current transaction is aborted/);
      await c.query('commit');
      assert.equal(await direct(`select count(*) from ${t}`), '0', 'the insert before the refusal was rolled back');
    } finally {
      await c.end();
      await direct(`drop table if exists ${t}`);
    }
  });

  it('treats SQL it cannot parse as risky under a deny rule (fail closed)', async () => {
    const c = await client(h);
    try {
      await assert.rejects(c.query('drop tabel whatever'), (e: pg.DatabaseError) => e.code === '42501' && /no-drop/.test(e.message));
    } finally {
      await c.end();
    }
    const stmt = eventsOf(h.store, 'pg.statement').find((e) => (e.payload as { sql: string }).sql === 'drop tabel whatever')!;
    assert.deepEqual((stmt.payload as { classes: string[] }).classes, ['unknown']);
    assert.match((stmt.payload as { parseError: string }).parseError, /syntax error/);
  });
});

describe('policies that match on detectors when the scan cannot finish', () => {
  let h: Harness;
  before(async () => {
    const failing: RowMasker = { ...passthroughRows, detectorHits: () => { throw new MaskingError('masking failed closed: the scan ran past its time budget'); } };
    h = await startHarness({
      masking: maskingWith(failing),
      policies: [{ name: 'no-cards', match: { detectors: ['credit_card'] }, action: 'deny', reason: 'no card numbers' }],
    });
  });
  after(() => h.close());

  it('refuses the statement with the reason (fail closed), and the session stays usable', async () => {
    const c = await client(h);
    try {
      await assert.rejects(c.query('select 1'), (e: pg.DatabaseError) => e.code === '42501' && /could not check the statement for the detectors .*time budget/.test(e.message));
      await assert.rejects(c.query('select 2'), /could not check/);
    } finally {
      await c.end();
    }
  });
});

describe('fail closed when the audit log cannot write', () => {
  it('refuses statements with a clear error, and serves again once the store is back', async () => {
    const h = await startHarness();
    after(() => h.close());
    const c = await client(h);
    try {
      assert.equal((await c.query('select 1 as one')).rows[0].one, 1);
      await new Promise((r) => setTimeout(r, 50));
      // The journal is where a statement is recorded first; /dev/full answers every write with ENOSPC.
      h.store.redirectJournal('/dev/full');
      await assert.rejects(c.query('select 2'), (e: pg.DatabaseError) => e.code === '58000' && /audit log cannot record it.*ENOSPC/.test(e.message));
      h.store.redirectJournal();
      assert.equal((await c.query('select 3 as three')).rows[0].three, 3);
    } finally {
      await c.end();
    }
    assert.ok(!eventsOf(h.store, 'pg.statement').some((e) => (e.payload as { sql: string }).sql === 'select 2'));
  });
});

describe('row masking', () => {
  const EMAIL = /[\w.+-]+@[\w-]+\.[\w.]+/g;
  let h: Harness;
  let t: string;
  const seen: ColumnRef[] = [];
  type Masked = { text: string; spans: MaskSpan[]; counts: Record<string, number> };
  const masker: RowMasker = {
    active: true,
    value(col, text, scope): Masked | null {
      seen.push(col);
      if (col.table === t && col.column === 'ssn') return { text: scope === 'log' ? '[SSN]' : `***-**-${text.slice(-4)}`, spans: [{ type: 'SSN', start: 0, end: 5, rule: 'cols' }], counts: { SSN: 1 } };
      if (col.column === 'card') return { text: '[CARD]', spans: [], counts: { CARD: 1 } };
      if (!EMAIL.test(text)) return null;
      EMAIL.lastIndex = 0;
      const out = text.replace(EMAIL, '[EMAIL]');
      return { text: out, spans: [{ type: 'EMAIL', start: 0, end: 7, rule: 'pii' }], counts: { EMAIL: 1 } };
    },
    text(text): Masked {
      const out = text.replace(EMAIL, '[EMAIL]');
      return { text: out, spans: out === text ? [] : [{ type: 'EMAIL', start: out.indexOf('[EMAIL]'), end: out.indexOf('[EMAIL]') + 7, rule: 'pii' }], counts: out === text ? {} : { EMAIL: 1 } };
    },
    detectorHits: () => [],
  };
  before(async () => {
    t = tableName('custody_mask');
    await direct(`create table ${t} (id int, ssn text, contact text, card bigint); insert into ${t} values (1, '123-45-6789', 'write to bob@example.com please', 4111111111111111), (2, '987-65-4321', 'none', null)`);
    h = await startHarness({ masking: maskingWith(masker) });
  });
  after(async () => {
    await h.close();
    await direct(`drop table if exists ${t}`);
  });

  it('masks DataRow values by column (table names resolved) and by detector; text and binary formats', async () => {
    const c = await client(h);
    try {
      const r = await c.query(`select id, ssn, contact, card from ${t} order by id`);
      assert.deepEqual(r.rows, [
        { id: 1, ssn: '***-**-6789', contact: 'write to [EMAIL] please', card: null },
        { id: 2, ssn: '***-**-4321', contact: 'none', card: null },
      ]);
      assert.ok(seen.some((s) => s.table === t && s.column === 'ssn'), 'the masker saw the table name');
      const b: pg.QueryResult = await c.query({ text: `select id, ssn, card from ${t} where id = $1`, values: [1], binary: true } as pg.QueryConfig);
      assert.equal(b.rows[0].id, 1);
      assert.equal(b.rows[0].ssn, '***-**-6789', 'binary text values masked in place');
      assert.equal(b.rows[0].card, null, 'binary values of other types become NULL');
    } finally {
      await c.end();
    }
    await h.idle();
    const result = eventsOf(h.store, 'pg.result').find((e) => JSON.stringify((e.payload as { sample?: unknown }).sample ?? '').includes('[SSN]'))!;
    assert.ok(result, 'recorded rows are masked for the log');
    assert.ok(!JSON.stringify(h.store.events(1, 10_000)).includes('123-45-6789'), 'the original never reaches the log');
  });

  it('masks error messages, statements in the log, and COPY TO output', async () => {
    const c = await client(h);
    try {
      await assert.rejects(c.query("select 'alice@example.org'::int"), (e: Error) => /\[EMAIL\]/.test(e.message) && !e.message.includes('alice@'));
    } finally {
      await c.end();
    }
    const { stdout } = await run('psql', [h.conninfo, '-X', '-c', `\\copy (select contact from ${t} order by id) to stdout`], { timeout: 20_000 });
    assert.equal(stdout, 'write to [EMAIL] please\nnone\n');
    // Column rules apply to COPY rows too: the gateway learns the columns before the COPY runs.
    const table = await run('psql', [h.conninfo, '-X', '-c', `\\copy ${t} to stdout`], { timeout: 20_000 });
    assert.equal(table.stdout, '1\t***-**-6789\twrite to [EMAIL] please\t\\N\n2\t***-**-4321\tnone\t\\N\n');
    const csv = await run('psql', [h.conninfo, '-X', '-c', `\\copy (select id, ssn, card from ${t} order by id) to stdout with (format csv, header)`], { timeout: 20_000 });
    assert.equal(csv.stdout, 'id,ssn,card\n1,"***-**-6789",\n2,"***-**-4321",\n');
    const binary = await run('psql', [h.conninfo, '-X', '-c', `copy ${t} to stdout with (format binary)`], { timeout: 20_000 }).catch((e: { stderr: string }) => e);
    assert.match((binary as { stderr: string }).stderr, /COPY output cannot be masked here/);
    await h.idle();
    const stmt = eventsOf(h.store, 'pg.statement').find((e) => (e.payload as { sql: string }).sql.includes('::int'))!;
    assert.equal((stmt.payload as { sql: string }).sql, "select '[EMAIL]'::int");
    assert.equal(stmt.spans[0]!.path, '/sql');
    assert.ok(!JSON.stringify(h.store.events(1, 10_000)).includes('alice@example.org'));
  });
});
