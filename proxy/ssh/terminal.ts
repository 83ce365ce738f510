/**
 * What an SSH channel's byte streams become in the record, as pure parts without sockets:
 *
 * - `OutputTap`: one output stream (stdout or stderr) toward the client. Text is decoded as UTF-8
 *   without splitting a character across chunks, masked with the bounded holdback of the HTTP
 *   streams (`fwd` for the client, `log` for the record), and kept for the record up to a limit.
 *   Output that is not UTF-8 is binary: it passes through, counted and hashed, never recorded.
 * - `EchoWatch`: input typed into a terminal is recorded only when the terminal echoed it. A line
 *   typed while echo is off (a password prompt) is recorded as its length and time only.
 */
import { createHash, type Hash } from 'node:crypto';
import { StringDecoder } from 'node:string_decoder';
import type { MaskSpan } from '../../shared/events';
import { reconstructLine, renderEcho } from '../../shared/shell-line';
import type { TextStreamMasker } from '../masking/types';

export class OutputTap {
  private readonly decoder = new StringDecoder('utf8');
  private readonly validator = new TextDecoder('utf-8', { fatal: true });
  /** What the record keeps (masked for the log), up to `limit` characters. */
  recorded = '';
  readonly spans: MaskSpan[] = [];
  readonly counts: Record<string, number> = {};
  bytes = 0;
  truncated = false;
  /** The stream turned out not to be text. */
  binary = false;
  private readonly hash: Hash = createHash('sha256');

  constructor(
    private readonly masker: TextStreamMasker | undefined,
    private readonly limit: number,
    /** Called with each piece as recorded (masked for the log), for frames of a terminal recording. */
    private readonly onLog?: (text: string, spans: MaskSpan[]) => void,
  ) {}

  /** One chunk from the upstream; returns what to send to the client now. */
  push(chunk: Buffer): Buffer | string {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    if (!this.binary) {
      try {
        this.validator.decode(chunk, { stream: true });
      } catch {
        this.binary = true;
        this.recorded = '';
        this.spans.length = 0;
        this.truncated = true;
      }
    }
    if (this.binary) {
      // Anything held back for masking goes out first, in order.
      const held = this.masker?.held ? this.masker.end().fwd : '';
      return held ? Buffer.concat([Buffer.from(held), chunk]) : chunk;
    }
    const text = this.decoder.write(chunk);
    if (!this.masker) {
      this.keep(text, []);
      return chunk;
    }
    const piece = this.masker.push(text);
    for (const [k, v] of Object.entries(piece.counts)) this.counts[k] = (this.counts[k] ?? 0) + v;
    this.keep(piece.log, piece.spans);
    return piece.fwd;
  }

  /** Characters held back for masking now. */
  get held(): number {
    return this.binary ? 0 : (this.masker?.held ?? 0);
  }

  /**
   * Lets out what is held back for masking (an interactive terminal that went quiet: its prompt
   * must show). A value split across the pause is then not recognised.
   */
  flushHeld(): string {
    if (this.binary || !this.masker?.held) return '';
    const piece = this.masker.end();
    for (const [k, v] of Object.entries(piece.counts)) this.counts[k] = (this.counts[k] ?? 0) + v;
    this.keep(piece.log, piece.spans);
    return piece.fwd;
  }

  /** The stream ended: what is still held back, for the client. */
  end(): string {
    if (this.binary) return '';
    const rest = this.decoder.end();
    if (!this.masker) {
      this.keep(rest, []);
      return rest;
    }
    const a = this.masker.push(rest);
    const b = this.masker.end();
    for (const piece of [a, b]) {
      for (const [k, v] of Object.entries(piece.counts)) this.counts[k] = (this.counts[k] ?? 0) + v;
      this.keep(piece.log, piece.spans);
    }
    return a.fwd + b.fwd;
  }

  /** SHA-256 of every byte the upstream sent on this stream (before masking). */
  digest(): string {
    return this.hash.copy().digest('hex');
  }

  private keep(text: string, spans: MaskSpan[]): void {
    if (!text) return;
    this.onLog?.(text, spans);
    const room = this.limit - this.recorded.length;
    if (room <= 0) {
      this.truncated = true;
      return;
    }
    const base = this.recorded.length;
    const kept = text.length > room ? text.slice(0, room) : text;
    if (kept.length < text.length) this.truncated = true;
    this.recorded += kept;
    for (const s of spans) if (s.start < kept.length) this.spans.push({ ...s, start: base + s.start, end: base + Math.min(s.end, kept.length) });
  }
}

