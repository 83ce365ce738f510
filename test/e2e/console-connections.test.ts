// Sign-in, connections and API keys in a real browser, plus the connections and dashboard routes
// they use: "Sign in with <IdP>" through a real OpenID provider; an admin adds, edits and tests a
// connection whose secret is write-only; the saved connection carries traffic after a restart;
// ready-to-copy snippets; keys created from the console; roles enforced by the gateway; a connection
// that came from the group without its secret value marked until the secret is set here.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Page } from 'playwright-core';
import { applyGroupConnections, fileConfig } from '../../proxy/connections/store';
import { newPage, screenshot } from '../support/browser';
import { startTestIdp, type TestIdp } from '../support/oidc-provider';
import { type ConsoleEnv, eventually, startConsoleEnv } from './console-harness';

const VECTOR_SECRET = 'vec-upstream-secret-7c1d9e';

let env: ConsoleEnv;
let idp: TestIdp;
let page: Page;
let errors: string[];

async function call(key: string, method: string, path: string, body?: unknown): Promise<{ status: number; text: string; json: () => unknown }> {
  const r = await fetch(`${env.control}${path}`, { method, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, text, json: () => JSON.parse(text) as unknown };
}

describe('console: sign-in, connections and keys', () => {
  before(async () => {
    idp = await startTestIdp();
    idp.setUser({ sub: 'amartin', email: 'amartin@example.test', name: 'Ana Martin', groups: ['admin'] });
    env = await startConsoleEnv({ config: { identity: { oidc: [{ issuer: idp.issuer, audience: idp.audience, clientId: idp.consoleClientId, name: 'Okta' }] } } });
  });
  after(async () => {
    await page?.close().catch(() => {});
    await env?.stop();
    await idp?.close();
  });

  it('signs in with the identity provider from the login page', async () => {
    ({ page, errors } = await newPage(env.browser));
    await page.goto(`${env.control}/`);
    const button = page.getByTestId('oidc-login');
    await button.waitFor();
    assert.equal(await button.innerText(), 'Sign in with Okta');
    await page.getByTestId('login-key').waitFor();
    await screenshot(page, 'login');
    await button.click();
    await page.getByTestId('sign-out').waitFor({ timeout: 15_000 });
    assert.match(await page.locator('.user-name').innerText(), /Ana Martin|amartin/);
    assert.match(await page.locator('.user-roles').innerText(), /admin/);
  });

  it('signs in with a key and puts the address bar on the page that asked for sign-in', async () => {
    const { page: fresh } = await newPage(env.browser);
    await fresh.goto(`${env.control}/#/sessions`);
    await fresh.getByTestId('login-key').waitFor();
    assert.match(new URL(fresh.url()).pathname, /^\/login$/);
    await fresh.getByTestId('login-key').fill(env.key('address-bar', ['reviewer']));
    await fresh.getByTestId('login-submit').click();
    await fresh.getByTestId('sign-out').waitFor();
    const url = new URL(fresh.url());
    assert.equal(url.pathname, '/', fresh.url());
    assert.equal(url.search, '');
    assert.equal(url.hash, '#/sessions');
    await fresh.close();
  });

  it('refuses a bad connection with the schema message, then adds one with a write-only secret', async () => {
    await page.goto(`${env.control}/#/connections`);
    await page.getByTestId('connections-table').waitFor();
    await page.getByTestId('add-connection').click();
    const form = page.getByTestId('connection-form');
    await form.getByTestId('connection-name').fill('vectors');
    await form.getByRole('combobox').selectOption('http');
    await form.getByTestId('connection-upstream').fill('ftp://vectors.internal');
    await form.getByTestId('connection-secret').fill(VECTOR_SECRET);
    await page.getByTestId('connection-save').click();
    await page.getByTestId('connection-error').waitFor();
    assert.match(await page.getByTestId('connection-error').innerText(), /upstream: an HTTP upstream is a URL such as https:\/\/api\.openai\.com\/v1/);

    await form.getByTestId('connection-upstream').fill(`${env.upstream.url}/vectors`);
    await page.getByText('Test reachability').click();
    await eventually(async () => /reachable/.test(await page.getByTestId('draft-test').innerText()), 'the draft to be reachable');
    await page.getByTestId('connection-save').click();
    const row = page.locator('[data-testid="connection-row"][data-name="vectors"]');
    await row.waitFor();
    assert.match(await row.innerText(), /restart to apply/);
    assert.match(await row.innerText(), /stored/);
    await page.getByTestId('restart-banner').waitFor();

    // The secret never comes back: not from the API, not in the page.
    const list = await call(env.adminKey, 'GET', '/api/connections');
    assert.equal(list.status, 200);
    assert.ok(!list.text.includes(VECTOR_SECRET));
    assert.ok(!(await page.content()).includes(VECTOR_SECRET));
    const vectors = (list.json() as { connections: { name: string; secret: unknown; source: string; pendingRestart: boolean }[] }).connections.find((c) => c.name === 'vectors')!;
    assert.deepEqual([vectors.secret, vectors.source, vectors.pendingRestart], [{ kind: 'value' }, 'console', true]);
    // …and the change is in the verifiable log, without the secret.
    const recorded = env.gw.services.store.db.prepare("SELECT payload FROM events WHERE kind = 'connection.changed'").all() as { payload: string }[];
    assert.equal(recorded.length, 1);
    assert.ok(!recorded[0]!.payload.includes(VECTOR_SECRET));
  });

  it('tests reachability and shows ready-to-copy snippets', async () => {
    const row = page.locator('[data-testid="connection-row"][data-name="openai"]');
    await row.getByTestId('test-connection').click();
    await eventually(async () => /reachable · \d+ ms/.test(await row.getByTestId('test-result').innerText()), 'the test result');
    await row.click();
    const snippets = page.getByTestId('snippets');
    assert.match(await snippets.innerText(), new RegExp(`baseURL: '${env.proxy.replace(/[.]/g, '\\.')}/openai'`));
    await snippets.getByRole('tab', { name: 'LangChain' }).click();
    assert.match(await snippets.innerText(), /ChatOpenAI\(model="gpt-4o-mini", base_url="http:\/\/127\.0\.0\.1:\d+\/openai"/);
    await screenshot(page, 'connections');

    const closed = await call(env.adminKey, 'POST', '/api/connections/test', { kind: 'postgres', upstream: 'postgres://app@127.0.0.1:1/app' });
    const r = closed.json() as { ok: boolean; message: string };
    assert.equal(r.ok, false);
    assert.match(r.message, /cannot connect to 127\.0\.0\.1:1: ECONNREFUSED/);
  });

  it('edits a connection keeping its secret, and the saved connection carries traffic after a restart', async () => {
    const edit = await call(env.adminKey, 'PUT', '/api/connections/vectors', { description: 'Qdrant for the support bot' });
    assert.equal(edit.status, 200);
    assert.equal((edit.json() as { secret: unknown }).secret !== null, true);
    assert.equal((await call(env.adminKey, 'PUT', '/api/connections/vectors', { name: 'renamed' })).status, 400);
    assert.equal((await call(env.adminKey, 'PUT', '/api/connections/nope', { description: 'x' })).status, 404);
    assert.equal((await call(env.adminKey, 'POST', '/api/connections', { name: 'vectors', kind: 'http', upstream: 'http://x' })).status, 409);

    await page.goto('about:blank'); // the console reconnects to the new address below
    await env.restart();
    const before = env.upstream.requests.length;
    const res = await fetch(`${env.proxy}/vectors/collections/docs`, { headers: { authorization: `Bearer ${env.adminKey}` } });
    // The stand-in's own answer (an unknown collection), not the gateway's "no such connection".
    assert.match(await res.text(), /Collection docs not found/);
    const seen = env.upstream.requests.slice(before).find((r) => r.path.startsWith('/vectors/collections/docs'));
    assert.ok(seen, 'the request reached the upstream through the new connection');
    assert.equal(seen!.headers['authorization'], `Bearer ${VECTOR_SECRET}`, 'with the stored credential, not the client key');
    const after = (await call(env.adminKey, 'GET', '/api/connections')).json() as { connections: { name: string; pendingRestart: boolean; description?: string }[] };
    const v = after.connections.find((c) => c.name === 'vectors')!;
    assert.deepEqual([v.pendingRestart, v.description], [false, 'Qdrant for the support bot']);
  });

  it('creates an API key from the console, shown once', async () => {
    // Console sign-ins live in the store: the restarted gateway still knows this browser.
    await page.goto(`${env.control}/#/keys`);
    await page.getByTestId('sign-out').waitFor();
    await page.getByText('Create key').click();
    await page.getByLabel('Name').fill('billing-agent');
    await page.getByLabel('Groups').fill('engineering');
    await page.getByRole('button', { name: 'Create', exact: true }).click();
    const key = (await page.locator('.code-block pre').innerText()).trim();
    assert.match(key, /^cst_[a-z0-9]{12}_/);
    const me = await call(key, 'GET', '/api/me');
    assert.equal((me.json() as { name: string }).name, 'billing-agent');
    await page.getByRole('button', { name: 'Done' }).click();
    await page.getByText('billing-agent').first().waitFor();
  });

  it('enforces roles on the connections and dashboard routes', async () => {
    const approver = env.key('alice', ['approver']);
    const nobody = env.key('svc', ['engineering']);
    assert.equal((await call(approver, 'GET', '/api/connections')).status, 200);
    assert.equal((await call(approver, 'POST', '/api/connections', { name: 'x', kind: 'http', upstream: 'http://x' })).status, 403);
    assert.equal((await call(approver, 'POST', '/api/connections/openai/test')).status, 403);
    assert.equal((await call(approver, 'GET', '/api/dashboard')).status, 200);
    assert.equal((await call(nobody, 'GET', '/api/dashboard')).status, 403);
    assert.equal((await call(nobody, 'GET', '/api/connections')).status, 403);
    assert.equal((await call(env.adminKey, 'GET', '/api/dashboard?buckets=0')).status, 400);
    assert.equal((await call(env.adminKey, 'GET', '/api/dashboard?from=10&to=5')).status, 400);
  });

  it('marks a connection that came from the group with a value secret "set the secret on this gateway" until an admin sets it here', async () => {
    // As the shared store's worker hands a connections version over (proxy/group-config.ts): this gateway's set plus one whose secret stayed on the gateway that made it.
    const here = (env.gw.services.store.db.prepare('SELECT config FROM connections ORDER BY name').all() as { config: string }[]).map((r) => JSON.parse(r.config) as Record<string, unknown>);
    const problems = applyGroupConnections(fileConfig(env.gw.services), { connections: [...here, { name: 'group-vectors', kind: 'http', upstream: `${env.upstream.url}/vectors`, secretRef: { value: true } }] }, { author: { subject: 'key:other', name: 'Admin on gateway A' }, note: 'from the shared store: version 9 of gateway A' });
    assert.deepEqual(problems, []);
    await page.goto(`${env.control}/#/connections`);
    const row = page.locator('[data-testid="connection-row"][data-name="group-vectors"]');
    await row.waitFor();
    assert.match(await row.getByTestId('secret-missing').innerText(), /set the secret on this gateway/);
    const listed = ((await call(env.adminKey, 'GET', '/api/connections')).json() as { connections: { name: string; secretMissing?: boolean }[] }).connections;
    assert.deepEqual(listed.filter((c) => c.secretMissing).map((c) => c.name), ['group-vectors']);

    assert.equal((await call(env.adminKey, 'PUT', '/api/connections/group-vectors', { secret: VECTOR_SECRET })).status, 200);
    await page.reload();
    await row.waitFor();
    assert.equal(await row.getByTestId('secret-missing').count(), 0);
    assert.match(await row.innerText(), /stored/);
  });

  it('raised no script errors', () => {
    assert.deepEqual(errors.filter((e) => !/Failed to load resource|WebSocket connection to .* failed/.test(e)), []);
  });

  it('says so when the gateway stops answering, keeping what it shows', async () => {
    await page.goto(`${env.control}/#/connections`);
    await page.getByTestId('connections-table').waitFor();
    await eventually(async () => (await page.locator('.live-live').count()) > 0, 'the live feed');
    await env.gw.stop();
    await page.getByText('The gateway is not answering').waitFor({ timeout: 10_000 });
    await page.locator('.live-offline').waitFor();
    assert.equal(await page.getByTestId('connections-table').count(), 1, 'the loaded page stays on screen');
  });
});
