/**
 * Masks Server-Sent Event streams event by event (OpenAI Chat Completions chunks, OpenAI Responses
 * events, Anthropic Messages events). Text that arrives in pieces — a choice's `delta.content`, a
 * tool call's `function.arguments`, a Responses `*.delta`, an Anthropic `text_delta` or
 * `input_json_delta` — flows through a TextChannel that holds back only the trailing characters
 * that could still become part of a match, and emits the rest at once by rewriting the event's
 * delta. Events without text pass through unchanged, in order; before an event that ends a piece
 * of text (finish_reason, `*.done`, content_block_stop, usage, [DONE]) the held text is flushed in
 * a synthesized delta event of the same shape.
 */
import type { MaskSpan } from '../../shared/events';
import type { Detector } from './detectors';
import { addCounts, jsonPointer, type MaskPlan, type TerminalRender } from './rules';
import { analyzeRegex, type Match } from './scanner';
import { anthropicBlock, anthropicLeaves, type JsonPath, type LeafVisitor, openAiItem, openAiLeaves, allStringLeaves, STRUCTURAL_KEYS } from './structure';
import { projectedOffset, withoutEscapes } from './terminal-width';
import type { SseEvent, StreamChunkResult, StreamMasker } from './types';

/** Characters of already-emitted text kept as left context (keywords such as "DOB:", "Bearer"). */
export const CONTEXT_CHARS = 256;
/** Of that context, how much the candidate passes re-read on each chunk (see ScanOptions.scanFrom). */
const RESCAN_CHARS = 112;

/**
 * One alternative of the tail patterns, searched only where a match ending at the end of the buffer
 * can start: within its longest match of the end. A plain character-class run (`[…]{m,n}`, with an
 * optional leading class) is found by walking back from the end instead, because a `[…]{1,330}$`
 * search retries the whole run at every start position when the run ends before the buffer does.
 */
interface TailPart {
  maxLength: number;
  re?: RegExp;
  /** For a class run: which ASCII characters the run and its optional first character accept. */
  run?: { body: Uint8Array; bodyRe: RegExp; first?: Uint8Array; firstRe?: RegExp; min: number; max: number };
}

/** Splits a regex source at its top-level `|`. */
export function topLevelAlternatives(source: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let inClass = false;
  let last = 0;
  for (let i = 0; i < source.length; i++) {
    const c = source[i];
    if (c === '\\') i++;
    else if (inClass) inClass = c !== ']';
    else if (c === '[') inClass = true;
    else if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === '|' && depth === 0) {
      out.push(source.slice(last, i));
      last = i + 1;
    }
  }
  out.push(source.slice(last));
  return out;
}

const CLASS_RUN = /^(?:\[((?:\\.|[^\]\\])+)\])?\[((?:\\.|[^\]\\])+)\]\{(\d+),(\d+)\}$/;

function asciiTable(re: RegExp): Uint8Array {
  const t = new Uint8Array(128);
  for (let c = 0; c < 128; c++) t[c] = re.test(String.fromCharCode(c)) ? 1 : 0;
  return t;
}

function compileTailPart(source: string, flags: string): TailPart {
  const maxLength = analyzeRegex(source).maxLength;
  const run = CLASS_RUN.exec(source);
  if (run) {
    const bodyRe = new RegExp(`[${run[2]}]`, flags);
    const firstRe = run[1] !== undefined ? new RegExp(`[${run[1]}]`, flags) : undefined;
    return { maxLength, run: { body: asciiTable(bodyRe), bodyRe, first: firstRe && asciiTable(firstRe), firstRe, min: Number(run[3]), max: Number(run[4]) } };
  }
  return { maxLength, re: new RegExp(`(?:${source})$`, `g${flags}`) };
}

function accepts(table: Uint8Array, re: RegExp, text: string, i: number): boolean {
  const c = text.charCodeAt(i);
  return c < 128 ? table[c] === 1 : re.test(text[i]!);
}

