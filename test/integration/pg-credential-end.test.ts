// No database session outlives its credential: a psql-style session (node-postgres) through the
// gateway ends with FATAL 57P01 when its API key is revoked or expired, or when its person is
// locked; failed logins are aggregated per source instead of one chain event each.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { Config } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { tempDir } from '../support/tmp';
import { UPSTREAM } from './pg-harness';

let gw: Gateway;
let control: string;
let host: string;
let port: number;

async function admin(method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(`${control}${path}`, { method, headers: { authorization: `Bearer ${gw.firstKey}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${await res.clone().text()}`);
  return (await res.json()) as Record<string, unknown>;
}

/** A connected client, and a promise of the error that ends it. */
async function connect(key: string): Promise<{ client: pg.Client; ended: Promise<Error & { code?: string }> }> {
  const client = new pg.Client({ host, port, user: 'anyone', database: 'postgres', password: key });
  const ended = new Promise<Error & { code?: string }>((resolve) => client.on('error', resolve));
  await client.connect();
  assert.equal((await client.query('SELECT 1 AS one')).rows[0].one, 1);
  return { client, ended };
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms))]);
}

describe('PostgreSQL sessions end with their credential', () => {
  before(async () => {
    const config = Config.parse({
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'warehouse', kind: 'postgres', upstream: UPSTREAM, listen: '127.0.0.1:0', tls: { mode: 'disable' } }],
    });
    gw = await Gateway.start({ config, dataDir: tempDir(), log: silentLogger });
    control = `http://${gw.address('control')}`;
    const a = gw.address('postgres:warehouse');
    host = a.slice(0, a.lastIndexOf(':'));
    port = Number(a.slice(a.lastIndexOf(':') + 1));
  });
  after(() => gw.stop());

  for (const how of ['revoke', 'expire'] as const) {
    it(`ends a live session when its key is ${how === 'revoke' ? 'revoked' : 'expired'}`, async () => {
      const made = await admin('POST', '/api/keys', { name: `db-${how}`, groups: ['dev'], newOwner: `owner-${how}` });
      const { client, ended } = await connect(made['key'] as string);
      await admin('POST', `/api/keys/${made['id'] as string}/${how}`);
      const err = await within(ended, 5000, 'the session ending');
      assert.equal(err.code, '57P01', err.message);
      assert.match(err.message, /revoked|expired/);
      await client.end().catch(() => {});
      // A new session with the same key is refused at login.
      await assert.rejects(connect(made['key'] as string), /password authentication failed/);
    });
  }

  it('ends every session of a locked person at once', async () => {
    const person = await admin('POST', '/api/persons', { name: 'mallory' });
    const k1 = await admin('POST', '/api/keys', { name: 'mallory-1', groups: ['dev'], owner: person['id'] });
    const k2 = await admin('POST', '/api/keys', { name: 'mallory-2', groups: ['dba'], owner: person['id'] });
    const other = await admin('POST', '/api/keys', { name: 'bystander', groups: ['dev'], newOwner: 'bystander' });
    const a = await connect(k1['key'] as string);
    const b = await connect(k2['key'] as string);
    const c = await connect(other['key'] as string);
    await admin('POST', `/api/persons/${person['id'] as string}/lock`);
    const [ea, eb] = await within(Promise.all([a.ended, b.ended]), 5000, 'both sessions ending');
    assert.equal(ea.code, '57P01');
    assert.equal(eb.code, '57P01');
    // Someone else's session goes on.
    assert.equal((await c.client.query('SELECT 2 AS two')).rows[0].two, 2);
    for (const x of [a, b, c]) await x.client.end().catch(() => {});
  });

  it('aggregates failed logins per source instead of one event each', async () => {
    const before = gw.services.store.events(1, 1_000_000).filter((e) => e.kind === 'auth.failure').length;
    for (let i = 0; i < 25; i++) {
      const client = new pg.Client({ host, port, user: 'x', database: 'postgres', password: `cst_nope${i}_wrongwrongwrongwrongwrongwrongwr` });
      client.on('error', () => {});
      await assert.rejects(client.connect(), /password authentication failed/);
    }
    const all = gw.services.store.events(1, 1_000_000).filter((e) => e.kind === 'auth.failure');
    // The first failure from this source (earlier in this file) was recorded at once; these 25 fold
    // into the source's per-minute summary.
    assert.ok(all.length >= 1, 'the first failure from a source is recorded');
    assert.ok(all.length - before <= 1, `${all.length - before} auth.failure events for 25 failures from one source`);
  });
});
