// Masking over the control plane: schema-validated edits by admins, versioned with their author,
// recorded as chained masking.changed events, published as masking.updated, applied live by the
// engine, and kept across restarts.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Config, type ConfigInput } from '../../shared/config';
import type { ServerMessage } from '../../shared/messages';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';

let dataDir: string;
let gw: Gateway;
let control: string;
let admin: string;
let reviewer: string;
let user: string;

const CONFIG: ConfigInput = {
  listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
  connections: [{ name: 'openai', kind: 'openai', upstream: 'http://127.0.0.1:9/v1', secret: { value: 'sk-masking-api' } }],
  masking: [{ id: 'cards', detectors: ['credit_card'] }],
  policies: [{ name: 'mask-mail', match: { connections: ['openai'] }, action: 'mask', mask: ['cards'] }],
};

async function start(): Promise<void> {
  gw = await Gateway.start({ config: Config.parse(CONFIG), dataDir, log: silentLogger });
  control = `http://${gw.address('control')}`;
}

async function api(method: string, path: string, key: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${control}${path}`, { method, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

const openai = { name: 'openai', kind: 'openai' as const, upstream: 'http://127.0.0.1:9/v1' };
const maskPrompt = (content: string) =>
  JSON.parse(gw.services.masking.forConnection(openai)!.request('/chat/completions', 'application/json', Buffer.from(JSON.stringify({ model: 'm', messages: [{ role: 'user', content }] }))).forward.toString()).messages[0].content as string;

describe('masking over the control plane', () => {
  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'custody-masking-'));
    await start();
    admin = gw.firstKey!;
    reviewer = gw.services.keys.create({ name: 'rev', groups: ['reviewer'] }).key;
    user = gw.services.keys.create({ name: 'app', groups: ['dev'] }).key;
  });
  after(async () => {
    await gw.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('GET shows the config file masking as a version, with the built-in detectors', async () => {
    const r = await api('GET', '/api/masking', reviewer);
    assert.equal(r.status, 200);
    assert.equal(r.json['source'], 'config');
    assert.ok((r.json['version'] as number) >= 1);
    assert.deepEqual((r.json['masking'] as { id: string }[]).map((m) => m.id), ['cards']);
    const builtins = (r.json['builtinDetectors'] as { id: string }[]).map((d) => d.id);
    for (const id of ['credit_card', 'iban', 'us_ssn', 'email', 'aws_access_key', 'private_key', 'jwt']) assert.ok(builtins.includes(id), id);
    assert.equal((await api('GET', '/api/masking', user)).status, 403, 'dictionaries may name customers: reviewers and admins only');
    assert.equal(gw.services.store.events(1, 1000).filter((e) => e.kind === 'masking.changed').length, 1);
  });

  it('GET /api/masking/detectors lists the built-in detectors for anyone signed in, each usable in a rule', async () => {
    const r = await api('GET', '/api/masking/detectors', user);
    assert.equal(r.status, 200, 'the rule form needs the list; it names no customer data');
    const detectors = r.json['detectors'] as { id: string; type: string; kind: string; description: string }[];
    const ids = detectors.map((d) => d.id);
    for (const id of ['credit_card', 'iban', 'us_ssn', 'email', 'aws_access_key', 'private_key', 'jwt', 'bearer_token']) assert.ok(ids.includes(id), id);
    assert.ok(detectors.every((d) => d.type && d.description && d.kind !== 'custom'));
    assert.deepEqual(Object.keys(r.json['groups'] as object).sort(), ['all', 'ip_address', 'pii', 'secrets']);
    // Every id the console offers is one the gateway accepts in a masking rule.
    const check = await api('POST', '/api/masking/check', reviewer, { detectors: [], masking: [{ id: 'cards', detectors: ids }], sample: 'card 4111 1111 1111 1111' });
    assert.equal(check.status, 200, JSON.stringify(check.json));
    assert.match(JSON.stringify((check.json['sample'] as { text: unknown }).text), /\[CREDIT_CARD\]/);
    assert.equal((await fetch(`${control}/api/masking/detectors`)).status, 401, 'not without signing in');
  });

  it('PUT needs an admin and a valid config; refused edits change nothing', async () => {
    const before = (await api('GET', '/api/masking', admin)).json['version'];
    const ok = { detectors: [], masking: [{ id: 'cards', detectors: ['credit_card'] }] };
    assert.equal((await api('PUT', '/api/masking', reviewer, ok)).status, 403);
    const badRegex = await api('PUT', '/api/masking', admin, { detectors: [{ id: 'emp', pattern: 'EMP-(\\d{6}' }], masking: [{ id: 'cards', detectors: ['emp'] }] });
    assert.equal(badRegex.status, 400);
    const err = badRegex.json['error'] as { code: string; message: string; issues: { path: unknown[] }[] };
    assert.equal(err.code, 'invalid_masking');
    assert.match(err.message, /detectors\.0: detector "emp": invalid regular expression/);
    const unknownDetector = await api('PUT', '/api/masking', admin, { masking: [{ id: 'cards', detectors: ['credit_crad'] }] });
    assert.equal(unknownDetector.status, 400);
    assert.match((unknownDetector.json['error'] as { message: string }).message, /unknown detector "credit_crad"/);
    const schema = await api('PUT', '/api/masking', admin, { masking: [{ id: 'cards', detectors: ['credit_card'], strategy: 'shred' }] });
    assert.equal(schema.status, 400);
    assert.match((schema.json['error'] as { message: string }).message, /masking\.0\.strategy/);
    const conn = await api('PUT', '/api/masking', admin, { masking: [{ id: 'cards', detectors: ['credit_card'], connections: ['nope'] }] });
    assert.match((conn.json['error'] as { message: string }).message, /unknown connection "nope"/);
    const orphan = await api('PUT', '/api/masking', admin, { masking: [{ id: 'other', detectors: ['email'] }] });
    assert.equal(orphan.status, 400);
    assert.match((orphan.json['error'] as { message: string }).message, /policy "mask-mail" uses masking rule "cards"/);
    assert.equal((await api('PUT', '/api/masking', admin, { ...ok, baseVersion: 0 })).status, 409);
    assert.equal((await api('GET', '/api/masking', admin)).json['version'], before);
    assert.equal(maskPrompt('card 4111 1111 1111 1111 mail jane@example.com'), 'card [CREDIT_CARD] mail jane@example.com');
  });

  it('a change is versioned with its author, recorded in the chain, published and applied at once', async () => {
    const messages: ServerMessage[] = [];
    const unsubscribe = gw.services.bus.subscribe((m) => messages.push(m));
    const base = (await api('GET', '/api/masking', admin)).json['version'];
    const next = {
      detectors: [{ id: 'employee_id', type: 'EMPLOYEE', pattern: 'EMP-\\d{6}' }],
      masking: [
        { id: 'cards', detectors: ['credit_card', 'email'], strategy: 'hash' },
        { id: 'staff', detectors: ['employee_id'], scope: ['log'] },
      ],
      baseVersion: base,
      note: 'hash e-mails too',
    };
    const put = await api('PUT', '/api/masking', admin, next);
    unsubscribe();
    assert.equal(put.status, 200, JSON.stringify(put.json));
    const version = put.json['version'] as number;
    assert.ok(version > (base as number));
    assert.equal(put.json['source'], 'console');
    const row = gw.services.store.db.prepare('SELECT kind, author, body FROM policy_versions WHERE version = ?').get(version) as { kind: string; author: string; body: string };
    assert.equal(row.kind, 'masking');
    assert.match(row.author, /^key:/);
    assert.equal(JSON.parse(row.body).note, 'hash e-mails too');
    const changed = gw.services.store.events(1, 10_000).filter((e) => e.kind === 'masking.changed').pop()!;
    assert.equal(changed.actor, row.author);
    assert.equal((changed.payload as { version: number; previousVersion: number }).version, version);
    assert.equal((changed.payload as { previousVersion: number }).previousVersion, base);
    assert.deepEqual(messages.filter((m) => m.type === 'masking.updated').map((m) => (m as { version: number }).version), [version]);
    assert.match(maskPrompt('card 4111 1111 1111 1111 mail jane@example.com EMP-123456'), /^card \[CREDIT_CARD:[0-9a-f]{8}\] mail \[EMAIL:[0-9a-f]{8}\] EMP-123456$/);
    const versions = await api('GET', '/api/masking/versions', reviewer);
    assert.equal((versions.json['versions'] as { version: number }[])[0]!.version, version);
    assert.equal((await api('GET', `/api/masking/versions/${version}`, reviewer)).json['note'], 'hash e-mails too');
  });

  it('check previews a sample without saving anything', async () => {
    const before = (await api('GET', '/api/masking', admin)).json['version'];
    const r = await api('POST', '/api/masking/check', reviewer, { masking: [{ id: 'cards', detectors: ['us_ssn'] }], sample: 'ssn 078-05-1120' });
    assert.equal(r.status, 200);
    assert.equal((r.json['sample'] as { text: string }).text, 'ssn [US_SSN]');
    assert.equal((await api('GET', '/api/masking', admin)).json['version'], before);
  });

  it('console edits survive a restart while the config file is unchanged', async () => {
    const version = (await api('GET', '/api/masking', admin)).json['version'];
    await gw.stop();
    await start();
    const r = await api('GET', '/api/masking', admin);
    assert.equal(r.json['version'], version);
    assert.deepEqual((r.json['masking'] as { id: string }[]).map((m) => m.id), ['cards', 'staff']);
    assert.match(maskPrompt('mail jane@example.com'), /^mail \[EMAIL:[0-9a-f]{8}\]$/);
  });
});
