// Fault injection: `custody serve` killed with SIGKILL at random moments under HTTP load, three
// times over one data dir. Every exchange a client saw complete must have its request and its
// response in the log afterwards (the request is journaled before it is forwarded, the response
// before it is sent), every SSE event a client received, even of a stream cut by the kill, must be
// in its session's http.chunk events, and `custody verify` must pass.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { storedPayloadText } from '../../proxy/audit/store';
import { SseParser } from '../../proxy/http/sse';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { custody, startServe, writeConfig } from '../support/custody-process';
import { tempDir } from '../support/tmp';

describe('kill -9 under HTTP load', () => {
  let upstream: LlmUpstream;
  before(async () => {
    upstream = await startLlmUpstream({ openaiKey: 'sk-kill-faults', record: false });
  });
  after(() => upstream.close());

  it('loses no request a client saw answered, and the log verifies', async () => {
    const dataDir = tempDir();
    const file = writeConfig(dataDir, {
      dataDir,
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: 'sk-kill-faults' } }],
    });
    const acknowledged: string[] = [];
    /** Sessions whose (non-streamed) answer a client got whole. */
    const answered: string[] = [];
    /** What clients received of streams: session and the data of each event, in order. */
    const streamed: { session: string; events: string[] }[] = [];
    let key: string | undefined;
    for (let round = 0; round < 3; round++) {
      const gw = await startServe(file);
      key ??= gw.key;
      let stop = false;
      let n = 0;
      const loop = async (worker: number) => {
        while (!stop) {
          const marker = `kill-${round}-${worker}-${n++}`;
          const stream = n % 3 === 0;
          let text = '';
          let session = '';
          try {
            const r = await fetch(`http://${gw.http}/openai/chat/completions`, {
              method: 'POST',
              headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
              body: JSON.stringify({ model: 'gpt-4o', stream, messages: [{ role: 'user', content: marker }] }),
            });
            session = r.headers.get('x-custody-session') ?? '';
            // Read piece by piece: what arrived before a kill counts too.
            const reader = r.body!.getReader();
            for (;;) {
              const next = await reader.read();
              if (next.done) break;
              text += Buffer.from(next.value).toString('utf8');
            }
            if (r.status === 200 && (text.includes('[DONE]') || text.includes('"choices"'))) {
              acknowledged.push(marker);
              if (!stream) answered.push(session);
            }
          } catch {
            // the gateway died mid-exchange: not acknowledged
          }
          if (stream && session) {
            const parser = new SseParser();
            streamed.push({ session, events: parser.push(Buffer.from(text)).map((e) => e.data) });
          }
        }
      };
      const loops = [0, 1, 2, 3].map(loop);
      await new Promise((r) => setTimeout(r, 300 + Math.floor(Math.random() * 1200)));
      await gw.kill();
      stop = true;
      await Promise.all(loops);
    }
    // One clean start folds what the last run journaled; then the log is read and verified.
    const last = await startServe(file);
    assert.equal(await last.stop(), 0);
    const db = new Database(join(dataDir, 'custody.db'), { readonly: true });
    const requests = new Set<string>();
    /** Responses recorded, by session. */
    const responses = new Map<string, number>();
    /** SSE events recorded, by session, in order. */
    const chunks = new Map<string, string[]>();
    for (const row of db.prepare("SELECT kind, session, payload, encoding FROM events WHERE kind IN ('http.request', 'http.response', 'http.chunk') ORDER BY seq").iterate() as IterableIterator<{
      kind: string;
      session: string;
      payload: string | Buffer;
      encoding: string;
    }>) {
      const text = storedPayloadText(row.encoding, row.payload);
      if (row.kind === 'http.response') {
        responses.set(row.session, (responses.get(row.session) ?? 0) + 1);
        continue;
      }
      if (row.kind === 'http.chunk') {
        const events = (JSON.parse(text) as { events: { data: string }[] }).events.map((e) => e.data);
        chunks.set(row.session, [...(chunks.get(row.session) ?? []), ...events]);
        continue;
      }
      const m = /kill-\d+-\d+-\d+/.exec(text);
      if (m) requests.add(m[0]);
    }
    db.close();
    assert.ok(acknowledged.length > 20, `${acknowledged.length} exchanges acknowledged`);
    const missing = acknowledged.filter((m) => !requests.has(m));
    assert.deepEqual(missing, [], `${missing.length} of ${acknowledged.length} acknowledged requests missing from the log`);
    // A session holds several exchanges: each answer a client got counts against its session's responses.
    const got = new Map<string, number>();
    for (const s of answered) got.set(s, (got.get(s) ?? 0) + 1);
    const unanswered = [...got].filter(([s, n]) => (responses.get(s) ?? 0) < n);
    assert.deepEqual(unanswered, [], 'answers clients received whose http.response is not in the log');
    let received = 0;
    for (const s of streamed) {
      received += s.events.length;
      const logged = new Set(chunks.get(s.session) ?? []);
      const lost = s.events.filter((e) => !logged.has(e));
      assert.deepEqual(lost, [], `session ${s.session}: SSE events a client received that are not in the log`);
    }
    console.log(`kill -9 ×3: ${acknowledged.length} exchanges acknowledged, all requests in the log; ${answered.length} whole answers and ${received} SSE events received (${streamed.length} streams), all in the log`);
    const v = custody('verify', dataDir);
    assert.equal(v.status, 0, v.stderr);
  });
});
