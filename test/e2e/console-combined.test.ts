// The Audit page when this gateway refuses the group's combined checkpoint: a gateway on a shared
// store (the real PostgreSQL server) makes combined checkpoints of its chain every second; rows
// deleted by SQL from the store's copy of that chain, after a combined checkpoint committed to them,
// make it refuse, and admins get a banner naming the chain; a reviewer sees the page without it.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type pg from 'pg';
import { keyFingerprint } from '../../proxy/audit/checkpoint-signer';
import { formatCosignerKey } from '../../proxy/audit/cosignature';
import { ed25519RawPublicKey } from '../../proxy/audit/signed-note';
import { newPage, screenshot, signIn } from '../support/browser';
import { freePort } from '../support/ports';
import { createTestDatabase, type TestDatabase } from '../support/pg-database';
import { until } from '../support/until';
import { type ConsoleEnv, startConsoleEnv } from './console-harness';

let env: ConsoleEnv;
let db: TestDatabase;
let sql: pg.Client;

describe('console: a refused combined checkpoint on the Audit page', () => {
  before(async () => {
    db = await createTestDatabase('custody_test_console_combined');
    sql = await db.client();
    // A witness nobody answers for: its standing on the group's log shows on the page too.
    const witness = { name: 'offsite', url: `http://127.0.0.1:${await freePort()}`, key: formatCosignerKey('witness.test/offsite', ed25519RawPublicKey(generateKeyPairSync('ed25519').privateKey)) };
    env = await startConsoleEnv({ config: { store: { url: db.url }, audit: { groupCheckpointInterval: '1s', witnesses: [witness] } } });
  });
  after(async () => {
    await env?.stop();
    await db?.drop();
  });

  it("shows each witness's standing on the group's log of combined checkpoints, and a failing one in the banner", async () => {
    const { page, errors } = await newPage(env.browser);
    await signIn(page, env.control, env.adminKey);
    await page.goto(`${env.control}/#/audit`);
    const cell = page.getByTestId('group-witness-offsite');
    await cell.waitFor({ timeout: 20_000 });
    // The page refreshes every 5 s: the first send to the witness fails within a combined interval.
    for (let i = 0; i < 60 && !/failing/.test(await cell.innerText()); i++) await new Promise((r) => setTimeout(r, 500));
    assert.match(await cell.innerText(), /failing[\s\S]*none cosigned yet/);
    assert.match(await page.getByTestId('evidence-banner').innerText(), /witness offsite \(group log\)/);
    await screenshot(page, 'audit-group-log-witness');
    assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), [], 'no script errors');
  });

  it('shows admins a banner naming the chain whose tail was deleted, and reviewers none', async () => {
    const id = keyFingerprint(env.gw.services.audit!.trail.signer.publicKey);
    await until('the gateway migrated the store', async () => (await sql.query<{ t: string | null }>("SELECT to_regclass('custody_combined_checkpoints')::text AS t")).rows[0]?.t);
    const size = await until('two combined checkpoints covering the whole chain in the store', async () => {
      const heads = (await sql.query<{ note: string }>('SELECT note FROM custody_combined_checkpoints ORDER BY interval_start DESC LIMIT 2')).rows.map((r) => Number(new RegExp(`^chain ${id.replace(/[+/]/g, '\\$&')} (\\d+) `, 'm').exec(r.note)?.[1]));
      const end = Number((await sql.query<{ n: string }>('SELECT max(seq) AS n FROM custody_events WHERE gateway = $1', [id])).rows[0]!.n);
      return heads.length === 2 && heads.every((n) => n === end) && end;
    });
    assert.equal((await sql.query('DELETE FROM custody_events WHERE gateway = $1 AND seq > $2', [id, size - 2])).rowCount, 2);

    const { page, errors } = await newPage(env.browser);
    await signIn(page, env.control, env.adminKey);
    await page.goto(`${env.control}/#/audit`);
    const banner = page.getByTestId('combined-banner');
    await banner.waitFor({ timeout: 20_000 });
    const text = await banner.innerText();
    assert.match(text, /does not hold what the group's combined checkpoint committed to/);
    assert.ok(text.includes(id), text);
    assert.match(text, new RegExp(`seq ${size - 1}–${size} were deleted`));
    assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), [], 'no script errors');

    const reviewer = await newPage(env.browser);
    await signIn(reviewer.page, env.control, env.key('auditor', ['reviewer']));
    await reviewer.page.goto(`${env.control}/#/audit`);
    await reviewer.page.getByTestId('audit-status').waitFor({ timeout: 20_000 });
    assert.equal(await reviewer.page.getByTestId('combined-banner').count(), 0);
  });
});
