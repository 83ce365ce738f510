/**
 * Every value that can reach the model is masked and seen by policy, keys included (issue 14).
 * Generative: a card number and an e-mail address are planted in every string, number and key
 * position of real request shapes (test/fixtures/http-requests/shapes.json), one position per
 * request, sent through the gateway as raw HTTP. The checks are on what the stand-in upstream
 * received and what was recorded, never on the gateway's own account:
 *   - with a masking rule, nothing raw reaches the upstream (masked, or the request refused), and
 *     nothing raw is recorded;
 *   - with a `detectors: [credit_card]` deny rule and no masking, every planted request is denied
 *     and nothing reaches the upstream.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { ANTHROPIC_SECRET, OPENAI_SECRET, startTestGateway, type TestGateway, VECTOR_SECRET } from './http-harness';

interface Shape {
  name: string;
  connection: string;
  path: string;
  method?: string;
  body: unknown;
}

const SHAPES = JSON.parse(readFileSync(join(import.meta.dirname, '../fixtures/http-requests/shapes.json'), 'utf8')) as Shape[];
const PLANT = 'jane.doe@example.com 4111 1111 1111 1111';
const PLANT_NUMBER = 4111111111111111;
const RAW = [/4111[ -]?1111[ -]?1111[ -]?1111/, /jane\.doe@example\.com/];

type Step = string | number;
interface Variant {
  where: string;
  body: unknown;
}

/** Every planted variant of `body`: each string and number replaced, each key renamed. */
function variants(body: unknown): Variant[] {
  const out: Variant[] = [];
  const positions: { path: Step[]; kind: 'value' | 'key' }[] = [];
  const stack: { v: unknown; path: Step[] }[] = [{ v: body, path: [] }];
  while (stack.length) {
    const { v, path } = stack.pop()!;
    if (typeof v === 'string' || typeof v === 'number') positions.push({ path, kind: 'value' });
    else if (Array.isArray(v)) v.forEach((x, i) => stack.push({ v: x, path: [...path, i] }));
    else if (typeof v === 'object' && v !== null)
      for (const [k, x] of Object.entries(v)) {
        positions.push({ path: [...path, k], kind: 'key' });
        stack.push({ v: x, path: [...path, k] });
      }
  }
  for (const p of positions) {
    const copy = structuredClone(body) as Record<Step, unknown>;
    let parent = copy;
    for (const s of p.path.slice(0, -1)) parent = parent[s] as Record<Step, unknown>;
    const last = p.path[p.path.length - 1]!;
    if (p.kind === 'key') {
      const entries = Object.entries(parent).map(([k, x]) => (k === last ? [PLANT, x] : [k, x]));
      for (const k of Object.keys(parent)) delete parent[k];
      for (const [k, x] of entries) parent[k as string] = x;
    } else parent[last] = typeof parent[last] === 'number' ? PLANT_NUMBER : PLANT;
    out.push({ where: `${p.kind} /${p.path.join('/')}`, body: copy });
  }
  return out;
}

function credential(connection: string, key: string): Record<string, string> {
  return connection === 'anthropic' ? { 'x-api-key': key, 'anthropic-version': '2023-06-01' } : { authorization: `Bearer ${key}` };
}

async function send(gw: TestGateway, shape: Shape, body: unknown): Promise<{ status: number; error: string | null; text: string }> {
  const r = await fetch(`${gw.proxy}/${shape.connection}${shape.path}`, {
    method: shape.method ?? 'POST',
    headers: { 'content-type': 'application/json', ...credential(shape.connection, gw.adminKey) },
    body: JSON.stringify(body),
  });
  return { status: r.status, error: r.headers.get('x-custody-error'), text: await r.text() };
}

function rawIn(upstream: LlmUpstream, from: number): string | undefined {
  for (const r of upstream.requests.slice(from)) {
    const seen = `${r.path}\n${JSON.stringify(r.headers)}\n${r.body.toString('utf8')}`;
    if (RAW.some((re) => re.test(seen))) return seen;
  }
  return undefined;
}

let upstream: LlmUpstream;
let masking: TestGateway;
let denying: TestGateway;

before(async () => {
  upstream = await startLlmUpstream({ openaiKey: OPENAI_SECRET, anthropicKey: ANTHROPIC_SECRET, vectorKey: VECTOR_SECRET });
  masking = await startTestGateway(upstream, { masking: [{ id: 'pii', detectors: ['credit_card', 'email'], scope: ['upstream', 'client', 'log'] }] });
  denying = await startTestGateway(upstream, { policies: [{ name: 'no-cards', match: { detectors: ['credit_card'] }, action: 'deny', reason: 'card numbers may not reach a model' }] });
});
after(async () => {
  await masking.stop();
  await denying.stop();
  await upstream.close();
});

