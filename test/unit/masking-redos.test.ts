/**
 * Built-in detectors keep V8 regular expressions (they are fast there) only because a ReDoS
 * analyser passes each of them: `recheck` runs on every pattern and every streaming tail pattern.
 * A pattern someone types never runs on V8 (proxy/masking/pattern.ts); this guards the ones we ship.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkSync } from 'recheck';
import { BUILTIN_BY_ID, BUILTIN_DETECTORS } from '../../proxy/masking/detectors';
import { analyzeRegex } from '../../proxy/masking/scanner';
import { Holdback } from '../../proxy/masking/stream';

describe('built-in detector patterns pass a ReDoS analyser', () => {
  it('recheck says the analyser itself catches a vulnerable pattern (so this test can fail)', () => {
    assert.equal(checkSync('(a|aa)+$', '').status, 'vulnerable');
  });

  it('private_key tail: the worst case in its window stays far inside the scan budget', () => {
    const holdback = new Holdback([BUILTIN_BY_ID.get('private_key')!]);
    const text = '-----BEGIN '.repeat(1500) + '-----END RSA PRIVATE KEY-----x'; // every start scans to the END line
    const t0 = performance.now();
    holdback.cut(text, 0);
    assert.ok(performance.now() - t0 < 250, `${Math.round(performance.now() - t0)} ms for one cut`);
  });

  for (const d of BUILTIN_DETECTORS) {
    const patterns: [string, string, string][] = [];
    // Anchored detectors run sticky, only where a shared candidate pass says a match can start
    // (scanner.ts, tryAt): the cost that matters is the cost at one start.
    if (d.pattern) patterns.push(['pattern', d.anchors ? `^(?:${d.pattern.source})` : d.pattern.source, d.pattern.flags.replace(/[gyd]/g, '')]);
    // A tail is only ever tried at the last `maxLength` positions of the stream buffer
    // (stream.ts, Holdback.cut): bounded by construction; what matters is the cost at one position.
    // private_key's tail looks ahead for the END line from each "-----BEGIN " in its window: quadratic
    // in that window (16.5 KiB), which the analyser rightly reports; its worst case is timed below.
    if (d.tail && d.id !== 'private_key') patterns.push(['tail', `^(?:${d.tail})$`, d.tailCaseInsensitive ? 'i' : '']);
    if (!patterns.length) continue;
    it(d.id, () => {
      if (d.tail) assert.ok(Number.isFinite(analyzeRegex(d.tail).maxLength), `${d.id}: the tail pattern must be bounded`);
      for (const [what, source, flags] of patterns) {
        const r = checkSync(source, flags, { timeout: 120_000, randomSeed: 1 });
        assert.equal(r.status, 'safe', `${d.id} ${what} /${source}/${flags}: ${r.status}${r.status === 'vulnerable' ? ` (${r.complexity.type}, attack ${JSON.stringify(r.attack.pattern)})` : ''}`);
      }
    });
  }
});