/** Earliest start ≥ from of a class-run tail that ends at the end of `text`, or -1. */
function classRunStart(r: NonNullable<TailPart['run']>, text: string, from: number): number {
  const end = text.length;
  // the longest suffix the repeated class accepts (up to its maximum)
  let q = end;
  while (q > from && end - q < r.max && accepts(r.body, r.bodyRe, text, q - 1)) q--;
  if (!r.first) return end - q >= Math.max(1, r.min) ? q : -1;
  // a leading character, then between min and max characters of the run
  for (let p = Math.max(from, q - 1); p < end; p++) if (end - p - 1 >= r.min && end - p - 1 <= r.max && accepts(r.first, r.firstRe!, text, p)) return p;
  return -1;
}

/** Holdback machinery for one plan: the tail patterns and the bound they imply. */
export class Holdback {
  private readonly parts: TailPart[] = [];
  /** Fixed holdback for detectors without a tail pattern (custom detectors). */
  private readonly fixed: number;
  /** Most characters a channel ever holds back with this plan (see docs/MASKING.md). */
  readonly bound: number;

  constructor(detectors: readonly Detector[]) {
    for (const ci of [false, true]) {
      const sources = new Set(detectors.filter((d) => d.tail && !!d.tailCaseInsensitive === ci).flatMap((d) => topLevelAlternatives(d.tail!)));
      for (const source of sources) this.parts.push(compileTailPart(source, ci ? 'i' : ''));
    }
    this.fixed = Math.max(0, ...detectors.filter((d) => !d.tail).map((d) => d.maxLength + (d.holdExtra ?? 1)));
    this.bound = Math.max(this.fixed, ...detectors.map((d) => holdbackOf(d)));
  }

  /** Offset in `text` from which characters must be held (≥ from). */
  cut(text: string, from: number): number {
    let cut = text.length;
    for (const part of this.parts) {
      const start = Math.max(from, text.length - part.maxLength);
      if (start >= cut) continue;
      if (part.run) {
        const p = classRunStart(part.run, text, start);
        if (p !== -1 && p < cut) cut = p;
        continue;
      }
      const re = part.re!;
      re.lastIndex = start;
      const m = re.exec(text);
      if (m && m.index < cut) cut = m.index;
    }
    if (this.fixed) cut = Math.min(cut, text.length - this.fixed);
    return Math.max(cut, from);
  }
}

/**
 * Longest hold a detector can cause: the longest match its tail pattern can make (every tail is
 * bounded), or for a detector without one its longest match plus the characters its look-around
 * and context words need.
 */
export function holdbackOf(d: Detector): number {
  if (!d.tail) return d.maxLength + (d.holdExtra ?? 1);
  return analyzeRegex(d.tail).maxLength;
}

export interface ChannelOutput {
  fwd: string;
  log: string;
  /** Spans within `log`. */
  spans: MaskSpan[];
  counts: Record<string, number>;
}

/** One piece of streamed text (a choice's content, a tool call's arguments, a content block). */
const isHighSurrogate = (c: number) => c >= 0xd800 && c <= 0xdbff;

export class TextChannel {
  private pending = '';
  private context = '';
  /** Longest holdback seen, for tests and metrics. */
  maxHeld = 0;

  constructor(
    private readonly plan: MaskPlan,
    private readonly holdback: Holdback,
    /**
     * Terminal output (terminal-width.ts): scanned as printed, without its escape sequences, and
     * masked values written as wide as they were (`screen`) or as their label (`label`).
     */
    private readonly terminal?: TerminalRender,
  ) {}

  get held(): number {
    return this.pending.length;
  }

