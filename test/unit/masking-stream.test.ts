import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Connection, MaskingRule } from '../../shared/config';
import { createMaskingEngine } from '../../proxy/masking/engine';
import { BUILTIN_DETECTORS } from '../../proxy/masking/detectors';
import { holdbackOf, type SseStreamMasker } from '../../proxy/masking/stream';
import type { SseEvent, StreamChunkResult } from '../../proxy/masking/types';

const KEY = Buffer.alloc(32, 3);
const openai: Connection = { name: 'openai', kind: 'openai', upstream: 'https://api.openai.com/v1' };
const anthropic: Connection = { name: 'anthropic', kind: 'anthropic', upstream: 'https://api.anthropic.com' };
const rules: MaskingRule[] = [{ id: 'all', detectors: ['all'], scope: ['client', 'upstream', 'log'], strategy: 'redact', keepLast: 4 }];
const engine = createMaskingEngine({ detectors: [], masking: rules }, { hmacKey: KEY });

const PEM = `-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49\nAwEHoUQDQgAEPR3tU2Fta9ktY+6P9G0cWO+0kETA6SFs38GecTyudlHz6xvCdz8q\nEKTcWGekdmdDPsHloRNtsiCa697B2O9IFA==\n-----END EC PRIVATE KEY-----`;
/** Planted values with a little context, and the value that must never be forwarded. */
const SAMPLES: [string, string][] = [
  ['card 4111 1111 1111 1111 thanks', '4111 1111 1111 1111'],
  ['ssn 078-05-1120.', '078-05-1120'],
  ['mail jane.doe@example.com!', 'jane.doe@example.com'],
  ['IBAN GB82 WEST 1234 5698 7654 32 ok', 'GB82 WEST 1234 5698 7654 32'],
  ['key AKIAIOSFODNN7EXAMPLE end', 'AKIAIOSFODNN7EXAMPLE'],
  ['tel +1 (415) 555-2671 x', '(415) 555-2671'],
  ['DOB: 14 March 1985.', '14 March 1985'],
  ['Authorization: Bearer abcdef0123456789abcdef ok', 'abcdef0123456789abcdef'],
  ['password=hunter2 ok', 'hunter2'],
  ['db postgres://app:s3cr3tpass@db/x', 's3cr3tpass'],
  ['gh ghp_16C7e42F292c6912E7710c838347Ae178B4a.', 'ghp_16C7e42F292c6912E7710c838347Ae178B4a'],
  ['jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ end', 'c2lnbmF0dXJlLXNpZ25hdHVyZQ'],
];

interface Format {
  name: string;
  connection: Connection;
  path: string;
  /** Events carrying the pieces, then the events that end the text. */
  events(pieces: string[]): SseEvent[];
  /** The streamed text as the client reassembles it. */
  text(events: SseEvent[]): string;
}

