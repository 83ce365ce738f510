// Fault injection: `custody serve` killed with SIGKILL at random moments under HTTP load, three
// times over one data dir. Every exchange a client saw complete must have its request in the log
// afterwards (it was journaled before it was forwarded), and `custody verify` must pass.
// (Responses are recorded after the client has them today — issue 16, item 3 — so they are
// counted and reported here, not asserted.)
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
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
    let key: string | undefined;
    for (let round = 0; round < 3; round++) {
      const gw = await startServe(file);
      key ??= gw.key;
      let stop = false;
      let n = 0;
      const loop = async (worker: number) => {
        while (!stop) {
          const marker = `kill-${round}-${worker}-${n++}`;
          try {
            const r = await fetch(`http://${gw.http}/openai/chat/completions`, {
              method: 'POST',
              headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
              body: JSON.stringify({ model: 'gpt-4o', stream: n % 3 === 0, messages: [{ role: 'user', content: marker }] }),
            });
            const text = await r.text();
            if (r.status === 200 && (text.includes('[DONE]') || text.includes('"choices"'))) acknowledged.push(marker);
          } catch {
            // the gateway died mid-exchange: not acknowledged
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
    let responses = 0;
    for (const row of db.prepare("SELECT kind, payload, encoding FROM events WHERE kind IN ('http.request', 'http.response')").iterate() as IterableIterator<{ kind: string; payload: string | Buffer }>) {
      if (row.kind === 'http.response') {
        responses++;
        continue;
      }
      const m = /kill-\d+-\d+-\d+/.exec(typeof row.payload === 'string' ? row.payload : row.payload.toString('utf8'));
      if (m) requests.add(m[0]);
    }
    db.close();
    assert.ok(acknowledged.length > 20, `${acknowledged.length} exchanges acknowledged`);
    const missing = acknowledged.filter((m) => !requests.has(m));
    assert.deepEqual(missing, [], `${missing.length} of ${acknowledged.length} acknowledged requests missing from the log`);
    console.log(`kill -9 ×3: ${acknowledged.length} exchanges acknowledged, all requests in the log; ${responses} responses recorded`);
    const v = custody('verify', dataDir);
    assert.equal(v.status, 0, v.stderr);
  });
});