  /** Adds `delta`; returns what can be emitted now. `final` flushes everything. */
  push(delta: string, final = false, deadline = this.plan.deadline()): ChannelOutput {
    if (this.inKey) return this.continueKey(delta, final, deadline);
    const text = this.context + this.pending + delta;
    const from = this.context.length;
    const { matches, cut } = this.terminal && text.includes('\x1b') ? this.scanAsPrinted(text, from, deadline) : { matches: this.plan.scan(text, deadline, from, undefined, Math.max(0, from - RESCAN_CHARS)), cut: () => this.holdback.cut(text, from) };
    let emitEnd = final ? text.length : cut();
    // Never between the two halves of a character outside the BMP (an emoji): a lone half is not UTF-8.
    if (emitEnd > from && emitEnd < text.length && isHighSurrogate(text.charCodeAt(emitEnd - 1))) emitEnd--;
    for (const m of matches) if (m.start < emitEnd && m.end > emitEnd) emitEnd = m.end;
    const emitted = matches.filter((m) => m.start < emitEnd).map((m) => ({ ...m, start: m.start - from, end: m.end - from }));
    const raw = text.slice(from, emitEnd);
    this.pending = text.slice(emitEnd);
    this.context = (this.context + raw).slice(-CONTEXT_CHARS);
    if (this.pending.length > this.maxHeld) this.maxHeld = this.pending.length;
    // A private key longer than the holdback bound is emitted masked up to here; the rest of its
    // block (until the END line) is swallowed as it arrives.
    const last = emitted[emitted.length - 1];
    if (!final && last && last.detector.id === 'private_key' && last.end === raw.length && !/-----END /.test(raw.slice(last.start))) this.inKey = true;
    const { fwd, log } = this.plan.renderBoth(raw, emitted, '', this.terminal);
    return { fwd: fwd.text, log: log.text, spans: log.spans, counts: log.counts };
  }

  /**
   * A terminal's text is scanned as printed, without its escape sequences (terminal-width.ts), and
   * held back by what is printed; offsets come back in the original text, sequences included.
   */
  private scanAsPrinted(text: string, from: number, deadline: number): { matches: Match[]; cut: () => number } {
    const p = withoutEscapes(text);
    const pFrom = projectedOffset(p, from);
    const matches = this.plan.scan(p.text, deadline, pFrom, undefined, Math.max(0, pFrom - RESCAN_CHARS)).map((m) => ({ ...m, start: p.at[m.start]!, end: p.at[m.end - 1]! + 1 }));
    return { matches, cut: () => Math.max(from, p.at[this.holdback.cut(p.text, pFrom)]!) };
  }

  /** Inside a private key block already masked: drop text up to and including its END line. */
  private inKey = false;
  private continueKey(delta: string, final: boolean, deadline: number): ChannelOutput {
    const buf = this.pending + delta;
    const end = /-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----/.exec(buf);
    if (end) {
      this.inKey = false;
      this.pending = '';
      this.context = '';
      return this.push(buf.slice(end.index + end[0].length), final, deadline);
    }
    // keep what could be the start of the END line; drop the rest of the key
    const partial = final ? null : /-{1,5}(?:E(?:N(?:D(?: [A-Z0-9 ]{0,40})?)?)?)?$/.exec(buf);
    this.pending = partial ? buf.slice(partial.index) : '';
    if (final) this.inKey = false;
    return { fwd: '', log: '', spans: [], counts: {} };
  }

  flush(): ChannelOutput {
    return this.push('', true);
  }
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A pending text piece and how to wrap its flushed text into an event of the stream's own shape. */
interface OpenChannel {
  channel: TextChannel;
  /** Builds the event that carries `text`; `path` is where the text sits in the event's data. */
  synth: (text: string) => { event?: string; data: Obj; path: JsonPath };
  group: string;
}

/** One field of an event to rewrite. */
interface Edit {
  path: JsonPath;
  fwd: string;
  log: string;
  spans: MaskSpan[];
}

class Collector {
  readonly forward: SseEvent[] = [];
  readonly log: SseEvent[] = [];
  readonly spans: MaskSpan[] = [];
  readonly counts: Record<string, number> = {};

  emit(fwd: SseEvent, log: SseEvent, spans: MaskSpan[], pointerPrefix: string): void {
    const index = this.log.length;
    this.forward.push(fwd);
    this.log.push(log);
    for (const s of spans) this.spans.push({ ...s, path: `/${index}/data${pointerPrefix}${s.path ?? ''}` });
  }

