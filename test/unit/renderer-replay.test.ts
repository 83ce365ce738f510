// Replay logic (renderer/lib/replay.ts, conversation.ts, rich.ts): the clock, the conversation
// rebuilt from recorded events as the HTTP proxy writes them, streamed answers growing at their
// recorded pace, and masked spans following the text wherever it is decoded or concatenated.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AuditEvent, MaskSpan } from '../../shared/events';
import { buildConversation, materialize, type Block } from '../../renderer/lib/conversation';
import { concatRich, decodeJsonWithMarks, encodeJsonString, Node, rich, segments } from '../../renderer/lib/rich';
import { advance, buildTimeline, changeSpeed, indexAt, isCommand, play, seekFraction, seekSeq, sessionMode, stepNext, stepPrev } from '../../renderer/lib/replay';

const T0 = 1_700_000_000_000;
let seq = 0;
function ev(kind: AuditEvent['kind'], time: number, payload: unknown, spans: MaskSpan[] = []): AuditEvent {
  return { seq: ++seq, time: T0 + time, kind, session: 'ses_1', actor: 'key:dev', connection: 'openai', payload, spans, payloadHash: '', prevHash: '', hash: '' };
}
const chunk = (time: number, offset: number, content: string, spans: MaskSpan[] = []) =>
  ev('http.chunk', time, { offset, events: [{ data: JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content } }] }) }] }, spans);

/** A streamed OpenAI chat exchange as proxy/http/proxy.ts records it, with a card number masked in the prompt and the answer. */
function streamedSession(): AuditEvent[] {
  seq = 0;
  const prompt = 'Refund card [CREDIT_CARD] please';
  return [
    ev('session.start', 0, { protocol: 'http', actorName: 'dev' }),
    ev(
      'http.request',
      0,
      { method: 'POST', path: '/chat/completions', model: 'gpt-4o', stream: true, body: { model: 'gpt-4o', stream: true, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: prompt }] } },
      // relative to the body, as the masker returns them
      [{ type: 'CREDIT_CARD', start: 12, end: 25, rule: 'pii', path: '/messages/1/content' }],
    ),
    ev('http.response', 300, { status: 200, stream: true }),
    chunk(350, 400, 'Refunding '),
    chunk(350, 1400, '[CREDIT_CARD]', [{ type: 'CREDIT_CARD', start: 0, end: 13, rule: 'pii', path: '/events/0/data/choices/0/delta/content' }]),
    chunk(2000, 1900, ' now.'),
    ev('http.chunk', 2000, { offset: 1950, events: [{ data: '[DONE]' }] }),
    ev('session.end', 60_000, { protocol: 'http', reason: 'idle' }),
  ];
}

