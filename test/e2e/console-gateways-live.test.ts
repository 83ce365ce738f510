// The console in team mode, live, in a real browser: two gateways on one real PostgreSQL store, A
// and B (approved by A). B's console, open on its Sessions page, shows a conversation made through
// A as it starts — a row marked as A's — and its request count grows as more requests go through
// A, all without a reload; the replay of that session, open on B, grows as the session does; B's
// dashboard counts A's requests, with each gateway's share; a request held on A waits in B's inbox,
// marked as A's, and approving it there releases it on A.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import OpenAI from 'openai';
import type { Page } from 'playwright-core';
import type { Gateway } from '../../proxy/gateway';
import { screenshot, signIn } from '../support/browser';
import { eventually } from './console-harness';
import { control, idOf, startTeam, type Team } from './console-team';

const CARD = '4111 1111 1111 1111';
let team: Team;
let page: Page;

/** How the console labels a gateway: the start of its key fingerprint. */
const shortOf = (gw: Gateway) => idOf(gw).replace(/^SHA256:/, '').slice(0, 8);

async function post<T>(gw: Gateway, path: string, key: string, body?: unknown): Promise<T> {
  const res = await fetch(`${control(gw)}${path}`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  assert.equal(res.status, 200, await res.clone().text());
  return (await res.json()) as T;
}

/** HTTP requests recorded in `gw`'s own SQLite file. */
function requestsIn(gw: Gateway): number {
  const d = new Database(join(gw.services.dataDir, 'custody.db'), { readonly: true });
  try {
    return (d.prepare("SELECT count(*) AS n FROM events WHERE kind = 'http.request'").get() as { n: number }).n;
  } finally {
    d.close();
  }
}

describe('console: other gateways live', () => {
  let a: Gateway;
  let b: Gateway;
  let lena: string;
  const chat = (text: string) => new OpenAI({ baseURL: `http://${a.address('http')}/openai`, apiKey: lena, maxRetries: 0 }).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: text }] });

  before(async () => {
    team = await startTeam('console_team_live', 'Charged.', {
      policies: [{ name: 'hold-refunds', match: { connections: ['openai'], content: '(?i)refund' }, action: 'hold', hold: { approvers: ['admin'], timeout: '5m' } }],
    });
    ({ page } = team);
    [a, b] = await team.pair();
    await post(a, `/api/gateways/${encodeURIComponent(idOf(b))}/approve`, a.firstKey!);
    await eventually(() => b.services.admissionRefusal!() === undefined, 'B serving', 15_000);
    // Lena's key, made on A: her first request through A opens a new session there.
    lena = (await post<{ key: string }>(a, '/api/keys', a.firstKey!, { name: 'lena', groups: ['user'], newOwner: 'Lena' })).key;
  });
  after(async () => {
    await team?.close();
  });

  it("B's session list grows with a session made through A, without a reload", async () => {
    await signIn(page, control(b), b.firstKey!);
    await page.goto(`${control(b)}/#/sessions`);
    await page.getByTestId('session-list').waitFor();
    // A reload would start a new document and lose this mark.
    await page.evaluate(() => ((globalThis as unknown as { sameDocument: boolean }).sameDocument = true));
    const row = page.locator('[data-testid="session-row"]', { has: page.locator('[data-testid="session-gateway"]', { hasText: shortOf(a) }) }).filter({ hasText: 'lena' });
    assert.equal(await row.count(), 0, 'no session of Lena yet');

    const t0 = Date.now();
    await chat(`Charge ${CARD} for the offsite`);
    const answered = Date.now() - t0;
    await row.waitFor({ timeout: 5000 });
    const shown = Date.now() - t0;
    assert.equal(await row.getByTestId('session-requests').innerText(), '1');
    assert.match(await row.innerText(), /live/);

    await chat('And book the room');
    await eventually(async () => (await row.getByTestId('session-requests').innerText()) === '2', 'the row counts the second request', 5000);
    assert.equal(await page.evaluate(() => (globalThis as unknown as { sameDocument?: boolean }).sameDocument), true, 'the page was never reloaded');
    await screenshot(page, 'sessions-team-live');
    process.stdout.write(`# a session made through A was on B's Sessions page ${shown} ms after the request started (the request itself took ${answered} ms)\n`);
  });

  it("the replay of A's session, open on B, grows as the session does", async () => {
    const row = page.locator('[data-testid="session-row"]', { has: page.locator('[data-testid="session-gateway"]', { hasText: shortOf(a) }) }).filter({ hasText: 'lena' });
    await row.click();
    await page.getByTestId('conversation').waitFor();
    assert.match(await page.getByTestId('replay-gateway').innerText(), /recorded by/);
    const events = page.getByTestId('event-item');
    const before = await events.count();
    assert.ok(before > 0);
    await chat('Also order lunch for twelve');
    await page.locator('[data-testid="msg"][data-role="user"]', { hasText: 'Also order lunch for twelve' }).waitFor({ timeout: 5000 });
    assert.ok((await events.count()) > before, 'the timeline holds the new events');
    // The masked card is highlighted in the replay as on A.
    assert.equal(await page.locator('[data-testid="msg"][data-role="user"] mark.masked[data-mask-type="CREDIT_CARD"]').first().innerText(), '[CREDIT_CARD]');
    assert.equal(await page.evaluate(() => (globalThis as unknown as { sameDocument?: boolean }).sameDocument), true, 'the page was never reloaded');
    await screenshot(page, 'replay-team-live');
  });

  it("a request held on A is in B's inbox, marked as A's, and approving it there releases it on A", async () => {
    // Signed in to B by the tests before, unless run alone.
    await page.goto(`${control(b)}/#/inbox`);
    await page.getByTestId('login-key').or(page.getByTestId('sign-out')).first().waitFor();
    if (await page.getByTestId('login-key').isVisible()) await signIn(page, control(b), b.firstKey!);
    await page.getByTestId('sign-out').waitFor();
    const started = Date.now();
    const held = chat('refund order 7781 please');
    const card = page.getByTestId('hold-card').filter({ hasText: 'hold-refunds' });
    await card.waitFor({ timeout: 10_000 });
    const shownAfter = Date.now() - started;
    const marker = await card.getByTestId('hold-gateway').innerText();
    assert.match(marker, new RegExp(`held on .*${shortOf(a)}`), 'the card names the gateway the request waits on');
    assert.equal(team.upstream.requestsTo('/v1/chat').filter((r) => JSON.stringify(r).includes('7781')).length, 0, 'still held on A');
    await screenshot(page, 'inbox-held-on-other-gateway');
    await card.getByTestId('hold-approve').click();
    const completion = await held;
    assert.equal(completion.choices[0]!.message.content, 'Charged.');
    assert.equal(team.upstream.requestsTo('/v1/chat').filter((r) => JSON.stringify(r).includes('7781')).length, 1, 'the upstream received it once, after the approval');
    console.log(`# A's hold shown in B's inbox ${shownAfter} ms after the SDK call started`);
  });

  it("B's dashboard counts A's requests, with each gateway's share", async () => {
    await page.goto(`${control(b)}/#/dashboard`);
    const card = page.getByTestId('requests-by-gateway');
    await card.waitFor();
    // Everything A recorded is in the store before the dashboard is read again.
    await eventually(() => a.services.sharedStore!.health().lagEvents === 0, 'A shipped');
    await page.reload();
    const rows = card.locator('.hbar');
    await eventually(async () => (await rows.count()) === 2, 'two gateways');
    const byLabel = new Map<string, string>();
    for (let i = 0; i < 2; i++) byLabel.set(await rows.nth(i).locator('.hbar-label').innerText(), await rows.nth(i).locator('.hbar-value').innerText());
    const labelA = [...byLabel.keys()].find((l) => l.includes(shortOf(a)))!;
    const labelB = [...byLabel.keys()].find((l) => l.includes(shortOf(b)))!;
    assert.ok(labelA && labelB, [...byLabel.keys()].join(' | '));
    assert.match(labelB, /this one/);
    assert.equal(Number(byLabel.get(labelA)), requestsIn(a), "A's requests, as A's own file holds them");
    assert.equal(Number(byLabel.get(labelB)), requestsIn(b));
    assert.match(await page.locator('.page-header .subtitle').innerText(), /2 gateways of the group/);
    await card.scrollIntoViewIfNeeded();
    await screenshot(page, 'dashboard-team');
  });
});