  result(): StreamChunkResult {
    return { forward: this.forward, log: this.log, spans: this.spans, counts: this.counts };
  }
}

function setAt(root: unknown, path: JsonPath, value: unknown): void {
  let o = root as Record<string | number, unknown>;
  for (let i = 0; i < path.length - 1; i++) o = o[path[i]!] as Record<string | number, unknown>;
  o[path[path.length - 1]!] = value;
}

function withData(ev: SseEvent, data: string): SseEvent {
  const out: SseEvent = { ...ev, data };
  return out;
}

/** See the file comment. One instance per streamed response. */
export class SseStreamMasker implements StreamMasker {
  private readonly channels = new Map<string, OpenChannel>();
  private readonly holdback: Holdback;
  /** Most characters any channel held at once. */
  maxHeld = 0;

  constructor(private readonly plan: MaskPlan) {
    this.holdback = new Holdback(plan.scanDetectors);
  }

  /** The holdback bound of this stream's detectors, in UTF-16 units. */
  get holdbackBound(): number {
    return this.holdback.bound;
  }

  /** Characters held right now, over all channels. */
  get held(): number {
    let n = 0;
    for (const c of this.channels.values()) n += c.channel.held;
    return n;
  }

  push(event: SseEvent): StreamChunkResult {
    const out = new Collector();
    const deadline = this.plan.deadline();
    const data = event.data;
    let obj: unknown;
    if (data && data !== '[DONE]' && (data[0] === '{' || data[0] === '[')) {
      try {
        obj = JSON.parse(data);
      } catch {
        obj = undefined;
      }
    }
    if (data === '[DONE]') {
      this.flushGroups(out, () => true);
      out.emit(event, event, [], '');
    } else if (!isObj(obj)) this.plainEvent(event, out, deadline);
    else {
      const type = typeof obj['type'] === 'string' ? (obj['type'] as string) : (event.event ?? '');
      if (type.startsWith('response.')) this.responsesEvent(event, obj, type, out, deadline);
      else if (ANTHROPIC_TYPES.has(type)) this.anthropicEvent(event, obj, type, out, deadline);
      else if (Array.isArray(obj['choices']) || obj['object'] === 'chat.completion.chunk' || obj['object'] === 'text_completion') this.chatEvent(event, obj, out, deadline);
      else this.wholeEvent(event, obj, out, deadline, (o, v) => allStringLeaves(o, [], v, STRUCTURAL_KEYS));
    }
    this.trackHeld();
    return out.result();
  }

  end(): StreamChunkResult {
    const out = new Collector();
    this.flushGroups(out, () => true);
    return out.result();
  }

  private trackHeld(): void {
    for (const c of this.channels.values()) if (c.channel.held > this.maxHeld) this.maxHeld = c.channel.held;
  }

  private channel(key: string, group: string, synth: OpenChannel['synth']): OpenChannel {
    let ch = this.channels.get(key);
    if (!ch) {
      ch = { channel: new TextChannel(this.plan, this.holdback), synth, group };
      this.channels.set(key, ch);
    }
    return ch;
  }

  /** Flushes the channels of the groups `which` selects, emitting one synthesized event each. */
  private flushGroups(out: Collector, which: (group: string, key: string) => boolean): void {
    for (const [key, ch] of this.channels) {
      if (!which(ch.group, key)) continue;
      this.channels.delete(key);
      const r = ch.channel.flush();
      if (!r.fwd && !r.log) continue;
      const f = ch.synth(r.fwd);
      const l = ch.synth(r.log);
      addCounts(out.counts, r.counts);
      out.emit(
        { ...(f.event ? { event: f.event } : {}), data: JSON.stringify(f.data) },
        { ...(l.event ? { event: l.event } : {}), data: JSON.stringify(l.data) },
        r.spans.map((s) => ({ ...s, path: jsonPointer(l.path) })),
        '',
      );
    }
  }