const chatChunk = (choice: Record<string, unknown>): SseEvent => ({
  data: JSON.stringify({ id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o', choices: [choice] }),
});
const parse = (e: SseEvent) => (e.data === '[DONE]' ? undefined : JSON.parse(e.data));

const FORMATS: Format[] = [
  {
    name: 'OpenAI chat delta.content',
    connection: openai,
    path: '/chat/completions',
    events: (pieces) => [
      chatChunk({ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }),
      ...pieces.map((p) => chatChunk({ index: 0, delta: { content: p }, finish_reason: null })),
      chatChunk({ index: 0, delta: {}, finish_reason: 'stop' }),
      { data: '[DONE]' },
    ],
    text: (events) => events.map((e) => parse(e)?.choices?.[0]?.delta?.content ?? '').join(''),
  },
  {
    name: 'OpenAI chat tool_calls arguments',
    connection: openai,
    path: '/chat/completions',
    events: (pieces) => [
      chatChunk({ index: 0, delta: { role: 'assistant', tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { name: 'save', arguments: '' } }] }, finish_reason: null }),
      ...pieces.map((p) => chatChunk({ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: p } }] }, finish_reason: null })),
      chatChunk({ index: 0, delta: {}, finish_reason: 'tool_calls' }),
      { data: '[DONE]' },
    ],
    text: (events) => events.map((e) => parse(e)?.choices?.[0]?.delta?.tool_calls?.[0]?.function?.arguments ?? '').join(''),
  },
  {
    name: 'OpenAI Responses output_text.delta',
    connection: openai,
    path: '/responses',
    events: (pieces) => [
      { event: 'response.created', data: JSON.stringify({ type: 'response.created', sequence_number: 0, response: { id: 'resp_1', object: 'response', status: 'in_progress', output: [] } }) },
      ...pieces.map((p, i) => ({ event: 'response.output_text.delta', data: JSON.stringify({ type: 'response.output_text.delta', sequence_number: i + 1, item_id: 'msg_1', output_index: 0, content_index: 0, delta: p }) })),
      { event: 'response.output_text.done', data: JSON.stringify({ type: 'response.output_text.done', sequence_number: 900, item_id: 'msg_1', output_index: 0, content_index: 0, text: pieces.join('') }) },
      { event: 'response.completed', data: JSON.stringify({ type: 'response.completed', sequence_number: 901, response: { id: 'resp_1', object: 'response', status: 'completed', output: [{ type: 'message', id: 'msg_1', role: 'assistant', content: [{ type: 'output_text', text: pieces.join(''), annotations: [] }] }] } }) },
    ],
    text: (events) => events.filter((e) => e.event === 'response.output_text.delta').map((e) => parse(e).delta).join(''),
  },
  {
    name: 'Anthropic text_delta',
    connection: anthropic,
    path: '/v1/messages',
    events: (pieces) => [
      { event: 'message_start', data: JSON.stringify({ type: 'message_start', message: { id: 'msg_1', type: 'message', role: 'assistant', model: 'claude', content: [] } }) },
      { event: 'content_block_start', data: JSON.stringify({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }) },
      ...pieces.map((p) => ({ event: 'content_block_delta', data: JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: p } }) })),
      { event: 'content_block_stop', data: JSON.stringify({ type: 'content_block_stop', index: 0 }) },
      { event: 'message_stop', data: JSON.stringify({ type: 'message_stop' }) },
    ],
    text: (events) => events.filter((e) => e.event === 'content_block_delta').map((e) => parse(e).delta.text).join(''),
  },
  {
    name: 'Anthropic input_json_delta',
    connection: anthropic,
    path: '/v1/messages',
    events: (pieces) => [
      { event: 'content_block_start', data: JSON.stringify({ type: 'content_block_start', index: 1, content_block: { type: 'tool_use', id: 'toolu_1', name: 'save', input: {} } }) },
      ...pieces.map((p) => ({ event: 'content_block_delta', data: JSON.stringify({ type: 'content_block_delta', index: 1, delta: { type: 'input_json_delta', partial_json: p } }) })),
      { event: 'content_block_stop', data: JSON.stringify({ type: 'content_block_stop', index: 1 }) },
    ],
    text: (events) => events.filter((e) => e.event === 'content_block_delta').map((e) => parse(e).delta.partial_json).join(''),
  },
];

function run(format: Format, pieces: string[]): { forward: SseEvent[]; log: SseEvent[]; masker: SseStreamMasker; results: StreamChunkResult[] } {
  const masker = engine.forConnection(format.connection)!.stream(format.path) as SseStreamMasker;
  const forward: SseEvent[] = [];
  const log: SseEvent[] = [];
  const results: StreamChunkResult[] = [];
  for (const e of format.events(pieces)) {
    const r = masker.push(e);
    results.push(r);
    forward.push(...r.forward);
    log.push(...r.log);
    assert.ok(masker.held <= masker.holdbackBound, `held ${masker.held} > bound ${masker.holdbackBound}`);
  }
  const r = masker.end();
  forward.push(...r.forward);
  log.push(...r.log);
  return { forward, log, masker, results };
}

const wholeMasked = (text: string) => engine.forConnection(openai)!.response('/', 'text/plain', Buffer.from(text)).forward.toString();

