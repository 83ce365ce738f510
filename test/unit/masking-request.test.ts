/**
 * Request masking over a parsed body (proxy/masking/request.ts): every string, number and key,
 * structural fields scanned but never rewritten, forward and log renderings kept apart.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Connection, MaskingRule } from '../../shared/config';
import { createMaskingEngine } from '../../proxy/masking/engine';
import { UnmaskableValueError } from '../../proxy/masking/request';

const KEY = Buffer.alloc(32, 7);
const openai: Connection = { name: 'openai', kind: 'openai', upstream: 'https://api.openai.com/v1' };
const anthropic: Connection = { name: 'anthropic', kind: 'anthropic', upstream: 'https://api.anthropic.com' };
const svc: Connection = { name: 'svc', kind: 'http', upstream: 'http://127.0.0.1:9' };
const CARD = '4111 1111 1111 1111';
const EMAIL = 'jane.doe@example.com';

function masker(connection: Connection, rules: Partial<MaskingRule>[], policies: string[] = []) {
  const masking = rules.map((r, i) => ({ id: `r${i}`, detectors: [], scope: ['client', 'upstream', 'log'], strategy: 'redact', keepLast: 4, ...r }) as MaskingRule);
  const e = createMaskingEngine({ detectors: [], masking }, { hmacKey: KEY });
  if (policies.length) e.watchDetectors(policies);
  return e.forConnection(connection)!;
}

describe('requestValue', () => {
  const cards = masker(openai, [{ detectors: ['credit_card', 'email'] }]);

  it('masks strings, numbers and keys, and leaves the value it was given unchanged', () => {
    const body = { model: 'gpt-4o', metadata: { [CARD]: EMAIL, n: 4111111111111111 }, messages: [{ role: 'user', content: `pay ${CARD}` }] };
    const before = JSON.stringify(body);
    const r = cards.requestValue(body, { bytes: 100 });
    assert.equal(r.forward, '{"model":"gpt-4o","metadata":{"[CREDIT_CARD]":"[EMAIL]","n":"[CREDIT_CARD]"},"messages":[{"role":"user","content":"pay [CREDIT_CARD]"}]}');
    assert.deepEqual(r.log, JSON.parse(r.forward));
    assert.equal(JSON.stringify(body), before, 'policy still reads what the client sent');
    assert.deepEqual(r.counts, { CREDIT_CARD: 3, EMAIL: 1 });
    assert.ok(r.spans.some((s) => s.path === '/messages/0/content'));
  });

  it('refuses a masked detector in a structural field, naming the pointer and not the value', () => {
    for (const [body, pointer] of [
      [{ model: CARD, messages: [] }, '/model'],
      [{ model: 'm', messages: [{ role: 'user', name: `x ${CARD}`, content: 'hi' }] }, '/messages/0/name'],
      [{ model: 'm', tools: [{ type: 'function', function: { name: CARD, parameters: {} } }] }, '/tools/0/function/name'],
      [{ model: 'm', messages: [], user: EMAIL }, '/user'],
    ] as const) {
      assert.throws(
        () => cards.requestValue(body, { bytes: 100 }),
        (err: unknown) => err instanceof UnmaskableValueError && err.message.includes(pointer) && !err.message.includes('4111') && !err.message.includes(EMAIL),
        pointer,
      );
    }
  });

  it('a structural hit that only a policy watches counts for policy and goes through', () => {
    const watch = masker(openai, [{ detectors: ['email'] }], ['credit_card']);
    const r = watch.requestValue({ model: 'm', user: CARD, messages: [] }, { bytes: 50 });
    assert.deepEqual(r.detectorHits, ['credit_card']);
    assert.equal(JSON.parse(r.forward).user, CARD);
  });

  it('inside tool arguments, schemas and metadata nothing is structural', () => {
    const r = masker(anthropic, [{ detectors: ['credit_card'] }]).requestValue(
      { model: 'c', messages: [{ role: 'assistant', content: [{ type: 'tool_use', id: 't', name: 'pay', input: { name: CARD, type: CARD } }] }] },
      { bytes: 100 },
    );
    assert.deepEqual(JSON.parse(r.forward).messages[0].content[0].input, { name: '[CREDIT_CARD]', type: '[CREDIT_CARD]' });
  });

  it('forward and log scopes differ: upstream unmasked, log masked', () => {
    const logOnly = masker(openai, [{ detectors: ['email'], scope: ['log'] }]);
    const r = logOnly.requestValue({ model: 'm', messages: [{ role: 'user', content: EMAIL }], metadata: { [EMAIL]: 'x' } }, { bytes: 50 });
    assert.equal(JSON.parse(r.forward).messages[0].content, EMAIL);
    assert.ok(EMAIL in JSON.parse(r.forward).metadata);
    assert.equal((r.log as { messages: { content: string }[] }).messages[0]!.content, '[EMAIL]');
    assert.deepEqual((r.log as { metadata: object }).metadata, { '[EMAIL]': 'x' });
  });

  it('two keys masked to the same text are refused rather than one lost', () => {
    assert.throws(() => cards.requestValue({ metadata: { [CARD]: 1, '5500 0000 0000 0004': 2 } }, { bytes: 50 }), UnmaskableValueError);
  });

  it('http connections: jsonPaths limit where detectors run; a rule without detectors masks whole values', () => {
    const m = masker(svc, [
      { detectors: ['email'], jsonPaths: ['$.items[*].note'] },
      { jsonPaths: ['$.customer.name'], strategy: 'hash' },
    ]);
    const r = m.requestValue({ customer: { name: 'Jane Doe', email: EMAIL }, items: [{ id: EMAIL, note: `ping ${EMAIL}` }] }, { bytes: 100 });
    const out = JSON.parse(r.forward);
    assert.equal(out.customer.email, EMAIL, 'outside the rule paths');
    assert.equal(out.items[0].id, EMAIL);
    assert.equal(out.items[0].note, 'ping [EMAIL]');
    assert.match(out.customer.name, /^\[NAME:[0-9a-f]{8}\]$/);
  });

  it('a key gives context to its value', () => {
    const m = masker(svc, [{ detectors: ['us_ssn', 'password'] }]);
    const out = JSON.parse(m.requestValue({ ssn: '078051120', password: 'correct horse' }, { bytes: 50 }).forward);
    assert.deepEqual(out, { ssn: '[US_SSN]', password: '[PASSWORD]' });
  });
});
