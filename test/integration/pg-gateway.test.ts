/**
 * The whole gateway with a postgres connection, as `custody serve` runs it: psql logs in with the
 * first API key over TLS, masked columns come back masked (the real masking engine), a DELETE
 * without WHERE waits for an approver (the real HoldQueue), and every statement is in the log that
 * `custody verify` checks.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { Config } from '../../shared/config';
import type { Identity } from '../../shared/identity';
import { verifyStore } from '../../proxy/audit/verify/store';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import pg from 'pg';
import { UPSTREAM } from './pg-harness';

const run = promisify(execFile);

async function direct(sql: string): Promise<string> {
  const { stdout } = await run('psql', ['host=127.0.0.1 port=5432 user=postgres dbname=postgres', '-X', '-Atc', sql], { timeout: 30_000 });
  return stdout.trim();
}

describe('gateway with a postgres connection', () => {
  let gw: Gateway;
  let dataDir: string;
  let conninfo: string;
  const table = `custody_gw_${randomBytes(4).toString('hex')}`;

  before(async () => {
    await direct(`create table ${table} (id int, ssn text, contact text); insert into ${table} values (1, '123-45-6789', 'mail ada@example.com'), (2, '987-65-4321', 'none')`);
    dataDir = mkdtempSync(join(tmpdir(), 'custody-gw-pg-'));
    const config = Config.parse({
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'warehouse', kind: 'postgres', upstream: UPSTREAM, listen: '127.0.0.1:0' }],
      masking: [{ id: 'pii', detectors: ['email'], columns: [`${table}.ssn`], scope: ['client', 'log'] }],
      policies: [
        { name: 'hold-destructive-sql', match: { connections: ['warehouse'], sql: ['drop', 'truncate', 'delete_without_where'] }, action: 'hold', hold: { approvers: ['dba'], timeout: '1m' } },
      ],
    });
    gw = await Gateway.start({ config, dataDir, log: silentLogger });
    const address = gw.address('postgres:warehouse');
    const port = address.slice(address.lastIndexOf(':') + 1);
    conninfo = `host=127.0.0.1 port=${port} user=me password=${gw.firstKey} dbname=postgres sslmode=require`;
  });

  after(async () => {
    await gw?.stop();
    rmSync(dataDir, { recursive: true, force: true });
    await direct(`drop table if exists ${table}`);
  });

  it('serves psql over TLS with masked columns', async () => {
    const { stdout } = await run('psql', [conninfo, '-X', '-At', '-F', '|', '-c', `select id, ssn, contact from ${table} order by id`], { timeout: 20_000 });
    const lines = stdout.trim().split('\n');
    assert.equal(lines.length, 2);
    assert.ok(!stdout.includes('123-45-6789') && !stdout.includes('ada@example.com'), `masked: ${stdout}`);
    assert.match(lines[0]!, /^1\|/);
    assert.match(lines[1]!, /\|none$/);
  });

  it('holds a DELETE without WHERE until an approver decides', async () => {
    const child = spawn('psql', [conninfo, '-X', '-At', '-c', `delete from ${table}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    let hold;
    for (let i = 0; i < 200 && !hold; i++) {
      hold = gw.services.holds.list({ state: 'pending' }).holds[0];
      if (!hold) await new Promise((r) => setTimeout(r, 25));
    }
    assert.ok(hold, 'the DELETE is held');
    assert.equal(await direct(`select count(*) from ${table}`), '2', 'nothing deleted while held');
    const approver: Identity = { subject: 'key:dba1', name: 'Dee', groups: ['dba'], roles: ['approver', 'user'], via: 'api-key' };
    await gw.services.holds.decide(hold.id, approver, { decision: 'approve', reason: 'ticket 42' });
    const code = await new Promise((r) => child.on('exit', r));
    assert.equal(code, 0);
    assert.equal(stdout.trim(), 'DELETE 2');
    assert.equal(await direct(`select count(*) from ${table}`), '0');
  });

  it('keeps every statement in a log that verifies', async () => {
    const events = gw.services.store.events(1, 100_000);
    const sqls = events.filter((e) => e.kind === 'pg.statement').map((e) => (e.payload as { sql: string }).sql);
    assert.ok(sqls.some((s) => s.startsWith('select id, ssn')));
    assert.ok(sqls.includes(`delete from ${table}`));
    assert.ok(!JSON.stringify(events).includes('123-45-6789'), 'the log holds no masked original');
    await gw.stop();
    const report = verifyStore(dataDir);
    assert.equal(report.ok, true, report.failure?.message);
  });
});

describe('gateway policies that match on detectors, over SQL', () => {
  let gw: Gateway;
  let dataDir: string;
  let client: pg.Client;

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'custody-gw-pg-det-'));
    const config = Config.parse({
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'warehouse', kind: 'postgres', upstream: UPSTREAM, listen: '127.0.0.1:0' }],
      // No masking rule: the policy alone makes the gateway look for card numbers.
      policies: [{ name: 'no-card-numbers-in-sql', match: { connections: ['warehouse'], detectors: ['credit_card'] }, action: 'deny', reason: 'card numbers stay out of the warehouse' }],
    });
    gw = await Gateway.start({ config, dataDir, log: silentLogger });
    const address = gw.address('postgres:warehouse');
    client = new pg.Client({ host: '127.0.0.1', port: Number(address.slice(address.lastIndexOf(':') + 1)), user: 'me', password: gw.firstKey!, database: 'postgres' });
    await client.connect();
  });

  after(async () => {
    await client?.end();
    await gw?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('refuses a statement whose text holds a card number, and the session stays usable', async () => {
    await assert.rejects(client.query("select '4111 1111 1111 1111' as card"), (err: Error & { code?: string }) => {
      assert.equal(err.code, '42501');
      assert.match(err.message, /no-card-numbers-in-sql.*card numbers stay out of the warehouse/);
      return true;
    });
    assert.equal((await client.query("select 'order 4111 1111 1111 1112' as note")).rows[0].note, 'order 4111 1111 1111 1112', 'a number that fails the Luhn check passes');
  });

  it('refuses a prepared statement whose parameter holds a card number', async () => {
    await assert.rejects(client.query('select $1::text as v', ['5555555555554444']), /no-card-numbers-in-sql/);
    assert.equal((await client.query('select $1::text as v', ['hello'])).rows[0].v, 'hello');
  });

  it('records each refusal with the detector that found something', () => {
    type Statement = { sql: string; decision: { action: string; rule: string | null }; detectors?: string[] };
    const statements = gw.services.store.events(1, 10_000).filter((e) => e.kind === 'pg.statement').map((e) => e.payload as Statement);
    const denied = statements.filter((p) => p.decision.action === 'deny');
    assert.equal(denied.length, 2);
    for (const p of denied) {
      assert.equal(p.decision.rule, 'no-card-numbers-in-sql');
      assert.deepEqual(p.detectors, ['credit_card']);
    }
    assert.ok(statements.filter((p) => p.decision.action === 'allow').every((p) => p.detectors === undefined));
  });
});