  /** Applies edits to the event (re-serialising only a side that changed) and emits it. */
  private emitEdited(event: SseEvent, obj: Obj, edits: Edit[], out: Collector, extra?: (side: Obj, which: 'fwd' | 'log') => boolean): void {
    const build = (which: 'fwd' | 'log'): SseEvent => {
      const original = JSON.parse(event.data) as Obj;
      let changed = false;
      for (const e of edits) {
        const v = which === 'fwd' ? e.fwd : e.log;
        let cur: unknown = original;
        for (const k of e.path) cur = (cur as Record<string | number, unknown>)[k];
        if (cur !== v) {
          setAt(original, e.path, v);
          changed = true;
        }
      }
      if (extra?.(original, which)) changed = true;
      return changed ? withData(event, JSON.stringify(original)) : event;
    };
    void obj;
    const spans: MaskSpan[] = [];
    for (const e of edits) for (const s of e.spans) spans.push({ ...s, path: jsonPointer(e.path) });
    const log = build('log');
    // the same rewrite serves both sides when every rule masks the forward scope too
    const same = this.plan.forwardActive && edits.every((e) => e.fwd === e.log);
    out.emit(same ? log : build('fwd'), log, spans, '');
  }

  /** Masks every maskable string of a complete event (no holdback: the strings are whole). */
  private wholeEvent(event: SseEvent, obj: Obj, out: Collector, deadline: number, walk: (o: Obj, visit: LeafVisitor) => void): void {
    const edits: Edit[] = [];
    walk(obj, (container, key, path) => {
      const value = (container as Record<string | number, unknown>)[key] as string;
      const matches = this.plan.scan(value, deadline);
      if (!matches.length) return;
      const f = this.plan.render(value, matches, this.plan.forward, undefined);
      const l = this.plan.render(value, matches, 'log', '');
      addCounts(out.counts, l.counts);
      edits.push({ path, fwd: f.text, log: l.text, spans: l.spans });
    });
    if (!edits.length) out.emit(event, event, [], '');
    else this.emitEdited(event, obj, edits, out);
  }

  private plainEvent(event: SseEvent, out: Collector, deadline: number): void {
    const matches = this.plan.scan(event.data, deadline);
    if (!matches.length) {
      out.emit(event, event, [], '');
      return;
    }
    const f = this.plan.render(event.data, matches, this.plan.forward, undefined);
    const l = this.plan.render(event.data, matches, 'log', '');
    addCounts(out.counts, l.counts);
    out.forward.push(withData(event, f.text));
    const index = out.log.length;
    out.log.push(withData(event, l.text));
    for (const s of l.spans) out.spans.push({ ...s, path: `/${index}/data` });
  }

  private pushText(ch: OpenChannel, text: string, path: JsonPath, edits: Edit[], out: Collector, deadline: number): void {
    const r = ch.channel.push(text, false, deadline);
    addCounts(out.counts, r.counts);
    edits.push({ path, fwd: r.fwd, log: r.log, spans: r.spans });
  }

  // ---- OpenAI Chat Completions (and legacy Completions) chunks ----

