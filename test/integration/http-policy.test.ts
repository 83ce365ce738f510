/**
 * Policy, holds and masking on the HTTP request path, through the contracts the proxy uses
 * (services.policy, services.holds, services.masking): deny answers 403 in the provider's shape
 * naming the rule; a hold parks the request until an approver decides on the control plane; a
 * client that leaves cancels its hold; masking rewrites what goes upstream, back to the client and
 * into the log, and a masking failure refuses rather than forwarding unmasked data.
 */
import assert from 'node:assert/strict';
import type { ServerResponse } from 'node:http';
import { after, before, beforeEach, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import type { PolicyRule } from '../../shared/config';
import type { AuditEvent, MaskSpan } from '../../shared/events';
import type { HoldView } from '../../shared/holds';
import { type ConnectionMasker, type MaskedBody, type MaskedValue, MaskingError, type MaskingEngine, type SseEvent, type StreamChunkResult, type StreamMasker } from '../../proxy/masking/types';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { eventually, OPENAI_SECRET, startTestGateway, type TestGateway } from './http-harness';

const CARD = '4111 1111 1111 1111';
const REPLY_WITH_CARD = `Your card ${CARD} is on file.`;

let upstream: LlmUpstream;
let gw: TestGateway;
let client: OpenAI;
let approverKey: string;
let originalMasking: MaskingEngine;
/** When set, answers the next chat completion requests in place of the stand-in's own handler. */
let upstreamHandler: ((res: ServerResponse) => void) | undefined;

function rules(list: Partial<PolicyRule>[]): void {
  gw.gw.services.policy.load(list.map((r) => ({ match: {}, ...r }) as PolicyRule));
}

before(async () => {
  upstream = await startLlmUpstream({
    openaiKey: OPENAI_SECRET,
    reply: REPLY_WITH_CARD,
    handler: (rec, res) => {
      if (!upstreamHandler || !rec.path.includes('chat/completions')) return false;
      upstreamHandler(res);
      return true;
    },
  });
  gw = await startTestGateway(upstream);
  client = new OpenAI({ baseURL: `${gw.proxy}/openai`, apiKey: gw.adminKey, maxRetries: 0 });
  approverKey = gw.gw.services.keys.create({ name: 'alice', groups: ['approver'] }).key;
  originalMasking = gw.gw.services.masking;
});
after(async () => {
  await gw.stop();
  await upstream.close();
});
beforeEach(() => {
  rules([]);
  gw.gw.services.masking = originalMasking;
});

async function control<T>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await fetch(`${gw.control}${path}`, { method, headers: { authorization: `Bearer ${approverKey}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
  return (await r.json()) as T;
}

async function pendingHold(): Promise<HoldView> {
  return eventually(async () => (await control<{ holds: HoldView[] }>('GET', '/api/holds?state=pending')).holds[0], 'a pending hold');
}

async function lastExchange(): Promise<AuditEvent[]> {
  const all = await gw.allEvents();
  return all.slice(all.map((e) => e.kind).lastIndexOf('http.request'));
}

describe('policy on the HTTP path', () => {
  it('deny → 403 through the OpenAI SDK, naming the rule and reason; nothing forwarded; decision recorded', async () => {
    rules([{ name: 'unapproved-model', match: { model: ['gpt-3.5-turbo'] }, action: 'deny', reason: 'model not approved for production data' }]);
    const before = upstream.requests.length;
    await assert.rejects(client.chat.completions.create({ model: 'gpt-3.5-turbo', messages: [{ role: 'user', content: 'hi' }] }), (err: unknown) => {
      assert.ok(err instanceof OpenAI.PermissionDeniedError);
      assert.equal(err.code, 'policy_denied');
      assert.match(err.message, /denied by policy rule "unapproved-model": model not approved for production data/);
      return true;
    });
    assert.equal(upstream.requests.length, before);
    const events = await lastExchange();
    assert.deepEqual(
      events.map((e) => e.kind),
      ['http.request', 'policy.decision', 'http.response'],
    );
    assert.deepEqual((events[1]!.payload as { action: string; rule: string }).action, 'deny');
    assert.equal((events[2]!.payload as { status: number }).status, 403);
    // another model passes
    const ok = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
    assert.ok(ok.choices.length);
  });

  it('deny on an Anthropic connection answers in Anthropic’s shape', async () => {
    rules([{ name: 'no-anthropic-tools', match: { connections: ['anthropic'], tools: true }, action: 'deny', reason: 'tools are off' }]);
    const a = new Anthropic({ baseURL: `${gw.proxy}/anthropic`, apiKey: gw.adminKey, maxRetries: 0 });
    await assert.rejects(
      a.messages.create({ model: 'claude-opus-4-6', max_tokens: 10, tools: [{ name: 't', input_schema: { type: 'object' } }], messages: [{ role: 'user', content: 'x' }] }),
      (err: unknown) => {
        assert.ok(err instanceof Anthropic.PermissionDeniedError);
        assert.equal((err.error as { error: { type: string } }).error.type, 'permission_error');
        assert.match(err.message, /no-anthropic-tools.*tools are off/);
        return true;
      },
    );
  });

  it('content rules see the prompt text', async () => {
    rules([{ name: 'no-dumps', match: { content: '(?i)(export|dump) (all|every)' }, action: 'deny' }]);
    await assert.rejects(client.responses.create({ model: 'gpt-4o', input: [{ role: 'user', content: [{ type: 'input_text', text: 'Please DUMP ALL customer rows' }] }] }), OpenAI.PermissionDeniedError);
    const ok = await client.responses.create({ model: 'gpt-4o', input: 'a harmless question' });
    assert.equal(ok.status, 'completed');
  });
});

describe('holds on the HTTP path', () => {
  const holdRule = { name: 'hold-big-model', match: { model: ['gpt-held'] }, action: 'hold' as const, reason: 'expensive', hold: { approvers: ['approver'], min: 1, denyMin: 1, timeout: '30s', reason: 'optional' as const } };

  it('approved → the held request is forwarded and answered', async () => {
    rules([holdRule]);
    const before = upstream.requests.length;
    const pending = client.chat.completions.create({ model: 'gpt-held', messages: [{ role: 'user', content: 'export the quarterly numbers' }] });
    const hold = await pendingHold();
    assert.equal(hold.rule, 'hold-big-model');
    assert.equal(hold.connection, 'openai');
    assert.match(hold.summary, /^POST \/chat\/completions gpt-held: "export the quarterly numbers"$/);
    assert.equal(upstream.requests.length, before, 'nothing is forwarded while held');
    await control('POST', `/api/holds/${hold.id}/decision`, { decision: 'approve', reason: 'fine' });
    const r = await pending;
    assert.equal(r.choices[0]!.message.content, REPLY_WITH_CARD);
    assert.equal(upstream.requests.length, before + 1);
    const kinds = (await lastExchange()).map((e) => e.kind);
    assert.deepEqual(kinds.slice(0, 2), ['http.request', 'policy.decision']);
    assert.ok(kinds.includes('hold.resolved') && kinds.includes('http.response'));
  });

  it('denied → 403 with the decision and reason; nothing forwarded', async () => {
    rules([holdRule]);
    const before = upstream.requests.length;
    const pending = client.chat.completions.create({ model: 'gpt-held', messages: [{ role: 'user', content: 'x' }] });
    pending.catch(() => {}); // the 403 may come before the decision's own response: asserted below
    const hold = await pendingHold();
    await control('POST', `/api/holds/${hold.id}/decision`, { decision: 'deny', reason: 'not today' });
    await assert.rejects(pending, (err: unknown) => {
      assert.ok(err instanceof OpenAI.PermissionDeniedError);
      assert.equal(err.code, 'hold_denied');
      assert.match(err.message, /held for approval by policy rule "hold-big-model" and denied by alice: not today/);
      return true;
    });
    assert.equal(upstream.requests.length, before);
  });

  it('a client that leaves cancels its hold', async () => {
    rules([holdRule]);
    const ac = new AbortController();
    const pending = fetch(`${gw.proxy}/openai/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gw.adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-held', messages: [{ role: 'user', content: 'x' }] }),
      signal: ac.signal,
    }).catch((err: Error) => err);
    const hold = await pendingHold();
    ac.abort();
    assert.ok((await pending) instanceof Error);
    const after = await eventually(async () => {
      const h = await control<HoldView>('GET', `/api/holds/${hold.id}`);
      return h.state !== 'pending' ? h : undefined;
    }, 'the hold to end');
    assert.equal(after.state, 'cancelled');
  });
});

