/**
 * Paths as the upstream reads them: every spelling of a denied path in
 * test/fixtures/bypass/path-spellings.txt is refused or reaches the upstream somewhere else; what
 * the upstream received is the judge, read as the most permissive router would read it. Method
 * overrides (test/fixtures/bypass/method-overrides.txt) are refused before anything is forwarded.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { PolicyRule } from '../../shared/config';
import { type EchoUpstream, startEchoUpstream } from '../support/echo-upstream';
import { startTestGateway, type TestGateway } from './http-harness';

let echo: EchoUpstream;
let gw: TestGateway;

const fixture = (name: string) =>
  readFileSync(join(import.meta.dirname, '..', 'fixtures', 'bypass', name), 'utf8')
    .split('\n')
    .filter((l) => l.trim() && !l.startsWith('#'));

before(async () => {
  echo = await startEchoUpstream();
  gw = await startTestGateway(echo, {
    connections: [
      { name: 'edge', kind: 'http', upstream: `${echo.url}/base`, secret: { value: 'edge-secret-0123456789' } },
      { name: 'strict', kind: 'http', upstream: `${echo.url}/base`, secret: { value: 'edge-secret-0123456789' } },
      { name: 'openai', kind: 'openai', upstream: `${echo.url}/v1`, secret: { value: 'sk-echo-0123456789' } },
    ],
  });
  const rules: PolicyRule[] = [
    { name: 'no-admin', match: { connections: ['edge'], paths: ['/admin*'] }, action: 'deny', reason: 'admin API' } as PolicyRule,
    { name: 'no-delete', match: { connections: ['edge'], methods: ['DELETE'] }, action: 'deny' } as PolicyRule,
    { name: 'public', match: { connections: ['strict'], paths: ['/public/*'] }, action: 'allow' } as PolicyRule,
    { name: 'nothing-else', match: { connections: ['strict'] }, action: 'deny' } as PolicyRule,
  ];
  gw.gw.services.policy.load(rules);
});

after(async () => {
  await gw?.stop();
  await echo?.close();
});

interface RawResponse {
  status: number;
  body: string;
}

/** Sends the request line exactly as written (fetch and http.request would normalise or refuse it). */
function raw(method: string, target: string, headers: Record<string, string> = {}): Promise<RawResponse> {
  const { port } = new URL(gw.proxy);
  const lines = [`${method} ${target} HTTP/1.1`, 'host: gateway', `authorization: Bearer ${gw.adminKey}`, 'connection: close', 'content-length: 0', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1', () => socket.write(`${lines.join('\r\n')}\r\n\r\n`));
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('latin1');
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      resolve({ status, body: text.slice(text.indexOf('\r\n\r\n') + 4) });
    });
  });
}

/**
 * The path as the most permissive upstream router would read it: decoded until stable (double
 * encoding, overlong `/`), `\` as `/`, `;` parameters and fragments dropped, slashes merged, dot
 * segments resolved, case folded.
 */