describe('stream masking: every split of a planted value', () => {
  for (const format of FORMATS) {
    it(`${format.name}: all 2- and 3-chunk splits are masked like the whole text`, () => {
      let runs = 0;
      for (const [text, secret] of SAMPLES) {
        const expected = wholeMasked(text);
        assert.ok(!expected.includes(secret), `whole-text masking hides ${secret}`);
        const vs = text.indexOf(secret);
        const points: number[] = [];
        for (let i = Math.max(1, vs - 2); i <= Math.min(text.length - 1, vs + secret.length + 1); i++) points.push(i);
        const splits: number[][] = points.map((p) => [p]);
        for (const a of points) for (const b of points) if (a < b) splits.push([a, b]);
        for (const cut of splits) {
          const pieces = [0, ...cut].map((s, k) => text.slice(s, [...cut, text.length][k]));
          const { forward, log } = run(format, pieces);
          const got = format.text(forward);
          assert.equal(got, expected, `split ${JSON.stringify(pieces)}`);
          assert.equal(format.text(log), expected);
          for (const e of [...forward, ...log]) assert.ok(!e.data.includes(secret), `${secret} leaked in ${e.data}`);
          runs++;
        }
      }
      assert.ok(runs > 2000, `ran ${runs} splits`);
    });
  }

  it('a multi-line private key split anywhere (all 2-chunk splits, 3-chunk samples)', () => {
    const text = `here:\n${PEM}\nbye`;
    const expected = wholeMasked(text);
    assert.equal(expected, 'here:\n[PRIVATE_KEY]\nbye');
    const format = FORMATS[3]!;
    for (let i = 1; i < text.length; i++) assert.equal(format.text(run(format, [text.slice(0, i), text.slice(i)]).forward), expected, `split at ${i}`);
    let seed = 42;
    const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
    for (let k = 0; k < 300; k++) {
      const a = 1 + Math.floor(rnd() * (text.length - 2));
      const b = a + 1 + Math.floor(rnd() * (text.length - a - 1));
      assert.equal(format.text(run(format, [text.slice(0, a), text.slice(a, b), text.slice(b)]).forward), expected, `split at ${a},${b}`);
    }
  });

  it('a private key longer than the holdback bound is masked to its END line, none of it forwarded', () => {
    const body = Array.from({ length: 400 }, (_, i) => `${String(i).padStart(4, '0')}${'Qk1vZGVsS2V5TWF0ZXJpYWw'.repeat(3)}`.slice(0, 64)).join('\n');
    const text = `key:\n-----BEGIN RSA PRIVATE KEY-----\n${body}\n-----END RSA PRIVATE KEY-----\nafter the key`;
    assert.ok(text.length > 20_000);
    const pieces: string[] = [];
    for (let i = 0; i < text.length; i += 97) pieces.push(text.slice(i, i + 97));
    const { forward, masker } = run(FORMATS[0]!, pieces);
    const got = FORMATS[0]!.text(forward);
    assert.equal(got, 'key:\n[PRIVATE_KEY]\nafter the key');
    assert.ok(masker.maxHeld <= masker.holdbackBound);
  });

  it('a card number arriving one character per chunk', () => {
    const text = 'pay with 5555-5555-5555-4444 today';
    for (const format of FORMATS) assert.equal(format.text(run(format, [...text]).forward), 'pay with [CREDIT_CARD] today', format.name);
  });
});

describe('stream masking: holdback', () => {
  it('every built-in tail is bounded and covers the longest value its detector masks', () => {
    for (const d of BUILTIN_DETECTORS) {
      const bound = holdbackOf(d);
      assert.ok(Number.isFinite(bound), `${d.id} holds an unbounded tail`);
      assert.ok(bound >= d.maxLength, `${d.id}: holdback ${bound} < longest value ${d.maxLength}`);
    }
  });

  it('a long opaque bearer token split into small chunks is masked whole', () => {
    const token = 'Zx9' + 'aB3dE5fG7h'.repeat(60);
    const text = `Authorization: Bearer ${token}\nnext line`;
    const pieces: string[] = [];
    for (let i = 0; i < text.length; i += 7) pieces.push(text.slice(i, i + 7));
    const got = FORMATS[0]!.text(run(FORMATS[0]!, pieces).forward);
    assert.equal(got, 'Authorization: Bearer [BEARER_TOKEN]\nnext line');
  });

  it('holds back only what could still become a match, and emits the rest at once', () => {
    const masker = engine.forConnection(openai)!.stream('/chat/completions') as SseStreamMasker;
    const out = (content: string) => parse(masker.push(chatChunk({ index: 0, delta: { content }, finish_reason: null })).forward[0]!).choices[0].delta.content as string;
    assert.equal(out('Hello there, how are you today? '), 'Hello there, how are you today? ', 'prose ending in a space is not held');
    assert.equal(masker.held, 0);
    assert.equal(out('My card is 4111 '), 'My card is ', 'digits that may start a card are held');
    assert.equal(masker.held, 5);
    assert.equal(out('1111 1111 1111 and'), '[CREDIT_CARD]', 'complete once a non-digit follows');
    assert.ok(masker.held <= 4, 'only the trailing word (a possible e-mail or key start) is held');
    assert.equal(out(' more'), ' and ');
    assert.ok(masker.maxHeld <= 48, `held at most ${masker.maxHeld}`);
    assert.ok(masker.holdbackBound >= 16_000, 'the bound covers a PEM private key block');
  });

  it('keeps bounded: a long run of token characters is released past the bound', () => {
    const masker = engine.forConnection(openai)!.stream('/chat/completions') as SseStreamMasker;
    for (let i = 0; i < 200; i++) masker.push(chatChunk({ index: 0, delta: { content: 'abcdefghij' }, finish_reason: null }));
    assert.ok(masker.maxHeld <= 331, `held ${masker.maxHeld}`);
  });

  it('a 100 KB run of one character streams in linear time (the holdback search does not backtrack per position)', () => {
    // Each `[…]{1,330}$`-style tail used to be retried at every start position: ~3 µs per character.
    for (const ch of ['a', 'Q', '7', ':', '-', '@']) {
      for (const text of [ch.repeat(100_000), ch.repeat(100_000) + ' ']) {
        const masker = engine.forConnection(openai)!.stream('/chat/completions') as SseStreamMasker;
        const t0 = performance.now();
        const out = masker.push(chatChunk({ index: 0, delta: { content: text }, finish_reason: null }));
        for (let i = 0; i < 100; i++) masker.push(chatChunk({ index: 0, delta: { content: text.slice(i * 1000, i * 1000 + 1000) }, finish_reason: null }));
        masker.end();
        const ms = performance.now() - t0;
        assert.ok(ms < 200, `a run of ${JSON.stringify(ch)}: ${ms.toFixed(1)} ms`);
        assert.ok(masker.maxHeld <= 331, `held ${masker.maxHeld}`);
        assert.ok(out.forward.length >= 1);
      }
    }
  });

  it('a 100 KB run of one character in a whole text body masks in linear time too', () => {
    const masker = engine.forConnection(openai)!;
    for (const ch of ['a', 'Q', '7', ':', '-', '@', '.']) {
      const body = Buffer.from(ch.repeat(100_000));
      const t0 = performance.now();
      const r = masker.request('/chat/completions', 'text/plain', body);
      const ms = performance.now() - t0;
      assert.ok(ms < 200, `a run of ${JSON.stringify(ch)}: ${ms.toFixed(1)} ms`);
      assert.equal(r.spans.length, 0);
    }
  });
});

