/**
 * Groups HTTP exchanges into sessions (DESIGN.md, Recording): a run of exchanges by one identity on
 * one connection, ended by an idle gap of `limits.sessionIdle`. A client that sends
 * `x-custody-session: <label>` gets one session per label instead (still per identity and
 * connection, so one client cannot write into another's session).
 */
import type { Identity } from '../../shared/identity';
import { newId } from '../ids';

export interface HttpSession {
  id: string;
  key: string;
  identity: Identity;
  connection: string;
  clientLabel?: string;
  startedAt: number;
  lastAt: number;
}

/** Client labels are free text; keep them short and printable. */
const LABEL_RE = /^[\x21-\x7e]{1,128}$/;

export function validSessionLabel(value: string | string[] | undefined): string | undefined {
  return typeof value === 'string' && LABEL_RE.test(value) ? value : undefined;
}

export class HttpSessionTracker {
  private readonly open = new Map<string, HttpSession>();

  constructor(private idleMs: number) {}

  setIdle(ms: number): void {
    this.idleMs = ms;
  }

  /**
   * The session this exchange belongs to. `isNew` sessions exist only in memory until the caller
   * has recorded their `session.start` (then `confirm`), or dropped them (`forget`).
   */
  resolve(identity: Identity, connection: string, label: string | undefined, now: number): { session: HttpSession; isNew: boolean; replaced?: HttpSession } {
    const key = label === undefined ? `${identity.subject}\n${connection}` : `${identity.subject}\n${connection}\n${label}`;
    const existing = this.open.get(key);
    if (existing && now - existing.lastAt <= this.idleMs) {
      existing.lastAt = now;
      return { session: existing, isNew: false };
    }
    const session: HttpSession = { id: newId('ses'), key, identity, connection, clientLabel: label, startedAt: now, lastAt: now };
    this.open.set(key, session);
    return { session, isNew: true, replaced: existing };
  }

  /** Drops a session whose start could not be recorded (the next exchange starts it again). */
  forget(session: HttpSession, restore?: HttpSession): void {
    if (this.open.get(session.key) !== session) return;
    if (restore) this.open.set(session.key, restore);
    else this.open.delete(session.key);
  }

  /** Removes and returns sessions idle for longer than the limit. */
  takeIdle(now: number): HttpSession[] {
    const out: HttpSession[] = [];
    for (const [key, s] of this.open) {
      if (now - s.lastAt > this.idleMs) {
        this.open.delete(key);
        out.push(s);
      }
    }
    return out;
  }

  /** Removes and returns every open session (shutdown). */
  takeAll(): HttpSession[] {
    const out = [...this.open.values()];
    this.open.clear();
    return out;
  }

  get size(): number {
    return this.open.size;
  }
}
