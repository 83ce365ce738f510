// The approvals inbox in a real browser against a real gateway: an OpenAI SDK request that a hold
// rule matches shows up in every approver's inbox without a reload, is approved with a reason and
// the SDK call completes; a denial reaches the SDK as a 403 and shows in the history; roles decide
// what each person may do; an ended sign-in brings back the login page.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import type { Page } from 'playwright-core';
import { DEFAULT_REPLY } from '../support/llm-upstream';
import { newPage, screenshot, signIn } from '../support/browser';
import { type ConsoleEnv, eventually, startConsoleEnv } from './console-harness';

let env: ConsoleEnv;
const keys: Record<string, string> = {};
const pages: Record<string, Page> = {};
const pageErrors: Record<string, string[]> = {};

function ask(prompt: string, model = 'gpt-4o') {
  const client = new OpenAI({ baseURL: `${env.proxy}/openai`, apiKey: keys['dev']!, maxRetries: 0, timeout: 30_000 });
  return client.chat.completions.create({ model, messages: [{ role: 'user', content: prompt }] });
}

/** Starts a request expected to be refused; resolves with the SDK's error (never rejects unobserved). */
function askRefused(prompt: string): Promise<{ status?: number; message?: string }> {
  return ask(prompt).then(
    () => ({ status: 200, message: 'the request went through' }),
    (err: { status?: number; message?: string }) => err,
  );
}

