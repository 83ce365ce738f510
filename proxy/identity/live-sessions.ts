/**
 * Live data-plane sessions (PostgreSQL and SSH connections) and the credential that opened each, so none
 * outlives it: a session ends when its credential expires (a token's `exp`, a key's expiry), when
 * its API key is revoked, or when its person is locked — like Teleport's `disconnect_expired_cert`.
 *
 * A listener registers a session once it has authenticated it and unregisters it when it closes:
 *
 *   const done = services.liveSessions.register({ protocol: 'postgres', identity, terminate: (why) => session.fatal(why) });
 *   socket.once('close', done);
 *
 * `terminate` is called at most once, with a sentence saying why (for a FATAL the client shows).
 */
import type { Identity } from '../../shared/identity';

export interface LiveSession {
  protocol: string;
  /** The recorded session's id, for sessions an approver may end from the console. */
  session?: string;
  identity: Pick<Identity, 'subject' | 'person' | 'keyId' | 'credentialExpiresAt'>;
  terminate(reason: string): void;
}

export interface CredentialState {
  /** Whether API key `id` is revoked or expired now (read from the store). */
  keyEnded(id: string, now: number): string | undefined;
  /** Whether a person is locked (in memory). */
  personLocked(person: string): boolean;
}

export class LiveSessions {
  private readonly sessions = new Set<LiveSession>();
  private timer?: NodeJS.Timeout;

  constructor(private readonly state: CredentialState) {}

  get size(): number {
    return this.sessions.size;
  }

  /** Adds a session; returns the function that removes it (idempotent). */
  register(session: LiveSession): () => void {
    this.sessions.add(session);
    return () => {
      this.sessions.delete(session);
    };
  }

  /** Ends every session whose credential is no longer good. Returns how many ended. */
  sweep(now = Date.now()): number {
    let ended = 0;
    for (const s of [...this.sessions]) {
      const why = this.whyEnded(s, now);
      if (why) {
        this.end(s, why);
        ended++;
      }
    }
    return ended;
  }

  /** Ends every session of `person` at once (the person was locked). */
  endPerson(person: string, reason: string): number {
    let ended = 0;
    for (const s of [...this.sessions]) {
      if (s.identity.person !== person) continue;
      this.end(s, reason);
      ended++;
    }
    return ended;
  }

  /** Whether recorded session `id` is live here and may be ended with endSession. */
  has(id: string): boolean {
    for (const s of this.sessions) if (s.session === id) return true;
    return false;
  }

  /** Ends recorded session `id` (an approver ended it from the console). False when it is not live here. */
  endSession(id: string, reason: string): boolean {
    for (const s of [...this.sessions]) {
      if (s.session !== id) continue;
      this.end(s, reason);
      return true;
    }
    return false;
  }

  /** Sweeps every `intervalMs` until stop(). */
  start(intervalMs = 500): void {
    this.timer ??= setInterval(() => this.sweep(), intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private whyEnded(s: LiveSession, now: number): string | undefined {
    const id = s.identity;
    if (id.person && this.state.personLocked(id.person)) return 'terminating connection: your access was locked by an administrator';
    if (id.credentialExpiresAt !== undefined && id.credentialExpiresAt <= now) return 'terminating connection: the credential this session was opened with has expired; sign in again';
    if (id.keyId) {
      const ended = this.state.keyEnded(id.keyId, now);
      if (ended) return `terminating connection: the API key this session was opened with ${ended}`;
    }
    return undefined;
  }

  private end(s: LiveSession, reason: string): void {
    this.sessions.delete(s);
    try {
      s.terminate(reason);
    } catch {
      // a session that cannot say goodbye is gone from the registry all the same
    }
  }
}
