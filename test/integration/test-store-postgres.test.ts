/**
 * The test harness's `CUSTODY_TEST_STORE=postgres` (test/support/pg-store.ts), checked against the
 * real PostgreSQL server: a gateway started in this process without a `store` gets a database of
 * its own as its shared store, serves at once, and ships its chain there; started again on its
 * data directory it finds the same database; a `custody serve` the test starts gets one too. Run
 * only in that mode (`npm run test:postgres -- integration/test-store-postgres.test.ts`).
 */
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import pg from 'pg';
import { Config } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { startServe, writeConfig } from '../support/custody-process';
import { startEchoUpstream } from '../support/echo-upstream';
import { PG_ADMIN_URL } from '../support/pg-database';
import { PG_MODE } from '../support/pg-store';
import { tempDir } from '../support/tmp';
import { until } from '../support/until';

const root = tempDir('custody-test-store-');

async function shippedRows(url: string): Promise<number> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM custody_events')).rows[0]!.n);
  } finally {
    await c.end();
  }
}

async function runDatabases(): Promise<string[]> {
  const c = new pg.Client({ connectionString: PG_ADMIN_URL });
  await c.connect();
  try {
    return (await c.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY datname', [`custody_t_${process.env['CUSTODY_TEST_STORE_RUN']}_%`])).rows.map((r) => r.datname);
  } finally {
    await c.end();
  }
}

describe('CUSTODY_TEST_STORE=postgres gives every gateway the tests start a shared store', { skip: PG_MODE ? undefined : 'runs with CUSTODY_TEST_STORE=postgres' }, () => {
  it('in this process: a database per data directory, serving at once, the same one after a restart', async () => {
    const echo = await startEchoUpstream();
    const dir = join(root, 'inproc');
    mkdirSync(dir);
    const config = Config.parse({ dataDir: dir, listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, connections: [{ name: 'echo', kind: 'http', upstream: echo.url }] });
    try {
      let gw = await Gateway.start({ config, dataDir: dir, log: silentLogger });
      const store = gw.services.config.store;
      assert.ok(store, 'the gateway was given a store');
      assert.match(store.url, /\/custody_t_[0-9a-z]+_[0-9a-f]{12}$/);
      // Serving as soon as the start returned: admitted (the first gateway of its store enrols).
      const r = await fetch(`http://${gw.address('http')}/echo/x`, { headers: { authorization: `Bearer ${gw.firstKey}` } });
      assert.equal(r.status, 200);
      await until('its chain shipped', async () => (await shippedRows(store.url)) > 0 && gw.services.sharedStore!.health().lagEvents === 0);
      const before = await runDatabases();
      await gw.stop();
      gw = await Gateway.start({ config, dataDir: dir, log: silentLogger });
      assert.equal(gw.services.config.store?.url, store.url, 'the same database after a restart');
      assert.deepEqual(await runDatabases(), before);
      await gw.stop();
    } finally {
      await echo.close();
    }
  });

  it('a custody serve the test starts: a database of its own', async () => {
    const dir = join(root, 'child');
    mkdirSync(dir);
    const before = await runDatabases();
    const serve = await startServe(writeConfig(dir, { dataDir: dir, listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' } }));
    try {
      assert.match(serve.stderr(), /shared store postgres:\/\/127\.0\.0\.1:5432\/custody_t_/);
      const made = (await runDatabases()).filter((d) => !before.includes(d));
      assert.equal(made.length, 1);
      await until('its chain shipped', async () => (await shippedRows(PG_ADMIN_URL.replace(/\/[^/]*$/, `/${made[0]}`))) > 0);
    } finally {
      await serve.stop();
    }
  });
});
