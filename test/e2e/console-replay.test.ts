// Session replay in a real browser: a streamed OpenAI SDK conversation replays with its masked
// spans highlighted (type on hover) in the prompt and in the streamed answer, at recorded pace,
// with play/pause, speed, stepping, seeking and links to events; a PostgreSQL session replays in
// xterm as a psql transcript with masked cells marked; the sessions list filters and updates live.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import pg from 'pg';
import type { Page } from 'playwright-core';
import { newPage, screenshot, signIn } from '../support/browser';
import { type ConsoleEnv, eventually, startConsoleEnv } from './console-harness';

const REPLY = 'I have refunded the charge and sent the receipt to jane.doe@example.com — anything else?';
const OTHERS = ['priya.natarajan', 'omar.haddad', 'support-bot', 'etl-nightly', 'sam.kowalski'];
const ALL = 2 + OTHERS.length;

let env: ConsoleEnv;
let page: Page;
let errors: string[];
let dev: string;
let llmSession: string;
let pgSession: string;

async function sessions(): Promise<{ id: string; protocol: string; connection: string }[]> {
  const r = await fetch(`${env.control}/api/sessions?limit=100`, { headers: { authorization: `Bearer ${env.adminKey}` } });
  return ((await r.json()) as { sessions: { id: string; protocol: string; connection: string }[] }).sessions;
}

