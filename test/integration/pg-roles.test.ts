/**
 * Per-group upstream roles (connection `roles`): each client group runs as its own PostgreSQL role,
 * so the server's privileges back the classifier. Real roles are created for the test and dropped
 * after; what each client may do is checked by what PostgreSQL itself allowed.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { Connection } from '../../shared/config';
import { eventsOf, type Harness, startHarness } from './pg-harness';

const tag = randomBytes(4).toString('hex');
const ro = `custody_ro_${tag}`;
const rw = `custody_rw_${tag}`;
const schema = `custody_roles_${tag}`;
const roles = { dev: ro, dba: rw };

async function gateway(h: Harness, extra: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const c = new pg.Client({ host: h.host, port: h.port, user: 'agent', password: h.key, database: 'postgres', ...extra });
  c.on('error', () => {});
  await c.connect();
  return c;
}

describe('per-group upstream roles', () => {
  let direct: pg.Client;
  const harnesses: Harness[] = [];
  const harness = async (groups: string[]) => {
    const h = await startHarness({ groups, connection: { roles } });
    harnesses.push(h);
    return h;
  };
  const rows = async () => (await direct.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${schema}.t`)).rows[0]!.n;

  before(async () => {
    direct = new pg.Client({ host: '127.0.0.1', port: 5432, user: 'postgres', database: 'postgres' });
    await direct.connect();
    await direct.query(`CREATE ROLE ${ro} NOLOGIN; CREATE ROLE ${rw} NOLOGIN; CREATE SCHEMA ${schema};
      CREATE TABLE ${schema}.t (id int PRIMARY KEY); INSERT INTO ${schema}.t SELECT generate_series(1, 3);
      GRANT USAGE ON SCHEMA ${schema} TO ${ro}, ${rw}; GRANT SELECT ON ${schema}.t TO ${ro}; GRANT SELECT, DELETE ON ${schema}.t TO ${rw}`);
  });
  after(async () => {
    for (const h of harnesses) await h.close();
    await direct.query(`DROP SCHEMA ${schema} CASCADE; DROP ROLE ${ro}; DROP ROLE ${rw}`);
    await direct.end();
  });

  it('runs a dev client as the read-only role: PostgreSQL refuses its writes, and the role cannot be changed', async () => {
    const h = await harness(['dev']);
    const c = await gateway(h);
    try {
      assert.equal((await c.query('SELECT current_user AS u')).rows[0].u, ro);
      assert.equal((await c.query(`SELECT count(*)::int AS n FROM ${schema}.t`)).rows[0].n, 3);
      await assert.rejects(c.query(`DELETE FROM ${schema}.t WHERE id = 1`), /permission denied/);
      for (const sql of [`SET ROLE ${rw}`, 'RESET ROLE', `SET SESSION AUTHORIZATION postgres`, `SELECT set_config('role', '${rw}', false)`, `DO $$ BEGIN EXECUTE 'SET ROLE ${rw}'; END $$`]) {
        await assert.rejects(c.query(sql), /statements that change the role/, sql);
      }
      assert.equal((await c.query('SELECT current_user AS u')).rows[0].u, ro, 'still the mapped role');
      await assert.rejects(c.query(`DELETE FROM ${schema}.t WHERE id = 1`), /permission denied/);
    } finally {
      await c.end();
    }
    assert.equal(await rows(), '3');
    await h.idle();
    const start = eventsOf(h.store, 'session.start').at(-1)!;
    assert.equal((start.payload as { upstream: { role?: string } }).upstream.role, ro);
  });

  it('runs a dba client as the admin role, whose writes PostgreSQL allows', async () => {
    const h = await harness(['dba']);
    const c = await gateway(h);
    try {
      assert.equal((await c.query('SELECT current_user AS u')).rows[0].u, rw);
      await c.query(`DELETE FROM ${schema}.t WHERE id = 3`);
    } finally {
      await c.end();
    }
    assert.equal(await rows(), '2');
  });

  it('takes the first entry, in the order written, that matches one of the client groups', async () => {
    const h = await harness(['dba', 'dev']);
    const c = await gateway(h);
    try {
      assert.equal((await c.query('SELECT current_user AS u')).rows[0].u, ro);
    } finally {
      await c.end();
    }
  });

  it('refuses a client whose groups map to no role, and one that asks for a role itself', async () => {
    const nobody = await harness(['contractor']);
    await assert.rejects(gateway(nobody), /no upstream role on connection warehouse for groups contractor/);
    const dev = await harness(['dev']);
    await assert.rejects(gateway(dev, { options: `-c role=${rw}` }), /startup options may not set role/);
  });

  it('validates the configuration', () => {
    const base = { name: 'w', kind: 'postgres', upstream: 'postgres://app@127.0.0.1/db', listen: '127.0.0.1:6432' };
    assert.equal(Connection.safeParse({ ...base, roles }).success, true);
    assert.match(JSON.stringify(Connection.safeParse({ ...base, roles: {} }).error?.issues), /every client would be refused/);
    assert.match(JSON.stringify(Connection.safeParse({ name: 'o', kind: 'openai', upstream: 'https://api.openai.com/v1', roles }).error?.issues), /postgres connections only/);
  });

  it('sees functions that row-level security runs for the mapped role: a policy that writes is not read_only', async () => {
    // The attack, shown without the gateway first: reading a table whose policy calls a writing
    // function empties another table (rolled back here). Superusers bypass row-level security, so
    // this needs the mapped, ordinary role.
    await direct.query(`CREATE TABLE ${schema}.victim (id int); INSERT INTO ${schema}.victim SELECT generate_series(1, 3);
      CREATE FUNCTION ${schema}.leak() RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER AS $$BEGIN DELETE FROM ${schema}.victim; RETURN true; END$$;
      CREATE TABLE ${schema}.guarded (id int); INSERT INTO ${schema}.guarded VALUES (1); ALTER TABLE ${schema}.guarded ENABLE ROW LEVEL SECURITY;
      CREATE POLICY leaks ON ${schema}.guarded FOR SELECT USING (${schema}.leak());
      CREATE TABLE ${schema}.open (id int); INSERT INTO ${schema}.open VALUES (1); ALTER TABLE ${schema}.open ENABLE ROW LEVEL SECURITY;
      CREATE POLICY plain ON ${schema}.open FOR SELECT USING (id > 0);
      GRANT SELECT ON ${schema}.guarded, ${schema}.open TO ${ro}`);
    const victims = async () => (await direct.query<{ n: string }>(`SELECT count(*)::text AS n FROM ${schema}.victim`)).rows[0]!.n;
    await direct.query('BEGIN');
    await direct.query(`SET LOCAL ROLE ${ro}`);
    await direct.query(`SELECT * FROM ${schema}.guarded`);
    await direct.query('RESET ROLE');
    assert.equal(await victims(), '0', 'the policy function ran for the ordinary role');
    await direct.query('ROLLBACK');
    assert.equal(await victims(), '3');

    const h = await startHarness({
      groups: ['dev'],
      connection: { roles },
      policies: [
        { name: 'reads-run', match: { connections: ['warehouse'], sql: ['read_only'] }, action: 'allow' },
        { name: 'nothing-else', match: { connections: ['warehouse'] }, action: 'deny' },
      ],
    });
    harnesses.push(h);
    const c = await gateway(h);
    try {
      assert.equal((await c.query('SELECT current_user AS u')).rows[0].u, ro);
      await assert.rejects(c.query(`SELECT * FROM ${schema}.guarded`), /refused by policy "nothing-else"/);
      await assert.rejects(c.query({ text: `SELECT id FROM ${schema}.guarded WHERE id = $1`, values: [1] }), /refused by policy "nothing-else"/);
      assert.equal(await victims(), '3', 'nothing was deleted through the gateway');
      // A policy whose expression only reads keeps the statement read_only.
      assert.equal((await c.query(`SELECT count(*)::int AS n FROM ${schema}.open`)).rows[0].n, 1);
    } finally {
      await c.end();
    }
    const refused = eventsOf(h.store, 'pg.statement').find((e) => (e.payload as { sql: string }).sql.includes('guarded'));
    assert.ok(refused, 'the refused statement is recorded');
    assert.ok(!(refused.payload as { classes: string[] }).classes.includes('read_only'));
  });
});
