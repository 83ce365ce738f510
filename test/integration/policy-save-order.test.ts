// Saving a draft of the rules from the console (renderer/lib/rules-save.ts) against a real gateway:
// the policies and the masking rules are saved one after the other, in the order the gateway
// accepts, and only what changed gets a new version. The console's client is replaced by a thin
// fetch client with the same two methods, so the gateway's answers decide what is stored.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { MaskingSetResponse, PolicySetResponse } from '../../shared/api';
import { Config, type CustomDetector, MaskingRule, PolicyRule } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import type { ConsoleApi } from '../../renderer/lib/api-types';
import { type SavedRules, saveOrder, saveRules } from '../../renderer/lib/rules-save';

let dataDir: string;
let gw: Gateway;
let control: string;
let admin: string;

const MASK_CARDS = MaskingRule.parse({ id: 'cards', detectors: ['credit_card'] });
const MASK_EMAILS = MaskingRule.parse({ id: 'emails', detectors: ['email'] });
const USES_CARDS = PolicyRule.parse({ name: 'mask-cards', match: { connections: ['openai'] }, action: 'mask', mask: ['cards'] });
const USES_EMAILS = PolicyRule.parse({ name: 'mask-emails', match: { connections: ['openai'] }, action: 'mask', mask: ['emails'] });

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(`${control}${path}`, { method, headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = (await res.json()) as T & { error?: { message: string } };
  if (!res.ok) throw new Error(`${res.status}: ${json.error?.message}`);
  return json;
}

const client: Pick<ConsoleApi, 'putPolicies' | 'putMasking'> = {
  async putPolicies(rules, baseVersion) {
    const r = await call<PolicySetResponse>('PUT', '/api/policies', { rules, ...(baseVersion ? { baseVersion } : {}) });
    return { version: r.version, author: r.author, updatedAt: r.updatedAt, policies: r.rules };
  },
  async putMasking(masking: MaskingRule[], detectors: CustomDetector[], baseVersion) {
    const r = await call<MaskingSetResponse>('PUT', '/api/masking', { masking, detectors, ...(baseVersion ? { baseVersion } : {}) });
    return { version: r.version, author: r.author, updatedAt: r.updatedAt, masking: r.masking, detectors: r.detectors };
  },
};

async function savedNow(): Promise<SavedRules> {
  const policies = await call<PolicySetResponse>('GET', '/api/policies');
  const masking = await call<MaskingSetResponse>('GET', '/api/masking');
  return { doc: { policies: policies.rules, masking: masking.masking, detectors: masking.detectors }, maskingEditable: true, policiesVersion: policies.version, maskingVersion: masking.version };
}

describe('saving a draft of policies and masking rules', () => {
  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'custody-save-order-'));
    const config = Config.parse({
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'openai', kind: 'openai', upstream: 'http://127.0.0.1:9/v1', secret: { value: 'sk-save-order' } }],
      masking: [MASK_CARDS],
      policies: [USES_CARDS],
    });
    gw = await Gateway.start({ config, dataDir, log: silentLogger });
    control = `http://${gw.address('control')}`;
    admin = gw.firstKey!;
  });
  after(async () => {
    await gw.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('adds a masking rule before the policy that uses it', async () => {
    const saved = await savedNow();
    const draft = { policies: [USES_CARDS, USES_EMAILS], masking: [MASK_CARDS, MASK_EMAILS], detectors: [] };
    assert.deepEqual(saveOrder(draft, saved), ['masking', 'policies']);
    await saveRules(client, draft, saved);
    const now = await savedNow();
    assert.deepEqual(now.doc.policies.map((p) => p.name), ['mask-cards', 'mask-emails']);
    assert.deepEqual(now.doc.masking.map((m) => m.id), ['cards', 'emails']);
  });

  it('drops a policy before the masking rule it used, which the gateway would refuse the other way round', async () => {
    const saved = await savedNow();
    const draft = { policies: [USES_EMAILS], masking: [MASK_EMAILS], detectors: [] };
    assert.deepEqual(saveOrder(draft, saved), ['policies', 'masking']);
    // The gateway refuses masking that the rules in force still reference: the reason for the order.
    await assert.rejects(client.putMasking(draft.masking, draft.detectors, saved.maskingVersion), /policy "mask-cards" uses masking rule "cards"/);
    await saveRules(client, draft, await savedNow());
    const now = await savedNow();
    assert.deepEqual(now.doc.policies.map((p) => p.name), ['mask-emails']);
    assert.deepEqual(now.doc.masking.map((m) => m.id), ['emails']);
  });

  it('records a new version only for the document that changed', async () => {
    const saved = await savedNow();
    await saveRules(client, { ...saved.doc, policies: [{ ...USES_EMAILS, name: 'mask-emails-renamed' }] }, saved);
    const now = await savedNow();
    assert.ok(now.policiesVersion! > saved.policiesVersion!, 'the policies got a new version');
    assert.equal(now.maskingVersion, saved.maskingVersion, 'the unchanged masking did not');
  });
});
