// Sessions a gateway left open when it died end at the next start, recorded with reason
// gateway_restarted (after a kill -9 nothing else would end them); a clean stop ends them itself.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import { Config } from '../../shared/config';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { tempDir } from '../support/tmp';

let upstream: LlmUpstream;

/** A gateway in its own process; resolves once it listens, with its addresses and first key. */
async function child(dataDir: string, config: unknown) {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'test/support/gateway-child.ts', dataDir, JSON.stringify(config)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  proc.stdout.setEncoding('utf8');
  await new Promise<void>((resolve, reject) => {
    proc.stdout.on('data', (d: string) => {
      out += d;
      if (out.includes('\n')) resolve();
    });
    proc.once('exit', (code) => reject(new Error(`the gateway exited with ${code}`)));
  });
  const [, http, , key] = out.trim().split(' ');
  return { proc, http: http!, key: key! };
}

describe('sessions left open by a gateway that died', () => {
  before(async () => {
    upstream = await startLlmUpstream({ openaiKey: 'sk-restart' });
  });
  after(() => upstream.close());

  it('end with reason gateway_restarted at the next start', async () => {
    const dataDir = tempDir();
    const input = {
      listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' },
      connections: [{ name: 'openai', kind: 'openai', upstream: `${upstream.url}/v1`, secret: { value: 'sk-restart' } }],
    };
    const first = await child(dataDir, input);
    await new OpenAI({ baseURL: `http://${first.http}/openai`, apiKey: first.key, maxRetries: 0 }).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
    // Let the session index catch up with the journal, then die without a word.
    await new Promise((r) => setTimeout(r, 1500));
    first.proc.kill('SIGKILL');
    await once(first.proc, 'exit');

    const gw = await Gateway.start({ config: Config.parse(input), dataDir, log: silentLogger });
    try {
      const all = gw.services.store.events(1, 1_000_000);
      const started = all.filter((e) => e.kind === 'session.start');
      assert.equal(started.length, 1);
      const ends = all.filter((e) => e.kind === 'session.end' && e.session === started[0]!.session);
      assert.equal(ends.length, 1, 'the session the dead gateway left open has ended');
      assert.equal((ends[0]!.payload as { reason: string }).reason, 'gateway_restarted');
    } finally {
      await gw.stop();
    }
  });
});