describe('console: session replay', () => {
  before(async () => {
    env = await startConsoleEnv({
      postgres: true,
      upstream: { reply: REPLY, streamDelayMs: 40 },
      config: {
        masking: [{ id: 'pii', detectors: ['credit_card', 'email'] }],
        policies: [{ name: 'deny-legacy-model', match: { model: ['gpt-3.5-turbo'] }, action: 'deny', reason: 'model not approved for production data' }],
      },
    });
    dev = env.key('maya.chen', ['engineering']);
    const client = new OpenAI({ baseURL: `${env.proxy}/openai`, apiKey: dev, maxRetries: 0 });
    const messages = [
      { role: 'system' as const, content: 'You are the billing assistant. Be brief.' },
      { role: 'user' as const, content: 'Refund the last charge on card 4111 1111 1111 1111 and email the receipt.' },
    ];
    const stream = await client.chat.completions.create({ model: 'gpt-4o', stream: true, messages });
    let streamed = '';
    for await (const c of stream) streamed += c.choices[0]?.delta?.content ?? '';
    assert.match(streamed, /\[EMAIL\]/, 'the client got the answer masked');
    await client.chat.completions.create({ model: 'gpt-4o', messages: [...messages, { role: 'assistant', content: streamed }, { role: 'user', content: 'Thanks. Which card was it?' }] });
    await client.chat.completions.create({ model: 'gpt-3.5-turbo', messages: [{ role: 'user', content: 'hello' }] }).catch(() => {});

    const { host, port } = env.pg('warehouse');
    const db = new pg.Client({ host, port, user: 'analyst', password: dev, database: 'postgres' });
    await db.connect();
    await db.query('CREATE TEMP TABLE customers (id int, name text, email text, plan text)');
    await db.query("INSERT INTO customers VALUES (1, 'Jane Doe', 'jane@example.com', 'pro'), (2, 'Omar Haddad', 'omar@example.org', 'team'), (3, 'Li Wei', 'li.wei@example.net', 'free')");
    await db.query('SELECT id, name, email, plan FROM customers ORDER BY id');
    await db.query('SELECT * FROM no_such_table').catch(() => {});
    await db.end();

    const list = await eventually(async () => {
      const all = await sessions();
      return all.length >= 2 ? all : undefined;
    }, 'both sessions to be recorded');
    llmSession = list.find((s) => s.protocol === 'http')!.id;
    pgSession = list.find((s) => s.protocol === 'postgres')!.id;

    // Other people's traffic, so the list looks like a team's.
    for (const [i, who] of OTHERS.entries()) {
      const key = env.key(who, ['engineering']);
      if (i === 2) {
        const claude = new Anthropic({ baseURL: `${env.proxy}/anthropic`, apiKey: key, maxRetries: 0 });
        await claude.messages.create({ model: 'claude-sonnet-4-5', max_tokens: 64, messages: [{ role: 'user', content: 'Summarise ticket 4521 for li.wei@example.net' }] });
      } else {
        const c = new OpenAI({ baseURL: `${env.proxy}/openai`, apiKey: key, maxRetries: 0 });
        for (let n = 0; n <= i % 2; n++) await c.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: `Draft a status update ${n}` }] });
      }
    }
    await eventually(async () => (await sessions()).length === 2 + OTHERS.length, 'every session to be recorded');
    ({ page, errors } = await newPage(env.browser));
    await signIn(page, env.control, env.adminKey);
  });
  after(async () => {
    await page?.close().catch(() => {});
    await env?.stop();
  });

  it('lists sessions with filters', async () => {
    await page.goto(`${env.control}/#/sessions`);
    await eventually(async () => (await page.getByTestId('session-row').count()) === ALL, 'every session row');
    await screenshot(page, 'sessions');
    await page.getByTestId('filter-protocol').selectOption('postgres');
    await eventually(async () => (await page.getByTestId('session-row').count()) === 1, 'the protocol filter');
    assert.equal(await page.getByTestId('session-row').getAttribute('data-session-id'), pgSession);
    await page.getByTestId('filter-protocol').selectOption('');
    await page.getByTestId('filter-user').fill('nobody-by-that-name');
    await page.getByText('No sessions match these filters').waitFor();
    await page.getByTestId('filter-user').fill('maya');
    await eventually(async () => (await page.getByTestId('session-row').count()) === 2, 'the user filter');
    await page.getByTestId('filter-masking').check();
    await eventually(async () => (await page.getByTestId('session-row').count()) === 2, 'both sessions had masking');
    await page.getByTestId('filter-masking').uncheck();
    await page.getByTestId('filter-user').fill('');
    await eventually(async () => (await page.getByTestId('session-row').count()) === ALL, 'filters cleared');
  });

  it('adds a new session to the list live, without a reload', async () => {
    await page.goto(`${env.control}/#/sessions`);
    await eventually(async () => (await page.getByTestId('session-row').count()) === ALL, 'every session row');
    const other = env.key('newcomer', ['engineering']);
    const client = new OpenAI({ baseURL: `${env.proxy}/openai`, apiKey: other, maxRetries: 0 });
    await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'ping' }] });
    await eventually(async () => (await page.getByTestId('session-row').count()) === ALL + 1, 'the new session to appear', 5000);
    assert.match(await page.getByTestId('session-row').first().innerText(), /newcomer/);
  });

  it('makes session rows real links: an address to copy, Enter opens the replay', async () => {
    await page.goto(`${env.control}/#/sessions`);
    const row = page.locator(`[data-session-id="${llmSession}"]`);
    await row.waitFor();
    assert.equal(await row.evaluate((el) => el.tagName), 'A');
    assert.equal(await row.getAttribute('href'), `#/sessions/${llmSession}`);
    await row.focus();
    await page.keyboard.press('Enter');
    await page.getByTestId('replay').waitFor();
    assert.ok(page.url().endsWith(`#/sessions/${llmSession}`), page.url());
  });

  it('replays an LLM conversation with masked spans highlighted and typed', async () => {
    await page.goto(`${env.control}/#/sessions`);
    await page.locator(`[data-session-id="${llmSession}"]`).click();
    await page.getByTestId('conversation').waitFor();
    assert.equal(await page.getByTestId('replay').getAttribute('data-mode'), 'llm');

    const text = await page.getByTestId('conversation').innerText();
    assert.doesNotMatch(text, /4111 1111/, 'the card number was never recorded');
    assert.doesNotMatch(text, /jane\.doe@example\.com/);
    assert.match(text, /You are the billing assistant/);

    const card = page.locator('[data-testid="msg"][data-role="user"] mark.masked[data-mask-type="CREDIT_CARD"]').first();
    assert.equal(await card.innerText(), '[CREDIT_CARD]');
    assert.match((await card.getAttribute('title'))!, /Masked: CREDIT_CARD \(rule pii\)/);
    const email = page.locator('[data-testid="msg"][data-role="assistant"] mark.masked[data-mask-type="EMAIL"]').first();
    assert.equal(await email.innerText(), '[EMAIL]');
    // Hovering shows the detector type (the title is the native tooltip).
    await card.hover();
    assert.equal(await card.evaluate((el) => el.ownerDocument.defaultView!.getComputedStyle(el).cursor), 'help');

    // The second request repeats the first exchange: only its new user message is shown again.
    assert.equal(await page.locator('[data-testid="msg"][data-role="system"]').count(), 1);
    assert.equal(await page.locator('[data-testid="msg"][data-role="user"]').count(), 3);
    await page.locator('[data-testid="notice"][data-tone="deny"]').filter({ hasText: 'Policy deny — rule deny-legacy-model' }).waitFor();
    // The gateway's refusal is shown as an error, not as the assistant speaking.
    assert.match(await page.locator('[data-testid="notice"][data-tone="error"]').innerText(), /^403 — denied by policy rule "deny-legacy-model"/);
    await screenshot(page, 'replay-llm');
  });

  it('plays the streamed answer at its recorded pace, with pause, speed, steps and seeking', async () => {
    await page.goto(`${env.control}/#/sessions/${llmSession}`);
    await page.getByTestId('conversation').waitFor();
    const clock = page.getByTestId('clock');
    // Seek to the start by clicking the left end of the timeline.
    const box = (await page.getByTestId('timeline').boundingBox())!;
    await page.mouse.click(box.x + 1, box.y + box.height / 2);
    assert.match(await clock.innerText(), /^00:00\.0/);
    assert.equal(await page.locator('[data-testid="msg"][data-role="assistant"]').count(), 0);

    // Step to events one by one until the stream has started but not finished.
    const assistant = page.locator('[data-testid="msg"][data-role="assistant"]').first();
    for (let i = 0; i < 40 && !(await assistant.count()); i++) await page.getByTestId('step-next').click();
    await page.getByTestId('step-next').click();
    const partial = await assistant.innerText();
    assert.ok(!partial.includes('anything else?'), `mid-stream the answer is partial: ${partial}`);

    // Play at 0.5×: the answer grows over time (recorded 40 ms between chunks).
    await page.getByTestId('speed').selectOption('0.5');
    await page.getByTestId('play').click();
    await eventually(async () => (await assistant.innerText()).length > partial.length, 'the answer to grow while playing', 5000);
    await page.getByTestId('play').click(); // pause
    const paused = await clock.innerText();
    await page.waitForTimeout(400);
    assert.equal(await clock.innerText(), paused, 'paused means the clock stands still');

    await page.getByTestId('speed').selectOption('16');
    await page.getByTestId('play').click();
    await eventually(async () => (await assistant.innerText()).includes('anything else?'), 'the full answer', 10_000);

    // Drag the playhead back to the middle.
    await page.mouse.move(box.x + box.width - 2, box.y + box.height / 2);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.02, box.y + box.height / 2, { steps: 5 });
    await page.mouse.up();
    const [pos, max] = await page.getByTestId('timeline').evaluate((el) => [Number(el.getAttribute('aria-valuenow')), Number(el.getAttribute('aria-valuemax'))]);
    assert.ok(pos! < max! * 0.1, `dragged to ${pos} of ${max}`);
    await page.getByTestId('step-prev').click();
  });

  it('links to a session at one event', async () => {
    await page.goto(`${env.control}/#/sessions/${llmSession}`);
    const item = page.getByTestId('event-item').filter({ hasText: 'deny · deny-legacy-model' });
    await item.click();
    const seq = await item.getAttribute('data-seq');
    assert.ok(page.url().endsWith(`#/sessions/${llmSession}?event=${seq}`), page.url());
    await page.reload();
    await page.getByTestId('event-detail').waitFor();
    assert.match(await page.getByTestId('event-detail').innerText(), new RegExp(`#${seq} policy.decision`));
    assert.match(await page.locator('.ev.selected').innerText(), /deny-legacy-model/);
  });

  it('replays a PostgreSQL session in xterm as a psql transcript with masked cells marked', async () => {
    await page.goto(`${env.control}/#/sessions/${pgSession}`);
    await page.getByTestId('sql-terminal').waitFor();
    assert.equal(await page.getByTestId('replay').getAttribute('data-mode'), 'sql');
    const rows = page.locator('.xterm-rows');
    await eventually(async () => /\(3 rows\)/.test(await rows.innerText()), 'the result table');
    const text = await rows.innerText();
    assert.match(text, /postgres=> SELECT id, name, email, plan FROM customers ORDER BY id|warehouse=> SELECT id, name, email, plan FROM customers ORDER BY id/);
    assert.match(text, /relation "no_such_table" does not exist/);
    assert.doesNotMatch(text, /jane@example\.com/);
    const masks = page.locator('.xterm-mask[data-mask-type="EMAIL"]');
    await eventually(async () => (await masks.count()) >= 3, 'mask overlays on the email cells');
    assert.match((await masks.first().getAttribute('title'))!, /Masked: EMAIL/);
    await screenshot(page, 'replay-sql');
  });

  it('raised no script errors', () => {
    assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), []);
  });
});
