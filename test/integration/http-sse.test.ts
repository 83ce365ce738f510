/**
 * The SSE codec the proxy relays and records streams with: every event stream is fed split at every
 * byte boundary (and at random multi-way splits), including inside CRLF pairs and UTF-8 characters,
 * and must parse to the same events as when fed whole.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import type { SseEvent } from '../../proxy/masking/types';
import { serializeSseEvent, SseParser } from '../../proxy/http/sse';

function parseChunks(chunks: Buffer[]): { events: SseEvent[]; incomplete: boolean; comments: number } {
  const p = new SseParser();
  const events = chunks.flatMap((c) => p.push(c));
  return { events, incomplete: p.end().incomplete, comments: p.comments };
}

const STREAMS: [string, string, SseEvent[]][] = [
  [
    'OpenAI chat chunks with LF',
    'data: {"choices":[{"delta":{"content":"héllo 👋"}}]}\n\ndata: {"choices":[{"delta":{"content":" 世界"}}]}\n\ndata: [DONE]\n\n',
    [{ data: '{"choices":[{"delta":{"content":"héllo 👋"}}]}' }, { data: '{"choices":[{"delta":{"content":" 世界"}}]}' }, { data: '[DONE]' }],
  ],
  [
    'named events with CRLF, comments, id and retry',
    ': keep-alive\r\nevent: message_start\r\nid: 7\r\nretry: 1500\r\ndata: {"type":"message_start"}\r\n\r\n:ping\r\nevent: content_block_delta\r\ndata: {"text":"ça"}\r\n\r\n',
    [
      { event: 'message_start', id: '7', retry: 1500, data: '{"type":"message_start"}' },
      { event: 'content_block_delta', data: '{"text":"ça"}' },
    ],
  ],
  ['multi-line data, bare CR line endings, no space after colon', 'data:line one\rdata: line two\r\rdata\r\r', [{ data: 'line one\nline two' }, { data: '' }]],
  ['BOM, unknown fields, event without data is dropped', '\ufeffevent: lonely\n\nfoo: bar\ndata: x\n\n', [{ data: 'x' }]],
];

describe('SSE parser', () => {
  for (const [name, text, expected] of STREAMS) {
    it(`${name}: same events at every split point`, () => {
      const bytes = Buffer.from(text, 'utf8');
      assert.deepEqual(parseChunks([bytes]).events, expected);
      for (let i = 0; i <= bytes.length; i++) {
        assert.deepEqual(parseChunks([bytes.subarray(0, i), bytes.subarray(i)]).events, expected, `split at byte ${i}`);
      }
      // one byte at a time
      assert.deepEqual(parseChunks([...bytes].map((b) => Buffer.from([b]))).events, expected);
    });
  }

  for (const [name, text] of STREAMS) {
    it(`${name}: the bytes before the boundary hold exactly the events parsed so far, at every split point`, () => {
      // The unmasked relay passes on the bytes before boundary as they are, once their events are journaled.
      const bytes = Buffer.from(text, 'utf8');
      for (let i = 0; i <= bytes.length; i++) {
        const p = new SseParser();
        const seen: SseEvent[] = [];
        for (const part of [bytes.subarray(0, i), bytes.subarray(i)]) {
          seen.push(...p.push(part));
          const before = parseChunks([bytes.subarray(0, p.boundary)]);
          assert.deepEqual(before.events, seen, `split at byte ${i}: boundary ${p.boundary}`);
          assert.equal(before.incomplete, false, `split at byte ${i}: boundary ${p.boundary} cuts an event`);
        }
      }
    });
  }

  it('random multi-way splits of random streams parse like the whole stream', () => {
    const eventArb = fc.record(
      {
        event: fc.option(fc.stringMatching(/^[a-z_.]{1,12}$/), { nil: undefined }),
        data: fc.string({ unit: 'grapheme', maxLength: 40 }).map((s) => s.replace(/[\r\n]/g, ' ')),
      },
      { requiredKeys: ['data'] },
    );
    fc.assert(
      fc.property(fc.array(eventArb, { minLength: 1, maxLength: 6 }), fc.array(fc.nat(), { maxLength: 8 }), (events, cuts) => {
        const clean = events.map((e) => (e.event === undefined ? { data: e.data } : { event: e.event, data: e.data }));
        const bytes = Buffer.from(clean.map(serializeSseEvent).join(''), 'utf8');
        const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
        const chunks: Buffer[] = [];
        let at = 0;
        for (const p of points) {
          chunks.push(bytes.subarray(at, p));
          at = p;
        }
        chunks.push(bytes.subarray(at));
        assert.deepEqual(parseChunks(chunks).events, clean);
      }),
      { numRuns: 300 },
    );
  });

  it('reports an event cut off by the end of the stream', () => {
    const r = parseChunks([Buffer.from('data: complete\n\ndata: cut off')]);
    assert.deepEqual(r.events, [{ data: 'complete' }]);
    assert.equal(r.incomplete, true);
    assert.equal(parseChunks([Buffer.from('data: x\n\n')]).incomplete, false);
  });

  it('counts comment lines', () => {
    assert.equal(parseChunks([Buffer.from(': one\n: two\ndata: x\n\n')]).comments, 2);
  });

  it('serializes multi-line data as several data lines', () => {
    assert.equal(serializeSseEvent({ event: 'e', data: 'a\nb' }), 'event: e\ndata: a\ndata: b\n\n');
    assert.equal(serializeSseEvent({ data: '[DONE]' }), 'data: [DONE]\n\n');
  });
});
