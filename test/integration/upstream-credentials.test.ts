// A password written into an upstream address (postgres://app:pw@db/x, ?password=, https://user:tok@…)
// never comes back from the API — to an approver or to an admin — and never reaches the log, while
// the gateway still connects with it. Real gateway, real PostgreSQL at 127.0.0.1:5432.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { Config } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import type { Logger } from '../../proxy/log';
import { upstreamTarget } from '../../proxy/postgres/upstream';

const PG = new URL(process.env['CUSTODY_TEST_PG'] ?? 'postgres://postgres@127.0.0.1:5432/postgres');
const hostPort = `${PG.hostname}:${PG.port || 5432}`;
// The test server trusts local logins, so these passwords are carried but never checked: what
// matters here is where they show up.
const URL_PW = 'Url-Pw-7f3a9c';
const QUERY_PW = 'Query-Pw-51be20';
const HTTP_TOKEN = 'Http-Tok-9d44e1';
const SECRETS = [URL_PW, QUERY_PW, HTTP_TOKEN];

let dataDir: string;
let gw: Gateway;
let control: string;
let admin: string;
let approver: string;
const warnings: string[] = [];
const log: Logger = { info() {}, debug() {}, error: (m) => warnings.push(m), warn: (m) => warnings.push(m) };

async function api(method: string, path: string, key: string, body?: unknown): Promise<{ status: number; text: string; json: Record<string, unknown> }> {
  const res = await fetch(`${control}${path}`, { method, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, text, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

function assertNoSecret(text: string, where: string): void {
  for (const s of SECRETS) assert.ok(!text.includes(s), `${where} contains ${s}: ${text.slice(Math.max(0, text.indexOf(s) - 200), text.indexOf(s) + 50)}`);
}

/** Everything the log holds, as text. */
function logText(): string {
  return JSON.stringify(gw.services.store.events(1, 100_000));
}

describe('credentials in upstream addresses', () => {
  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'custody-upcred-'));
    const config = Config.parse({
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [
        { name: 'warehouse', kind: 'postgres', upstream: `postgres://postgres:${URL_PW}@${hostPort}/postgres`, listen: '127.0.0.1:0', tls: { mode: 'disable' } },
        { name: 'reports', kind: 'postgres', upstream: `postgres://postgres@${hostPort}/postgres?password=${QUERY_PW}`, listen: '127.0.0.1:0', tls: { mode: 'disable' } },
        { name: 'vectors', kind: 'http', upstream: `http://127.0.0.1:9/v1?api_key=${HTTP_TOKEN}` },
      ],
    });
    gw = await Gateway.start({ config, dataDir, log });
    control = `http://${gw.address('control')}`;
    admin = gw.firstKey!;
    approver = gw.services.keys.create({ name: 'appr', groups: ['approver'] }).key;
  });
  after(async () => {
    await gw?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('warns at start to move each credential into secret, without printing it', () => {
    for (const name of ['warehouse', 'reports', 'vectors']) assert.ok(warnings.some((w) => w.startsWith(`connection ${name}:`) && /move it into secret/.test(w)), `${name}: ${warnings.join('\n')}`);
    assertNoSecret(warnings.join('\n'), 'the start warnings');
  });

  for (const role of ['approver', 'admin'] as const) {
    it(`GET /api/connections shows ${role}s the addresses without their credentials`, async () => {
      const r = await api('GET', '/api/connections', role === 'admin' ? admin : approver);
      assert.equal(r.status, 200);
      assertNoSecret(r.text, `GET /api/connections as ${role}`);
      const byName = new Map((r.json['connections'] as { name: string; upstream: string; warning?: string }[]).map((c) => [c.name, c]));
      assert.equal(byName.get('warehouse')!.upstream, `postgres://postgres:***@${hostPort}/postgres`);
      assert.equal(byName.get('reports')!.upstream, `postgres://postgres@${hostPort}/postgres?password=***`);
      assert.equal(byName.get('vectors')!.upstream, 'http://127.0.0.1:9/v1?api_key=***');
      assert.match(byName.get('warehouse')!.warning!, /move it into secret/);
    });
  }

  it('still logs in upstream with them, and records sessions without them', async () => {
    for (const name of ['warehouse', 'reports']) {
      const a = gw.address(`postgres:${name}`);
      const db = new pg.Client({ host: a.slice(0, a.lastIndexOf(':')), port: Number(a.slice(a.lastIndexOf(':') + 1)), user: 'dev', password: admin, database: 'postgres' });
      await db.connect();
      assert.equal((await db.query('SELECT 1 AS one')).rows[0].one, 1);
      await db.end();
    }
    const deadline = Date.now() + 10_000;
    while (gw.services.store.events(1, 100_000).filter((e) => e.kind === 'session.end').length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const text = logText();
    assert.match(text, /session\.start/);
    assertNoSecret(text, 'the log');
  });

  it('answers connection tests and edits without the credential, and keeps it when the address comes back as shown', async () => {
    const t = await api('POST', '/api/connections/warehouse/test', admin);
    assert.equal(t.status, 200);
    assert.equal(t.json['ok'], true, t.text);
    assertNoSecret(t.text, 'the reachability test');

    // The console sends back what it was shown, plus an edit.
    const shown = `postgres://postgres:***@${hostPort}/postgres`;
    const put = await api('PUT', '/api/connections/warehouse', admin, { upstream: shown, description: 'orders replica' });
    assert.equal(put.status, 200, put.text);
    assertNoSecret(put.text, 'the PUT answer');
    const row = gw.services.store.db.prepare('SELECT config FROM connections WHERE name = ?').get('warehouse') as { config: string };
    const kept = upstreamTarget(JSON.parse(row.config) as Config['connections'][number]);
    assert.equal(kept.password, URL_PW, 'the real password is kept, not the placeholder');

    // Omitting the upstream keeps it too.
    const put2 = await api('PUT', '/api/connections/warehouse', admin, { description: 'orders replica 2' });
    assert.equal(put2.status, 200, put2.text);

    // A placeholder left inside an edited address is refused, never saved as the password.
    const bad = await api('PUT', '/api/connections/warehouse', admin, { upstream: `postgres://postgres:***@127.0.0.2:5432/postgres` });
    assert.equal(bad.status, 400, bad.text);
    assert.match(bad.text, /placeholder/);

    // A new connection with a credential in its address: answered and recorded redacted.
    const post = await api('POST', '/api/connections', admin, { name: 'billing', kind: 'postgres', upstream: `postgres://app:${URL_PW}@${hostPort}/billing`, listen: '127.0.0.1:0' });
    assert.ok(post.status === 200 || post.status === 201, post.text);
    assertNoSecret(post.text, 'the POST answer');
    assert.match(post.text, /move it into secret/);
    assertNoSecret(logText(), 'the connection.changed events');
    assert.match(logText(), /connection\.changed/);
  });

  it('names a malformed address in errors without its credential', () => {
    assert.throws(
      () => upstreamTarget({ name: 'broken', kind: 'postgres', upstream: `postgres://app:${URL_PW}@db:notaport/x` } as Config['connections'][number]),
      (err: Error) => /not a URL/.test(err.message) && !err.message.includes(URL_PW),
    );
  });
});
