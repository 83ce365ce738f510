import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Connection, MaskingRule } from '../../shared/config';
import type { MaskSpan } from '../../shared/events';
import { createMaskingEngine } from '../../proxy/masking/engine';
import { spliceJsonStrings } from '../../proxy/masking/structure';

const KEY = Buffer.alloc(32, 7);
const openai: Connection = { name: 'openai', kind: 'openai', upstream: 'https://api.openai.com/v1' };
const anthropic: Connection = { name: 'anthropic', kind: 'anthropic', upstream: 'https://api.anthropic.com' };
const svc: Connection = { name: 'svc', kind: 'http', upstream: 'http://127.0.0.1:9' };

const CARD = '4111 1111 1111 1111';
const SSN = '078-05-1120';
const EMAIL = 'jane.doe@example.com';
const AWS = 'AKIAIOSFODNN7EXAMPLE';

function rule(partial: Partial<MaskingRule> & { id: string }): MaskingRule {
  return { detectors: [], scope: ['client', 'upstream', 'log'], strategy: 'redact', keepLast: 4, ...partial };
}
function engine(rules: MaskingRule[], opts: { hmacKey?: Buffer } = {}) {
  return createMaskingEngine({ detectors: [], masking: rules }, { hmacKey: opts.hmacKey ?? KEY });
}
const json = (v: unknown) => Buffer.from(JSON.stringify(v));
/** The string at a JSON pointer. */
function at(root: unknown, pointer: string): string {
  let cur = root;
  for (const part of pointer.split('/').slice(1)) cur = (cur as Record<string, unknown>)[part.replace(/~1/g, '/').replace(/~0/g, '~')];
  return cur as string;
}
function assertSpansPointAtTokens(log: unknown, spans: MaskSpan[]): void {
  for (const s of spans) {
    const text = s.path ? at(log, s.path) : (log as string);
    const token = text.slice(s.start, s.end);
    assert.ok(token === `[${s.type}]` || /^\[[A-Z_]+:[0-9a-f]{8}\]$/.test(token) || /\*/.test(token), `span ${JSON.stringify(s)} covers "${token}"`);
  }
}

describe('strategies', () => {
  const text = Buffer.from(`card ${CARD} mail ${EMAIL}`);
  it('redact replaces the value with [TYPE]', () => {
    const r = engine([rule({ id: 'r', detectors: ['credit_card', 'email'] })]).forConnection(svc)!.request('/', 'text/plain', text);
    assert.equal(r.forward.toString(), 'card [CREDIT_CARD] mail [EMAIL]');
    assert.deepEqual(r.counts, { CREDIT_CARD: 1, EMAIL: 1 });
  });
  it('mask keeps the last N characters and the separators', () => {
    const r = engine([rule({ id: 'r', detectors: ['credit_card'], strategy: 'mask', keepLast: 4 })]).forConnection(svc)!.request('/', 'text/plain', Buffer.from('card 4111111111111111 or 4111-1111-1111-1111'));
    assert.equal(r.forward.toString(), 'card ************1111 or ****-****-****-1111');
  });
  it('hash gives keyed tokens: equal values correlate, another install key gives other tokens', () => {
    const a = engine([rule({ id: 'r', detectors: ['credit_card', 'email'], strategy: 'hash' })]).forConnection(svc)!;
    const t1 = a.request('/', 'text/plain', Buffer.from(`${CARD} / 4111-1111-1111-1111 / ${EMAIL.toUpperCase()} / ${EMAIL}`)).forward.toString();
    const m = /^\[CREDIT_CARD:([0-9a-f]{8})\] \/ \[CREDIT_CARD:([0-9a-f]{8})\] \/ \[EMAIL:([0-9a-f]{8})\] \/ \[EMAIL:([0-9a-f]{8})\]$/.exec(t1);
    assert.ok(m, t1);
    assert.equal(m[1], m[2], 'separators do not change the token');
    assert.equal(m[3], m[4], 'e-mail case does not change the token');
    const b = engine([rule({ id: 'r', detectors: ['credit_card'], strategy: 'hash' })], { hmacKey: Buffer.alloc(32, 8) }).forConnection(svc)!;
    assert.notEqual(b.request('/', 'text/plain', Buffer.from(CARD)).forward.toString(), `[CREDIT_CARD:${m[1]}]`);
    assert.ok(!t1.includes('4111'));
  });
});

