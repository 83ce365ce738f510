/**
 * Masking benchmark (`npm run bench -- masking`), all figures from one run:
 *
 *  1. Quality on the labelled corpus (test/fixtures/masking-corpus): recall and precision per type
 *     for Custody's default detectors and for redact-pii (its own regular expressions for the types
 *     both cover), plus the share of planted values that survive verbatim in each one's output.
 *  2. Throughput on the same corpus: Custody's text masking with every built-in detector, against
 *     redact-pii (default configuration, and only the comparable redactors) and a reference single
 *     regex pass over the same text (the machine's speed in this run). Bar: ≥ 50 MB/s.
 *  3. Streaming: the time StreamMasker.push adds per chunk of an OpenAI chat stream (µs), against
 *     parsing and re-serialising each event (the least any event-rewriting proxy does).
 */
import { createRequire } from 'node:module';
import { SyncRedactor } from 'redact-pii';
import { createMaskingEngine } from '../proxy/masking/engine';
import type { SseEvent } from '../proxy/masking/types';
import { loadCorpus, score, type TypeScore } from '../test/fixtures/masking-corpus/corpus';

const require = createRequire(import.meta.url);
const patterns = require('redact-pii/lib/built-ins/simple-regexp-patterns') as Record<string, RegExp>;

const corpus = loadCorpus();
const totalBytes = corpus.reduce((n, d) => n + Buffer.byteLength(d.text), 0);

const engine = createMaskingEngine({ detectors: [], masking: [{ id: 'all', detectors: ['all'], scope: ['client', 'upstream', 'log'], strategy: 'redact', keepLast: 4 }] }, { hmacKey: Buffer.alloc(32, 1) });
const masker = engine.forConnection({ name: 'bench', kind: 'http', upstream: 'http://127.0.0.1:9' })!;
const custodyMask = (text: string) => masker.request('/', 'text/plain', Buffer.from(text));

// ---- redact-pii, with a private-use sentinel per redactor so that its output can be aligned ----
const REDACT_PII_TYPES: Record<string, string> = {
  creditCardNumber: 'CREDIT_CARD',
  phoneNumber: 'PHONE',
  ipAddress: 'IP_ADDRESS',
  usSocialSecurityNumber: 'US_SSN',
  emailAddress: 'EMAIL',
  password: 'PASSWORD',
  credentials: 'PASSWORD',
};
const order = Object.keys(patterns); // the library applies its built-ins in this order
const comparable = order.filter((n) => REDACT_PII_TYPES[n]);
const sentinel = (k: number) => String.fromCharCode(0xe000 + k);
const disabled = Object.fromEntries([...order, 'names'].map((n) => [n, { enabled: false }]));
const alignedRedactor = new SyncRedactor({
  builtInRedactors: disabled,
  customRedactors: { before: comparable.map((n, k) => ({ regexpPattern: patterns[n]!, replaceWith: sentinel(k) })) },
});
const comparableRedactor = new SyncRedactor({ builtInRedactors: Object.fromEntries([...order, 'names'].map((n) => [n, { enabled: comparable.includes(n) }])) });
const defaultRedactor = new SyncRedactor();

/** Spans of `input` that redact-pii replaced, recovered from sentinels in its output. */
function alignRedactions(input: string, output: string): { type: string; start: number; end: number }[] {
  const spans: { type: string; start: number; end: number }[] = [];
  let i = 0;
  let o = 0;
  while (o < output.length) {
    const k = output.charCodeAt(o) - 0xe000;
    if (k < 0 || k >= comparable.length) {
      i++;
      o++;
      continue;
    }
    let next = o + 1;
    while (next < output.length && (output.charCodeAt(next) < 0xe000 || output.charCodeAt(next) >= 0xe000 + comparable.length)) next++;
    const literal = output.slice(o + 1, next);
    const end = literal ? input.indexOf(literal, i + 1) : next >= output.length ? input.length : i + 1;
    spans.push({ type: REDACT_PII_TYPES[comparable[k]!]!, start: i, end: end < 0 ? input.length : end });
    i = end < 0 ? input.length : end;
    o++;
  }
  return spans;
}

function leaked(outputOf: (text: string) => string): { leaked: number; total: number } {
  let n = 0;
  let total = 0;
  for (const d of corpus) {
    const out = outputOf(d.text);
    for (const l of d.labels) {
      total++;
      if (out.includes(l.value)) n++;
    }
  }
  return { leaked: n, total };
}

// ---- timing helpers: the median of several timed rounds, each at least `ms` long ----
function mbPerSecond(fn: () => void, bytes: number, ms = 400, rounds = 5): number {
  fn();
  const rates: number[] = [];
  for (let r = 0; r < rounds; r++) {
    let n = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < ms) {
      fn();
      n++;
    }
    rates.push((bytes * n) / 1e6 / ((performance.now() - t0) / 1000));
  }
  return rates.sort((a, b) => a - b)[Math.floor(rates.length / 2)]!;
}

