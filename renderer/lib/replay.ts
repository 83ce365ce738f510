/**
 * The replay timeline: a recorded session's events placed on a clock. Idle gaps longer than
 * `maxGapMs` are shortened (a hold that waited four minutes plays in two seconds) while everything
 * closer together — stream chunks above all — keeps its recorded pace. The player is pure arithmetic
 * over that clock: play/pause, speed, step to the next/previous event, seek to a fraction.
 */
import { type AuditEvent, type EventKind, readSessionStart } from '../../shared/events';

export type Tone = 'request' | 'response' | 'chunk' | 'decision' | 'hold' | 'approve' | 'deny' | 'error' | 'info';

export interface TimelineItem {
  index: number;
  seq: number;
  kind: EventKind;
  /** Recorded time, ms since epoch. */
  time: number;
  /** Position on the replay clock, ms from the start. */
  at: number;
  tone: Tone;
  label: string;
  masked: number;
}

export interface Timeline {
  items: TimelineItem[];
  duration: number;
  startTime: number;
}

export const SPEEDS = [0.5, 1, 2, 4, 8, 16] as const;
export const DEFAULT_MAX_GAP_MS = 2000;

/**
 * Recorded offset of a streamed chunk (or a mid-stream error) in ms since the gateway began handling
 * the request (proxy/http/proxy.ts records `offset` per chunk; chunks are committed in batches, so
 * the offset is more precise than the event's own time).
 */
export function chunkOffset(e: AuditEvent): number | undefined {
  if (e.kind !== 'http.chunk' && e.kind !== 'http.error') return undefined;
  const p = e.payload as Record<string, unknown> | null;
  if (!p || typeof p !== 'object') return undefined;
  for (const k of ['offset', 'offsetMs']) if (typeof p[k] === 'number') return p[k] as number;
  return undefined;
}