/** A stand-in masking engine (the contract in proxy/masking/types.ts): masks one card number. */
function cardMasker(opts: { failOn?: string } = {}): MaskingEngine {
  const mask = (text: string) => text.split(CARD).join('[CREDIT_CARD]');
  const check = (text: string) => {
    if (opts.failOn && text.includes(opts.failOn)) throw new MaskingError(`detector crashed on input`);
  };
  const spansOf = (masked: string, path: string): MaskSpan[] => {
    const out: MaskSpan[] = [];
    for (let i = masked.indexOf('[CREDIT_CARD]'); i !== -1; i = masked.indexOf('[CREDIT_CARD]', i + 1)) out.push({ type: 'CREDIT_CARD', start: i, end: i + 13, rule: 'pii', path });
    return out;
  };
  const whole = (body: Buffer): MaskedBody => {
    const text = body.toString('utf8');
    check(text);
    const masked = mask(text);
    const n = text.split(CARD).length - 1;
    const log = JSON.parse(masked) as unknown;
    return { forward: Buffer.from(masked), log, spans: n ? spansOf(masked, '') : [], counts: n ? { CREDIT_CARD: n } : {}, detectorHits: n ? ['credit_card'] : [] };
  };
  const value = (text: string): Omit<MaskedValue, 'log'> => {
    check(text);
    const masked = mask(text);
    const n = text.split(CARD).length - 1;
    return { forward: masked, spans: n ? spansOf(masked, '') : [], counts: n ? { CREDIT_CARD: n } : {}, detectorHits: n ? ['credit_card'] : [] };
  };
  const connectionMasker: ConnectionMasker = {
    requestValue: (v) => {
      const r = value(JSON.stringify(v));
      return { ...r, log: JSON.parse(r.forward) as unknown };
    },
    requestText: (text) => {
      const r = value(text);
      return { ...r, log: r.forward };
    },
    request: (_p, _ct, body) => whole(body),
    response: (_p, _ct, body) => whole(body),
    textStream: () => {
      throw new Error('not used by the HTTP proxy');
    },
    stream(): StreamMasker {
      const emit = (events: SseEvent[]): StreamChunkResult => {
        const out = events.map((e) => ({ ...e, data: mask(e.data) }));
        const n = events.reduce((sum, e) => sum + e.data.split(CARD).length - 1, 0);
        const counts: Record<string, number> = n ? { CREDIT_CARD: n } : {};
        return { forward: out, log: out, spans: out.flatMap((e, i) => spansOf(e.data, `/${i}/data`)), counts };
      };
      return {
        push(event) {
          check(event.data);
          return emit([event]);
        },
        end: () => emit([]),
      };
    },
  };
  return { forConnection: (c) => (c.name === 'openai' ? connectionMasker : null), rows: originalMasking.rows.bind(originalMasking), reload() {} };
}