const pct = (x: number) => x.toFixed(3);
const pad = (s: string | number, n: number) => String(s).padEnd(n);

console.log(`corpus: ${corpus.length} files, ${(totalBytes / 1024).toFixed(0)} KiB, ${corpus.reduce((n, d) => n + d.labels.length, 0)} planted values`);

// 1. quality
/** Source offsets of what Custody masked: its spans point into the masked text; walk back through the replacements. */
function spansOf(text: string): { type: string; start: number; end: number }[] {
  const r = custodyMask(text);
  const masked = r.log as string;
  const out: { type: string; start: number; end: number }[] = [];
  let shift = 0; // masked offset − source offset so far
  r.spans.forEach((s, k) => {
    const srcStart = s.start - shift;
    const literal = masked.slice(s.end, r.spans[k + 1]?.start ?? masked.length);
    const srcEnd = literal ? text.indexOf(literal, srcStart + 1) : text.length;
    out.push({ type: s.type, start: srcStart, end: srcEnd });
    shift += s.end - s.start - (srcEnd - srcStart);
  });
  return out;
}
const custodyScores = score(corpus, spansOf);
const redactScores = score(corpus, (text) => alignRedactions(text, alignedRedactor.redact(text)));
const types = [...custodyScores.keys()].sort();
console.log('\n1. Quality per type (recall / precision); redact-pii only has the types marked *');
console.log(`   ${pad('type', 16)} ${pad('labels', 7)} ${pad('Custody R', 10)} ${pad('Custody P', 10)} ${pad('redact-pii R', 13)} redact-pii P`);
const row = (s: TypeScore | undefined) => (s ? [pct(s.recall), pct(s.precision)] : ['-', '-']);
for (const t of types) {
  const c = custodyScores.get(t)!;
  const shared = Object.values(REDACT_PII_TYPES).includes(t);
  const [rr, rp] = shared ? row(redactScores.get(t)) : ['-', '-'];
  console.log(`   ${pad(t + (shared ? ' *' : ''), 16)} ${pad(c.labels, 7)} ${pad(pct(c.recall), 10)} ${pad(pct(c.precision), 10)} ${pad(rr!, 13)} ${rp}`);
}
const lc = leaked((t) => custodyMask(t).log as string);
const lr = leaked((t) => defaultRedactor.redact(t));
console.log(`   planted values left verbatim in the output: Custody ${lc.leaked}/${lc.total} (${((100 * lc.leaked) / lc.total).toFixed(1)}%), redact-pii default ${lr.leaked}/${lr.total} (${((100 * lr.leaked) / lr.total).toFixed(1)}%)`);

// 2. throughput: per file, each timed round of the engine followed by one of the reference pass, so
// that machine load hits both alike; the corpus figure is total bytes over total time.
const ref = /\d/g;
const refPass = (t: string) => {
  ref.lastIndex = 0;
  while (ref.exec(t));
};
const typical = createMaskingEngine(
  { detectors: [], masking: [{ id: 'pii-out', detectors: ['credit_card', 'us_ssn', 'email', 'aws_access_key'], scope: ['client', 'upstream'], strategy: 'redact', keepLast: 4 }] },
  { hmacKey: Buffer.alloc(32, 1) },
).forConnection({ name: 'bench', kind: 'http', upstream: 'http://127.0.0.1:9' })!;
interface FileRate {
  file: string;
  bytes: number;
  values: number;
  all: number;
  typical: number;
  ref: number;
}
function timeOf(fn: () => void, minMs: number): number {
  let n = 0;
  const t0 = performance.now();
  do {
    fn();
    n++;
  } while (performance.now() - t0 < minMs);
  return (performance.now() - t0) / n;
}
const rates: FileRate[] = corpus.map((d) => {
  const bytes = Buffer.byteLength(d.text);
  const buf = Buffer.from(d.text);
  const all: number[] = [];
  const typ: number[] = [];
  const refs: number[] = [];
  masker.request('/', 'text/plain', buf);
  typical.request('/', 'text/plain', buf);
  for (let r = 0; r < 7; r++) {
    all.push(timeOf(() => masker.request('/', 'text/plain', buf), 60));
    typ.push(timeOf(() => typical.request('/', 'text/plain', buf), 60));
    refs.push(timeOf(() => refPass(d.text), 60));
  }
  const med = (xs: number[]) => xs.sort((x, y) => x - y)[3]!;
  return { file: d.file, bytes, values: d.labels.length, all: med(all), typical: med(typ), ref: med(refs) };
});
const sum = (f: (r: FileRate) => number) => rates.reduce((n, r) => n + f(r), 0);
const mbs = (bytes: number, ms: number) => bytes / 1e3 / ms;
const allRate = mbs(totalBytes, sum((r) => r.all));
const typicalRate = mbs(totalBytes, sum((r) => r.typical));
const refRate = mbs(totalBytes, sum((r) => r.ref));
const texts = corpus.map((d) => d.text);
const comparableRate = mbPerSecond(() => texts.forEach((t) => comparableRedactor.redact(t)), totalBytes, 400, 3);
const defaultRate = mbPerSecond(() => texts.forEach((t) => defaultRedactor.redact(t)), totalBytes, 400, 3);
console.log('\n2. Throughput (MB/s of UTF-8 input; medians of interleaved rounds)');
console.log(`   ${pad('file', 24)} ${pad('KiB', 6)} ${pad('values', 7)} ${pad('all 23 detectors', 17)} ${pad('example rule', 13)} reference /\\d/g pass`);
for (const r of rates)
  console.log(`   ${pad(r.file, 24)} ${pad((r.bytes / 1024).toFixed(0), 6)} ${pad(r.values, 7)} ${pad(mbs(r.bytes, r.all).toFixed(1), 17)} ${pad(mbs(r.bytes, r.typical).toFixed(1), 13)} ${mbs(r.bytes, r.ref).toFixed(1)}`);
