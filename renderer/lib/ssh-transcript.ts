/**
 * An SSH session as what its terminal showed, step by step, for the replay's xterm: a shell's
 * recorded frames (`ssh.output`, docs/SSH.md "Recording") at their recorded pace, exec commands as
 * `$ command` with their output and exit status, SFTP operations, and the gateway's decisions
 * (holds, denials, a session ended from the console) as coloured lines at their moment.
 *
 * Each entry is a list of parts; a masked part (a span of the recorded text, after masking) carries
 * its detector type, so the terminal can highlight it. Shell output is written as the terminal got
 * it (escape sequences included: it is the host's own screen); everything the gateway adds, and
 * exec output, is plain text with line ends made `\r\n`.
 */
import type { AuditEvent, MaskSpan } from '../../shared/events';
import type { Timeline } from './replay';
import { visibleText } from './visible-controls';

export interface TerminalPart {
  text: string;
  mask?: { type: string; rule: string };
}

export interface TerminalEntry {
  /** Position on the replay clock (ms). */
  at: number;
  seq: number;
  /** A recorded window size (`COLSxROWS`) to apply before the parts. */
  resize?: { cols: number; rows: number };
  parts: TerminalPart[];
}

const DIM = '\x1b[2m';
const BOLD = '\x1b[1m';
const RED = '\x1b[31m';
const YELLOW = '\x1b[33m';
const GREEN = '\x1b[32m';
const RESET = '\x1b[0m';

type Frame = [number, string, unknown];