describe('masking on the HTTP path', () => {
  it('masks what goes upstream, what comes back and what is recorded', async () => {
    gw.gw.services.masking = cardMasker();
    const r = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: `charge ${CARD} please` }] });
    assert.equal(r.choices[0]!.message.content, 'Your card [CREDIT_CARD] is on file.');
    const got = upstream.requestsTo('/v1/chat/completions').pop()!;
    assert.ok(!got.body.toString().includes(CARD), 'the upstream never sees the card');
    assert.match(got.body.toString(), /charge \[CREDIT_CARD\] please/);
    const [req, res] = (await lastExchange()) as [AuditEvent, AuditEvent];
    assert.deepEqual((req.payload as { masked: unknown }).masked, { CREDIT_CARD: 1 });
    assert.equal(req.spans[0]!.type, 'CREDIT_CARD');
    assert.equal((res.payload as { body: { choices: { message: { content: string } }[] } }).body.choices[0]!.message.content, 'Your card [CREDIT_CARD] is on file.');
    assert.ok(!JSON.stringify(await lastExchange()).includes(CARD), 'the log never holds the card');
  });

  it('masks a card that arrives whole inside one streamed event', async () => {
    gw.gw.services.masking = cardMasker();
    upstreamHandler = (res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`data: {"choices":[{"index":0,"delta":{"content":"card ${CARD}"}}]}\n\n`);
      res.end('data: [DONE]\n\n');
    };
    try {
      const stream = await client.chat.completions.create({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'card?' }] });
      let text = '';
      for await (const c of stream) text += c.choices[0]?.delta?.content ?? '';
      assert.equal(text, 'card [CREDIT_CARD]');
      const chunk = await eventually(async () => (await lastExchange()).find((e) => e.kind === 'http.chunk' && e.spans.length), 'a masked chunk');
      assert.equal(chunk.spans[0]!.path, '/events/0/data');
      assert.ok(!JSON.stringify(await lastExchange()).includes(CARD));
    } finally {
      upstreamHandler = undefined;
    }
  });

  it('a masking failure on the request refuses it and forwards nothing', async () => {
    gw.gw.services.masking = cardMasker({ failOn: 'EXPLODE' });
    const before = upstream.requests.length;
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'EXPLODE 4111' }] }), (err: unknown) => {
      assert.ok(err instanceof OpenAI.InternalServerError);
      assert.equal(err.code, 'masking_failed');
      assert.match(err.message, /masking failed: detector crashed on input; the request was not forwarded/);
      return true;
    });
    assert.equal(upstream.requests.length, before);
    const events = await lastExchange();
    assert.equal((events[0]!.payload as { bodyOmitted: string }).bodyOmitted.includes('masking failed'), true);
    assert.ok(!JSON.stringify(events).includes('EXPLODE'), 'the unmasked body is not recorded');
  });

  it('a masking failure mid-stream ends the stream with a provider-shaped error event', async () => {
    gw.gw.services.masking = cardMasker({ failOn: 'EXPLODE' });
    upstreamHandler = (res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"choices":[{"index":0,"delta":{"content":"fine"}}]}\n\n');
      res.write('data: {"choices":[{"index":0,"delta":{"content":"EXPLODE"}}]}\n\n');
      res.end('data: [DONE]\n\n');
    };
    try {
      const stream = await client.chat.completions.create({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'go' }] });
      const seen: string[] = [];
      await assert.rejects(
        (async () => {
          for await (const c of stream) seen.push(c.choices[0]?.delta?.content ?? '');
        })(),
        (err: unknown) => {
          assert.ok(err instanceof OpenAI.APIError);
          assert.match(err.message, /masking the stream failed/);
          return true;
        },
      );
      assert.deepEqual(seen, ['fine'], 'what could not be masked never reached the client');
    } finally {
      upstreamHandler = undefined;
    }
  });

  it('a policy mask action naming a masking rule that does not exist fails closed', async () => {
    rules([{ name: 'mask-everything', action: 'mask', mask: ['pii'] }]);
    const before = upstream.requests.length;
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }), (err: unknown) => {
      assert.ok(err instanceof OpenAI.InternalServerError);
      assert.match(err.message, /masking failed: .*masking rule "pii", which does not exist.*; the request was not forwarded/);
      return true;
    });
    assert.equal(upstream.requests.length, before);
  });
});
