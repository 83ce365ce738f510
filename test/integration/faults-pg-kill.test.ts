// Fault injection: `custody serve` killed with SIGKILL at random moments under PostgreSQL load
// (clients INSERTing rows through it, by the simple and the extended protocol), three times over
// one data dir. Every INSERT whose CommandComplete a client received must be in the database and
// must have its pg.result in the log after a restart (results are journaled before their replies
// go out), and `custody verify` must pass.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { custody, startServe, writeConfig } from '../support/custody-process';
import { adminQuery, describeFailures, loggedMarkers, newOutcome, pgInsertLoad, tableIds } from '../support/fault-load';
import { freePort } from '../support/ports';
import { tempDir } from '../support/tmp';
import { UPSTREAM, until } from './pg-harness';

describe('kill -9 under PostgreSQL load', () => {
  const table = `custody_pgkill_${randomBytes(4).toString('hex')}`;
  before(() => adminQuery(`CREATE TABLE ${table} (id text PRIMARY KEY)`));
  after(() => adminQuery(`DROP TABLE IF EXISTS ${table}`));

  it('loses no INSERT a client saw complete: the row is in the database and its result in the log; the log verifies', async () => {
    const dataDir = tempDir();
    const port = await freePort();
    const file = writeConfig(dataDir, {
      dataDir,
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'warehouse', kind: 'postgres', upstream: UPSTREAM, listen: `127.0.0.1:${port}` }],
    });
    const out = newOutcome();
    let key: string | undefined;
    for (let round = 0; round < 3; round++) {
      const gw = await startServe(file);
      key ??= gw.key;
      let stop = false;
      const load = pgInsertLoad({ port, key: key!, table, prefix: `pgkill${round}`, workers: 4, stop: () => stop, out });
      // A random moment once this round's load is flowing (a busy machine starts slowly).
      const before = out.acknowledged.length;
      await until(`INSERTs acknowledged in round ${round}`, () => (out.acknowledged.length >= before + 5 ? true : undefined), 30_000);
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 800)));
      await gw.kill();
      stop = true;
      await load;
    }
    // One clean start folds what the last run journaled (and ends the sessions it left open).
    const last = await startServe(file);
    assert.equal(await last.stop(), 0);

    assert.ok(out.acknowledged.length >= 15, `${out.acknowledged.length} INSERTs acknowledged (${describeFailures(out)})`);
    const rows = await tableIds(table);
    const notInDatabase = out.acknowledged.filter((m) => !rows.has(m));
    assert.deepEqual(notInDatabase, [], 'acknowledged INSERTs missing from the database');
    const logged = loggedMarkers(dataDir, 'pgkill\\d-\\d+-\\d+');
    const noResult = out.acknowledged.filter((m) => !logged.pgResults.has(m));
    assert.deepEqual(noResult, [], `${noResult.length} of ${out.acknowledged.length} acknowledged INSERTs have no pg.result in the log`);
    // Rows the server committed but no client heard of (the kill came between) need only their statement.
    const unheard = [...rows].filter((m) => !out.acknowledged.includes(m));
    const noStatement = unheard.filter((m) => !logged.pgStatements.has(m));
    assert.deepEqual(noStatement, [], 'every row the gateway let through has its statement in the log');
    console.log(`kill -9 ×3 under PostgreSQL load: ${out.acknowledged.length} INSERTs acknowledged, all in the database with their pg.result logged; ${unheard.length} committed unheard`);
    const v = custody('verify', dataDir);
    assert.equal(v.status, 0, v.stderr);
  });
});