describe('every value that can reach the model is masked', () => {
  for (const shape of SHAPES) {
    it(`${shape.name}: a value planted in any string, number or key never reaches the upstream raw`, async () => {
      const all = variants(shape.body);
      assert.ok(all.length > 3, 'the shape has positions to plant in');
      let refused = 0;
      for (const v of all) {
        const from = upstream.requests.length;
        const r = await send(masking, shape, v.body);
        assert.ok(r.status < 500, `${v.where}: ${r.status} ${r.text}`);
        const leaked = rawIn(upstream, from);
        assert.equal(leaked, undefined, `${v.where}: the upstream received the planted value raw:\n${leaked}`);
        if (r.error === 'unmaskable_value') refused++;
        else assert.equal(upstream.requests.length, from + 1, `${v.where}: forwarded once (${r.status} ${r.text})`);
      }
      // Structural fields are refused rather than rewritten; most positions are masked in place.
      assert.ok(refused < all.length / 2, `${refused} of ${all.length} refused`);
    });
  }

  it('the log holds none of the planted values', async () => {
    for (const e of await masking.allEvents()) {
      const text = JSON.stringify(e);
      for (const re of RAW) {
        const m = re.exec(text);
        assert.equal(m, null, `${e.kind} holds a planted value: …${m ? text.slice(Math.max(0, m.index - 300), m.index + 60) : ''}`);
      }
    }
  });

  it('the official SDK: a card in a tool description, its schema and a message name never reaches the upstream', async () => {
    const client = new OpenAI({ baseURL: `${masking.proxy}/openai`, apiKey: masking.adminKey, maxRetries: 0 });
    const from = upstream.requests.length;
    await client.chat.completions.create({
      model: 'gpt-4o',
      messages: [{ role: 'user', content: 'hi' }],
      tools: [{ type: 'function', function: { name: 'pay', description: `pays with ${PLANT}`, parameters: { type: 'object', properties: { [PLANT]: { type: 'string', enum: [PLANT] } } } } }],
    });
    assert.equal(rawIn(upstream, from), undefined);
    const sent = upstream.requests[from]!.json as { tools: { function: { description: string } }[] };
    assert.match(sent.tools[0]!.function.description, /pays with \[EMAIL\] \[CREDIT_CARD\]/);
    await assert.rejects(
      client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', name: PLANT, content: 'hi' }] }),
      (err: InstanceType<typeof OpenAI.APIError>) => err.status === 400 && /CREDIT_CARD/.test(err.message) && /\/messages\/0\/name/.test(err.message),
    );
    assert.equal(upstream.requests.length, from + 1, 'the refused request was not forwarded');
  });

  it('the official Anthropic SDK: a card in the system prompt, a tool, a content document and a search result never reaches the upstream', async () => {
    const client = new Anthropic({ baseURL: `${masking.proxy}/anthropic`, apiKey: masking.adminKey, maxRetries: 0 });
    const from = upstream.requests.length;
    await client.messages.create({
      model: 'claude-sonnet-4-5',
      max_tokens: 50,
      system: `Card on file: ${PLANT}`,
      tools: [{ name: 'charge', description: `charges ${PLANT}`, input_schema: { type: 'object', properties: { [PLANT]: { type: 'string' } } } }],
      messages: [
        {
          role: 'user',
          content: [
            { type: 'document', source: { type: 'content', content: [{ type: 'text', text: `statement for ${PLANT}` }] } },
            { type: 'search_result', source: 'https://wiki.example.com', title: PLANT, content: [{ type: 'text', text: PLANT }] },
            { type: 'text', text: 'what is on file?' },
          ],
        },
      ],
    });
    assert.equal(rawIn(upstream, from), undefined);
    assert.match(upstream.requests[from]!.body.toString(), /Card on file: \[EMAIL\] \[CREDIT_CARD\]/);
  });
});

describe('every value that can reach the model is seen by a detectors rule', () => {
  for (const shape of SHAPES) {
    it(`${shape.name}: a card planted in any string, number or key is denied`, async () => {
      for (const v of variants(shape.body)) {
        const from = upstream.requests.length;
        const r = await send(denying, shape, v.body);
        assert.equal(r.status, 403, `${v.where}: ${r.status} ${r.text}`);
        assert.equal(r.error, 'policy_denied', v.where);
        assert.equal(upstream.requests.length, from, `${v.where}: nothing forwarded`);
      }
    });
  }
});
