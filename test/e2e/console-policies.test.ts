// The policy editor in a real browser: the YAML view refuses an invalid rule with the gateway
// schema's own message on the right line as you type; a valid edit goes through a review (diff and
// a dry-run over recorded traffic) and is saved as a new version that the gateway enforces at once;
// the form adds common rules; the history shows each version's diff.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import type { Page } from 'playwright-core';
import { newPage, screenshot, signIn } from '../support/browser';
import { type ConsoleEnv, eventually, startConsoleEnv } from './console-harness';

let env: ConsoleEnv;
let page: Page;
let errors: string[];
let client: OpenAI;

const INVALID = `policies:
  - name: hold-bulk-export
    match: { connections: [openai], content: "(?i)(export|dump) (all|every)" }
    action: hold
    hold: { approvers: [security] }
  - name: deny-legacy-models
    match: { model: [gpt-3.5-turbo] }
    action: hold
`;

async function rules(): Promise<{ version: number; author: string; rules: { name: string; action: string }[] }> {
  const r = await fetch(`${env.control}/api/policies`, { headers: { authorization: `Bearer ${env.adminKey}` } });
  return (await r.json()) as { version: number; author: string; rules: { name: string; action: string }[] };
}

describe('console: policy editor', () => {
  before(async () => {
    env = await startConsoleEnv({
      config: { policies: [{ name: 'hold-bulk-export', match: { connections: ['openai'], content: '(?i)(export|dump) (all|every)' }, action: 'hold', hold: { approvers: ['security'] } }] },
    });
    client = new OpenAI({ baseURL: `${env.proxy}/openai`, apiKey: env.key('maya.chen', ['engineering']), maxRetries: 0 });
    // Recorded traffic for the dry-run: two requests with a model the new rule will deny.
    for (const model of ['gpt-3.5-turbo', 'gpt-3.5-turbo', 'gpt-4o']) await client.chat.completions.create({ model, messages: [{ role: 'user', content: `hello from ${model}` }] });
    ({ page, errors } = await newPage(env.browser));
    await signIn(page, env.control, env.adminKey);
  });
  after(async () => {
    await page?.close().catch(() => {});
    await env?.stop();
  });

  it('rejects an invalid rule with the schema message on its line, as you type', async () => {
    await page.goto(`${env.control}/#/policies`);
    await page.getByTestId('policy-list').waitFor();
    await page.getByRole('tab', { name: 'YAML' }).click();
    const editor = page.getByTestId('yaml-editor');
    await editor.fill(INVALID);
    const issue = page.getByTestId('yaml-issue');
    await issue.waitFor();
    const text = await issue.innerText();
    assert.match(text, /line 6/);
    assert.match(text, /policies\[1\]\.hold/);
    assert.match(text, /action hold needs hold: \{ approvers: \[\.\.\.\] \}/);
    assert.equal(await page.getByTestId('policies-review').isDisabled(), true, 'an invalid draft cannot be saved');
    assert.equal(await page.locator('.gutter .bad').innerText(), '6');
    await screenshot(page, 'policies-yaml');

    // Typing the missing piece makes it valid without any button press.
    await editor.press('Control+End');
    await editor.pressSequentially('    hold: { approvers: [dba], min: 2 }\n');
    await page.getByTestId('yaml-validation').getByText('Valid — 2 policy rules').waitFor();
    // A YAML syntax error is reported too.
    await editor.press('Control+End');
    await editor.pressSequentially('  - name: [broken\n');
    await eventually(async () => /invalid YAML/.test(await page.getByTestId('yaml-validation').innerText()), 'the syntax error');
    await editor.press('Control+End');
    for (let i = 0; i < '  - name: [broken\n'.length; i++) await editor.press('Backspace');
    await page.getByTestId('yaml-validation').getByText('Valid — 2 policy rules').waitFor();
  });

  it('saves a valid rule after a review with its diff and a dry-run; the gateway enforces it', async () => {
    const editor = page.getByTestId('yaml-editor');
    await editor.fill(INVALID.replace(/action: hold\n$/, 'action: deny\n    reason: model not approved for production data\n'));
    await page.getByTestId('yaml-validation').getByText('Valid').waitFor();
    await page.getByTestId('policies-review').click();
    const diff = page.getByTestId('review-diff');
    await diff.waitFor();
    assert.match(await diff.innerText(), /\+\s+- name: deny-legacy-models/);
    assert.doesNotMatch(await diff.innerText(), /- +- name: hold-bulk-export/, 'formatting alone is not a change');
    const dry = page.getByTestId('dry-run');
    await dry.waitFor({ timeout: 15_000 });
    assert.match(await dry.innerText(), /3 recorded requests replayed/);
    assert.match(await page.getByTestId('dry-run-changed').innerText(), /2 requests in 1 session would be treated differently.*allowed → denied: 2/);
    await page.getByTestId('policies-save').click();
    await page.getByText('Saved a new version of the rules.').waitFor();

    const saved = await rules();
    assert.deepEqual(saved.rules.map((r) => [r.name, r.action]), [
      ['hold-bulk-export', 'hold'],
      ['deny-legacy-models', 'deny'],
    ]);
    assert.equal(saved.author, 'local-admin');
    await page.getByText(new RegExp(`Version ${saved.version} by local-admin`)).waitFor();
    await assert.rejects(client.chat.completions.create({ model: 'gpt-3.5-turbo', messages: [{ role: 'user', content: 'hi' }] }), (err: { status?: number; message?: string }) => {
      assert.equal(err.status, 403);
      assert.match(String(err.message), /model not approved for production data/);
      return true;
    });
  });

  it('adds a common rule with the form and shows the version history with diffs', async () => {
    await page.getByRole('tab', { name: 'Rules' }).click();
    const form = page.getByTestId('rule-form');
    await form.getByTestId('template').selectOption('hold-prompt');
    await form.getByRole('combobox').nth(1).selectOption('openai');
    await form.getByTestId('add-rule').click();
    await eventually(async () => (await page.getByTestId('policy-rule').count()) === 3, 'the new rule in the list');
    assert.match(await page.getByTestId('policy-rule').first().innerText(), /hold-prompts-openai/);
    await page.getByTestId('policies-review').click();
    await page.getByTestId('dry-run').waitFor({ timeout: 15_000 });
    await page.getByTestId('policies-save').click();
    await page.getByText('Saved a new version of the rules.').waitFor();
    // The same notice may still show from the save before: wait for the gateway to hold the new rules.
    const saved = await eventually(async () => {
      const r = await rules();
      return r.rules[0]?.name === 'hold-prompts-openai' ? r : undefined;
    }, 'the new rules saved');

    await page.getByRole('tab', { name: 'History' }).click();
    const versions = page.getByTestId('version-list').locator('li');
    await eventually(async () => (await versions.count()) >= 3, 'three versions');
    assert.match(await versions.first().innerText(), new RegExp(`v${saved.version}`));
    const diff = page.getByTestId('version-diff');
    await diff.waitFor();
    assert.match(await diff.innerText(), /\+\s+- name: hold-prompts-openai/);
    await versions.nth(1).click();
    await eventually(async () => /\+\s+- name: deny-legacy-models/.test(await page.getByTestId('version-diff').innerText()), 'the previous version diff');
  });

  it('adds a masking rule with the form; the gateway masks with it at once', async () => {
    await page.getByRole('tab', { name: 'Rules' }).click();
    const form = page.getByTestId('rule-form');
    await form.getByTestId('template').selectOption('mask-detectors');
    await form.getByRole('combobox').nth(1).selectOption('openai');
    await form.getByTestId('add-rule').click();
    await page.getByText('mask-openai').waitFor();
    await screenshot(page, 'policies');
    await page.getByTestId('policies-review').click();
    assert.match(await page.getByTestId('review-diff').innerText(), /\+\s+- id: mask-openai/);
    await page.getByTestId('dry-run').waitFor({ timeout: 15_000 });
    await page.getByTestId('policies-save').click();
    await page.getByText('Saved a new version of the rules.').waitFor();
    const masking = (await (await fetch(`${env.control}/api/masking`, { headers: { authorization: `Bearer ${env.adminKey}` } })).json()) as { masking: { id: string; detectors: string[]; connections: string[] }[]; author: string };
    assert.deepEqual(masking.masking.map((m) => [m.id, m.detectors, m.connections]), [['mask-openai', ['credit_card', 'email'], ['openai']]]);
    const before = env.upstream.requests.length;
    await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'write to jane@example.com' }] });
    const sent = env.upstream.requests.slice(before).find((r) => r.path.includes('/chat/completions'))!;
    assert.match(sent.body.toString(), /write to \[EMAIL\]/, 'the upstream got the masked prompt');
    await page.getByRole('tab', { name: 'History' }).click();
    await page.getByTestId('version-list').getByText('masking').first().click();
    await eventually(async () => /\+\s+- id: mask-openai/.test(await page.getByTestId('version-diff').innerText()), 'the masking version diff');
  });

  it('raised no script errors', () => {
    assert.deepEqual(errors.filter((e) => !/Failed to load resource/.test(e)), []);
  });
});
