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

  it('starts with the config file rules as version 1', async () => {
    const r = await api('GET', '/api/policies', reviewer);
    assert.equal(r.status, 200);
    assert.equal(r.json['version'], 1);
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
    assert.equal((await api('PUT', '/api/policies', admin, { rules, baseVersion: 0 })).status, 409);
    assert.equal((await api('GET', '/api/policies', admin)).json['version'], 1, 'refused edits change nothing');
  });

  it('a change is versioned with its author, recorded, published and enforced at once', async () => {
    const ws = await EventsClient.connect(control, { bearer: reviewer });
    const rules = [
      { name: 'deny-gpt-4o-for-now', match: { connections: ['openai'], model: ['gpt-4o'] }, action: 'deny', reason: 'budget freeze' },
      { name: 'typo', match: { connections: ['opneai'] }, action: 'deny' },
    ];
    const put = await api('PUT', '/api/policies', admin, { rules, baseVersion: 1, note: 'freeze until Q3' });
    assert.equal(put.status, 200);
    assert.equal(put.json['version'], 2);
    assert.match(JSON.stringify(put.json['warnings']), /no connection named \\"opneai\\"/);
    const msg = await ws.next<Extract<ServerMessage, { type: 'policy.updated' }>>((m) => m.type === 'policy.updated');
    assert.deepEqual([msg.version, msg.author], [2, 'local-admin']);
    await ws.close();

    const ev = gw.services.store.events(1, 10_000).filter((e) => e.kind === 'policy.changed').at(-1)!;
    assert.equal(ev.actor, `key:${admin.split('_')[1]}`);
    const p = ev.payload as { version: number; previousVersion: number; rules: { name: string }[]; note: string };
    assert.deepEqual([p.version, p.previousVersion, p.rules.length, p.note], [2, 1, 2, 'freeze until Q3']);

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
    assert.deepEqual(versions.map((v) => [v.version, v.source, v.rules]), [[2, 'console', 2], [1, 'config', 1]]);
    const v1 = await api('GET', '/api/policies/versions/1', reviewer);
    assert.deepEqual((v1.json['rules'] as { name: string }[]).map((r) => r.name), ['unapproved-model']);
    assert.equal((await api('GET', '/api/policies/versions/99', reviewer)).status, 404);
    const check = await api('POST', '/api/policies/check', reviewer, { rules: [{ name: 'a', action: 'deny' }, { name: 'b', match: { model: ['x'] }, action: 'deny' }] });
    assert.equal(check.json['ok'], true);
    assert.match(JSON.stringify(check.json['issues']), /never fires: rule #1 \\"a\\"/);
  });

  it('keeps console edits across a restart, and an edited config file wins', async () => {
    await gw.stop();
    await start();
    assert.equal((await api('GET', '/api/policies', admin)).json['version'], 2, 'same config file: the console version stays in force');
    assert.equal(gw.services.policy.rules[0]!.name, 'deny-gpt-4o-for-now');
    await gw.stop();
    await start([{ name: 'from-the-file', match: { model: ['o1'] }, action: 'deny' }]);
    const now = await api('GET', '/api/policies', admin);
    assert.deepEqual([now.json['version'], now.json['source']], [3, 'config']);
    assert.equal(gw.services.policy.rules[0]!.name, 'from-the-file');
  });
});
