/**
 * The upstream credential never comes back: an upstream that echoes the Authorization header (or
 * x-api-key) in each response shape — headers, content-length and chunked bodies, SSE streams
 * with the secret split across events and TCP writes, error bodies — through raw HTTP and the
 * official SDKs. Asserted on what the client received and on what the store holds.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { Config } from '../../shared/config';
import { MIN_SCRUBBED_SECRET } from '../../shared/upstream-credentials';
import { Gateway } from '../../proxy/gateway';
import { ByteScrubStream, SecretScrubber } from '../../proxy/http/scrub';
import { silentLogger } from '../../proxy/log';
import { type EchoUpstream, startEchoUpstream } from '../support/echo-upstream';
import { startTestGateway, type TestGateway } from './http-harness';

const SECRETS: Record<string, string> = {
  openai: 'sk-echo-openai-7f3a9c2e4b1d8a6f',
  anthropic: 'sk-ant-echo-5e8d2c7b9a1f4e3d',
  // characters that change under URL-encoding, JSON escaping and base64 alignment
  plain: 'pl41n/s3cret+key=with:odd"chars~',
  // the shortest secret a connection may have (MIN_SCRUBBED_SECRET), with characters that change when encoded
  min: 'k/8+m:n~',
};

/** Every spelling of `secret` the echo upstream uses, written out independently of the gateway's list. */
function spellings(secret: string): string[] {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const forms = [secret, encodeURIComponent(secret), JSON.stringify(secret).slice(1, -1), b64(`user:${secret}`), b64(`${secret}:`), b64(secret)];
  return [...forms, ...forms.map((f) => f.replace(/\+/g, '-').replace(/\//g, '_'))];
}

function assertClean(text: string, connection: string, what: string): void {
  for (const form of spellings(SECRETS[connection]!)) assert.ok(!text.includes(form), `${what}: the client saw the ${connection} secret as ${JSON.stringify(form)}:\n${text.slice(0, 2000)}`);
}

let echo: EchoUpstream;
let gw: TestGateway;
let dataDir: string;

before(async () => {
  echo = await startEchoUpstream();
  gw = await startTestGateway(echo, {
    connections: [
      { name: 'openai', kind: 'openai', upstream: `${echo.url}/v1`, secret: { value: SECRETS['openai']! } },
      { name: 'anthropic', kind: 'anthropic', upstream: echo.url, secret: { value: SECRETS['anthropic']! } },
      { name: 'plain', kind: 'http', upstream: `${echo.url}/h`, secret: { value: SECRETS['plain']! } },
      { name: 'min', kind: 'openai', upstream: `${echo.url}/v1`, secret: { value: SECRETS['min']! } },
    ],
  });
  dataDir = gw.gw.services.dataDir;
});

after(async () => {
  await gw?.stop();
  await echo?.close();
});

/** GET through the gateway with Node's own client: headers as received, body de-chunked. */
function fetchRaw(path: string): Promise<{ status: number; head: string; body: string }> {
  return new Promise((resolve, reject) => {
    get(`${gw.proxy}${path}`, { headers: { authorization: `Bearer ${gw.adminKey}` } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const head = res.rawHeaders.reduce((acc, v, i) => acc + (i % 2 ? `${v}\n` : `${v}: `), '');
        resolve({ status: res.statusCode!, head, body: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', reject);
    }).on('error', reject);
  });
}

describe('HTTP proxy: the upstream credential is scrubbed from every response shape', () => {
  const lines = readFileSync(join(import.meta.dirname, '..', 'fixtures', 'bypass', 'credential-echoes.txt'), 'utf8')
    .split('\n')
    .filter((l) => l.trim() && !l.startsWith('#'));

  for (const line of lines) {
    const [connection, path] = line.split(' ') as [string, string];
    it(`${connection} ${path}`, async () => {
      const r = await fetchRaw(`/${connection}${path}`);
      assertClean(r.head, connection, 'headers');
      assertClean(r.body, connection, 'body');
      // the echo happened (the upstream got the secret and sent it back), so the test can fail
      assert.match(r.head + r.body, /\[REDACTED\]/, `nothing was echoed: ${r.head}${r.body}`);
      if (path.endsWith('/sse')) {
        assert.ok(r.body.startsWith(':\n\n'), `the keep-alive comment arrives, without its text: ${r.body.slice(0, 80)}`);
        // a client reading the deltas joins them: the secret must not reappear across events
        const joined = r.body
          .split('\n')
          .filter((l) => l.startsWith('data: {'))
          .map((l) => (JSON.parse(l.slice(6)) as { choices: { delta: { content?: string } }[] }).choices[0]!.delta.content ?? '')
          .join('');
        assertClean(joined, connection, 'joined deltas');
        assert.match(joined, /the key is \[REDACTED\] and \S*\[REDACTED\]/);
      }
    });
  }

  it('official SDKs, whole and streamed, see no credential', async () => {
    const openai = new OpenAI({ baseURL: `${gw.proxy}/openai`, apiKey: gw.adminKey, maxRetries: 0 });
    const whole = await openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
    assertClean(JSON.stringify(whole), 'openai', 'OpenAI SDK');
    assert.match(whole.choices[0]!.message.content!, /\[REDACTED\]/);
    let streamed = '';
    for await (const chunk of await openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], stream: true })) streamed += chunk.choices[0]?.delta.content ?? '';
    assertClean(streamed, 'openai', 'OpenAI SDK stream');
    assert.match(streamed, /\[REDACTED\]/);

    const anthropic = new Anthropic({ baseURL: `${gw.proxy}/anthropic`, apiKey: gw.adminKey, maxRetries: 0 });
    const msg = await anthropic.messages.create({ model: 'claude', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] });
    assertClean(JSON.stringify(msg), 'anthropic', 'Anthropic SDK');
    let text = '';
    const stream = anthropic.messages.stream({ model: 'claude', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] });
    for await (const ev of stream) if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') text += ev.delta.text;
    assertClean(text, 'anthropic', 'Anthropic SDK stream');
    assert.match(text, /key \[REDACTED\] basic \S*\[REDACTED\]/);

    await assert.rejects(
      () => openai.models.retrieve('echo/error'),
      (err: Error) => {
        assertClean(err.message, 'openai', 'SDK error');
        return true;
      },
    );
  });

  it('the store holds no copy', async () => {
    await new Promise((r) => setTimeout(r, 200)); // stream events are recorded in batches
    const events = JSON.stringify(await gw.allEvents());
    assert.match(events, /\[REDACTED\]/, 'the echoes were recorded, scrubbed');
    for (const connection of Object.keys(SECRETS)) assertClean(events, connection, 'recorded events');
    // and the store's files themselves (payloads of this size are stored uncompressed)
    const files = readdirSync(dataDir).filter((f) => /\.(db|sqlite|sqlite3)(-wal)?$/.test(f));
    assert.ok(files.length, `no store file in ${readdirSync(dataDir).join(', ')}`);
    for (const file of files) {
      const bytes = readFileSync(join(dataDir, file)).toString('latin1');
      for (const connection of Object.keys(SECRETS)) assert.ok(!bytes.includes(SECRETS[connection]!), `${file} holds the ${connection} secret`);
    }
  });
});

