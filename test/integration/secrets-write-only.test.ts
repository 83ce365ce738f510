// Secrets stay write-only: every attempt in test/fixtures/identity/secret-readback.txt tries to get
// a stored connection secret sent somewhere new through the API. The effect is checked after a
// restart on the same data dir: the attacker's upstream never receives the stored secret (or a
// file's contents), and the real upstream still gets it. Config-file secret files are limited to
// the data dir's secrets/ folder and the paths listed in secretFiles.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Config, type ConfigInput } from '../../shared/config';
import { checkSecretFiles, ConfigError } from '../../proxy/config';
import { Gateway } from '../../proxy/gateway';
import { silentLogger } from '../../proxy/log';
import { type LlmUpstream, startLlmUpstream } from '../support/llm-upstream';
import { OPENAI_SECRET, standardConnections, VECTOR_SECRET } from './http-harness';

const lines = readFileSync(new URL('../fixtures/identity/secret-readback.txt', import.meta.url), 'utf8')
  .split('\n')
  .filter((l) => l.trim() && !l.startsWith('#'));

let real: LlmUpstream;
let evil: LlmUpstream;
let gw: Gateway;
let dataDir: string;
let config: Config;

const hostname = (() => {
  try {
    return readFileSync('/etc/hostname', 'utf8').trim();
  } catch {
    return 'no-hostname-file';
  }
})();

async function api(method: string, path: string, body: unknown): Promise<Response> {
  return fetch(`http://${gw.address('control')}${path}`, { method, headers: { authorization: `Bearer ${gw.firstKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

describe('connection secrets stay write-only', () => {
  before(async () => {
    real = await startLlmUpstream({ openaiKey: OPENAI_SECRET });
    evil = await startLlmUpstream();
    dataDir = mkdtempSync(join(tmpdir(), 'custody-secrets-'));
    config = Config.parse({ listen: { control: '127.0.0.1:0', http: '127.0.0.1:0' }, connections: standardConnections(real.url) } satisfies ConfigInput);
    gw = await Gateway.start({ config, dataDir, log: silentLogger });
  });
  after(async () => {
    await gw?.stop();
    await real?.close();
    await evil?.close();
    rmSync(dataDir, { recursive: true, force: true });
  });

  for (const line of lines) {
    it(`refuses: ${line}`, async () => {
      const [request, body, expected] = line.split(' | ');
      const [method, path] = request!.split(' ');
      const text = body!
        .replaceAll('${EVIL}', evil.url)
        .replaceAll('${UP_LOCALHOST}', real.url.replace('127.0.0.1', 'localhost'))
        .replaceAll('${UP_HTTPS}', real.url.replace('http:', 'https:'))
        .replaceAll('${UP}', real.url);
      const res = await api(method!, path!, JSON.parse(text));
      const answer = (await res.json()) as { error?: { code: string; message: string } };
      assert.equal(`${res.status} ${answer.error?.code}`, expected, answer.error?.message);
    });
  }

  it('accepts an environment variable the operator exported for the console, by its CUSTODY_SECRET_ name', async () => {
    process.env['CUSTODY_SECRET_WRITE_ONLY_TEST'] = 'sk-from-env';
    const res = await api('POST', '/api/connections', { name: 'from-env', kind: 'http', upstream: `${real.url}/x`, secret: { env: 'CUSTODY_SECRET_WRITE_ONLY_TEST' } });
    assert.equal(res.status, 200, await res.clone().text());
  });

  it('after a restart the stored secrets still go only to their own upstreams', async () => {
    // The one allowed move: a new upstream with the secret entered again.
    const moved = await api('PUT', '/api/connections/vectors', { upstream: `${evil.url}/vectors`, secret: 'entered-again-for-the-new-host' });
    assert.equal(moved.status, 200, await moved.clone().text());
    await gw.stop();
    gw = await Gateway.start({ config, dataDir, log: silentLogger });
    const key = gw.services.keys.create({ name: 'client', groups: [] }).key;
    const proxy = `http://${gw.address('http')}`;
    for (const path of ['/openai/chat/completions', '/vectors/search']) {
      await fetch(`${proxy}${path}`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}' });
    }
    const seenByEvil = JSON.stringify(evil.requests.map((r) => r.headers));
    for (const secret of [OPENAI_SECRET, VECTOR_SECRET, hostname]) assert.ok(!seenByEvil.includes(secret), `the attacker's upstream never saw ${secret === hostname ? 'the hostname file' : 'a stored secret'}`);
    assert.ok(seenByEvil.includes('entered-again-for-the-new-host'), 'the moved connection sends the secret entered with the move');
    assert.ok(JSON.stringify(real.requests.map((r) => r.headers)).includes(OPENAI_SECRET), 'the real upstream still gets its secret');
  });

  it("a stored connection whose environment variable this host lacks is not served, saying why; the gateway still starts", async () => {
    delete process.env['CUSTODY_SECRET_WRITE_ONLY_TEST'];
    await gw.stop();
    gw = await Gateway.start({ config, dataDir, log: silentLogger });
    const key = gw.services.keys.create({ name: 'client-no-env', groups: [] }).key;
    const before = real.requests.filter((r) => r.path.startsWith('/x')).length;
    const res = await fetch(`http://${gw.address('http')}/from-env/anything`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: '{}' });
    const body = await res.text();
    assert.equal(res.status, 503, body);
    assert.match(body, /connection_unavailable/);
    assert.match(body, /environment variable CUSTODY_SECRET_WRITE_ONLY_TEST, which holds its secret, is not set on this gateway's host; the request was not forwarded/);
    assert.equal(real.requests.filter((r) => r.path.startsWith('/x')).length, before, 'the upstream received nothing');
    // The other connections are served as before.
    const other = await fetch(`http://${gw.address('http')}/openai/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}' });
    assert.equal(other.status, 200, await other.text());
  });

  it('reads secret files from the config only under secrets/ or listed in secretFiles', () => {
    const dir = mkdtempSync(join(tmpdir(), 'custody-secret-files-'));
    try {
      mkdirSync(join(dir, 'secrets'));
      writeFileSync(join(dir, 'secrets', 'openai'), 'sk-file');
      symlinkSync('/etc/hostname', join(dir, 'secrets', 'sneaky'));
      const withFile = (file: string, secretFiles: string[] = []) => Config.parse({ secretFiles, connections: [{ name: 'c', kind: 'openai', upstream: 'https://api.openai.com/v1', secret: { file } }] });
      checkSecretFiles(withFile(join(dir, 'secrets', 'openai')), dir);
      checkSecretFiles(withFile('/etc/hostname', ['/etc/hostname']), dir);
      for (const bad of ['/etc/hostname', join(dir, 'secrets', '..', 'secrets-not', 'x'), join(dir, 'secrets', 'sneaky'), join(dir, 'secrets')]) {
        assert.throws(() => checkSecretFiles(withFile(bad), dir), (err: unknown) => err instanceof ConfigError && /outside/.test(err.message), bad);
      }
      const oidc = Config.parse({ identity: { oidc: [{ issuer: 'https://idp.example.com', audience: 'a', clientSecret: { file: '/etc/hostname' } }] } });
      assert.throws(() => checkSecretFiles(oidc, dir), /clientSecret: secret file/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