function obj(v: unknown): Record<string, unknown> {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** Text the gateway prints itself: control characters shown, never run; line ends as `\r\n`. */
export function plain(text: string): string {
  return visibleText(text.replace(/\r\n/g, '\n'), true).replace(/\n/g, '\r\n');
}

/** Splits `text` at the spans recorded for it (offsets into the masked text); `encode` turns unmasked runs into what the terminal gets. */
export function splitMasked(text: string, spans: MaskSpan[], encode: (s: string) => string = (s) => s): TerminalPart[] {
  const parts: TerminalPart[] = [];
  let at = 0;
  for (const s of [...spans].sort((a, b) => a.start - b.start)) {
    if (s.start < at || s.end > text.length) continue;
    if (s.start > at) parts.push({ text: encode(text.slice(at, s.start)) });
    parts.push({ text: text.slice(s.start, s.end), mask: { type: s.type, rule: s.rule } });
    at = s.end;
  }
  if (at < text.length) parts.push({ text: encode(text.slice(at)) });
  return parts;
}

function spansAt(e: AuditEvent, path: string): MaskSpan[] {
  return e.spans.filter((s) => (s.path ?? '') === path);
}

function line(colour: string, text: string): TerminalPart[] {
  return [{ text: `${colour}${plain(text)}${RESET}\r\n` }];
}

export function buildSshTranscript(events: readonly AuditEvent[], timeline: Timeline): TerminalEntry[] {
  const at = new Map(timeline.items.map((i) => [i.seq, i.at]));
  const out: TerminalEntry[] = [];
  let last = 0;
  const push = (seq: number, when: number, parts: TerminalPart[], resize?: TerminalEntry['resize']) => {
    last = Math.max(last, when);
    out.push({ seq, at: last, parts, ...(resize ? { resize } : {}) });
  };
  for (const e of [...events].sort((a, b) => a.seq - b.seq)) {
    const t = at.get(e.seq) ?? last;
    const p = obj(e.payload);
    switch (e.kind) {
      case 'ssh.output': {
        // Frames carry ms since the channel opened; the event was written after its last frame.
        const frames = (Array.isArray(p['frames']) ? p['frames'] : []) as Frame[];
        const lastMs = frames.length ? Number(frames[frames.length - 1]![0]) || 0 : 0;
        frames.forEach((f, i) => {
          const when = Math.max(0, t - (lastMs - (Number(f[0]) || 0)));
          if (f[1] === 'o' && typeof f[2] === 'string') push(e.seq, when, splitMasked(f[2], spansAt(e, `/frames/${i}/2`)));
          else if (f[1] === 'r' && typeof f[2] === 'string') {
            const [cols, rows] = f[2].split('x').map(Number);
            if (cols && rows) push(e.seq, when, [], { cols, rows });
          }
          // 'i' frames: what was typed shows in the echo; input typed with echo off was never recorded.
        });
        break;
      }
      case 'ssh.request': {
        const decision = obj(p['decision']);
        const action = str(decision['action']) ?? 'allow';
        const request = str(p['request']) ?? 'request';
        if (request === 'exec') push(e.seq, t, [{ text: `${BOLD}$ ` }, ...splitMasked(str(p['command']) ?? '', spansAt(e, '/command'), plain), { text: `${RESET}\r\n` }]);
        else if (request === 'shell') {
          const pty = obj(p['pty']);
          const size = Number(pty['cols']) > 0 && Number(pty['rows']) > 0 ? ` ${String(pty['cols'])}x${String(pty['rows'])}` : '';
          push(e.seq, t, line(DIM, `── interactive shell${p['pty'] ? ` (${str(pty['term']) ?? 'pty'}${size})` : ''} ──`));
        }
        else if (request === 'subsystem') push(e.seq, t, line(DIM, `── ${str(p['subsystem']) ?? 'subsystem'} ──`));
        else push(e.seq, t, line(action === 'deny' ? RED : DIM, `── ${request}${str(p['destination']) ? ` ${str(p['destination'])}` : ''} ──`));
        if (action === 'deny') push(e.seq, t, line(RED, `✕ refused by policy "${str(decision['rule']) ?? 'default'}"${str(decision['reason']) ? `: ${str(decision['reason'])}` : ''}`));
        break;
      }
      case 'ssh.exit': {
        if (p['request'] === 'exec') {
          if (typeof p['stdout'] === 'string' && p['stdout']) push(e.seq, t, splitMasked(p['stdout'], spansAt(e, '/stdout'), plain));
          if (typeof p['stderr'] === 'string' && p['stderr']) push(e.seq, t, [{ text: RED }, ...splitMasked(p['stderr'], spansAt(e, '/stderr'), plain), { text: RESET }]);
          if (p['binary']) push(e.seq, t, line(DIM, `[binary output, ${String(obj(p['bytes'])['stdout'] ?? '?')} bytes, sha256 ${str(p['stdoutSha256'])?.slice(0, 16) ?? '?'}…]`));
        }
        const status = typeof p['exitStatus'] === 'number' ? `exit ${p['exitStatus']}` : str(p['signal']) ? `signal ${str(p['signal'])}` : 'closed';
        push(e.seq, t, line(DIM, `[${status}${p['request'] !== 'exec' ? ` · ${str(p['request']) ?? 'channel'} ended` : ''}]`));
        break;
      }
      case 'ssh.sftp': {
        const paths = Array.isArray(p['paths']) ? (p['paths'] as string[]).join(' → ') : (str(p['path']) ?? '');
        if (p['refused']) push(e.seq, t, line(RED, `sftp ${str(p['op']) ?? ''} ${paths} refused: ${str(p['refused']) ?? ''}`));
        else push(e.seq, t, line(DIM, `sftp ${str(p['op']) ?? ''} ${paths}${typeof p['bytes'] === 'number' ? ` (${p['bytes']} bytes)` : ''}`));
        break;
      }
      case 'ssh.error':
        push(e.seq, t, line(RED, `✕ ${str(p['message']) ?? 'error'}`));
        break;
      case 'hold.created':
        push(e.seq, t, line(YELLOW, `⏸ held for approval${str(obj(p['hold'] ?? p)['rule']) ? ` by policy "${str(obj(p['hold'] ?? p)['rule'])}"` : ''}`));
        break;
      case 'hold.resolved': {
        const state = str(obj(p['hold'] ?? p)['state']) ?? 'resolved';
        push(e.seq, t, line(state === 'approved' ? GREEN : RED, `${state === 'approved' ? '✓' : '✕'} hold ${state}`));
        break;
      }
      case 'session.terminated':
        push(e.seq, t, line(RED, `■ ended by ${str(p['byName']) ?? e.actor ?? '?'} from the console: ${str(p['reason']) ?? ''}`));
        break;
      case 'session.end':
        push(e.seq, t, line(DIM, `── session ended${str(p['reason']) ? `: ${str(p['reason'])}` : ''} ──`));
        break;
      default:
        break;
    }
  }
  return out;
}