describe('credential scrubber: split at every byte boundary', () => {
  const secret = SECRETS['plain']!;
  const scrubber = SecretScrubber.for(secret)!;
  const text = `head Bearer ${secret} mid ${Buffer.from(`u:${secret}`).toString('base64')} tail ${encodeURIComponent(secret)} end`;

  it('finds every form however the body is cut', () => {
    const bytes = Buffer.from(text);
    for (let cut = 1; cut < bytes.length; cut++) {
      const s: ByteScrubStream = scrubber.bodyStream();
      const out = Buffer.concat([s.push(bytes.subarray(0, cut)), s.push(bytes.subarray(cut)), s.end()]).toString();
      assert.ok(out.startsWith('head Bearer [REDACTED] mid ') && out.endsWith(' tail [REDACTED] end'), `cut at ${cut}: ${out}`);
      assertClean(out, 'plain', `cut at ${cut}`);
      assert.equal(out.split('[REDACTED]').length, 4, `cut at ${cut}: ${out}`);
    }
  });

  it('holds back only what could still become the secret', () => {
    const s = scrubber.bodyStream();
    assert.equal(s.push(Buffer.from('plain text, nothing held.')).toString(), 'plain text, nothing held.');
    assert.equal(s.push(Buffer.from('and then pl41n/s')).toString(), 'and then ');
    assert.equal(s.end().toString(), 'pl41n/s');
  });

  it('in a stream, a secret split across deltas at any point is replaced (at most its first 3 characters pass)', () => {
    for (const [connection, secret] of Object.entries(SECRETS)) {
      const forms = spellings(secret);
      for (const form of [forms[0]!, forms[3]!]) {
        const text = `before ${form} after`;
        for (let cut = 1; cut < text.length; cut++) {
          const masker = SecretScrubber.for(secret)!.sseStream();
          const chunk = (content: string) => ({ data: JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content } }] }) });
          const out = [...masker.push(chunk(text.slice(0, cut))).forward, ...masker.push(chunk(text.slice(cut))).forward, ...masker.end().forward];
          const joined = out.map((e) => (JSON.parse(e.data) as { choices: { delta: { content?: string } }[] }).choices[0]!.delta.content ?? '').join('');
          assertClean(joined, connection, `cut at ${cut}`);
          // as scrubbed whole, or with at most 3 characters of the form sent before the rest was seen
          const expected = SecretScrubber.for(secret)!.scrubText(text);
          const at = expected.indexOf('[REDACTED]');
          assert.ok(at > 0 && joined.startsWith(expected.slice(0, at)) && joined.endsWith(expected.slice(at)) && joined.length - expected.length <= 3, `cut at ${cut}: ${joined} (whole: ${expected})`);
        }
      }
    }
  });

  it('a secret shorter than the minimum has no scrubber (the connection is refused before one is needed)', () => {
    assert.equal(SECRETS['min']!.length, MIN_SCRUBBED_SECRET);
    assert.throws(() => SecretScrubber.for('sk-1234'), /shorter than 8 characters/);
  });
});

