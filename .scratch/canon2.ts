import { canonicalPayload } from '../proxy/audit/chain';
const content = 'The quick brown fox jumps over the lazy dog. '.repeat(22);
const resp = { status: 200, headers: { 'content-type': 'application/json', date: 'Fri, 04 Dec 2026 16:19:46 GMT', connection: 'keep-alive', 'keep-alive': 'timeout=5', 'content-length': '1027', 'x-request-id': 'req_123' }, body: { id: 'chatcmpl-abc123', object: 'chat.completion', created: 1733300000, model: 'gpt-4o', choices: [{ index: 0, message: { role: 'assistant', content, refusal: null }, logprobs: null, finish_reason: 'stop' }], usage: { prompt_tokens: 12, completion_tokens: 200, total_tokens: 212 } }, bodyEncoding: 'json', bytes: 1027, duration: 0.8 };
const pg = { sql: 'SELECT abalance FROM pgbench_accounts WHERE aid = 12345;', classes: ['select'], tables: ['pgbench_accounts'], decision: 'allow', protocol: 'simple', params: [] };
const SAFE = /^[^"\\\u0000-\u001f\u007f-\uffff]*$/;
const quoted = new Map<string, string>();
function q(k: string): string { let v = quoted.get(k); if (v === undefined) { v = JSON.stringify(k); if (quoted.size < 4096) quoted.set(k, v); } return v; }
function canon2(v: unknown): string {
  if (v === null) return 'null';
  switch (typeof v) {
    case 'string': return JSON.stringify(v);
    case 'number': if (!Number.isFinite(v)) throw new TypeError('x'); return String(v);
    case 'boolean': return v ? 'true' : 'false';
    case 'object': {
      if (Array.isArray(v)) { let s = '['; for (let i = 0; i < v.length; i++) { if (i) s += ','; const x = v[i]; s += x === undefined ? 'null' : canon2(x); } return s + ']'; }
      const o = v as Record<string, unknown> & { toJSON?: () => unknown };
      if (typeof o.toJSON === 'function') return canon2(o.toJSON());
      const keys = Object.keys(o);
      let sorted = true;
      for (let i = 1; i < keys.length; i++) if (keys[i - 1]! > keys[i]!) { sorted = false; break; }
      if (!sorted) keys.sort();
      let s = '{'; let first = true;
      for (const k of keys) { const x = o[k]; if (x === undefined) continue; if (!first) s += ','; first = false; s += q(k) + ':' + canon2(x); }
      return s + '}';
    }
    default: throw new TypeError('y');
  }
}
function bench(name: string, f: () => unknown, n = 200000) { for (let i = 0; i < 20000; i++) f(); const t = process.hrtime.bigint(); for (let i = 0; i < n; i++) f(); console.log(name, (Number(process.hrtime.bigint() - t) / n / 1000).toFixed(2), 'us'); }
if (canon2(resp) !== canonicalPayload(resp)) throw new Error('mismatch');
bench('canonical resp', () => canonicalPayload(resp));
bench('canon2 resp', () => canon2(resp));
bench('canonical pg', () => canonicalPayload(pg));
bench('canon2 pg', () => canon2(pg));
bench('stringify resp', () => JSON.stringify(resp));