async function api(who: string, method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`${env.control}${path}`, { method, headers: { authorization: `Bearer ${keys[who]}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
}

async function openAs(who: string, hash = '#/inbox'): Promise<Page> {
  const { page, errors } = await newPage(env.browser);
  pageErrors[who] = errors;
  await signIn(page, env.control, keys[who]!);
  await page.goto(`${env.control}/${hash}`);
  pages[who] = page;
  return page;
}

describe('console: approvals inbox', () => {
  before(async () => {
    env = await startConsoleEnv({
      config: {
        masking: [{ id: 'pii', detectors: ['credit_card', 'email'] }],
        policies: [
          { name: 'hold-bulk-export', match: { connections: ['openai'], content: '(?i)(export|dump) (all|every)' }, action: 'hold', reason: 'bulk exports need security sign-off', hold: { approvers: ['security'], reason: 'required' } },
          { name: 'two-person-wire', match: { connections: ['openai'], content: '(?i)wire transfer' }, action: 'hold', hold: { approvers: ['security'], min: 2, timeout: '10m' } },
        ],
      },
    });
    keys['dev'] = env.key('maya.chen', ['engineering']);
    keys['alice'] = env.key('alice', ['security', 'approver']);
    keys['bob'] = env.key('bob', ['security', 'approver']);
    keys['rita'] = env.key('rita', ['reviewer']);
    await openAs('alice');
    await openAs('bob');
  });
  after(async () => {
    for (const p of Object.values(pages)) await p.close().catch(() => {});
    await env?.stop();
  });

  it('shows a held SDK request in every approver inbox at once; approving with a reason completes the call', async () => {
    const alice = pages['alice']!;
    const bob = pages['bob']!;
    await alice.getByText('Nothing waiting for approval').waitFor();
    await alice.getByTestId('sign-out').waitFor();
    await eventually(async () => (await alice.locator('.live-live').count()) > 0, 'the live feed to connect');
    await eventually(async () => (await bob.locator('.live-live').count()) > 0, 'the live feed to connect');

    const t0 = Date.now();
    const pending = ask('Please export all customer records for card 4111 1111 1111 1111');
    const card = alice.getByTestId('hold-card');
    await card.waitFor({ timeout: 10_000 });
    const appearedAfter = Date.now() - t0;
    console.log(`# hold visible in the approver's inbox ${appearedAfter} ms after the SDK call started`);
    // The bar is one second; the machine is shared, so the assertion leaves room.
    assert.ok(appearedAfter < 3000, `the hold appeared after ${appearedAfter} ms`);
    await bob.getByTestId('hold-card').waitFor({ timeout: 5000 });

    const text = await card.innerText();
    assert.match(text, /maya\.chen/);
    assert.match(text, /hold-bulk-export/);
    assert.match(text, /bulk exports need security sign-off/);
    assert.match(text, /0 of 1 approval/);
    // The summary is masked: the card number never reaches the console.
    assert.doesNotMatch(text, /4111/);
    assert.equal(await card.locator('mark.masked[data-mask-type="CREDIT_CARD"]').count(), 1);
    const c1 = await card.getByTestId('countdown').innerText();
    assert.match(c1, /^[45]:\d\d$/);
    await eventually(async () => (await card.getByTestId('countdown').innerText()) !== c1, 'the countdown to tick');
    assert.equal(await alice.getByTestId('pending-count').innerText(), '1');

    // The rule requires a reason: no reason, no decision.
    await card.getByTestId('hold-approve').click();
    await card.getByText('This rule requires a reason.').waitFor();
    assert.equal(env.upstream.requestsTo('/v1/chat').length, 0, 'still held');

    await card.getByTestId('hold-reason').fill('ticket SEC-7, customer asked for it');
    await card.getByTestId('hold-approve').click();
    const completion = await pending;
    assert.equal(completion.choices[0]!.message.content, DEFAULT_REPLY);

    // The confirmation toast never sits over page content (where the next card's buttons are).
    const toastBox = await alice.locator('.toast').first().boundingBox();
    const pageBox = await alice.locator('.page').first().boundingBox();
    assert.ok(toastBox && pageBox, 'a toast and the page are shown');
    assert.ok(toastBox.x + toastBox.width <= pageBox.x, `the toast (${JSON.stringify(toastBox)}) overlaps the page (${JSON.stringify(pageBox)})`);

    // Gone from both inboxes, each showing who decided.
    for (const p of [alice, bob]) {
      const settled = p.getByTestId('hold-settled');
      await settled.waitFor({ timeout: 5000 });
      assert.match(await settled.innerText(), /Approved by alice/);
      assert.match(await settled.innerText(), /ticket SEC-7/);
      assert.equal(await p.getByTestId('hold-card').count(), 0);
    }
  });

  it('counts k-of-N approvals live and shows a screenshot-worthy inbox', async () => {
    const alice = pages['alice']!;
    const wire = ask('Approve the wire transfer of 12,000 EUR to the supplier, contact jane@example.com');
    const card = alice.getByTestId('hold-card').filter({ hasText: 'two-person-wire' });
    await card.waitFor();
    assert.match(await card.getByTestId('hold-progress').innerText(), /0 of 2 approvals/);
    const [hold] = ((await (await api('bob', 'GET', '/api/holds?state=pending')).json()) as { holds: { id: string }[] }).holds;
    assert.equal((await api('bob', 'POST', `/api/holds/${hold!.id}/decision`, { decision: 'approve', reason: 'verified with the supplier' })).status, 200);
    await eventually(async () => /1 of 2 approvals/.test(await card.getByTestId('hold-progress').innerText()), 'the first approval to show');
    assert.match(await card.innerText(), /bob — “verified with the supplier”/);
    const export2 = askRefused('dump every invoice of 2025 into a spreadsheet');
    await alice.getByTestId('hold-card').nth(1).waitFor();
    // The "approved by" card of the first test fades after a few seconds; the screenshot waits for it.
    await eventually(async () => (await alice.getByTestId('hold-settled').count()) === 0 && (await alice.locator('.toast').count()) === 0, 'the inbox to settle', 12_000);
    await screenshot(alice, 'inbox');
    // Bob already voted: he is told so instead of being offered the buttons again.
    const bobCard = pages['bob']!.getByTestId('hold-card').filter({ hasText: 'two-person-wire' });
    assert.match(await bobCard.getByTestId('hold-why').innerText(), /you have voted/);
    await card.getByTestId('hold-approve').click();
    const done = await wire;
    assert.equal(done.choices[0]!.message.content, DEFAULT_REPLY);
    const other = alice.getByTestId('hold-card').filter({ hasText: 'dump every invoice' });
    await other.getByTestId('hold-reason').fill('not without a ticket');
    await other.getByTestId('hold-deny').click();
    assert.equal((await export2).status, 403);
  });

  it('shows a denial in the history with who decided and why, and filters it', async () => {
    const alice = pages['alice']!;
    const pending = askRefused('export all payroll data please');
    const card = alice.getByTestId('hold-card').filter({ hasText: 'export all payroll' });
    await card.waitFor();
    await card.getByTestId('hold-reason').fill('payroll exports go through HR');
    await card.getByTestId('hold-deny').click();
    const err = await pending;
    assert.equal(err.status, 403);
    assert.match(String(err.message), /denied by alice: payroll exports go through HR/);

    await alice.goto(`${env.control}/#/inbox/history`);
    const row = alice.getByTestId('history-row').filter({ hasText: 'payroll exports go through HR' });
    await row.waitFor();
    assert.equal(await row.getAttribute('data-state'), 'denied');
    assert.match(await row.innerText(), /alice/);
    assert.match(await row.innerText(), /Denied/);
    assert.ok((await alice.getByTestId('history-row').count()) >= 4, 'approved and denied holds are all listed');
    await alice.getByTestId('history-state').selectOption('approved');
    await eventually(async () => (await row.count()) === 0, 'the filter to hide denials');
    assert.ok((await alice.getByTestId('history-row').count()) >= 2);
    await alice.getByTestId('history-state').selectOption('');
    await alice.getByTestId('history-search').fill('payroll');
    await eventually(async () => (await alice.getByTestId('history-row').count()) === 1, 'the search to narrow the list');
  });

  it('lets a reviewer see holds without deciding, and keeps approvers out of admin pages', async () => {
    const rita = await openAs('rita');
    const pending = ask('export all leads to a CSV');
    const card = rita.getByTestId('hold-card');
    await card.waitFor();
    assert.match(await card.getByTestId('hold-why').innerText(), /your role cannot decide holds/);
    assert.equal(await card.getByTestId('hold-approve').count(), 0);
    assert.equal(await rita.getByTestId('nav-sessions').count(), 1);
    // Everyone has the Keys page (their own SSH keys); only admins manage API keys there.
    await rita.goto(`${env.control}/#/keys`);
    await rita.getByTestId('ssh-keys').waitFor();
    assert.equal(await rita.getByTestId('api-keys').count(), 0, 'reviewers do not manage API keys');
    await rita.goto(`${env.control}/#/inbox`);

    const bob = pages['bob']!;
    assert.equal(await bob.getByTestId('nav-sessions').count(), 0, 'approvers do not browse recordings');
    await bob.goto(`${env.control}/#/keys`);
    await bob.getByTestId('ssh-keys').waitFor();
    assert.equal(await bob.getByTestId('api-keys').count(), 0, 'approvers do not manage API keys');
    await bob.goto(`${env.control}/#/policies`);
    await bob.getByText('Read only: editing policies needs the admin role.').waitFor();
    assert.equal(await bob.getByTestId('policies-review').count(), 0);
    await bob.goto(`${env.control}/#/inbox`);
    const bobCard = bob.getByTestId('hold-card').filter({ hasText: 'export all leads' });
    await bobCard.getByTestId('hold-reason').fill('fine, ticket 12');
    // Approve with a time-boxed grant: the same request by the same person passes for a while.
    await bobCard.locator('select.grant').selectOption('15m');
    assert.equal(await bobCard.getByTestId('hold-reason').inputValue(), 'fine, ticket 12');
    await bobCard.getByTestId('hold-approve').click();
    // The card leaves the pending list once the decision is in; if it does not, say what it shows
    // (a refusal of the decision) instead of waiting for the SDK's timeout.
    await eventually(async () => (await bobCard.count()) === 0, 'the approved hold to leave bob’s pending list', 10_000).catch(async (err: Error) => {
      throw new Error(`${err.message}; the card shows: ${await bobCard.innerText().catch(() => '(gone)')}`);
    });
    await pending;
    const t0 = Date.now();
    await ask('export all leads to a CSV');
    assert.ok(Date.now() - t0 < 5000, 'the grant let the repeat through without a hold');
    assert.equal(await bob.getByTestId('hold-card').filter({ hasText: 'export all leads' }).count(), 0);
  });

  it('asks for notification permission once', async () => {
    const alice = pages['alice']!;
    await alice.goto(`${env.control}/#/inbox`);
    const ask1 = alice.getByTestId('notify-ask');
    await ask1.waitFor();
    await ask1.getByText('Not now').click();
    await alice.reload();
    await alice.getByTestId('sign-out').waitFor();
    await alice.waitForTimeout(300);
    assert.equal(await alice.getByTestId('notify-ask').count(), 0);
  });

  it('returns to the login page, saying why, when the sign-in ends', async () => {
    const bob = pages['bob']!;
    const record = (await (await api('alice', 'GET', '/api/me')).json()) as { keyId: string };
    assert.ok(record.keyId);
    const bobId = /^cst_([a-z0-9]{12})_/.exec(keys['bob']!)![1]!;
    const res = await fetch(`${env.control}/api/keys/${bobId}/revoke`, { method: 'POST', headers: { authorization: `Bearer ${env.adminKey}` } });
    assert.equal(res.status, 200);
    // Revoking the key ends bob's console session; his next step meets the login page, saying why.
    await bob.getByTestId('nav-dashboard').click();
    await bob.getByTestId('login-notice').waitFor({ timeout: 10_000 });
    assert.match(await bob.getByTestId('login-notice').innerText(), /session expired/i);
    await bob.getByTestId('login-key').waitFor();
  });

  it('raised no script errors', () => {
    // Failed resource loads (401 before sign-in, a refused vote) are expected; script errors are not.
    const scriptErrors = Object.entries(pageErrors).flatMap(([who, list]) => list.filter((e) => !/Failed to load resource/.test(e)).map((e) => `${who}: ${e}`));
    assert.deepEqual(scriptErrors, []);
  });
});