function permissiveReading(target: string): string {
  // bytes as latin1 characters, so percent-decoding yields bytes; read back as UTF-8 below
  let p = Buffer.from(target.split('?')[0]!, 'utf8').toString('latin1');
  for (let i = 0; i < 4; i++) {
    const next = p
      .replace(/%c0%af|%e0%80%af/gi, '/')
      .replace(/%c0%ae/gi, '.')
      .replace(/%u002e/gi, '.')
      .replace(/%u2215/gi, '/')
      .replace(/%([0-9a-f]{2})/gi, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
    if (next === p) break;
    p = next;
  }
  // a router that normalises Unicode (NFKC) and folds case by upper-casing (dotless ı → I)
  p = Buffer.from(p, 'latin1').toString('utf8').normalize('NFKC').toUpperCase();
  p = p.replace(/\\/g, '/').replace(/#.*$/, '').replace(/\0/g, '');
  const out: string[] = [];
  for (const rawSeg of p.split('/')) {
    const seg = rawSeg.split(';')[0]!;
    if (seg === '' || seg === '.') continue;
    if (seg === '..') out.pop();
    else out.push(seg);
  }
  return `/${out.join('/')}`.toLowerCase();
}

describe('HTTP proxy: canonical paths', () => {
  const spellings = fixture('path-spellings.txt');

  it('the corpus reads as /admin (or outside the base) to a permissive router, so the test can fail', () => {
    for (const line of spellings.filter((l) => !l.includes('%u'))) assert.match(permissiveReading(`/base${line}`), /^\/base\/admin|^\/(?!base)/, line);
  });

  for (const line of spellings) {
    it(`a deny on /admin* holds against ${JSON.stringify(line)}`, async () => {
      const before = echo.requests.length;
      const r = await raw('GET', `/edge${line}`);
      const reached = echo.requests.slice(before);
      if (r.status === 400 || r.status === 403) {
        assert.equal(reached.length, 0, `refused with ${r.status} but the upstream got ${reached.map((x) => x.target).join(', ')}`);
        // Node's own parser refuses some request lines before the gateway sees them (no JSON body)
        if (r.body) assert.match(JSON.parse(r.body).error.code as string, /^(invalid_path|policy_denied)$/);
        return;
      }
      assert.equal(r.status, 200, `${line}: ${r.status} ${r.body}`);
      assert.equal(reached.length, 1);
      const seen = permissiveReading(reached[0]!.target);
      assert.doesNotMatch(seen, /^\/base\/admin/, `${line} reached the upstream as ${reached[0]!.target}`);
      assert.match(seen, /^\/base(\/|$)/, `${line} left the connection's base path: ${reached[0]!.target}`);
    });
  }

  it('forwards exactly the canonical path, and records it', async () => {
    const cases: [string, string][] = [
      ['/x/../ok', '/base/ok'],
      ['/./models', '/base/models'],
      ['//a///b/', '/base/a/b/'],
      ['/%7Euser/%41%2d%5F', '/base/~user/A-_'],
      ['/caf%c3%a9/%3f%20', '/base/caf%C3%A9/%3F%20'],
      ['/a/b/..', '/base/a/'],
      ['/q?x=%2f..%2f', '/base/q?x=%2f..%2f'],
    ];
    for (const [sent, expected] of cases) {
      const before = echo.requests.length;
      const r = await raw('GET', `/edge${sent}`);
      assert.equal(r.status, 200, `${sent}: ${r.body}`);
      assert.equal(echo.requests[before]?.target, expected, sent);
    }
    const events = await gw.allEvents();
    const recorded = events.filter((e) => e.kind === 'http.request').map((e) => (e.payload as { path: string }).path);
    assert.ok(recorded.includes('/~user/A-_'), recorded.join(' '));
    assert.ok(!recorded.some((p) => p.includes('%7E') || p.includes('//')), recorded.join(' '));
  });

  it('refusals are provider-shaped 400s that say why', async () => {
    const cases: [string, RegExp][] = [
      ['/openai/../x', /climbs above the connection's root/],
      ['/openai/a%2fb', /encoded "\/"/],
      ['/openai/a;b', /path parameters/],
      ['/openai/a%zz', /two hex digits/],
      ['/openai/%c0%af', /not valid UTF-8/],
      ['/openai/%252f', /double-encoded/],
    ];
    const before = echo.requests.length;
    for (const [target, why] of cases) {
      const r = await raw('POST', target);
      assert.equal(r.status, 400, target);
      const body = JSON.parse(r.body) as { error: { code: string; message: string; type: string } };
      assert.equal(body.error.code, 'invalid_path');
      assert.equal(body.error.type, 'invalid_request_error');
      assert.match(body.error.message, why, target);
    }
    assert.equal(echo.requests.length, before);
  });

  it('deny rules ignore case; allow rules do not (ambiguity fails closed)', async () => {
    const status = async (target: string) => (await raw('GET', target)).status;
    assert.equal(await status('/strict/public/x'), 200);
    assert.equal(await status('/strict/%70ublic/x'), 200, 'decoded to the same canonical path');
    assert.equal(await status('/strict/PUBLIC/x'), 403, 'an allow rule does not widen to other cases');
    assert.equal(await status('/strict/Public/x'), 403);
    assert.equal(await status('/strict/x/../public/x'), 200);
  });
});

describe('HTTP proxy: method overrides', () => {
  for (const line of fixture('method-overrides.txt')) {
    it(`refuses ${line}`, async () => {
      const before = echo.requests.length;
      let r: RawResponse;
      if (line.startsWith('header ')) {
        const [name, ...value] = line.slice(7).split(':');
        r = await raw('POST', '/edge/items/1', { [name!.trim()]: value.join(':').trim() });
      } else r = await raw('POST', `/edge/items/1?${line.slice(6)}`);
      assert.equal(r.status, 400, `${line}: ${r.status} ${r.body}`);
      assert.equal(JSON.parse(r.body).error.code, 'method_override');
      assert.equal(echo.requests.length, before, 'nothing reached the upstream');
    });
  }

  it('the method on the request line is what policy sees', async () => {
    assert.equal((await raw('DELETE', '/edge/items/1')).status, 403);
    assert.equal((await raw('POST', '/edge/items/1?method=x&_methods=y')).status, 200, 'similar names pass');
  });
});