console.log(`   ${pad('whole corpus', 24)} ${pad((totalBytes / 1024).toFixed(0), 6)} ${pad(corpus.reduce((n, d) => n + d.labels.length, 0), 7)} ${pad(allRate.toFixed(1), 17)} ${pad(typicalRate.toFixed(1), 13)} ${refRate.toFixed(1)}`);
console.log(`   bar ≥ 50 MB/s with the default (all built-in) detectors on the whole corpus: ${allRate >= 50 ? 'met' : 'NOT met'} (${allRate.toFixed(1)} MB/s = ${(allRate / refRate).toFixed(2)} × the reference pass in the same run)`);
console.log(`   example rule = credit_card, us_ssn, email, aws_access_key (DESIGN.md)`);
console.log(`   redact-pii, comparable redactors  ${comparableRate.toFixed(1).padStart(7)} MB/s   Custody (all detectors) ×${(allRate / comparableRate).toFixed(1)}`);
console.log(`   redact-pii, default (with names)  ${defaultRate.toFixed(1).padStart(7)} MB/s   Custody (all detectors) ×${(allRate / defaultRate).toFixed(1)}`);

// 3. streaming latency per chunk
const chat = corpus.find((d) => d.file === 'chat-transcripts.txt')!.text;
const deltas: string[] = [];
for (let i = 0, k = 0; i < chat.length; k++) {
  const n = 3 + ((k * 7) % 10); // 3–12 characters, like LLM token deltas
  deltas.push(chat.slice(i, i + n));
  i += n;
}
const events: SseEvent[] = deltas.map((content) => ({ data: JSON.stringify({ id: 'chatcmpl-bench', object: 'chat.completion.chunk', created: 1, model: 'gpt-4o', choices: [{ index: 0, delta: { content }, finish_reason: null }] }) }));
function perChunk(fn: (e: SseEvent) => void): number[] {
  const times: number[] = [];
  for (const e of events) {
    const t0 = performance.now();
    fn(e);
    times.push((performance.now() - t0) * 1000);
  }
  return times.sort((a, b) => a - b);
}
const q = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const base = [perChunk((e) => JSON.stringify(JSON.parse(e.data))), perChunk((e) => JSON.stringify(JSON.parse(e.data)))][1]!;
let held = 0;
let bound = 0;
const runStream = () => {
  const s = engine.forConnection({ name: 'bench', kind: 'openai', upstream: 'http://127.0.0.1:9' })!.stream('/chat/completions') as import('../proxy/masking/stream').SseStreamMasker;
  const t = perChunk((e) => s.push(e));
  s.end();
  held = s.maxHeld;
  bound = s.holdbackBound;
  return t;
};
runStream();
const stream = runStream();
console.log(`\n3. Streaming: ${events.length} OpenAI chat chunks of 3–12 characters (the chat transcripts)`);
console.log(`   StreamMasker.push per chunk: mean ${mean(stream).toFixed(1)} µs, p50 ${q(stream, 0.5).toFixed(1)} µs, p99 ${q(stream, 0.99).toFixed(1)} µs`);
console.log(`   baseline JSON.parse+stringify: mean ${mean(base).toFixed(1)} µs, p50 ${q(base, 0.5).toFixed(1)} µs → masking adds ${(mean(stream) - mean(base)).toFixed(1)} µs per chunk on average`);
console.log(`   most characters held back at once: ${held} (bound with these detectors: ${bound}, reached only inside a private-key block)`);