describe('scopes', () => {
  const rules = [
    rule({ id: 'up', detectors: ['credit_card'], scope: ['upstream'] }),
    rule({ id: 'cl', detectors: ['email'], scope: ['client'] }),
    rule({ id: 'lg', detectors: ['us_ssn'], scope: ['log'] }),
  ];
  const body = Buffer.from(`${CARD} ${EMAIL} ${SSN}`);
  it('a request masks upstream-scope rules in what is forwarded, and every rule in the log', () => {
    const r = engine(rules).forConnection(svc)!.request('/', 'text/plain', body);
    assert.equal(r.forward.toString(), `[CREDIT_CARD] ${EMAIL} ${SSN}`);
    assert.equal(r.log, '[CREDIT_CARD] [EMAIL] [US_SSN]');
    assert.deepEqual(r.spans.map((s) => s.rule), ['up', 'cl', 'lg']);
    assertSpansPointAtTokens(r.log, r.spans);
  });
  it('a response masks client-scope rules in what goes back, and every rule in the log', () => {
    const r = engine(rules).forConnection(svc)!.response('/', 'text/plain', body);
    assert.equal(r.forward.toString(), `${CARD} [EMAIL] ${SSN}`);
    assert.equal(r.log, '[CREDIT_CARD] [EMAIL] [US_SSN]');
  });
  it('rules apply to their connections; extra rules from a policy apply anywhere', () => {
    const e = engine([rule({ id: 'only-openai', detectors: ['email'], connections: ['openai'] })]);
    assert.equal(e.forConnection(svc), null, 'no rule applies: the proxy skips masking');
    const m = e.forConnection(svc, ['only-openai'])!;
    assert.equal(m.request('/', 'text/plain', Buffer.from(EMAIL), ['only-openai']).forward.toString(), '[EMAIL]');
    assert.throws(() => e.forConnection(svc, ['missing']), /masking rule "missing", which does not exist/);
  });
  it('watched detectors report hits without masking', () => {
    const e = createMaskingEngine({ detectors: [], masking: [rule({ id: 'r', detectors: ['email'] })], policies: [{ name: 'p', match: { detectors: ['aws_access_key'] }, action: 'hold', hold: { approvers: ['sec'], min: 1, denyMin: 1, timeout: '5m', reason: 'optional' } }] }, { hmacKey: KEY });
    const r = e.forConnection(svc)!.request('/', 'text/plain', Buffer.from(`${AWS} ${EMAIL}`));
    assert.deepEqual(r.detectorHits.sort(), ['aws_access_key', 'email']);
    assert.equal(r.forward.toString(), `${AWS} [EMAIL]`);
  });
});

