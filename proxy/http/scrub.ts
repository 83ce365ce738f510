/**
 * Keeps the connection's upstream credential from reaching a client or the log (docs/HTTP.md,
 * "The upstream credential"). An upstream that echoes the request's `Authorization` header — in a
 * response header, an error message, a debug body, a streamed answer — would otherwise hand the
 * secret to whoever holds a Custody key.
 *
 * The secret is looked for as sent, URL-encoded, JSON-escaped and inside base64 (as in `Basic`
 * auth, where it sits after `user:` at any byte alignment: the base64 characters that depend only
 * on the secret's bytes are searched for, at each of the three alignments, in the standard and the
 * URL-safe alphabet). Each occurrence becomes `[REDACTED]`.
 *
 * - headers and bodies relayed whole: replaced in place;
 * - bodies relayed as they arrive: a `ByteScrubStream` holds back only a trailing run of bytes that
 *   could still grow into an occurrence (at most the longest form's length minus one);
 * - event streams: a `SseStreamMasker` with the credential as its one detector, so a secret split
 *   across deltas (and across events) is caught with the same bounded holdback masking uses.
 */
import type { OutgoingHttpHeaders } from 'node:http';
import type { Detector } from '../masking/detectors';
import { type CompiledRule, MaskPlan } from '../masking/rules';
import { SseStreamMasker } from '../masking/stream';
import type { SseEvent, StreamMasker } from '../masking/types';
import { MIN_SCRUBBED_SECRET } from '../../shared/upstream-credentials';

export const REDACTED = '[REDACTED]';
/** Scan budget per stream event; looking for fixed strings stays far below it. */
const SCRUB_BUDGET_MS = 500;

const REDACTED_BYTES = Buffer.from(REDACTED);

