// A first run leads somewhere: on a gateway with no connection, every empty page points at the
// Connections page; once a connection exists, at its ready-made snippets.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { newPage, screenshot, signIn } from '../support/browser';
import { type ConsoleEnv, startConsoleEnv } from './console-harness';

let env: ConsoleEnv;
let page: Page;

describe('console: the first run', () => {
  before(async () => {
    env = await startConsoleEnv({ config: { connections: [] } });
    ({ page } = await newPage(env.browser));
    await signIn(page, env.control, env.adminKey);
  });
  after(async () => {
    await page?.close().catch(() => {});
    await env?.stop();
  });

  for (const route of ['#/inbox', '#/sessions', '#/dashboard']) {
    it(`${route} points at adding a connection`, async () => {
      await page.goto(`${env.control}/${route}`);
      const step = page.getByTestId('first-steps');
      await step.waitFor();
      assert.equal(await step.getAttribute('data-step'), 'add-connection');
      assert.equal(await step.locator('a').getAttribute('href'), '#/connections');
      if (route === '#/dashboard') {
        assert.equal(await page.locator('.chart-card').count(), 0, 'no six empty panels');
        await screenshot(page, 'first-run-dashboard');
      }
    });
  }

  it('points at the snippets once a connection exists', async () => {
    const res = await fetch(`${env.control}/api/connections`, {
      method: 'POST',
      headers: { authorization: `Bearer ${env.adminKey}`, 'content-type': 'application/json', origin: env.control },
      body: JSON.stringify({ name: 'openai', kind: 'openai', upstream: `${env.upstream.url}/v1`, secret: { value: 'sk-first-run' } }),
    });
    assert.equal(res.status, 200, await res.text());
    await page.goto(`${env.control}/#/sessions`);
    await page.reload();
    const step = page.getByTestId('first-steps');
    await step.waitFor();
    assert.equal(await step.getAttribute('data-step'), 'first-request');
    assert.match(await step.innerText(), /openai/);
    await step.locator('a').click();
    await page.waitForURL(/#\/connections$/);
  });
});