describe('timeline', () => {
  it('places chunks by their recorded offset and shortens idle gaps', () => {
    const t = buildTimeline(streamedSession(), 2000);
    const at = t.items.map((i) => i.at);
    assert.deepEqual(at.slice(0, 7), [0, 0, 300, 400, 1400, 1900, 1950]);
    assert.equal(t.duration, 1950 + 2000, 'the minute of idleness before session.end plays in two seconds');
    assert.equal(t.items[1]!.label, 'POST /chat/completions');
    assert.equal(t.items[4]!.masked, 1);
  });

  it('plays, steps and seeks', () => {
    const t = buildTimeline(streamedSession(), 2000);
    let s = { position: 0, playing: false, speed: 1 };
    s = play(t, s);
    s = advance(t, s, 500);
    assert.equal(s.position, 500);
    s = advance(t, changeSpeed(s, 16), 1000);
    assert.equal(s.position, t.duration, 'stops at the end');
    assert.equal(s.playing, false);
    assert.equal(play(t, s).position, 0, 'play at the end starts over');
    s = stepPrev(t, { ...s, position: 1400 });
    assert.equal(s.position, 400);
    s = stepNext(t, s);
    assert.equal(s.position, 1400);
    assert.equal(indexAt(t, 1399), 3);
    assert.equal(indexAt(t, -1), -1);
    assert.equal(seekFraction(t, s, 0.5).position, t.duration / 2);
    assert.equal(seekFraction(t, s, 7).position, t.duration);
    assert.equal(seekSeq(t, s, 6).position, 1900);
    assert.equal(changeSpeed(s, 64).speed, 16);
    assert.equal(changeSpeed(s, 0.1).speed, 0.5);
  });

  it('steps between the commands of an SSH session: execs and shell lines, uncertain ones labelled', () => {
    seq = 0;
    const events = [
      ev('session.start', 0, { protocol: 'ssh' }),
      ev('ssh.request', 0, { protocol: 'ssh', channel: 0, request: 'shell' }),
      ev('ssh.output', 400, { protocol: 'ssh', channel: 0, frames: [[0, 'o', '$ ']] }),
      ev('ssh.command', 500, { protocol: 'ssh', channel: 0, request: 'shell', line: 'ls -la' }),
      ev('ssh.output', 900, { protocol: 'ssh', channel: 0, frames: [[0, 'o', 'total 0']] }),
      ev('ssh.command', 1200, { protocol: 'ssh', channel: 0, request: 'shell', line: 'rm -rf /var/lcache', uncertain: ['completion'] }),
      ev('ssh.request', 1500, { protocol: 'ssh', channel: 1, request: 'exec', command: 'uptime' }),
      ev('ssh.exit', 1600, { protocol: 'ssh', channel: 1, request: 'exec', exitStatus: 0 }),
    ];
    const t = buildTimeline(events, 2000);
    assert.deepEqual(t.items.filter(isCommand).map((i) => i.label), ['$ ls -la', '$ rm -rf /var/lcache (uncertain)', '$ uptime']);
    let s = { position: 0, playing: false, speed: 1 };
    s = stepNext(t, s, isCommand);
    assert.equal(s.position, 500);
    s = stepNext(t, s, isCommand);
    assert.equal(s.position, 1200, 'the output between two commands is stepped over');
    s = stepNext(t, s, isCommand);
    assert.equal(s.position, 1500);
    assert.equal(stepNext(t, s, isCommand).position, t.duration, 'after the last command: the end');
    assert.equal(stepPrev(t, s, isCommand).position, 1200);
    assert.equal(stepNext(t, { ...s, position: 0 }).position, 400, 'plain stepping still visits every item');
  });

  it('chooses the SQL view for PostgreSQL sessions', () => {
    assert.equal(sessionMode(streamedSession()), 'llm');
    assert.equal(sessionMode([ev('pg.statement', 0, { sql: 'select 1' })]), 'sql');
    assert.equal(sessionMode([ev('key.created', 0, {})], 'control'), 'events');
  });
});