describe('structure-aware bodies', () => {
  const all = engine([rule({ id: 'pii', detectors: ['all'] })]);

  it('OpenAI chat: message contents, content parts, tool calls and tool results; ids, roles and model untouched', () => {
    const req = {
      model: 'gpt-4o-mini',
      messages: [
        { role: 'system', content: `Escalate to ${EMAIL}` },
        { role: 'user', content: [{ type: 'text', text: `my card is ${CARD}` }, { type: 'image_url', image_url: { url: 'https://example.com/a.png' } }] },
        { role: 'assistant', content: null, tool_calls: [{ id: 'call_AKIAIOSFODNN7EXAMPLE', type: 'function', function: { name: 'lookup', arguments: JSON.stringify({ ssn: SSN }) } }] },
        { role: 'tool', tool_call_id: 'call_AKIAIOSFODNN7EXAMPLE', content: `found ${AWS}` },
      ],
      user: 'user-123',
    };
    const r = all.forConnection(openai)!.request('/chat/completions', 'application/json', json(req));
    const out = JSON.parse(r.forward.toString());
    assert.equal(out.model, 'gpt-4o-mini');
    assert.equal(out.messages[0].content, 'Escalate to [EMAIL]');
    assert.equal(out.messages[1].content[0].text, 'my card is [CREDIT_CARD]');
    assert.deepEqual(out.messages[1].content[1], req.messages[1]!.content![1]);
    assert.equal(out.messages[2].tool_calls[0].id, 'call_AKIAIOSFODNN7EXAMPLE', 'ids are never masked');
    assert.equal(out.messages[2].tool_calls[0].function.arguments, '{"ssn":"[US_SSN]"}');
    assert.equal(out.messages[3].content, 'found [AWS_ACCESS_KEY]');
    assert.equal(out.messages[3].tool_call_id, 'call_AKIAIOSFODNN7EXAMPLE');
    assert.deepEqual(r.log, out);
    assert.deepEqual(r.spans.map((s) => s.path), ['/messages/0/content', '/messages/1/content/0/text', '/messages/2/tool_calls/0/function/arguments', '/messages/3/content']);
    assertSpansPointAtTokens(r.log, r.spans);
  });

  it('OpenAI responses: choices, Responses output and input items, embeddings input', () => {
    const chat = { id: 'chatcmpl-1', object: 'chat.completion', model: 'gpt-4o', choices: [{ index: 0, message: { role: 'assistant', content: `Card ${CARD}`, tool_calls: [{ id: 't1', type: 'function', function: { name: 'f', arguments: `{"email":"${EMAIL}"}` } }] }, finish_reason: 'stop' }] };
    const c = JSON.parse(all.forConnection(openai)!.response('/chat/completions', 'application/json', json(chat)).forward.toString());
    assert.equal(c.choices[0].message.content, 'Card [CREDIT_CARD]');
    assert.equal(c.choices[0].message.tool_calls[0].function.arguments, '{"email":"[EMAIL]"}');
    assert.equal(c.id, 'chatcmpl-1');
    const resp = { id: 'resp_1', object: 'response', status: 'completed', output: [{ type: 'message', id: 'msg_1', role: 'assistant', content: [{ type: 'output_text', text: `SSN ${SSN}`, annotations: [] }] }, { type: 'function_call', id: 'fc_1', call_id: 'call_1', name: 'f', arguments: `{"card":"${CARD}"}` }] };
    const o = JSON.parse(all.forConnection(openai)!.response('/responses', 'application/json', json(resp)).forward.toString());
    assert.equal(o.output[0].content[0].text, 'SSN [US_SSN]');
    assert.equal(o.output[1].arguments, '{"card":"[CREDIT_CARD]"}');
    assert.equal(o.output[1].call_id, 'call_1');
    const input = { model: 'gpt-4.1', instructions: `reply to ${EMAIL}`, input: [{ role: 'user', content: [{ type: 'input_text', text: `key ${AWS}` }] }, { type: 'function_call_output', call_id: 'c', output: `ssn ${SSN}` }] };
    const i = JSON.parse(all.forConnection(openai)!.request('/responses', 'application/json', json(input)).forward.toString());
    assert.equal(i.instructions, 'reply to [EMAIL]');
    assert.equal(i.input[0].content[0].text, 'key [AWS_ACCESS_KEY]');
    assert.equal(i.input[1].output, 'ssn [US_SSN]');
    const emb = JSON.parse(all.forConnection(openai)!.request('/embeddings', 'application/json', json({ model: 'text-embedding-3-small', input: [`mail ${EMAIL}`, 'plain'], encoding_format: 'base64' })).forward.toString());
    assert.deepEqual(emb.input, ['mail [EMAIL]', 'plain']);
  });

  it('Anthropic messages: system, text blocks, tool_use input leaves, tool_result content', () => {
    const req = {
      model: 'claude-sonnet-4-5',
      max_tokens: 100,
      system: [{ type: 'text', text: `Contact ${EMAIL}` }],
      messages: [
        { role: 'user', content: `card ${CARD}` },
        { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'save', input: { customer: { ssn: SSN, password: 'correct horse' }, tags: ['vip', EMAIL] } }] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: [{ type: 'text', text: `saved ${AWS}` }] }] },
      ],
    };
    const r = all.forConnection(anthropic)!.request('/v1/messages', 'application/json', json(req));
    const out = JSON.parse(r.forward.toString());
    assert.equal(out.system[0].text, 'Contact [EMAIL]');
    assert.equal(out.messages[0].content, 'card [CREDIT_CARD]');
    assert.deepEqual(out.messages[1].content[0].input, { customer: { ssn: '[US_SSN]', password: '[PASSWORD]' }, tags: ['vip', '[EMAIL]'] });
    assert.equal(out.messages[1].content[0].id, 'toolu_1');
    assert.equal(out.messages[2].content[0].content[0].text, 'saved [AWS_ACCESS_KEY]');
    assert.equal(out.model, 'claude-sonnet-4-5');
    const res = { id: 'msg_1', type: 'message', role: 'assistant', model: 'claude-sonnet-4-5', content: [{ type: 'text', text: `IBAN GB82 WEST 1234 5698 7654 32` }, { type: 'tool_use', id: 'tu', name: 'n', input: { email: EMAIL } }], stop_reason: 'end_turn' };
    const o = JSON.parse(all.forConnection(anthropic)!.response('/v1/messages', 'application/json', json(res)).forward.toString());
    assert.equal(o.content[0].text, 'IBAN [IBAN]');
    assert.deepEqual(o.content[1].input, { email: '[EMAIL]' });
  });

  it('forwards the original bytes when nothing changed, and rewrites only changed strings otherwise', () => {
    const raw = Buffer.from('{ "model" : "gpt-4o",\n  "messages": [ {"role":"user","content":"hello"} ], "n": 12345678901234567890 }');
    const m = all.forConnection(openai)!;
    assert.equal(m.request('/chat/completions', 'application/json', raw).forward, raw, 'same Buffer');
    const withCard = Buffer.from(raw.toString().replace('hello', `card ${CARD}`));
    assert.equal(m.request('/chat/completions', 'application/json', withCard).forward.toString(), raw.toString().replace('hello', 'card [CREDIT_CARD]'), 'formatting and big numbers kept');
    assert.equal(spliceJsonStrings('{"a":["x","y"],"b\\/c":{"d":"z"}}', new Map([['/a/1', 'Y'], ['/b~1c/d', 'q"']])), '{"a":["x","Y"],"b\\/c":{"d":"q\\""}}');
  });

  it('generic JSON for http connections: jsonPaths limit where detectors run; a rule without detectors masks whole values', () => {
    const e = engine([rule({ id: 'notes', detectors: ['email'], jsonPaths: ['$.items[*].note'] }), rule({ id: 'names', jsonPaths: ['$.customer.name'], strategy: 'hash' })]);
    const body = { customer: { name: 'Jane Doe', email: EMAIL }, items: [{ id: EMAIL, note: `ping ${EMAIL}` }] };
    const r = e.forConnection(svc)!.request('/orders', 'application/json', json(body));
    const out = JSON.parse(r.forward.toString());
    assert.equal(out.customer.email, EMAIL, 'outside the rule paths');
    assert.equal(out.items[0].id, EMAIL);
    assert.equal(out.items[0].note, 'ping [EMAIL]');
    assert.match(out.customer.name, /^\[NAME:[0-9a-f]{8}\]$/);
    const all2 = engine([rule({ id: 'r', detectors: ['email'] })]).forConnection(svc)!.request('/orders', 'application/json', json(body));
    assert.deepEqual(JSON.parse(all2.forward.toString()).items[0], { id: '[EMAIL]', note: 'ping [EMAIL]' }, 'no jsonPaths: every string leaf');
  });

  it('plain text and form bodies are masked as text; binary passes through unscanned and unrecorded', () => {
    const m = all.forConnection(svc)!;
    assert.equal(m.request('/', 'application/x-www-form-urlencoded', Buffer.from(`email=${encodeURIComponent(EMAIL)}&card=${CARD}`)).forward.toString(), 'email=jane.doe%40example.com&card=[CREDIT_CARD]');
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2, 3]);
    const r = m.request('/', 'image/png', png);
    assert.equal(r.forward, png);
    assert.deepEqual(r.log, { binary: true, contentType: 'image/png', bytes: 8 });
  });

  it('never records an original value that a rule masks', () => {
    const r = all.forConnection(openai)!.request('/chat/completions', 'application/json', json({ model: 'm', messages: [{ role: 'user', content: `${CARD} ${SSN} ${EMAIL} ${AWS}` }] }));
    const recorded = JSON.stringify({ log: r.log, spans: r.spans });
    for (const v of [CARD, SSN, EMAIL, AWS]) assert.ok(!recorded.includes(v), v);
  });
});
