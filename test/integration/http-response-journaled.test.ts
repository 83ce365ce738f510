/**
 * No byte of a whole (non-streamed) HTTP response reaches the client before its `http.response` is
 * in the journal (issue 16, item 3); when it cannot be journaled after the upstream answered, the
 * client's connection is reset — never an answer that looks complete.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { AuditEventInput } from '../../shared/events';
import type { StoreUnavailableError } from '../../proxy/audit/store';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { OPENAI_SECRET, startTestGateway, type TestGateway, VECTOR_SECRET } from './http-harness';

type Done = (err: StoreUnavailableError | null) => void;

describe('whole responses are journaled before they are sent', () => {
  let upstream: LlmUpstream;
  let gw: TestGateway;
  let journaledResponses = 0;
  let failResponses = false;
  /** A slow journal: responses take this long to be written. */
  let slowMs = 0;
  before(async () => {
    upstream = await startLlmUpstream({ openaiKey: OPENAI_SECRET, vectorKey: VECTOR_SECRET });
    gw = await startTestGateway(upstream);
    const store = gw.gw.services.store as unknown as { appendAsync(inputs: AuditEventInput[], done: Done): void };
    const real = store.appendAsync.bind(store);
    store.appendAsync = (inputs, done) => {
      if (failResponses && inputs.some((e) => e.kind === 'http.response')) {
        done(Object.assign(new Error('disk full (injected)'), { name: 'StoreUnavailableError' }) as StoreUnavailableError);
        return;
      }
      const write = () =>
        real(inputs, (err) => {
          if (!err) journaledResponses += inputs.filter((e) => e.kind === 'http.response').length;
          done(err);
        });
      if (slowMs && inputs.some((e) => e.kind === 'http.response')) setTimeout(write, slowMs);
      else write();
    };
  });
  after(async () => {
    await gw.stop();
    await upstream.close();
  });

  const chat = () =>
    fetch(`${gw.proxy}/openai/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${gw.adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hello' }] }),
    });

  it('the client gets the answer only once its response is in the journal', async () => {
    slowMs = 100;
    for (let i = 0; i < 5; i++) {
      const before = journaledResponses;
      const r = await chat();
      // Headers arrive with the body: by now the response was journaled.
      assert.equal(journaledResponses, before + 1, 'the client got headers before the response was journaled');
      assert.equal(r.status, 200);
      await r.text();
    }
    slowMs = 0;
  });

  it('a response that cannot be journaled resets the connection instead of answering', async () => {
    failResponses = true;
    try {
      const from = upstream.requests.length;
      await assert.rejects(chat().then((r) => r.text()), /fetch failed|terminated|socket/i);
      assert.equal(upstream.requests.length, from + 1, 'the upstream did answer the request');
    } finally {
      failResponses = false;
    }
    assert.equal((await chat()).status, 200, 'the gateway goes on once the log can be written');
  });
});
