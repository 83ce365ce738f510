import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { canonicalize } from '../../shared/canonical-json';
import { AuditStore, canonicalEventBody, canonicalPayload, chainHash, eventBody, GENESIS_HASH, payloadHashOf, sha256hex } from '../../proxy/audit/store';
import { tempDir } from '../support/tmp';

describe('audit chain hashing', () => {
  it('writes the event body exactly as RFC 8785 canonical JSON would', () => {
    fc.assert(
      fc.property(
        fc.record({
          seq: fc.nat(),
          time: fc.oneof(fc.nat(), fc.double({ noNaN: true, noDefaultInfinity: true })),
          kind: fc.string(),
          session: fc.option(fc.string({ unit: 'binary' })),
          actor: fc.option(fc.string({ unit: 'grapheme' })),
          connection: fc.option(fc.string({ unit: 'binary' })),
          payloadHash: fc.string(),
        }),
        (b) => {
          const body = eventBody(b as Parameters<typeof eventBody>[0]);
          assert.equal(canonicalEventBody(body), canonicalize(body));
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('writes payloads exactly as the shared RFC 8785 canonicalizer does', () => {
    const value = fc.letrec((tie) => ({
      any: fc.oneof({ depthSize: 'small' }, fc.constant(null), fc.boolean(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.integer(), fc.string({ unit: 'binary' }), tie('arr'), tie('obj')),
      arr: fc.array(fc.oneof(tie('any'), fc.constant(undefined)), { maxLength: 5 }),
      obj: fc.dictionary(fc.string({ unit: 'binary' }), fc.oneof(tie('any'), fc.constant(undefined)), { maxKeys: 6 }),
    })).any;
    fc.assert(fc.property(value, (v) => assert.equal(canonicalPayload(v), canonicalize(v))), { numRuns: 3000 });
    assert.equal(canonicalPayload({ when: new Date(0), b: Buffer.from('hi') }), canonicalize({ when: new Date(0), b: Buffer.from('hi') }));
    for (const bad of [NaN, Infinity, undefined, () => 1, 1n]) assert.throws(() => canonicalPayload(bad), TypeError);
    assert.throws(() => canonicalPayload({ f: () => 1 }), TypeError);
  });

  it('keeps the documented hash definitions for single and batched appends', () => {
    const store = AuditStore.open(tempDir());
    const one = store.append({ kind: 'http.request', session: 's', actor: 'key:a', connection: 'openai', payload: { q: 'é', n: [1, 2.5] }, spans: [{ type: 'EMAIL', start: 0, end: 3, rule: 'r' }] });
    const many = store.appendMany([
      { kind: 'http.response', session: 's', payload: { ok: true } },
      { kind: 'session.end', session: 's', payload: null },
    ]);
    let prev = GENESIS_HASH;
    for (const e of [one, ...many]) {
      assert.equal(e.payloadHash, payloadHashOf(e.payload, e.spans));
      assert.equal(e.payloadHash, sha256hex(canonicalize({ payload: e.payload, spans: e.spans })));
      assert.equal(e.prevHash, prev);
      assert.equal(e.hash, chainHash(prev, eventBody(e)));
      prev = e.hash;
    }
    const s = store.session('s')!;
    assert.equal(s.events, 3);
    assert.equal(s.requests, 1);
    assert.equal(s.masked, 1);
    assert.equal(s.startedAt, one.time);
    assert.equal(s.lastEventAt, many[1]!.time);
    assert.ok(s.endedAt);
    store.close();
  });
});

describe('audit store shared by two processes', () => {
  it('continues the chain when another connection appended meanwhile', () => {
    const dir = tempDir();
    const gateway = AuditStore.open(dir);
    const a = gateway.append({ kind: 'gateway.start', payload: {} });
    const cli = AuditStore.open(dir);
    const c = cli.append({ kind: 'key.created', actor: 'cli', payload: { id: 'k' } });
    const d = gateway.append({ kind: 'http.request', payload: {} });
    assert.equal(c.seq, 2);
    assert.equal(c.prevHash, a.hash);
    assert.equal(d.seq, 3);
    assert.equal(d.prevHash, c.hash);
    for (const s of [gateway, cli]) s.close();
  });
});