  private chatEvent(event: SseEvent, obj: Obj, out: Collector, deadline: number): void {
    const edits: Edit[] = [];
    const choices = obj['choices'] as unknown[];
    const template = (): Obj => {
      const t: Obj = {};
      for (const k of ['id', 'object', 'created', 'model', 'system_fingerprint', 'service_tier']) if (obj[k] !== undefined) t[k] = obj[k];
      return t;
    };
    const finishing = new Set<number>();
    const editsByKey = new Map<string, Edit>();
    const push = (ch: OpenChannel, key: string, text: string, path: JsonPath) => {
      this.pushText(ch, text, path, edits, out, deadline);
      editsByKey.set(key, edits[edits.length - 1]!);
    };
    choices.forEach((c, ci) => {
      if (!isObj(c)) return;
      const idx = typeof c['index'] === 'number' ? c['index'] : ci;
      const group = `choice:${idx}`;
      const delta = c['delta'];
      if (isObj(delta)) {
        for (const field of ['content', 'refusal', 'reasoning_content']) {
          if (typeof delta[field] !== 'string') continue;
          const key = `${group}:${field}`;
          const ch = this.channel(key, group, (text) => ({
            data: { ...template(), choices: [{ index: idx, delta: { [field]: text }, logprobs: null, finish_reason: null }] },
            path: ['choices', 0, 'delta', field],
          }));
          push(ch, key, delta[field] as string, ['choices', ci, 'delta', field]);
        }
        const calls = delta['tool_calls'];
        if (Array.isArray(calls))
          calls.forEach((tc, j) => {
            if (!isObj(tc) || !isObj(tc['function']) || typeof tc['function']['arguments'] !== 'string') return;
            const tIdx = typeof tc['index'] === 'number' ? tc['index'] : j;
            const key = `${group}:tool:${tIdx}`;
            const ch = this.channel(key, group, (text) => ({
              data: { ...template(), choices: [{ index: idx, delta: { tool_calls: [{ index: tIdx, function: { arguments: text } }] }, logprobs: null, finish_reason: null }] },
              path: ['choices', 0, 'delta', 'tool_calls', 0, 'function', 'arguments'],
            }));
            push(ch, key, tc['function']['arguments'] as string, ['choices', ci, 'delta', 'tool_calls', j, 'function', 'arguments']);
          });
        if (isObj(delta['function_call']) && typeof delta['function_call']['arguments'] === 'string') {
          const key = `${group}:function_call`;
          const ch = this.channel(key, group, (text) => ({
            data: { ...template(), choices: [{ index: idx, delta: { function_call: { arguments: text } }, finish_reason: null }] },
            path: ['choices', 0, 'delta', 'function_call', 'arguments'],
          }));
          push(ch, key, delta['function_call']['arguments'] as string, ['choices', ci, 'delta', 'function_call', 'arguments']);
        }
      }
      if (typeof c['text'] === 'string') {
        const key = `${group}:text`;
        const ch = this.channel(key, group, (text) => ({ data: { ...template(), choices: [{ index: idx, text, logprobs: null, finish_reason: null }] }, path: ['choices', 0, 'text'] }));
        push(ch, key, c['text'], ['choices', ci, 'text']);
      }
      if (c['finish_reason'] !== null && c['finish_reason'] !== undefined) finishing.add(idx);
    });
    // A choice that finishes: its held text goes first — appended to this chunk's own text for
    // that channel when it carries some, else in a synthesized delta chunk just before this one.
    if (finishing.size) {
      const finishes = (group: string) => finishing.has(Number(group.slice('choice:'.length)));
      this.flushGroups(out, (g, k) => finishes(g) && !editsByKey.has(k));
      for (const [key, e] of editsByKey) {
        const ch = this.channels.get(key);
        if (!ch || !finishes(ch.group)) continue;
        this.channels.delete(key);
        const r = ch.channel.flush();
        addCounts(out.counts, r.counts);
        const base = e.log.length;
        e.fwd += r.fwd;
        e.log += r.log;
        for (const sp of r.spans) e.spans.push({ ...sp, start: sp.start + base, end: sp.end + base });
      }
    }
    if (!choices.length && obj['usage']) this.flushGroups(out, () => true);
    const stripLogprobs = (side: Obj, which: 'fwd' | 'log'): boolean => {
      if (which === 'fwd' && !this.plan.forwardActive) return false;
      let changed = false;
      for (const c of side['choices'] as unknown[]) {
        if (isObj(c) && c['logprobs'] !== undefined && c['logprobs'] !== null) {
          c['logprobs'] = null; // token logprobs repeat the original text
          changed = true;
        }
      }
      return changed;
    };
    this.emitEdited(event, obj, edits, out, stripLogprobs);
  }

  // ---- OpenAI Responses events ----

