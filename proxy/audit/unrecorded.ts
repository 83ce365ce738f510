/**
 * Results the gateway could not journal after the upstream had acted (a response, a stream's end,
 * a PostgreSQL result): the client was cut off rather than told of an outcome the log does not
 * hold, but the log must still say that something happened there. When the journal refuses, the
 * store usually cannot take an event saying so either (a full disk, a read-only or locked file), so
 * the note goes to a small file beside the store, `custody.db.unrecorded`, whose space is reserved
 * when the gateway starts: writing a note into it allocates nothing, so it works on a full disk.
 * At the next start, each note left there becomes a `result.unrecorded` event in its session, and
 * the file is reserved anew.
 *
 * Notes are JSON lines written in place over the reserved bytes (newlines); past the room for
 * them, one last line (rewritten in place) counts the notes that did not fit.
 */
import { closeSync, existsSync, openSync, readFileSync, writeSync } from 'node:fs';
import type { AuditEventInput, ResultUnrecordedPayload } from '../../shared/events';

/** What was lost: the result's kind, where, and why it could not be journaled. */
export interface UnrecordedResult {
  /** The event that could not be journaled (`http.response`, `http.chunk`, `pg.result`, ...). */
  result: string;
  session?: string;
  actor?: string;
  connection?: string;
  /** When the gateway gave up on it (ms since epoch). */
  at: number;
  /** Why the journal refused it. */
  error: string;
  /** What the client got instead. */
  client: string;
  /** On the overflow line: how many notes did not fit. */
  dropped?: number;
}

/** Reserved for notes: about a thousand of them. */
export const UNRECORDED_BYTES = 256 * 1024;
/** The end of the reserve, kept for the overflow line. */
const OVERFLOW_BYTES = 256;

export function unrecordedFile(storePath: string): string {
  return `${storePath}.unrecorded`;
}

/** The notes a previous run left in `file` (none when there is no file). Damaged lines are skipped. */
export function readUnrecorded(file: string): UnrecordedResult[] {
  if (!existsSync(file)) return [];
  const out: UnrecordedResult[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const text = line.trim();
    if (!text) continue;
    try {
      const n = JSON.parse(text) as UnrecordedResult;
      if (typeof n.result === 'string' && typeof n.at === 'number') out.push(n);
    } catch {
      // a note torn by a crash inside its write: nothing to say about it but that it was there
      out.push({ result: 'unknown', at: 0, error: 'a note of an unrecorded result was torn by a crash while it was written', client: 'unknown' });
    }
  }
  return out;
}

/** The `result.unrecorded` event for a note. */
export function unrecordedEvent(n: UnrecordedResult): AuditEventInput {
  return {
    kind: 'result.unrecorded',
    session: n.session,
    actor: n.actor ?? 'system',
    connection: n.connection,
    payload: (n.dropped
      ? { result: 'more', at: n.at, dropped: n.dropped, error: n.error, client: n.client, note: `${n.dropped} more result(s) could not be journaled; their notes did not fit` }
      : { result: n.result, at: n.at, error: n.error, client: n.client }) satisfies ResultUnrecordedPayload,
  };
}

export class UnrecordedNotes {
  private fd: number | undefined;
  private offset = 0;
  private dropped = 0;

  /** Reserves `file` (filled with newlines) for this run's notes. Throws what the filesystem threw. */
  constructor(readonly file: string) {
    const fd = openSync(file, 'w', 0o600);
    try {
      writeSync(fd, Buffer.alloc(UNRECORDED_BYTES, 0x0a), 0, UNRECORDED_BYTES, 0);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    this.fd = fd;
  }

  /** Notes a result that could not be journaled; false when the note could not be written either. */
  note(n: UnrecordedResult): boolean {
    if (this.fd === undefined) return false;
    const line = Buffer.from(`${JSON.stringify(n)}\n`, 'utf8');
    try {
      if (this.offset + line.length <= UNRECORDED_BYTES - OVERFLOW_BYTES) {
        writeSync(this.fd, line, 0, line.length, this.offset);
        this.offset += line.length;
        return true;
      }
      this.dropped++;
      const overflow: UnrecordedResult = { result: n.result, at: n.at, error: n.error, client: n.client, dropped: this.dropped };
      const text = Buffer.from(`${JSON.stringify(overflow)}\n`, 'utf8');
      writeSync(this.fd, text, 0, Math.min(text.length, OVERFLOW_BYTES), UNRECORDED_BYTES - OVERFLOW_BYTES);
      return false;
    } catch {
      return false;
    }
  }

  close(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
  }
}
