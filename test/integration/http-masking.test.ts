/**
 * The gateway's real masking engine on the HTTP path, configured the way a user would: a card number
 * in a prompt never reaches the upstream, one in an answer never reaches the client or the log —
 * also when a streamed answer splits it across many deltas.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import type { AuditEvent } from '../../shared/events';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { eventually, OPENAI_SECRET, startTestGateway, type TestGateway } from './http-harness';

const CARD = '4111 1111 1111 1111';
const DIGITS = /4111[ -]?1111[ -]?1111[ -]?1111/;

let upstream: LlmUpstream;
let gw: TestGateway;
let client: OpenAI;

before(async () => {
  upstream = await startLlmUpstream({ openaiKey: OPENAI_SECRET, reply: `Sure — the card on file is ${CARD}, expiring soon.` });
  gw = await startTestGateway(upstream, {
    masking: [
      { id: 'cards', detectors: ['credit_card'], scope: ['client', 'upstream', 'log'], connections: ['openai'] },
      // applies to no connection by itself: only when a policy's mask action asks for it
      { id: 'emails-on-demand', detectors: ['email'], scope: ['client', 'upstream', 'log'], connections: ['vectors'] },
    ],
    policies: [{ name: 'mask-emails-for-gpt-mini', match: { connections: ['openai'], model: ['gpt-4o-mini'] }, action: 'mask', mask: ['emails-on-demand'] }],
  });
  client = new OpenAI({ baseURL: `${gw.proxy}/openai`, apiKey: gw.adminKey, maxRetries: 0 });
});
after(async () => {
  await gw.stop();
  await upstream.close();
});

async function lastExchange(): Promise<AuditEvent[]> {
  const all = await gw.allEvents();
  return all.slice(all.map((e) => e.kind).lastIndexOf('http.request'));
}

describe('masking engine on the HTTP path', () => {
  it('masks the prompt on its way upstream, the answer on its way back, and both in the log', async () => {
    const r = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: `Charge ${CARD} please` }] });
    const answer = r.choices[0]!.message.content!;
    assert.doesNotMatch(answer, DIGITS);
    assert.match(answer, /the card on file is \S+/);
    const sent = upstream.requestsTo('/v1/chat/completions').pop()!.body.toString();
    assert.doesNotMatch(sent, DIGITS, 'the upstream never sees the card');
    const events = await lastExchange();
    assert.doesNotMatch(JSON.stringify(events), DIGITS, 'the log never holds the card');
    const req = events.find((e) => e.kind === 'http.request')!;
    assert.ok(req.spans.length > 0, 'masked spans are recorded for replay');
  });

  it('masks a card split across streamed deltas before any of it reaches the client', async () => {
    const stream = await client.chat.completions.create({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'What card is on file?' }] });
    let text = '';
    let deltas = 0;
    for await (const c of stream) {
      const d = c.choices[0]?.delta?.content;
      if (d) {
        text += d;
        deltas++;
      }
    }
    assert.ok(deltas > 1, 'the answer still streams');
    assert.doesNotMatch(text, DIGITS);
    assert.match(text, /^Sure — the card on file is .+, expiring soon\.$/);
    const events = await eventually(async () => {
      const ev = await lastExchange();
      return ev.some((e) => (e.payload as { done?: boolean }).done) ? ev : undefined;
    }, 'the stream to be recorded');
    assert.doesNotMatch(JSON.stringify(events), DIGITS);
  });

  it('a policy mask action adds a masking rule for the requests it matches', async () => {
    const ask = (model: string) => client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Mail jane.doe@example.com the summary' }] });
    await ask('gpt-4o');
    assert.match(upstream.requestsTo('/v1/chat/completions').pop()!.body.toString(), /jane\.doe@example\.com/, 'without the policy the address goes through');
    await ask('gpt-4o-mini');
    assert.doesNotMatch(upstream.requestsTo('/v1/chat/completions').pop()!.body.toString(), /jane\.doe@example\.com/, 'the policy’s extra rule masks it');
    const events = await lastExchange();
    assert.equal((events.find((e) => e.kind === 'policy.decision')!.payload as { action: string }).action, 'mask');
    assert.doesNotMatch(JSON.stringify(events), /jane\.doe@example\.com/);
  });
});
