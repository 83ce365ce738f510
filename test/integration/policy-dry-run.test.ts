// Policy check and dry-run on a store recorded by the real gateway (OpenAI SDK traffic through the
// HTTP proxy), through `custody policy …` and `POST /api/policies/dry-run`.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { main } from '../../proxy/cli';
import type { DryRunReport } from '../../shared/api';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { tempDir } from '../support/tmp';
import { startTestGateway, type TestGateway } from './http-harness';

let upstream: LlmUpstream;
let t: TestGateway;
let dataDir: string;
let configFile: string;
const dir = tempDir();

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  // The CLI reads the database beside the running gateway: what the gateway journaled is there once
  // its commit thread has folded it (within milliseconds); wait for that here.
  t.gw.services.store.settle();
  let out = '';
  let err = '';
  const code = await main(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

const CANDIDATE = `# candidate rules
policies:
  - name: hold-bulk-export
    match: { connections: [openai], content: "(?i)export all" }
    action: hold
    hold: { approvers: [security] }
  - name: unapproved-model
    match: { model: [gpt-3.5-turbo] }
    action: deny
    reason: not approved
  - name: no-sre-on-openai
    match: { connections: [openai], groups: [sre] }
    action: deny
`;

describe('policy check and dry-run on recorded traffic', () => {
  before(async () => {
    upstream = await startLlmUpstream({ openaiKey: 'sk-upstream-openai-0123456789' });
    t = await startTestGateway(upstream, {
      policies: [{ name: 'unapproved-model', match: { model: ['gpt-3.5-turbo'] }, action: 'deny', reason: 'not approved' }],
    });
    dataDir = t.gw.services.dataDir;
    configFile = join(dir, 'custody.yaml');
    writeFileSync(configFile, `dataDir: ${dataDir}\nconnections:\n${t.gw.services.config.connections.map((c) => `  - { name: ${c.name}, kind: ${c.kind}, upstream: "${c.upstream}" }`).join('\n')}\n`);
    const dev = t.gw.services.keys.create({ name: 'dev', groups: ['engineering'] }).key;
    const ops = t.gw.services.keys.create({ name: 'ops', groups: ['sre'] }).key;
    const client = (key: string) => new OpenAI({ baseURL: `${t.proxy}/openai`, apiKey: key, maxRetries: 0 });
    const ask = (key: string, model: string, content: string) => client(key).chat.completions.create({ model, messages: [{ role: 'user', content }] });
    await ask(dev, 'gpt-4o', 'hello');
    await ask(dev, 'gpt-4o', 'please export all customers');
    await assert.rejects(ask(dev, 'gpt-3.5-turbo', 'hi'), (e: unknown) => e instanceof OpenAI.APIError && e.status === 403);
    await ask(ops, 'gpt-4o', 'restart the cluster');
  });
  after(async () => {
    await t.stop();
    await upstream.close();
  });

  it('custody policy check reports warnings with file and line, errors with exit 1', async () => {
    const good = join(dir, 'good.yaml');
    writeFileSync(good, CANDIDATE);
    const ok = await cli('policy', 'check', good, '--config', configFile);
    assert.equal(ok.code, 0, ok.out + ok.err);
    assert.match(ok.err, /3 rules: 0 errors, 0 warnings/);

    const shadowed = join(dir, 'shadowed.yaml');
    writeFileSync(shadowed, `- name: deny-all-openai\n  match: { connections: [openai] }\n  action: deny\n- name: hold-exports\n  match: { connections: [openai], content: export }\n  action: hold\n  hold: { approvers: [sec] }\n- name: drop\n  match: { connections: [openai], sql: [drop] }\n  action: deny\n`);
    const warn = await cli('policy', 'check', shadowed, '--config', configFile);
    assert.equal(warn.code, 0);
    assert.match(warn.out, new RegExp(`${shadowed.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:4: warning: rule #2 "hold-exports": never fires: rule #1 "deny-all-openai"`));
    assert.match(warn.out, /:9: warning: rule #3 "drop" \(match.sql\): never fires: sql matches only PostgreSQL/);
    assert.equal((await cli('policy', 'check', shadowed, '--config', configFile, '--strict')).code, 1);

    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, `policies:\n  - name: ok\n    action: allow\n  - name: broken\n    action: hold\n`);
    const err = await cli('policy', 'check', bad);
    assert.equal(err.code, 1);
    assert.match(err.out, /bad\.yaml:4: error: rule #2\.hold: action hold needs hold/);
    const missing = await cli('policy', 'check', join(dir, 'nope.yaml'));
    assert.equal(missing.code, 1);
    assert.match(missing.err, /no such file/);
    assert.equal((await cli('policy', 'frobnicate')).code, 2);
  });

  it('custody policy dry-run compares the candidate with what happened', async () => {
    const file = join(dir, 'candidate.yaml');
    writeFileSync(file, CANDIDATE);
    const r = await cli('policy', 'dry-run', file, '--config', configFile, '--json');
    assert.equal(r.code, 0, r.err);
    const report = JSON.parse(r.out) as DryRunReport;
    assert.equal(report.requests, 4);
    assert.deepEqual(report.recorded, { allowed: 3, held: 0, denied: 1, masked: 0 });
    assert.deepEqual(report.candidate, { allowed: 1, held: 1, denied: 2, masked: 0 });
    assert.deepEqual(report.transitions, { 'allowed→held': 1, 'allowed→denied': 1 });
    assert.equal(report.changedSessions, 2);
    const ops = report.changed.find((s) => s.actorName === 'ops')!;
    assert.equal(ops.examples[0]!.candidateRule, 'no-sre-on-openai');
    const dev = report.changed.find((s) => s.actorName === 'dev')!;
    assert.equal(dev.requests, 3);
    assert.match(dev.examples[0]!.summary, /POST \/chat\/completions gpt-4o/);

    const text = await cli('policy', 'dry-run', file, '--config', configFile);
    assert.match(text.out, /Replayed 4 recorded requests in 2 sessions/);
    assert.match(text.out, /recorded\s+3\s+0\s+1\s+0/);
    assert.match(text.out, /candidate\s+1\s+1\s+2\s+0/);

    const none = await cli('policy', 'dry-run', file, '--config', configFile, '--json', '--from', new Date(Date.now() + 3_600_000).toISOString());
    assert.equal((JSON.parse(none.out) as DryRunReport).requests, 0, 'nothing recorded in the future');
    assert.equal((await cli('policy', 'dry-run', file, '--config', configFile, '--from', 'yesterday')).code, 2);
  });

  it('POST /api/policies/dry-run gives the console the same report', async () => {
    const res = await fetch(`${t.control}/api/policies/dry-run`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        rules: [{ name: 'hold-everything-openai', match: { connections: ['openai'] }, action: 'hold', hold: { approvers: ['security'] } }],
        from: Date.now() - 3_600_000,
      }),
    });
    assert.equal(res.status, 200);
    const report = (await res.json()) as DryRunReport;
    assert.deepEqual(report.candidate, { allowed: 0, held: 4, denied: 0, masked: 0 });
    assert.equal(report.transitions['denied→held'], 1);
    const invalid = await fetch(`${t.control}/api/policies/dry-run`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ rules: [{ name: 'x', action: 'mask' }] }),
    });
    assert.equal(invalid.status, 400);
    assert.match(((await invalid.json()) as { error: { message: string } }).error.message, /action mask needs mask/);
  });
});
