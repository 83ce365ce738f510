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
import { verifyStore } from '../../proxy/audit/verify';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
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
    gw.services.holds.decide(hold.id, approver, { decision: 'approve', reason: 'ticket 42' });
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