  private responsesEvent(event: SseEvent, obj: Obj, type: string, out: Collector, deadline: number): void {
    const base = type.replace(/\.(delta|done)$/, '');
    const indices = ['output_index', 'content_index', 'summary_index'].map((k) => (typeof obj[k] === 'number' ? obj[k] : '')).join(':');
    const key = `${base}:${indices}`;
    if (type.endsWith('.delta') && typeof obj['delta'] === 'string') {
      const edits: Edit[] = [];
      const ch = this.channel(key, `resp:${obj['output_index'] ?? ''}`, (text) => {
        const data: Obj = { type, sequence_number: obj['sequence_number'] };
        for (const k of ['item_id', 'output_index', 'content_index', 'summary_index']) if (obj[k] !== undefined) data[k] = obj[k];
        data['delta'] = text;
        if (Array.isArray(obj['logprobs'])) data['logprobs'] = [];
        return { event: event.event, data, path: ['delta'] };
      });
      this.pushText(ch, obj['delta'], ['delta'], edits, out, deadline);
      this.emitEdited(event, obj, edits, out, (side, which) => {
        if ((which === 'log' || this.plan.forwardActive) && Array.isArray(side['logprobs']) && side['logprobs'].length) {
          side['logprobs'] = [];
          return true;
        }
        return false;
      });
      return;
    }
    if (type.endsWith('.done')) this.flushGroups(out, (_g, k) => k === key);
    if (type === 'response.output_item.done') this.flushGroups(out, (g) => g === `resp:${obj['output_index'] ?? ''}`);
    if (type === 'response.completed' || type === 'response.incomplete' || type === 'response.failed') this.flushGroups(out, () => true);
    // Complete text (done events, items, parts, whole responses): masked as a whole, which gives the
    // same result as the masked deltas because both run the same detectors over the same text.
    this.wholeEvent(event, obj, out, deadline, (o, visit) => {
      for (const k of ['text', 'arguments', 'refusal']) if (typeof o[k] === 'string') visit(o, k, [k]);
      if (o['part'] !== undefined) openAiItem(o['part'], o, 'part', ['part'], visit);
      if (o['item'] !== undefined) openAiItem(o['item'], o, 'item', ['item'], visit);
      if (isObj(o['response'])) openAiLeaves(o['response'], visit, ['response']);
    });
  }

  // ---- Anthropic Messages events ----

  private anthropicEvent(event: SseEvent, obj: Obj, type: string, out: Collector, deadline: number): void {
    const index = typeof obj['index'] === 'number' ? obj['index'] : 0;
    switch (type) {
      case 'content_block_delta': {
        const delta = obj['delta'];
        if (!isObj(delta)) break;
        const field = delta['type'] === 'input_json_delta' ? 'partial_json' : delta['type'] === 'thinking_delta' ? 'thinking' : delta['type'] === 'text_delta' ? 'text' : undefined;
        if (!field || typeof delta[field] !== 'string') break;
        const deltaType = delta['type'] as string;
        const edits: Edit[] = [];
        const ch = this.channel(`block:${index}:${field}`, `block:${index}`, (text) => ({
          event: event.event,
          data: { type: 'content_block_delta', index, delta: { type: deltaType, [field]: text } },
          path: ['delta', field],
        }));
        this.pushText(ch, delta[field] as string, ['delta', field], edits, out, deadline);
        this.emitEdited(event, obj, edits, out);
        return;
      }
      case 'content_block_stop':
        this.flushGroups(out, (g) => g === `block:${index}`);
        break;
      case 'message_delta':
      case 'message_stop':
        this.flushGroups(out, () => true);
        break;
      case 'content_block_start':
        this.wholeEvent(event, obj, out, deadline, (o, visit) => anthropicBlock(o['content_block'], o, 'content_block', [], visit));
        return;
      case 'message_start':
        this.wholeEvent(event, obj, out, deadline, (o, visit) => anthropicLeaves(o['message'], visit, ['message']));
        return;
    }
    if (type === 'error') {
      this.wholeEvent(event, obj, out, deadline, (o, visit) => allStringLeaves(o, [], visit, STRUCTURAL_KEYS));
      return;
    }
    out.emit(event, event, [], '');
  }
}

const ANTHROPIC_TYPES = new Set(['message_start', 'content_block_start', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop', 'ping', 'error']);
