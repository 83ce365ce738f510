// An SDK pointed at the console's port by mistake gets an error that names the HTTP proxy, never the
// console's HTML page; browsers still get the console.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { Config } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { tempDir } from '../support/tmp';

let gw: Gateway;
let control: string;
let http: string;

describe('the control port explains itself to API clients', () => {
  before(async () => {
    const config = Config.parse({
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [
        { name: 'openai', kind: 'openai', upstream: 'http://127.0.0.1:9/v1', secret: { value: 'sk-wrong-port-x' } },
        { name: 'claude', kind: 'anthropic', upstream: 'http://127.0.0.1:9', secret: { value: 'sk-wrong-port-y' } },
      ],
    });
    gw = await Gateway.start({ config, dataDir: tempDir(), log: silentLogger });
    control = `http://${gw.address('control')}`;
    http = gw.address('http');
  });
  after(() => gw.stop());

  it('the OpenAI SDK raises an error naming the proxy, streaming or not', async () => {
    const client = new OpenAI({ baseURL: `${control}/openai`, apiKey: 'cst_x', maxRetries: 0 });
    const call = client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
    await assert.rejects(call, (err: unknown) => {
      assert.ok(err instanceof OpenAI.NotFoundError, String(err));
      assert.match(err.message, new RegExp(`not the HTTP proxy.*http://${http}/openai`));
      return true;
    });
    const stream = client.chat.completions.create({ model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'hi' }] });
    await assert.rejects(stream, OpenAI.NotFoundError);
  });

  it('the Anthropic SDK gets its own error shape', async () => {
    const client = new Anthropic({ baseURL: `${control}/claude`, apiKey: 'cst_x', maxRetries: 0 });
    await assert.rejects(client.messages.create({ model: 'claude-x', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] }), (err: unknown) => {
      assert.ok(err instanceof Anthropic.NotFoundError, String(err));
      assert.match(err.message, new RegExp(`http://${http}/claude`));
      return true;
    });
  });

  it('any POST or JSON request outside /api/ is answered in JSON', async () => {
    const post = await fetch(`${control}/v1/embeddings`, { method: 'POST', body: '{}' });
    assert.equal(post.status, 404);
    assert.match(post.headers.get('content-type') ?? '', /application\/json/);
    assert.match(((await post.json()) as { error: { message: string } }).error.message, /\/<connection>/);
    const json = await fetch(`${control}/models`, { headers: { accept: 'application/json' } });
    assert.equal(json.status, 404);
  });

  it('a browser still gets the console', async () => {
    const page = await fetch(`${control}/login`, { headers: { accept: 'text/html,application/xhtml+xml,application/json;q=0.9' } });
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
  });

  it('the proxy answers GET / with a pointer to the console', async () => {
    const res = await fetch(`http://${http}/`);
    assert.equal(res.status, 404);
    assert.match(((await res.json()) as { error: { message: string } }).error.message, /This is the HTTP proxy; the console is at http:\/\//);
  });

  it('refuses connection names that are console paths', () => {
    for (const name of ['api', 'login', 'assets']) {
      const r = Config.safeParse({ connections: [{ name, kind: 'http', upstream: 'http://127.0.0.1:9' }] });
      assert.equal(r.success, false, name);
      assert.match(r.error!.issues[0]!.message, /path of the console itself/);
    }
  });
});