/** Control sequences and control characters, removed before comparing typed text with its echo. */
// eslint-disable-next-line no-control-regex
const CONTROL = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]|[\x00-\x1f\x7f]/g;

export function printable(text: string): string {
  return text.replace(CONTROL, '');
}

/** One line of terminal input as recorded. */
export type InputRecord = { text: string; at: number } | { hidden: true; length: number; at: number };

/**
 * Decides, line by line, whether typed input was echoed. Typed characters are held until the line
 * ends (Enter, Ctrl-C, Ctrl-D); the line is recorded as typed once the output since it began shows
 * it (a pasted line is echoed after its Enter, so an ended line waits up to `echoWaitMs` for its
 * echo), and otherwise only its length is recorded. A line longer than `maxHeld` ends early.
 */
export class EchoWatch {
  private typed = '';
  private startedAt = 0;
  private echoed = '';
  /** The output since typing began, escapes included, for lines edited while typed (`renderEcho`). */
  private raw = '';
  private ended: { typed: string; at: number; endedAt: number }[] = [];

  constructor(
    private readonly maxHeld = 4096,
    readonly echoWaitMs = 300,
  ) {}

  /** Lines that ended and wait for their echo. */
  get waiting(): number {
    return this.ended.length;
  }

  /** Output the client sees (after masking), compared with what is typed; returns the lines it decides. */
  output(text: string): InputRecord[] {
    if (!this.typed && !this.ended.length) return [];
    this.echoed = (this.echoed + printable(text)).slice(-4 * this.maxHeld);
    this.raw = (this.raw + text).slice(-4 * this.maxHeld);
    const out: InputRecord[] = [];
    while (this.ended.length) {
      const line = this.ended[0]!;
      const visible = printable(line.typed);
      const i = visible ? this.echoed.indexOf(visible) : 0;
      if (i >= 0) this.echoed = this.echoed.slice(i + visible.length);
      else if (!this.editedEchoShows(line.typed)) break;
      else {
        // Matched as the terminal drew it: what was echoed before is spent.
        this.echoed = '';
        this.raw = '';
      }
      this.ended.shift();
      out.push({ text: line.typed, at: line.at });
    }
    return out;
  }

  /**
   * A line typed with editing keys (Backspace, arrows, Ctrl-W…) is echoed as redraws, not as the keys:
   * it counts as echoed when the terminal, drawn from the output since typing began, shows the line
   * the keys make. A password typed with echo off shows nothing, so it never matches.
   */
  private editedEchoShows(typed: string): boolean {
    // eslint-disable-next-line no-control-regex
    if (!/[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f]/.test(typed)) return false;
    const { line } = reconstructLine(typed);
    const wanted = line.trim();
    return wanted !== '' && renderEcho(this.raw).some((row) => row.includes(wanted));
  }

  /** Input from the client; returns the lines decided now. */
  input(text: string, at: number): InputRecord[] {
    const out: InputRecord[] = [];
    for (const ch of text) {
      if (!this.typed) this.startedAt = at;
      this.typed += ch;
      if (ch === '\r' || ch === '\n' || ch === '\x03' || ch === '\x04' || this.typed.length >= this.maxHeld) {
        this.ended.push({ typed: this.typed, at: this.startedAt, endedAt: at });
        this.typed = '';
        out.push(...this.output(''));
      }
    }
    return out;
  }

  /** Lines whose echo did not come within `echoWaitMs`: recorded as their length only. */
  expire(now: number): InputRecord[] {
    const out: InputRecord[] = [];
    while (this.ended.length && now - this.ended[0]!.endedAt >= this.echoWaitMs) {
      const line = this.ended.shift()!;
      out.push({ hidden: true, length: [...printable(line.typed)].length, at: line.at });
    }
    // Nothing waits and nothing is being typed: the echo so far is spent. (While a line is being
    // typed, its echo so far is kept: this runs on a timer that may fire in the middle of it.)
    if (!this.ended.length && !this.typed) {
      this.echoed = '';
      this.raw = '';
    }
    return out;
  }

  /** The session ends: decide everything still held. */
  flush(): InputRecord[] {
    if (this.typed) this.ended.push({ typed: this.typed, at: this.startedAt, endedAt: 0 });
    this.typed = '';
    return [...this.output(''), ...this.expire(Number.MAX_SAFE_INTEGER)];
  }
}
