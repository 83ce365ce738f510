/**
 * Patterns people type cannot stall the gateway: catastrophic-backtracking patterns (from
 * test/fixtures/bypass/catastrophic-patterns.txt) as a custom detector, a policy `content` rule, a
 * console pattern check and a dry-run answer fast while a normal request flows beside them; a
 * pattern the linear-time engine cannot run is refused with an error naming the rule.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { PolicyRule } from '../../shared/config';
import { PolicyEngine } from '../../proxy/policy/engine';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { OPENAI_SECRET, startTestGateway, type TestGateway, VECTOR_SECRET } from './http-harness';

/** "<pattern> <tab> <input>" where input is written as `'a' * 40 + '!'`-style: repeat count and suffix. */
const CATASTROPHIC = readFileSync(join(import.meta.dirname, '..', 'fixtures', 'bypass', 'catastrophic-patterns.txt'), 'utf8')
  .split('\n')
  .filter((l) => l.trim() && !l.startsWith('#'))
  .map((l) => {
    const [pattern, unit, times, suffix] = l.split('\t') as [string, string, string, string];
    return { pattern, input: unit.repeat(Number(times)) + (suffix ?? '') };
  });

/** Generous for a loaded 2-core machine; V8 needs seconds to minutes on each of these. */
const FAST_MS = 3000;

let upstream: LlmUpstream;
let gw: TestGateway;

before(async () => {
  upstream = await startLlmUpstream({ openaiKey: OPENAI_SECRET, vectorKey: VECTOR_SECRET });
  gw = await startTestGateway(upstream, {
    detectors: CATASTROPHIC.map((c, i) => ({ id: `evil_${i}`, pattern: c.pattern, caseSensitive: true })),
    masking: [{ id: 'evil-mask', detectors: CATASTROPHIC.map((_, i) => `evil_${i}`), connections: ['openai'] }],
    policies: CATASTROPHIC.map((c, i) => ({ name: `evil-content-${i}`, match: { connections: ['openai'], content: `${c.pattern}ZZZ` }, action: 'deny' as const })),
  });
});

after(async () => {
  await gw?.stop();
  await upstream?.close();
});

async function timed<T>(f: () => Promise<T>): Promise<[T, number]> {
  const t = performance.now();
  const v = await f();
  return [v, performance.now() - t];
}

