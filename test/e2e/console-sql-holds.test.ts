// A held SQL statement as the approver sees it, in a real browser against the real gateway and
// PostgreSQL: the whole statement (a tautology after a 480-character comment is not cut away), the
// bound parameters masked as in the log, and a link to the session's replay up to the hold. The
// statement is then denied, and the table still holds every row.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import type { Page } from 'playwright-core';
import { newPage, screenshot, signIn } from '../support/browser';
import { type ConsoleEnv, eventually, PG_UPSTREAM, startConsoleEnv } from './console-harness';

const TABLE = `hold_card_${process.pid}`;
// A right-to-left override inside the comment would reorder what the approver reads if it acted.
const COMMENT = `/* \u202e contact li.wei@example.net; ${'routine cleanup of stale rows, ticket OPS-4521. '.repeat(12).slice(0, 480)} */`;
const SQL = `DELETE FROM ${TABLE} WHERE id = $1 AND owner = $2 ${COMMENT} OR true`;
const OWNER = 'jane.doe@example.com';

let env: ConsoleEnv;
let page: Page;
let errors: string[];
let direct: pg.Client;
let client: pg.Client;

async function api(key: string, method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`${env.control}${path}`, { method, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
}

describe('console: a held SQL statement shows what will run', () => {
  let approver: string;
  let outsider: string;
  before(async () => {
    direct = new pg.Client({ connectionString: PG_UPSTREAM });
    await direct.connect();
    await direct.query(`DROP TABLE IF EXISTS ${TABLE}; CREATE TABLE ${TABLE} (id int, owner text); INSERT INTO ${TABLE} VALUES (1, 'a'), (2, 'b'), (3, 'c')`);
    env = await startConsoleEnv({
      postgres: true,
      config: {
        masking: [{ id: 'pii', detectors: ['email'] }],
        policies: [{ name: 'hold-deletes', match: { connections: ['warehouse'], sql: ['delete'] }, action: 'hold', reason: 'deletes need a DBA', hold: { approvers: ['dba'], timeout: '5m' } }],
      },
    });
    // An approver without the reviewer role: the replay shows her the session up to the hold only.
    approver = env.key('dana', ['dba', 'approver']);
    outsider = env.key('omar', ['security', 'approver']);
    const dev = env.key('maya.chen', ['engineering']);
    const { host, port } = env.pg('warehouse');
    client = new pg.Client({ host, port, user: 'maya', password: dev, database: 'postgres' });
    await client.connect();
    ({ page, errors } = await newPage(env.browser));
    await signIn(page, env.control, approver);
  });
  after(async () => {
    await page?.close().catch(() => {});
    await client?.end().catch(() => {});
    await env?.stop();
    await direct?.query(`DROP TABLE IF EXISTS ${TABLE}`).catch(() => {});
    await direct?.end();
  });

  it('shows the whole statement and the masked parameters, links to the replay, and a denial runs nothing', async () => {
    assert.ok(COMMENT.length >= 480);
    const held = client.query(SQL, [1, OWNER]).then(
      () => 'ran',
      (err: { code?: string }) => err.code ?? 'error',
    );
    await page.goto(`${env.control}/#/inbox`);
    const card = page.getByTestId('hold-card').filter({ hasText: 'hold-deletes' });
    await card.waitFor();
    const statement = await card.getByTestId('hold-statement').innerText();
    // The end of the statement is there, after the long comment: what the approver must see.
    assert.match(statement, /OR true\s*$/);
    assert.ok(statement.includes(`DELETE FROM ${TABLE} WHERE id = $1 AND owner = $2`), statement);
    // Masked for the log, as the recorded statement is.
    assert.ok(!statement.includes('li.wei@example.net'), statement);
    assert.match(statement, /\[EMAIL\]/);
    assert.equal(await card.getByTestId('hold-statement-cut').count(), 0);
    assert.ok(statement.includes('/* ⟨U+202E⟩ contact'), 'the override is shown, not applied');
    assert.ok(!statement.includes('\u202e'));
    const params = await card.getByTestId('hold-params').innerText();
    assert.match(params, /\$1 = '1'/);
    assert.match(params, /\$2 = '\[EMAIL\]'/);
    assert.ok(!params.includes(OWNER), params);
    assert.ok(!(await card.innerText()).includes(OWNER));
    // The box scrolls rather than cutting: its content is taller or as tall as what it shows.
    const box = await card.getByTestId('hold-statement').evaluate((el) => ({ overflowY: el.ownerDocument.defaultView!.getComputedStyle(el).overflowY, scroll: el.scrollHeight, client: el.clientHeight }));
    assert.equal(box.overflowY, 'auto');
    await screenshot(page, 'inbox-sql');

    // The notification text (the summary) is short, and says that it is.
    const [hold] = ((await (await api(approver, 'GET', '/api/holds?state=pending')).json()) as { holds: { id: string; summary: string; statement: string; params: string[] }[] }).holds;
    assert.match(hold!.summary, /… \[\+\d+ more characters, full text on the hold\]$/);
    assert.match(hold!.statement, /OR true$/);
    assert.deepEqual(hold!.params, ['1', '[EMAIL]']);

    // The replay link opens the session at the hold.
    const href = await card.getByTestId('hold-replay').getAttribute('href');
    assert.match(href!, new RegExp(`\\?hold=${hold!.id}$`));
    await card.getByTestId('hold-replay').click();
    await page.getByTestId('replay').waitFor();
    await eventually(async () => /hold/i.test((await page.locator('.ev.selected').innerText().catch(() => '')) ?? ''), 'the hold event selected in the replay');

    // What the approver's replay holds: the session up to the hold, nothing after it; an approver
    // who may not decide this hold (another group) gets nothing.
    const session = href!.match(/#\/sessions\/([^?]+)/)![1]!;
    const mine = (await (await api(approver, 'GET', `/api/sessions/${session}/events`)).json()) as { events: { seq: number; kind: string; payload: { id?: string } }[]; upToSeq: number };
    const created = mine.events.find((e) => e.kind === 'hold.created' && e.payload.id === hold!.id)!;
    assert.ok(created, 'the hold is in the replay');
    assert.equal(mine.upToSeq, created.seq);
    assert.ok(mine.events.every((e) => e.seq <= created.seq));
    assert.ok(mine.events.some((e) => e.kind === 'session.start'));
    assert.equal((await api(outsider, 'GET', `/api/sessions/${session}/events`)).status, 403);
    assert.equal((await api(approver, 'GET', '/api/sessions')).status, 403, 'the session list stays reviewer-only');

    const denied = await api(approver, 'POST', `/api/holds/${hold!.id}/decision`, { decision: 'deny', reason: 'OR true deletes everything' });
    assert.equal(denied.status, 200);
    assert.equal(await held, '42501');
    assert.equal((await direct.query(`SELECT count(*)::int AS n FROM ${TABLE}`)).rows[0].n, 3, 'the DELETE did not run');
  });

  it('says when the held statement waits inside an open transaction, whose locks stay held', async () => {
    await client.query('BEGIN');
    await client.query(`UPDATE ${TABLE} SET owner = 'z' WHERE id = 2`);
    const held = client.query(`DELETE FROM ${TABLE} WHERE id = 3`).then(
      () => 'ran',
      (err: { code?: string }) => err.code ?? 'error',
    );
    await page.goto(`${env.control}/#/inbox`);
    const card = page.getByTestId('hold-card').filter({ hasText: 'WHERE id = 3' });
    await card.waitFor();
    assert.match(await card.getByTestId('hold-in-transaction').innerText(), /open transaction/);
    const [hold] = ((await (await api(approver, 'GET', '/api/holds?state=pending')).json()) as { holds: { id: string; inTransaction?: boolean }[] }).holds;
    assert.equal(hold!.inTransaction, true);
    assert.equal((await api(approver, 'POST', `/api/holds/${hold!.id}/decision`, { decision: 'deny', reason: 'not now' })).status, 200);
    assert.equal(await held, '42501');
    await client.query('ROLLBACK');
    assert.equal((await direct.query(`SELECT count(*)::int AS n FROM ${TABLE}`)).rows[0].n, 3);
  });

  it('raised no script errors', () => {
    assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), []);
  });
});