describe('conversation', () => {
  it('shows the prompt with its masked span, and the answer growing chunk by chunk', () => {
    const events = streamedSession();
    const t = buildTimeline(events, 2000);
    const c = buildConversation(events, t);
    const turns = c.blocks.filter((b): b is Extract<Block, { type: 'turn' }> => b.type === 'turn');
    assert.deepEqual(turns.map((b) => b.turn.role), ['system', 'user']);
    const user = turns[1]!.turn.parts[0]!;
    assert.equal(user.kind, 'text');
    const segs = segments((user as { text: ReturnType<typeof rich> }).text);
    assert.deepEqual(segs.find((x) => x.mark), { text: '[CREDIT_CARD]', mark: { type: 'CREDIT_CARD', rule: 'pii' } });

    const out = c.blocks.find((b): b is Extract<Block, { type: 'output' }> => b.type === 'output')!;
    assert.equal(out.endAt, 1900);
    assert.equal(materialize(out.ops, 399).length, 0);
    assert.equal(materialize(out.ops, 400)[0]!.text.text, 'Refunding ');
    const full = materialize(out.ops, 5000)[0]!.text;
    assert.equal(full.text, 'Refunding [CREDIT_CARD] now.');
    assert.deepEqual(full.marks, [{ type: 'CREDIT_CARD', rule: 'pii', start: 10, end: 23 }]);
    const header = c.blocks.find((b) => b.type === 'exchange') as Extract<Block, { type: 'exchange' }>;
    assert.deepEqual([header.model, header.stream, header.status], ['gpt-4o', true, 200]);
  });

  it('shows only what each request adds to a running conversation, with tool calls and results', () => {
    seq = 0;
    const body1 = { model: 'gpt-4o', tools: [{ type: 'function', function: { name: 'lookup' } }], messages: [{ role: 'user', content: 'Where is order 7?' }] };
    const answer1 = { choices: [{ index: 0, message: { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'lookup', arguments: '{"order":7}' } }] }, finish_reason: 'tool_calls' }] };
    const body2 = {
      model: 'gpt-4o',
      messages: [
        ...body1.messages,
        { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'lookup', arguments: '{"order": 7}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: '{"status":"shipped"}' },
      ],
    };
    const events = [
      ev('http.request', 0, { method: 'POST', path: '/chat/completions', body: body1 }),
      ev('http.response', 100, { status: 200, body: answer1 }),
      ev('http.request', 200, { method: 'POST', path: '/chat/completions', body: body2 }),
      ev('http.response', 300, { status: 200, body: { choices: [{ index: 0, message: { role: 'assistant', content: 'It shipped.' } }] } }),
    ];
    const c = buildConversation(events, buildTimeline(events));
    const turns = c.blocks.filter((b): b is Extract<Block, { type: 'turn' }> => b.type === 'turn').map((b) => b.turn);
    assert.deepEqual(turns.map((x) => x.role), ['user', 'tool'], 'the echoed assistant tool call is not shown twice');
    assert.equal(turns[1]!.parts[0]!.kind, 'tool_result');
    const outputs = c.blocks.filter((b): b is Extract<Block, { type: 'output' }> => b.type === 'output');
    const call = materialize(outputs[0]!.ops, Infinity)[0]!;
    assert.deepEqual([call.kind, call.name, call.text.text], ['tool', 'lookup', '{\n  "order": 7\n}']);
    assert.equal(materialize(outputs[1]!.ops, Infinity)[0]!.text.text, 'It shipped.');
    assert.equal((c.blocks.find((b) => b.type === 'exchange') as Extract<Block, { type: 'exchange' }>).tools[0], 'lookup');
  });

  it('reads Anthropic streams, including tool input arriving as JSON fragments', () => {
    seq = 0;
    const sse = (type: string, body: object) => ({ event: type, data: JSON.stringify({ type, ...body }) });
    const events = [
      ev('http.request', 0, { method: 'POST', path: '/v1/messages', body: { model: 'claude', system: 'Be kind.', messages: [{ role: 'user', content: [{ type: 'text', text: 'Weather?' }] }] } }),
      ev('http.response', 10, { status: 200, stream: true }),
      ev('http.chunk', 20, {
        offset: 20,
        events: [
          sse('content_block_start', { index: 0, content_block: { type: 'text', text: '' } }),
          sse('content_block_delta', { index: 0, delta: { type: 'text_delta', text: 'Checking.' } }),
          sse('content_block_start', { index: 1, content_block: { type: 'tool_use', id: 'tu_1', name: 'weather', input: {} } }),
          sse('content_block_delta', { index: 1, delta: { type: 'input_json_delta', partial_json: '{"city": "Par' } }),
        ],
      }),
      ev('http.chunk', 40, { offset: 40, events: [sse('content_block_delta', { index: 1, delta: { type: 'input_json_delta', partial_json: 'is"}' } })] }),
    ];
    const t = buildTimeline(events);
    const c = buildConversation(events, t);
    assert.deepEqual(c.blocks.filter((b) => b.type === 'turn').map((b) => (b as Extract<Block, { type: 'turn' }>).turn.role), ['system', 'user']);
    const out = c.blocks.find((b): b is Extract<Block, { type: 'output' }> => b.type === 'output')!;
    const mid = materialize(out.ops, 20);
    assert.equal(mid[1]!.text.text, '{"city": "Par', 'unparseable fragments stay as they are');
    const end = materialize(out.ops, 40);
    assert.deepEqual(end.map((p) => [p.kind, p.name, p.text.text]), [
      ['text', undefined, 'Checking.'],
      ['tool', 'weather', '{\n  "city": "Paris"\n}'],
    ]);
  });

  it('puts policy decisions, holds and votes inline at their moment', () => {
    seq = 0;
    const events = [
      ev('http.request', 0, { method: 'POST', path: '/chat/completions', body: { messages: [{ role: 'user', content: 'export all' }] } }),
      ev('policy.decision', 0, { action: 'hold', rule: 'hold-bulk-export' }),
      ev('hold.created', 1, { id: 'h', rule: 'hold-bulk-export', approvers: ['security'], min: 1, state: 'pending' }),
      ev('hold.vote', 90_000, { id: 'h', decision: 'deny', reason: 'not today', byName: 'alice' }),
      ev('hold.resolved', 90_000, { id: 'h', state: 'denied', reason: 'not today' }),
    ];
    const c = buildConversation(events, buildTimeline(events));
    const notices = c.blocks.filter((b): b is Extract<Block, { type: 'notice' }> => b.type === 'notice');
    // Each fact once: the hold names its rule (no separate "Policy hold"), the vote tells the denial.
    assert.deepEqual(notices.map((n) => [n.tone, n.title]), [
      ['hold', 'Held for approval by security (1 needed) — rule hold-bulk-export'],
      ['deny', 'Denied by alice'],
    ]);
    assert.equal(notices[1]!.detail!.text, 'not today');
  });
});