describe('a connection whose secret is too short to scrub is refused', () => {
  it('the gateway does not start with it, and says which connection and why', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'custody-short-secret-'));
    try {
      const config = Config.parse({
        listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
        connections: [
          { name: 'long', kind: 'openai', upstream: `${echo.url}/v1`, secret: { value: SECRETS['openai']! } },
          { name: 'tiny', kind: 'anthropic', upstream: echo.url, secret: { value: 'sk-1234' } },
        ],
      });
      const before = echo.requests.length;
      await assert.rejects(
        () => Gateway.start({ config, dataDir: dir, log: silentLogger }),
        (err: Error) => {
          assert.match(err.message, /connection tiny: its secret is 7 characters long, shorter than the 8 the gateway needs to scrub it from responses/);
          return true;
        },
      );
      assert.equal(echo.requests.length, before, 'nothing reached the upstream');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the console refuses to save one (value or environment variable), and stores nothing', async () => {
    const post = (body: unknown) =>
      fetch(`${gw.control}/api/connections`, { method: 'POST', headers: { authorization: `Bearer ${gw.adminKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const r = await post({ name: 'tiny', kind: 'openai', upstream: `${echo.url}/v1`, secret: 'abc' });
    assert.equal(r.status, 400);
    const body = (await r.json()) as { error: { code?: string; message: string } } | { code?: string; message?: string };
    assert.match(JSON.stringify(body), /secret_too_short/);
    assert.match(JSON.stringify(body), /connection tiny: its secret is 3 characters long/);
    process.env['CUSTODY_SECRET_SCRUB_TEST_SHORT'] = 'sk-12';
    try {
      const e = await post({ name: 'tiny-env', kind: 'http', upstream: `${echo.url}/h`, secret: { env: 'CUSTODY_SECRET_SCRUB_TEST_SHORT' } });
      assert.equal(e.status, 400);
      assert.match(await e.text(), /connection tiny-env: its secret is 5 characters long/);
    } finally {
      delete process.env['CUSTODY_SECRET_SCRUB_TEST_SHORT'];
    }
    const listed = JSON.stringify(await gw.api('/api/connections'));
    assert.ok(!listed.includes('"tiny'), `a refused connection was stored: ${listed}`);
    // a postgres connection's password never crosses the HTTP proxy: no minimum there
    const pg = await post({ name: 'tiny-pg', kind: 'postgres', upstream: 'postgres://127.0.0.1:9/x', listen: '127.0.0.1:0', secret: 'pw' });
    assert.notEqual(pg.status, 400, await pg.text());
  });
});