describe('stream masking: event order and shapes', () => {
  it('flushes held text of a finishing choice in a synthesized chunk just before the finish chunk', () => {
    const m = engine.forConnection(openai)!.stream('/chat/completions');
    const role = chatChunk({ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null });
    const r1 = m.push(role);
    assert.equal(r1.forward[0], role, 'events with nothing to mask pass through untouched');
    m.push(chatChunk({ index: 0, delta: { content: 'call me at 415-555-26' }, finish_reason: null }));
    m.push(chatChunk({ index: 0, delta: { content: '71' }, finish_reason: null }));
    const fin = chatChunk({ index: 0, delta: {}, finish_reason: 'stop' });
    const r = m.push(fin);
    assert.equal(r.forward.length, 2);
    const synth = parse(r.forward[0]!);
    assert.deepEqual(synth, { id: 'chatcmpl-1', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o', choices: [{ index: 0, delta: { content: '[PHONE]' }, logprobs: null, finish_reason: null }] });
    assert.equal(r.forward[1], fin);
    assert.deepEqual(r.counts, { PHONE: 1 });
    assert.equal(r.spans[0]!.path, '/0/data/choices/0/delta/content');
    const done = m.push({ data: '[DONE]' });
    assert.deepEqual(done.forward, [{ data: '[DONE]' }]);
  });

  it('keeps choices and tool calls apart, and flushes everything before a usage chunk', () => {
    const m = engine.forConnection(openai)!.stream('/chat/completions');
    const got: SseEvent[] = [];
    const push = (e: SseEvent) => got.push(...m.push(e).forward);
    push(chatChunk({ index: 0, delta: { content: 'a 078-05-' }, finish_reason: null }));
    push(chatChunk({ index: 1, delta: { content: 'b 078-05-' }, finish_reason: null }));
    push({ data: JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: '{"a":"jane@exa' } }, { index: 1, function: { arguments: '{"b":"AKIAIOSF' } }] }, finish_reason: null }] }) });
    push(chatChunk({ index: 0, delta: { content: '1120 x', tool_calls: [{ index: 0, function: { arguments: 'mple.com"}' } }, { index: 1, function: { arguments: 'ODNN7EXAMPLE"}' } }] }, finish_reason: null }));
    push(chatChunk({ index: 1, delta: { content: '1120 y' }, finish_reason: null }));
    push({ data: JSON.stringify({ id: 'c', object: 'chat.completion.chunk', created: 1, model: 'm', choices: [], usage: { total_tokens: 9 } }) });
    const content = (i: number) => got.map((e) => parse(e)?.choices?.find((c: { index: number }) => c.index === i)?.delta?.content ?? '').join('');
    const args = (j: number) => got.map((e) => parse(e)?.choices?.[0]?.delta?.tool_calls?.find((t: { index: number }) => t.index === j)?.function?.arguments ?? '').join('');
    assert.equal(content(0), 'a [US_SSN] x');
    assert.equal(content(1), 'b [US_SSN] y');
    assert.equal(args(0), '{"a":"[EMAIL]"}');
    assert.equal(args(1), '{"b":"[AWS_ACCESS_KEY]"}');
    assert.deepEqual(parse(got[got.length - 1]!).usage, { total_tokens: 9 }, 'the usage chunk comes last');
  });

  it('drops token logprobs, which repeat the original text', () => {
    const m = engine.forConnection(openai)!.stream('/chat/completions');
    const r = m.push(chatChunk({ index: 0, delta: { content: 'ok ' }, logprobs: { content: [{ token: 'ok', logprob: -0.1 }] }, finish_reason: null }));
    assert.equal(parse(r.forward[0]!).choices[0].logprobs, null);
  });

  it('Responses: done events, output items and the completed response are masked consistently with the deltas', () => {
    const text = 'Your SSN 078-05-1120 is on file';
    const { forward, log } = run(FORMATS[2]!, ['Your SSN 078-0', '5-1120 is on file']);
    const deltas = FORMATS[2]!.text(forward);
    const done = parse(forward.find((e) => e.event === 'response.output_text.done')!);
    const completed = parse(forward.find((e) => e.event === 'response.completed')!);
    assert.equal(deltas, wholeMasked(text));
    assert.equal(done.text, deltas);
    assert.equal(completed.response.output[0].content[0].text, deltas);
    assert.equal(completed.response.id, 'resp_1');
    assert.ok(!JSON.stringify(log).includes('078-05-1120'));
    const kinds = forward.map((e) => e.event);
    assert.equal(kinds.indexOf('response.output_text.done'), kinds.lastIndexOf('response.output_text.delta') + 1, 'held text is flushed in a delta just before done');
  });

  it('Anthropic: held text goes out in a content_block_delta before content_block_stop; spans resolve in the log', () => {
    const m = engine.forConnection(anthropic)!.stream('/v1/messages');
    const all: StreamChunkResult[] = [];
    all.push(m.push({ event: 'content_block_start', data: JSON.stringify({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }) }));
    all.push(m.push({ event: 'content_block_delta', data: JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'write to jane.doe@exam' } }) }));
    all.push(m.push({ event: 'content_block_delta', data: JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'ple.com' } }) }));
    const stop = m.push({ event: 'content_block_stop', data: JSON.stringify({ type: 'content_block_stop', index: 0 }) });
    assert.deepEqual(stop.forward.map((e) => e.event), ['content_block_delta', 'content_block_stop']);
    assert.deepEqual(parse(stop.forward[0]!), { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: '[EMAIL]' } });
    const span = stop.spans[0]!;
    const logged = parse(stop.log[Number(span.path!.split('/')[1])]!);
    assert.equal(logged.delta.text.slice(span.start, span.end), '[EMAIL]');
    assert.equal(span.path, '/0/data/delta/text');
  });

  it('end() flushes what is still held when the stream stops without a finish event', () => {
    const m = engine.forConnection(openai)!.stream('/chat/completions');
    const a = m.push(chatChunk({ index: 0, delta: { content: 'ends with 4111111111111111' }, finish_reason: null }));
    assert.equal(parse(a.forward[0]!).choices[0].delta.content, 'ends with ');
    const r = m.end();
    assert.equal(parse(r.forward[0]!).choices[0].delta.content, '[CREDIT_CARD]');
  });

  it('masks only for the client when a rule is upstream-only, and always in the log', () => {
    const e = createMaskingEngine({ detectors: [], masking: [{ id: 'up', detectors: ['email'], scope: ['upstream'], strategy: 'redact', keepLast: 4 }] }, { hmacKey: KEY });
    const m = e.forConnection(openai)!.stream('/chat/completions');
    const r = m.push(chatChunk({ index: 0, delta: { content: 'mail jane@example.com ' }, finish_reason: null }));
    assert.equal(parse(r.forward[0]!).choices[0].delta.content, 'mail jane@example.com ');
    assert.equal(parse(r.log[0]!).choices[0].delta.content, 'mail [EMAIL] ');
  });
});