describe('masked text', () => {
  it('maps marks on JSON text into the decoded strings, escapes included', () => {
    const text = '{"a":"x\\"\\u00e9 [EMAIL] y","b":["[SSN]"]}';
    const start = text.indexOf('[EMAIL]');
    const ssn = text.indexOf('[SSN]');
    const d = decodeJsonWithMarks(text, [
      { start, end: start + 7, type: 'EMAIL', rule: 'r' },
      { start: ssn, end: ssn + 5, type: 'US_SSN', rule: 'r' },
    ])!;
    assert.deepEqual(d.value, { a: 'x"é [EMAIL] y', b: ['[SSN]'] });
    assert.deepEqual(d.index.get('/a'), [{ start: 4, end: 11, type: 'EMAIL', rule: 'r' }]);
    assert.deepEqual(d.index.get('/b/0'), [{ start: 0, end: 5, type: 'US_SSN', rule: 'r' }]);
    assert.equal(decodeJsonWithMarks('{"a": tru}', []), undefined);
  });

  it('keeps marks through JSON encoding, concatenation and splitting', () => {
    const enc = encodeJsonString('a"[X]', [{ start: 2, end: 5, type: 'X', rule: 'r' }]);
    assert.equal(enc.text, '"a\\"[X]"');
    assert.equal(enc.text.slice(enc.marks[0]!.start, enc.marks[0]!.end), '[X]');
    const joined = concatRich([rich('ab'), rich('[Y]', [{ start: 0, end: 3, type: 'Y', rule: 'r' }])]);
    assert.deepEqual(segments(joined), [{ text: 'ab' }, { text: '[Y]', mark: { type: 'Y', rule: 'r' } }]);
    assert.deepEqual(segments(rich('')), [{ text: '' }]);
  });

  it('pretty-prints a payload with its marks where they belong', () => {
    const n = Node.root({ body: { q: 'mail [EMAIL]' } }, [{ type: 'EMAIL', start: 5, end: 12, rule: 'r', path: '/q' }]);
    const r = n.jsonRich();
    assert.equal(r.text.slice(r.marks[0]!.start, r.marks[0]!.end), '[EMAIL]');
  });
});
