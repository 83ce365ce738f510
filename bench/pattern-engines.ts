/**
 * Pattern engines for typed patterns (`npm run bench -- pattern-engines`, a few seconds): MB/s of
 * V8's backtracking RegExp against re2js (RE2's automata in JavaScript) on the same 1 MiB text, in
 * one run, for patterns shaped like custom detectors and `content` rules; then Custody's own scan
 * path (a custom detector through the masking engine), and the time each engine takes on a
 * catastrophic pattern. `re2` (native) and `re2-wasm` are measured when they are installed.
 */
import { createRequire } from 'node:module';
import { RE2JS } from 're2js';
import { createMaskingEngine } from '../proxy/masking/engine';

const require = createRequire(import.meta.url);
type NativeRe2 = new (source: string, flags: string) => RegExp;
function optional(name: string): NativeRe2 | undefined {
  try {
    return require(name) as NativeRe2;
  } catch {
    return undefined;
  }
}
const RE2 = optional('re2');

// A deterministic 1 MiB text: prose words, ids, numbers and the odd phrase a content rule looks for.
const WORDS = ['the', 'customer', 'asked', 'about', 'invoice', 'EMP-123456', 'and', 'order', '4111', 'please', 'export', 'every', 'record', 'shipment', 'jane@example.com', 'on', 'Tuesday.', 'aaaa'];
let text = '';
for (let i = 0; text.length < 1 << 20; i++) text += WORDS[(i * 5) % WORDS.length] + (i % 13 === 0 ? '\n' : ' ');
text = text.slice(0, 1 << 20);
const MB = Buffer.byteLength(text) / 1e6;

function rate(run: () => number, ms = 600): { mbs: number; n: number } {
  let n = run();
  const t0 = performance.now();
  let runs = 0;
  while (performance.now() - t0 < ms) {
    n = run();
    runs++;
  }
  return { mbs: (MB * runs) / ((performance.now() - t0) / 1000), n };
}

const PATTERNS: [name: string, source: string, ci: boolean][] = [
  ['employee id (custom detector)', 'EMP-\\d{6}', false],
  ['bulk export (content rule)', '(export|dump) (all|every)', true],
  ['email-like (custom detector)', '[a-z0-9.]+@[a-z0-9]+\\.[a-z]{2,}', false],
  ['catastrophic (a|aa)+$', '(a|aa)+$', false],
];

const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1)).padStart(7);
console.log(`text: ${(MB * 1e6 / 1024).toFixed(0)} KiB; re2 native: ${RE2 ? 'installed' : 'not installed'}; re2-wasm: ${optional('re2-wasm') ? 'installed' : 'not installed'}`);
console.log(`${'pattern'.padEnd(32)} ${'V8 MB/s'.padStart(9)} ${'re2js find'.padStart(11)} ${'re2js test'.padStart(11)} ${'find/V8'.padStart(8)}${RE2 ? ' re2 MB/s' : ''}  matches`);
for (const [name, source, ci] of PATTERNS) {
  const v8 = new RegExp(source, ci ? 'gi' : 'g');
  const a = rate(() => {
    v8.lastIndex = 0;
    let n = 0;
    while (v8.exec(text)) n++;
    return n;
  });
  const re = RE2JS.compile(source, ci ? RE2JS.CASE_INSENSITIVE : 0);
  const b = rate(() => {
    const m = re.matcher(text);
    let n = 0;
    while (m.find()) n++;
    return n;
  });
  const c = rate(() => (re.test(text) ? 1 : 0));
  let native = '';
  if (RE2) {
    const r = new RE2(source, ci ? 'gi' : 'g');
    native = ` ${fmt(rate(() => text.match(r)?.length ?? 0).mbs)}`;
  }
  console.log(`${name.padEnd(32)} ${fmt(a.mbs)}   ${fmt(b.mbs)}    ${fmt(c.mbs)}   ${(b.mbs / a.mbs).toFixed(3).padStart(6)}${native}  ${a.n}/${b.n}`);
}

// Custody's path for a custom detector: test the window (DFA), locate matches only where it hits.
for (const [name, source] of PATTERNS.slice(0, 3)) {
  const engine = createMaskingEngine(
    { detectors: [{ id: 'typed', pattern: source, caseSensitive: false, contextWindow: 40 }], masking: [{ id: 'm', detectors: ['typed'], scope: ['client', 'upstream', 'log'], strategy: 'redact', keepLast: 4 }] },
    { hmacKey: Buffer.alloc(32, 1), budgetMs: 60_000 },
  );
  const masker = engine.forConnection({ name: 'bench', kind: 'http', upstream: 'http://127.0.0.1:9' })!;
  const body = Buffer.from(text);
  const r = rate(() => Object.values(masker.request('/', 'text/plain', body).counts).reduce((x, y) => x + y, 0), 1500);
  console.log(`custody masking, custom detector "${name}": ${fmt(r.mbs)} MB/s (${r.n} masked)`);
}

// A catastrophic pattern on the input size and below: V8 grows ~1.6× per character.
for (const n of [24, 28, 30]) {
  const input = 'a'.repeat(n) + '!';
  let t = performance.now();
  /(a|aa)+$/.test(input);
  const v8ms = performance.now() - t;
  t = performance.now();
  RE2JS.compile('(a|aa)+$').test(input);
  console.log(`(a|aa)+$ on ${n} a's + "!": V8 ${v8ms.toFixed(1)} ms, re2js ${(performance.now() - t).toFixed(2)} ms`);
}
const t = performance.now();
RE2JS.compile('(a|aa)+$').test('a'.repeat(40) + '!');
console.log(`(a|aa)+$ on 40 a's + "!": re2js ${(performance.now() - t).toFixed(2)} ms (V8: not run; ~1.6^10 × the 30-character time)`);