export function buildTimeline(events: readonly AuditEvent[], maxGapMs = DEFAULT_MAX_GAP_MS): Timeline {
  const items: TimelineItem[] = [];
  const sorted = [...events].sort((a, b) => a.seq - b.seq);
  let at = 0;
  let prevTime: number | undefined;
  let requestTime: number | undefined;
  for (const e of sorted) {
    let time = e.time;
    if (e.kind === 'http.request') requestTime = e.time;
    const off = chunkOffset(e);
    if (off !== undefined && requestTime !== undefined) time = requestTime + off;
    if (prevTime !== undefined) {
      time = Math.max(time, prevTime); // never run the clock backwards
      at += Math.min(time - prevTime, maxGapMs);
    }
    prevTime = time;
    items.push({ index: items.length, seq: e.seq, kind: e.kind, time: e.time, at, tone: toneOf(e), label: labelOf(e), masked: e.spans.length });
  }
  return { items, duration: items.length ? items[items.length - 1]!.at : 0, startTime: sorted[0]?.time ?? 0 };
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function obj(v: unknown): Record<string, unknown> {
  return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

function payloadOf(e: AuditEvent): Record<string, unknown> {
  return e.payload && typeof e.payload === 'object' && !Array.isArray(e.payload) ? (e.payload as Record<string, unknown>) : {};
}

/** The hold inside a hold.* event payload (the payload is a HoldView or `{hold: HoldView}`). */
export function holdOf(e: AuditEvent): Record<string, unknown> {
  const p = payloadOf(e);
  return p['hold'] && typeof p['hold'] === 'object' ? (p['hold'] as Record<string, unknown>) : p;
}

export function toneOf(e: AuditEvent): Tone {
  const p = payloadOf(e);
  switch (e.kind) {
    case 'http.request':
    case 'pg.statement':
      return 'request';
    case 'ssh.request':
      return str(obj(p['decision'])['action']) === 'deny' ? 'deny' : 'request';
    case 'ssh.exit':
      return typeof p['exitStatus'] === 'number' && p['exitStatus'] !== 0 ? 'error' : 'response';
    case 'ssh.output':
      return 'chunk';
    case 'ssh.command':
      return 'request';
    case 'ssh.sftp':
      return p['refused'] ? 'deny' : 'response';
    case 'ssh.error':
    case 'session.terminated':
      return 'error';
    case 'http.response':
    case 'pg.result':
      return typeof p['status'] === 'number' && p['status'] >= 400 ? 'error' : 'response';
    case 'http.chunk':
    case 'http.body':
    case 'pg.rows':
      return 'chunk';
    case 'http.error':
    case 'pg.error':
      return 'error';
    case 'policy.decision':
      return p['action'] === 'deny' ? 'deny' : p['action'] === 'hold' ? 'hold' : 'decision';
    case 'hold.created':
      return 'hold';
    case 'hold.vote':
      return p['decision'] === 'deny' ? 'deny' : 'approve';
    case 'hold.resolved': {
      const state = str(holdOf(e)['state']) ?? str(p['state']);
      return state === 'approved' ? 'approve' : 'deny';
    }
    default:
      return 'info';
  }
}

export function labelOf(e: AuditEvent): string {
  const p = payloadOf(e);
  switch (e.kind) {
    case 'http.request':
      return `${str(p['method']) ?? 'POST'} ${str(p['path']) ?? ''}`.trim();
    case 'http.response':
      return `${typeof p['status'] === 'number' ? p['status'] : 'response'}${p['stream'] ? ' (stream)' : ''}`;
    case 'http.chunk': {
      const n = Array.isArray(p['events']) ? p['events'].length : 0;
      return p['done'] ? 'stream end' : `chunk${n > 1 ? ` · ${n} events` : ''}`;
    }
    case 'pg.statement': {
      const sql = str(p['sql']) ?? str(p['text']) ?? str(p['query']) ?? '';
      return sql.replace(/\s+/g, ' ').slice(0, 60) || 'statement';
    }
    case 'http.body':
      return typeof p['bytes'] === 'number' ? `${p['bytes']} body bytes sent so far` : 'body bytes sent';
    case 'pg.rows':
      return typeof p['rows'] === 'number' ? `${p['rows']} row${p['rows'] === 1 ? '' : 's'} sent so far` : 'rows sent';
    case 'pg.result':
      return str(p['command']) ?? str(p['tag']) ?? (typeof p['rows'] === 'number' ? `${p['rows']} row${p['rows'] === 1 ? '' : 's'}` : 'result');
    case 'pg.error':
    case 'http.error':
      return str(p['message']) ?? 'error';
    case 'ssh.request': {
      const request = str(p['request']) ?? 'request';
      if (request === 'exec') return `$ ${(str(p['command']) ?? '').replace(/\s+/g, ' ').slice(0, 60)}`;
      return request === 'subsystem' ? (str(p['subsystem']) ?? 'subsystem') : request;
    }
    case 'ssh.exit':
      return typeof p['exitStatus'] === 'number' ? `exit ${p['exitStatus']}` : str(p['signal']) ? `signal ${str(p['signal'])}` : 'closed';
    case 'ssh.command':
      // A shell line rebuilt from its keys: "uncertain" where history, completion or an unknown key made it so.
      return `$ ${(str(p['line']) ?? '').replace(/\s+/g, ' ').slice(0, 60)}${Array.isArray(p['uncertain']) ? ' (uncertain)' : ''}`;
    case 'ssh.output': {
      const n = Array.isArray(p['frames']) ? p['frames'].length : 0;
      return `terminal · ${n} frame${n === 1 ? '' : 's'}`;
    }
    case 'ssh.sftp':
      return `sftp ${str(p['op']) ?? ''} ${str(p['path']) ?? (Array.isArray(p['paths']) ? (p['paths'] as string[]).join(' → ') : '')}${p['refused'] ? ' · refused' : ''}`.trim();
    case 'ssh.error':
      return str(p['message']) ?? 'error';
    case 'session.terminated':
      return `ended by ${str(p['byName']) ?? e.actor ?? '?'}${str(p['reason']) ? ` · ${str(p['reason'])}` : ''}`;
    case 'session.start': {
      const who = readSessionStart(e.payload).actorName;
      return `session start${who ? ` · ${who}` : ''}`;
    }
    case 'session.end':
      return `session end${str(p['reason']) ? ` · ${str(p['reason'])}` : ''}`;
    case 'policy.decision':
      return `${str(p['action']) ?? 'decision'}${str(p['rule']) ? ` · ${str(p['rule'])}` : ''}`;
    case 'hold.created':
      return `held · ${str(holdOf(e)['rule']) ?? ''}`;
    case 'hold.vote':
      return `${p['decision'] === 'deny' ? 'denied' : 'approved'} by ${str(p['byName']) ?? str(p['by']) ?? e.actor ?? '?'}`;
    case 'hold.resolved':
      return `hold ${str(holdOf(e)['state']) ?? str(p['state']) ?? 'resolved'}`;
    default:
      return e.kind;
  }
}

/** Index of the last item at or before `position` (-1 before the first). */
export function indexAt(t: Timeline, position: number): number {
  let lo = 0;
  let hi = t.items.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (t.items[mid]!.at <= position) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found;
}

export interface PlayerState {
  position: number;
  playing: boolean;
  speed: number;
}

/** Moves the clock forward by `elapsedMs` of wall time; stops at the end. */
export function advance(t: Timeline, s: PlayerState, elapsedMs: number): PlayerState {
  if (!s.playing) return s;
  const position = Math.min(t.duration, s.position + elapsedMs * s.speed);
  return { ...s, position, playing: position < t.duration };
}

export function play(t: Timeline, s: PlayerState): PlayerState {
  // Playing from the end starts over, as media players do.
  return { ...s, playing: t.duration > 0, position: s.position >= t.duration ? 0 : s.position };
}

/** The next item (of those `only` keeps: all by default), or the end. */
export function stepNext(t: Timeline, s: PlayerState, only: (it: TimelineItem) => boolean = () => true): PlayerState {
  const next = t.items.find((it) => it.at > s.position && only(it));
  return { ...s, playing: false, position: next ? next.at : t.duration };
}

/** The previous item (of those `only` keeps), or the start. */
export function stepPrev(t: Timeline, s: PlayerState, only: (it: TimelineItem) => boolean = () => true): PlayerState {
  let prev: TimelineItem | undefined;
  for (const it of t.items) {
    if (it.at < s.position) {
      if (only(it)) prev = it;
    } else break;
  }
  return { ...s, playing: false, position: prev ? prev.at : 0 };
}

/** A command of an SSH session, to step between: an exec, or a line entered in a shell. */
export function isCommand(it: TimelineItem): boolean {
  return it.kind === 'ssh.command' || (it.kind === 'ssh.request' && it.label.startsWith('$ '));
}

/** Seek to a fraction of the timeline (0..1), e.g. from a click at x / width. */
export function seekFraction(t: Timeline, s: PlayerState, fraction: number): PlayerState {
  return { ...s, position: Math.max(0, Math.min(1, fraction)) * t.duration };
}

export function seekSeq(t: Timeline, s: PlayerState, seq: number): PlayerState {
  const it = t.items.find((x) => x.seq === seq);
  return it ? { ...s, playing: false, position: it.at } : s;
}

export function changeSpeed(s: PlayerState, speed: number): PlayerState {
  const clamped = Math.max(SPEEDS[0], Math.min(SPEEDS[SPEEDS.length - 1]!, speed));
  return { ...s, speed: clamped };
}

/** Which kind of view a session needs. */
export function sessionMode(events: readonly AuditEvent[], protocol?: string): 'sql' | 'llm' | 'ssh' | 'events' {
  if (protocol === 'postgres' || events.some((e) => e.kind.startsWith('pg.'))) return 'sql';
  if (protocol === 'ssh' || events.some((e) => e.kind.startsWith('ssh.'))) return 'ssh';
  if (events.some((e) => e.kind.startsWith('http.'))) return 'llm';
  return 'events';
}
