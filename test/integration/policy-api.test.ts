// Policies over the control plane: versioned edits with their author, recorded in the chained log,
// enforced at once by the HTTP proxy, pushed as policy.updated, and kept across restarts.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { Config, type ConfigInput } from '../../shared/config';
import type { ServerMessage } from '../../shared/messages';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { OPENAI_SECRET, standardConnections } from './http-harness';
import { EventsClient } from './holds-ws-client';

let upstream: LlmUpstream;
let dataDir: string;
let gw: Gateway;
let control: string;
let admin: string;
let reviewer: string;
/** Version numbers are shared with masking versions, so tests count from the first one. */
let v1: number;

const BASE: ConfigInput['policies'] = [{ name: 'unapproved-model', match: { model: ['gpt-3.5-turbo'] }, action: 'deny', reason: 'not approved' }];

async function start(policies: ConfigInput['policies'] = BASE): Promise<void> {
  const config = Config.parse({ listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, connections: standardConnections(upstream.url), policies });
  gw = await Gateway.start({ config, dataDir, log: silentLogger });
  control = `http://${gw.address('control')}`;
}

async function api(method: string, path: string, key: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${control}${path}`, { method, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

describe('policies over the control plane', () => {
  before(async () => {
    upstream = await startLlmUpstream({ openaiKey: OPENAI_SECRET });
    dataDir = mkdtempSync(join(tmpdir(), 'custody-policy-'));
    await start();
    admin = gw.firstKey!;
    reviewer = gw.services.keys.create({ name: 'rev', groups: ['reviewer'] }).key;
  });
  after(async () => {
    await gw.stop();
    await upstream.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('starts with the config file rules as its first version', async () => {
    const r = await api('GET', '/api/policies', reviewer);
    assert.equal(r.status, 200);
    v1 = r.json['version'] as number;
    assert.ok(v1 >= 1);
    assert.equal(r.json['source'], 'config');
    assert.deepEqual((r.json['rules'] as { name: string }[]).map((x) => x.name), ['unapproved-model']);
    const changed = gw.services.store.events(1, 1000).filter((e) => e.kind === 'policy.changed');
    assert.equal(changed.length, 1);
  });

  it('PUT needs an admin, valid rules and the current base version', async () => {
    const rules = [{ name: 'deny-tools', match: { connections: ['openai'], tools: true }, action: 'deny', reason: 'no tools yet' }];
    assert.equal((await api('PUT', '/api/policies', reviewer, { rules })).status, 403);
    const bad = await api('PUT', '/api/policies', admin, { rules: [{ name: 'x', action: 'hold' }] });
    assert.equal(bad.status, 400);
    assert.equal((bad.json['error'] as { code: string }).code, 'invalid_policies');
    const badRegex = await api('PUT', '/api/policies', admin, { rules: [{ name: 'x', match: { content: '(' }, action: 'deny' }] });
    assert.equal(badRegex.status, 400);
    assert.equal((await api('PUT', '/api/policies', admin, { rules, baseVersion: v1 - 1 })).status, 409);
    assert.equal((await api('GET', '/api/policies', admin)).json['version'], v1, 'refused edits change nothing');
  });

  it('a change is versioned with its author, recorded, published and enforced at once', async () => {
    const ws = await EventsClient.connect(control, { bearer: reviewer });
    const rules = [
      { name: 'deny-gpt-4o-for-now', match: { connections: ['openai'], model: ['gpt-4o'] }, action: 'deny', reason: 'budget freeze' },
      { name: 'typo', match: { connections: ['opneai'] }, action: 'deny' },
    ];
    const put = await api('PUT', '/api/policies', admin, { rules, baseVersion: v1, note: 'freeze until Q3' });
    assert.equal(put.status, 200);
    const v2 = put.json['version'] as number;
    assert.ok(v2 > v1);
    assert.match(JSON.stringify(put.json['warnings']), /no connection named \\"opneai\\"/);
    const msg = await ws.next<Extract<ServerMessage, { type: 'policy.updated' }>>((m) => m.type === 'policy.updated');
    assert.deepEqual([msg.version, msg.author], [v2, 'local-admin']);
    await ws.close();

    const ev = gw.services.store.events(1, 10_000).filter((e) => e.kind === 'policy.changed').at(-1)!;
    assert.equal(ev.actor, `key:${admin.split('_')[1]}`);
    const p = ev.payload as { version: number; previousVersion: number; rules: { name: string }[]; note: string };
    assert.deepEqual([p.version, p.previousVersion, p.rules.length, p.note], [v2, v1, 2, 'freeze until Q3']);

    const client = new OpenAI({ baseURL: `http://${gw.address('http')}/openai`, apiKey: admin, maxRetries: 0 });
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }), (err: unknown) => {
      assert.ok(err instanceof OpenAI.APIError);
      assert.equal(err.status, 403);
      assert.match(err.message, /deny-gpt-4o-for-now.*budget freeze/);
      return true;
    });
    const ok = await client.chat.completions.create({ model: 'gpt-3.5-turbo', messages: [{ role: 'user', content: 'hi' }] });
    assert.ok(ok.choices[0]!.message.content, 'the old rule is gone');
  });

  it('lists versions and returns each one', async () => {
    const list = await api('GET', '/api/policies/versions', reviewer);
    assert.equal(list.json['total'], 2);
    const versions = list.json['versions'] as { version: number; authorName: string; source: string; rules: number }[];
    assert.deepEqual(versions.map((v) => [v.source, v.authorName, v.rules]), [['console', 'local-admin', 2], ['config', 'embedded default config', 1]]);
    assert.equal(versions[1]!.version, v1);
    const first = await api('GET', `/api/policies/versions/${v1}`, reviewer);
    assert.deepEqual((first.json['rules'] as { name: string }[]).map((r) => r.name), ['unapproved-model']);
    assert.equal((await api('GET', '/api/policies/versions/9999', reviewer)).status, 404);
    const check = await api('POST', '/api/policies/check', reviewer, { rules: [{ name: 'a', action: 'deny' }, { name: 'b', match: { model: ['x'] }, action: 'deny' }] });
    assert.equal(check.json['ok'], true);
    assert.match(JSON.stringify(check.json['issues']), /never fires: rule #1 \\"a\\"/);
  });

  it('a detector condition added from the console works without any masking rule', async () => {
    const current = (await api('GET', '/api/policies', admin)).json['version'];
    const rules = [{ name: 'no-cloud-keys', match: { connections: ['openai'], detectors: ['secrets'] }, action: 'deny', reason: 'credentials in a prompt' }];
    assert.equal((await api('PUT', '/api/policies', admin, { rules, baseVersion: current })).status, 200);
    const client = new OpenAI({ baseURL: `http://${gw.address('http')}/openai`, apiKey: admin, maxRetries: 0 });
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'upload with AKIAIOSFODNN7EXAMPLE please' }] }), (err: unknown) => {
      assert.ok(err instanceof OpenAI.APIError);
      assert.equal(err.status, 403);
      assert.match(err.message, /no-cloud-keys/);
      return true;
    });
    assert.ok((await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hello' }] })).choices[0]);
  });

  it('keeps console edits across a restart, and an edited config file wins', async () => {
    const before = (await api('GET', '/api/policies', admin)).json['version'];
    await gw.stop();
    await start();
    assert.equal((await api('GET', '/api/policies', admin)).json['version'], before, 'same config file: the console version stays in force');
    assert.equal(gw.services.policy.rules[0]!.name, 'no-cloud-keys');
    await gw.stop();
    await start([{ name: 'from-the-file', match: { model: ['o1'] }, action: 'deny' }]);
    const now = await api('GET', '/api/policies', admin);
    assert.ok((now.json['version'] as number) > (before as number));
    assert.equal(now.json['source'], 'config');
    assert.equal(gw.services.policy.rules[0]!.name, 'from-the-file');
  });
});