/** The base64 characters of `bytes` that do not depend on what precedes or follows them, at each alignment. */
function base64Cores(bytes: Buffer): string[] {
  const out = new Set<string>();
  for (let k = 0; k < 3; k++) {
    const enc = Buffer.concat([Buffer.alloc(k), bytes]).toString('base64');
    const skip = k === 0 ? 0 : Math.floor((8 * k - 1) / 6) + 1;
    const end = Math.floor((8 * (k + bytes.length)) / 6);
    const core = enc.slice(skip, end);
    if (core.length >= MIN_SCRUBBED_SECRET) {
      out.add(core);
      out.add(core.replace(/\+/g, '-').replace(/\//g, '_'));
    }
  }
  return [...out];
}

/** The forms of `secret` looked for, longest first. */
export function secretForms(secret: string): string[] {
  const forms = new Set<string>([secret]);
  const url = encodeURIComponent(secret);
  forms.add(url);
  forms.add(url.replace(/%[0-9A-F]{2}/g, (m) => m.toLowerCase()));
  const json = JSON.stringify(secret).slice(1, -1);
  forms.add(json);
  forms.add(json.replace(/\//g, '\\/'));
  for (const core of base64Cores(Buffer.from(secret, 'utf8'))) forms.add(core);
  return [...forms].sort((a, b) => b.length - a.length);
}

const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');

/**
 * In event streams, text that ends like the start of the secret is held back only from this many
 * characters on; a secret whose first few characters went out at the end of one delta is caught
 * when the rest arrives, and replaced from there. So deltas pass as the upstream cut them unless
 * one ends in STREAM_HOLD_FROM characters of a form (the first few of `sk-…` give nothing away).
 */
const STREAM_HOLD_FROM = 4;

/** `abcdef` → `abcd(?:e(?:f)?)?`: every prefix of STREAM_HOLD_FROM characters or more, for the holdback's tail. */
function prefixPattern(form: string): string {
  const chars = [...form];
  let src = '';
  for (let i = chars.length - 1; i >= STREAM_HOLD_FROM; i--) src = `(?:${escapeRegex(chars[i]!)}${src})?`;
  return chars.slice(0, STREAM_HOLD_FROM).map(escapeRegex).join('') + src;
}

interface Occurrence {
  index: number;
  length: number;
}

/** The scrubber of one connection's secret. */
export class SecretScrubber {
  private readonly forms: string[];
  private readonly needles: Buffer[];
  /** Longest form, in bytes. */
  private readonly maxBytes: number;
  /** Shortest form, in characters. */
  private readonly minChars: number;
  private plan: MaskPlan | undefined;

  /** The scrubber of `secret`; throws for one shorter than MIN_SCRUBBED_SECRET (refused at load: shortSecretProblem). */
  static for(secret: string): SecretScrubber {
    if (secret.length < MIN_SCRUBBED_SECRET) throw new Error(`a secret shorter than ${MIN_SCRUBBED_SECRET} characters cannot be scrubbed`);
    return new SecretScrubber(secret);
  }

  private constructor(secret: string) {
    this.forms = secretForms(secret);
    this.needles = this.forms.map((f) => Buffer.from(f, 'utf8'));
    this.maxBytes = Math.max(...this.needles.map((n) => n.length));
    this.minChars = Math.min(...this.forms.map((f) => f.length));
  }

  /** The leftmost occurrence at or after `from` (the longest form when several start there). */
  private next(buf: Buffer, from: number): Occurrence | undefined {
    let best: Occurrence | undefined;
    for (const n of this.needles) {
      const i = buf.indexOf(n, from);
      if (i !== -1 && (!best || i < best.index)) best = { index: i, length: n.length };
    }
    return best;
  }

  /**
   * Replaces the occurrences in `buf`; unless `final`, stops before a trailing run that could
   * still become one. Returns the scrubbed bytes and how much of `buf` they cover.
   */
  scrubUpTo(buf: Buffer, final: boolean): { out: Buffer; consumed: number } {
    const parts: Buffer[] = [];
    let pos = 0;
    for (let o = this.next(buf, 0); o; o = this.next(buf, pos)) {
      parts.push(buf.subarray(pos, o.index), REDACTED_BYTES);
      pos = o.index + o.length;
    }
    let consumed = buf.length;
    if (!final) {
      for (let i = Math.max(pos, buf.length - this.maxBytes + 1); i < buf.length; i++) {
        const rest = buf.subarray(i);
        if (this.needles.some((n) => n.length > rest.length && n.subarray(0, rest.length).equals(rest))) {
          consumed = i;
          break;
        }
      }
    }
    if (!parts.length) return { out: consumed === buf.length ? buf : buf.subarray(0, consumed), consumed };
    parts.push(buf.subarray(pos, consumed));
    return { out: Buffer.concat(parts), consumed };
  }

  /** `buf` with every occurrence replaced (the same buffer when there is none). */
  scrub(buf: Buffer): Buffer {
    return this.scrubUpTo(buf, true).out;
  }

  scrubText(text: string): string {
    // Most header values are shorter than any form of the secret: nothing to look for.
    if (text.length < this.minChars) return text;
    let found = false;
    for (const f of this.forms)
      if (text.includes(f)) {
        found = true;
        break;
      }
    if (!found) return text;
    let out = text;
    for (const f of this.forms) out = out.split(f).join(REDACTED);
    return out;
  }

  /** An event with its `event` and `id` fields scrubbed (its data goes through sseStream). */
  eventFields(e: SseEvent): SseEvent {
    const event = e.event !== undefined ? this.scrubText(e.event) : undefined;
    const id = e.id !== undefined ? this.scrubText(e.id) : undefined;
    return event === e.event && id === e.id ? e : { ...e, event, id };
  }

  /** Scrubs header values in place (names are the upstream's own and never carry the secret). */
  headers<H extends OutgoingHttpHeaders | Record<string, string | string[]>>(headers: H): H {
    for (const name in headers) {
      const v = headers[name];
      if (typeof v === 'string') (headers as Record<string, unknown>)[name] = this.scrubText(v);
      else if (Array.isArray(v)) (headers as Record<string, unknown>)[name] = v.map((x: string) => this.scrubText(x));
    }
    return headers;
  }

  /** A scrubber for a body relayed in pieces. */
  bodyStream(): ByteScrubStream {
    return new ByteScrubStream(this);
  }

  /**
   * A stream masker whose one detector is the credential, run before the connection's own masker
   * (whose spans then point into text that no longer holds the secret).
   */
  sseStream(): StreamMasker {
    this.plan ??= this.buildPlan(SCRUB_BUDGET_MS);
    return new SseStreamMasker(this.plan);
  }

  private buildPlan(budgetMs: number): MaskPlan {
    const forms = this.forms;
    const detector: Detector = {
      id: 'upstream_credential',
      type: 'REDACTED',
      kind: 'secret',
      description: "the connection's upstream credential",
      priority: 1_000_000,
      maxLength: Math.max(...forms.map((f) => f.length)),
      tail: forms.map(prefixPattern).join('|'),
      find(text, push) {
        for (const f of forms)
          for (let i = text.indexOf(f); i !== -1; i = text.indexOf(f, i + f.length)) {
            // The whole occurrence, and its rest after each of the first few characters: when those
            // were already sent (the stream's context), the rest is what can still be replaced.
            for (let k = 0; k < STREAM_HOLD_FROM; k++) push(i + k, i + f.length);
          }
      },
    };
    const scope = new Set(['client', 'upstream', 'log'] as const);
    const rule: CompiledRule = { id: 'upstream-credential', rule: { id: 'upstream-credential', detectors: [], scope: [...scope], strategy: 'redact', keepLast: 0 }, detectors: [detector], scope };
    return new MaskPlan([rule], 'client', [], { hmacKey: Buffer.alloc(32), budgetMs });
  }
}

/** See SecretScrubber.bodyStream. */
export class ByteScrubStream {
  private held: Buffer = Buffer.alloc(0);

  constructor(private readonly scrubber: SecretScrubber) {}

  push(chunk: Buffer): Buffer {
    const buf = this.held.length ? Buffer.concat([this.held, chunk]) : chunk;
    const { out, consumed } = this.scrubber.scrubUpTo(buf, false);
    this.held = Buffer.from(buf.subarray(consumed));
    return out;
  }

  end(): Buffer {
    const { out } = this.scrubber.scrubUpTo(this.held, true);
    this.held = Buffer.alloc(0);
    return out;
  }
}