const control = (path: string, body: unknown, method = 'POST') =>
  fetch(`${gw.control}${path}`, { method, headers: { authorization: `Bearer ${gw.adminKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });

/** A request on a connection no pattern applies to: what "other requests" look like. */
const normalRequest = () => fetch(`${gw.proxy}/vectors/collections/docs`, { headers: { authorization: `Bearer ${gw.adminKey}` } });

describe('typed patterns run in linear time', () => {
  for (const [i, c] of CATASTROPHIC.entries()) {
    it(`${c.pattern} on ${c.input.length} characters: the console check answers fast and a concurrent request is not held up`, async () => {
      await normalRequest(); // warm
      const check = timed(async () => {
        const r = await control('/api/masking/check', { detectors: [{ id: 'evil', pattern: c.pattern, caseSensitive: true }], masking: [{ id: 'm', detectors: ['evil'] }], sample: c.input });
        return { status: r.status, body: (await r.json()) as { ok: boolean; sample?: { text: string } } };
      });
      // sent while the check is in flight: on a backtracking engine it would wait for the event loop
      await new Promise((r) => setImmediate(r));
      const [normal, normalMs] = await timed(normalRequest);
      const [checked, checkMs] = await check;
      assert.equal(checked.status, 200, JSON.stringify(checked.body));
      assert.equal(checked.body.sample?.text, c.input, 'the pattern does not match (the input ends in the wrong character)');
      assert.ok(checkMs < FAST_MS, `the check took ${Math.round(checkMs)} ms`);
      assert.equal(normal.headers.get('x-custody-error'), null, 'the upstream answered it');
      assert.ok(normalMs < FAST_MS, `a concurrent request waited ${Math.round(normalMs)} ms`);
    });

    it(`${c.pattern} as a custom detector and a content rule on proxied traffic`, async () => {
      const [r, ms] = await timed(() =>
        fetch(`${gw.proxy}/openai/chat/completions`, {
          method: 'POST',
          headers: { authorization: `Bearer ${gw.adminKey}`, 'content-type': 'application/json' },
          body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: c.input }] }),
        }),
      );
      // Answered, fast: forwarded, or refused because a broad pattern hits a field the gateway
      // forwards as sent (`(\w+\s?)+$` matches "gpt-4o" in /model) — never stalled or failed.
      const text = await r.text();
      assert.ok(r.status === 200 || (r.status === 400 && text.includes('unmaskable_value')), `${r.status} ${text}`);
      assert.ok(ms < FAST_MS, `the request took ${Math.round(ms)} ms (${i})`);
    });
  }

  it('a content scan that runs out of its budget denies the request in the rule\'s name, recorded, nothing forwarded', async () => {
    const services = gw.gw.services as { policy: PolicyEngine };
    const engine = services.policy;
    // the same rule with no budget at all: every content test runs out of it
    services.policy = new PolicyEngine([{ name: 'bulk', match: { connections: ['vectors'], content: '(?i)export (all|every)' }, action: 'allow' } as PolicyRule], { contentBudgetMs: -1 });
    try {
      const before = upstream.requests.length;
      const r = await fetch(`${gw.proxy}/vectors/collections/docs/query`, {
        method: 'POST',
        headers: { authorization: `Bearer ${gw.adminKey}`, 'content-type': 'application/json', 'x-custody-session': 'budget' },
        body: JSON.stringify({ vector: [0.1, 0.2], limit: 1, note: 'hello' }),
      });
      assert.equal(r.status, 403, 'an allow rule that cannot decide does not allow');
      const body = (await r.json()) as { error: { code: string; message: string } };
      assert.equal(body.error.code, 'policy_denied');
      assert.match(body.error.message, /rule "bulk".*exceeded the scan budget.*cannot tell whether the rule matches/);
      assert.equal(upstream.requests.length, before);
      const decisions = (await gw.allEvents()).filter((e) => e.kind === 'policy.decision' && (e.payload as { rule?: string }).rule === 'bulk');
      assert.equal((decisions.at(-1)?.payload as { action?: string } | undefined)?.action, 'deny');
    } finally {
      services.policy = engine;
    }
  });

  it('a dry-run with a catastrophic content rule answers fast', async () => {
    const [r, ms] = await timed(() => control('/api/policies/dry-run', { rules: CATASTROPHIC.map((c, i) => ({ name: `dry-${i}`, match: { content: c.pattern }, action: 'deny' })) }));
    assert.equal(r.status, 200, await r.text());
    assert.ok(ms < FAST_MS, `dry-run took ${Math.round(ms)} ms`);
  });
});

describe('patterns the linear-time engine cannot run are refused, naming the rule', () => {
  const cases: [string, RegExp][] = [
    ['(?<=id:)\\d+', /lookahead and lookbehind/],
    ['\\d+(?= USD)', /lookahead and lookbehind/],
    ['(?!x)\\w+', /lookahead and lookbehind/],
    ['(\\w)\\1', /backreferences/],
    ['(?<q>["\'])\\w+\\k<q>', /backreferences/],
  ];
  for (const [pattern, why] of cases) {
    it(`${pattern}: console check, save, and policy rules`, async () => {
      const masking = { detectors: [{ id: 'peek', pattern }], masking: [{ id: 'm', detectors: ['peek'] }] };
      for (const [path, method] of [
        ['/api/masking/check', 'POST'],
        ['/api/masking', 'PUT'],
      ] as const) {
        const r = await control(path, { ...masking, sample: 'id:42' }, method);
        assert.equal(r.status, 400, `${method} ${path}`);
        const body = (await r.json()) as { error: { message: string } };
        assert.match(body.error.message, /detector "peek"/);
        assert.match(body.error.message, why);
      }
      for (const [path, method] of [
        ['/api/policies', 'PUT'],
        ['/api/policies/dry-run', 'POST'],
      ] as const) {
        const r = await control(path, { rules: [{ name: 'peeker', match: { content: pattern }, action: 'deny' }] }, method);
        assert.equal(r.status, 400, `${method} ${path}`);
        const body = (await r.json()) as { error: { message: string } };
        assert.match(body.error.message, /policy rule "peeker"/);
        assert.match(body.error.message, why);
      }
    });
  }
});
