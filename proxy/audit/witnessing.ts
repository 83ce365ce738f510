/**
 * Sends each signed checkpoint to the configured tlog-witnesses (audit.witnesses[]) with a
 * consistency proof from the last checkpoint that witness cosigned, and keeps the cosignatures it
 * returns. Off the request path: `notify()` only schedules work; a witness that cannot be reached
 * is retried with exponential backoff (1 s doubling to 5 min) and shown as failing in health and on
 * the Audit page, while traffic flows. When it is back it receives the newest checkpoint, proven
 * consistent with the last one it cosigned, so it catches up in one step.
 *
 * One client, two logs: this gateway's own chain (`WitnessPublisher`, cosignatures in the SQLite
 * table `checkpoint_cosignatures`, sent at each checkpoint), and the group's log of combined
 * checkpoints (shared-store/group-log.ts, cosignatures in the shared store).
 */
import type { Config } from '../../shared/config';
import type { WitnessStatus } from '../../shared/evidence';
import type { Logger } from '../log';
import { type Checkpoint, latestCheckpoint } from './checkpoints';
import { findCosignature, parseCosignerKey } from './cosignature';
import { consistencyProofOffThread } from './proof';
import { keyIdHex, type NoteVerifier, parseNote } from './signed-note';
import type { AuditStore } from './store';

const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 5 * 60_000;
const REQUEST_TIMEOUT_MS = 15_000;

interface Target {
  name: string;
  url: string;
  verifier: NoteVerifier;
  /** The round under way, if any (a second request while it runs makes it go round once more). */
  running?: Promise<void>;
  again: boolean;
  failures: number;
  lastError: string | null;
  nextRetryAt: number | null;
  timer?: NodeJS.Timeout;
}

/** The newest cosignature kept for one witness key. */
export interface CosignedHead {
  tree_size: number;
  /** hex */
  root_hash: string;
  cosigned_at: number;
}

/** A signed checkpoint of a witnessed log. */
export interface LogHead {
  treeSize: number;
  /** hex */
  rootHash: string;
  /** The signed note, as sent. */
  note: string;
}

/** A log whose checkpoints go to witnesses: where its newest checkpoint, its proofs and the cosignatures are. */
export interface WitnessedLog<H extends LogHead = LogHead> {
  /** How messages name what the log counts: "events", "combined checkpoints". */
  readonly unit: string;
  latest(): Promise<H | undefined>;
  lastCosigned(witness: NoteVerifier): Promise<CosignedHead | undefined>;
  /** The RFC 6962 consistency proof from `old` (0 < old < head.treeSize) to `head`. */
  consistencyProof(old: number, head: H): Promise<Buffer[]>;
  /** Keeps a witness's verified cosignature `line` (made at `time`, ms) on `head`, whose note text is `text`. */
  record(witness: NoteVerifier, head: H, text: string, line: string, time: number): Promise<void>;
}

export type { WitnessStatus };

class WitnessRequestError extends Error {}

/** The witness client: sends a log's newest checkpoint to each witness, retries, keeps what each cosigned. */
export class WitnessClient<H extends LogHead = LogHead> {
  protected readonly targets: Target[];
  private stopped = false;

  constructor(
    protected readonly logSource: WitnessedLog<H>,
    witnesses: Config['audit']['witnesses'],
    private readonly log?: Pick<Logger, 'info' | 'error'>,
    /** How log lines name the log: "" for this gateway's own, "the group log" for the combined checkpoints'. */
    private readonly logLabel = '',
  ) {
    this.targets = witnesses.map((w) => ({ name: w.name, url: w.url.replace(/\/+$/, ''), verifier: parseCosignerKey(w.key), again: false, failures: 0, lastError: null, nextRetryAt: null }));
  }

  get size(): number {
    return this.targets.length;
  }

  /** A checkpoint was written: send it to every witness (never waits, never throws). */
  notify(): void {
    for (const t of this.targets) void this.run(t);
  }

  /** As notify, but a witness waiting out its backoff after a failure is left to its retry timer. */
  nudge(): void {
    for (const t of this.targets) if (t.nextRetryAt === null) void this.run(t);
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.targets) clearTimeout(t.timer);
  }

  /** Resolves once every witness has had a try at the newest checkpoint (the archiver, tests, shutdown). */
  async flush(): Promise<void> {
    await Promise.all(this.targets.map((t) => this.run(t)));
  }

  /** Each witness's configured name, its key (cosignatures are looked up by it) and the error of its last try (null: it cosigned). */
  list(): { name: string; verifier: NoteVerifier; error: string | null }[] {
    return this.targets.map((t) => ({ name: t.name, verifier: t.verifier, error: t.lastError }));
  }

  /** Each witness's last try: its configured name and URL, its key, the error (null: it cosigned), failures in a row, the next retry. */
  attempts(): { name: string; url: string; verifier: NoteVerifier; lastError: string | null; failures: number; nextRetryAt: number | null }[] {
    return this.targets.map((t) => ({ name: t.name, url: t.url, verifier: t.verifier, lastError: t.lastError, failures: t.failures, nextRetryAt: t.nextRetryAt }));
  }

  private run(t: Target): Promise<void> {
    if (this.stopped) return Promise.resolve();
    if (t.running) {
      t.again = true;
      return t.running;
    }
    t.running = this.round(t).finally(() => (t.running = undefined));
    return t.running;
  }

  private async round(t: Target): Promise<void> {
    clearTimeout(t.timer);
    t.nextRetryAt = null;
    try {
      do {
        t.again = false;
        await this.submitLatest(t);
      } while (t.again && !this.stopped);
      if (t.lastError) this.log?.info(`audit: witness ${t.name} cosigns${this.logLabel ? ` ${this.logLabel}` : ''} again`);
      t.failures = 0;
      t.lastError = null;
    } catch (err) {
      t.failures++;
      t.lastError = (err as Error).message;
      const delay = Math.min(MIN_BACKOFF_MS * 2 ** (t.failures - 1), MAX_BACKOFF_MS);
      t.nextRetryAt = Date.now() + delay;
      if (t.failures === 1 || t.failures % 10 === 0) this.log?.error(`audit: witness ${t.name} did not cosign${this.logLabel ? ` ${this.logLabel}` : ''} (attempt ${t.failures}, next in ${Math.round(delay / 1000)} s): ${t.lastError}`);
      if (!this.stopped) {
        t.timer = setTimeout(() => void this.run(t), delay);
        t.timer.unref();
      }
    }
  }

  private async submitLatest(t: Target): Promise<void> {
    const cp = await this.logSource.latest();
    if (!cp) return;
    const last = await this.logSource.lastCosigned(t.verifier);
    if (last && last.tree_size === cp.treeSize && last.root_hash === cp.rootHash) return;
    let old = last?.tree_size ?? 0;
    const unit = this.logSource.unit;
    // A witness that lost our cosignature rows (or never saw them) says what it holds with 409;
    // one more try from that size settles it, or shows the fork.
    for (let attempt = 0; attempt < 2; attempt++) {
      if (old > cp.treeSize) throw new WitnessRequestError(`the witness has cosigned ${old} ${unit} of this log but the newest checkpoint covers ${cp.treeSize}: the ${this.logLabel || 'local log'} lost ${unit}`);
      const proof = old > 0 && old < cp.treeSize ? await this.logSource.consistencyProof(old, cp) : [];
      const body = `old ${old}\n${proof.map((p) => `${p.toString('base64')}\n`).join('')}\n${cp.note}`;
      const res = await this.post(t, body);
      if (res.status === 200) {
        const text = parseNote(cp.note).text;
        const c = findCosignature(text, res.body, t.verifier);
        if (!c.ok) throw new WitnessRequestError(c.reason === 'absent' ? 'the answer holds no cosignature from the configured witness key' : 'the witness cosignature does not verify');
        await this.logSource.record(t.verifier, cp, text, c.line, c.time);
        return;
      }
      if (res.status === 409 && /^\d+\n$/.test(res.body) && Number(res.body) !== old && attempt === 0) {
        old = Number(res.body);
        continue;
      }
      const detail = res.body.split('\n')[0]!.slice(0, 300);
      if (res.status === 409 || res.status === 422) throw new WitnessRequestError(`the witness refuses the checkpoint of ${cp.treeSize} ${unit} as inconsistent with what it cosigned (${res.status}: ${detail}); run custody verify --witness-key`);
      throw new WitnessRequestError(`HTTP ${res.status}: ${detail}`);
    }
    throw new WitnessRequestError('the witness keeps changing the size it holds');
  }

  private async post(t: Target, body: string): Promise<{ status: number; body: string }> {
    try {
      const res = await fetch(`${t.url}/add-checkpoint`, { method: 'POST', body, headers: { 'content-type': 'text/plain; charset=utf-8' }, redirect: 'manual', signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
      return { status: res.status, body: await res.text() };
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new WitnessRequestError(`cannot reach ${t.url}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
    }
  }
}

/** This gateway's own chain as a witnessed log: its signed checkpoints, cosignatures in `checkpoint_cosignatures`. */
class LocalChainLog implements WitnessedLog<Checkpoint> {
  readonly unit = 'events';

  constructor(private readonly store: AuditStore) {}

  latest(): Promise<Checkpoint | undefined> {
    return Promise.resolve(latestCheckpoint(this.store));
  }

  lastCosignedNow(w: NoteVerifier): CosignedHead | undefined {
    return this.store.db
      .prepare('SELECT tree_size, root_hash, cosigned_at FROM checkpoint_cosignatures WHERE witness = ? AND key_id = ? ORDER BY tree_size DESC, cosigned_at DESC LIMIT 1')
      .get(w.name, keyIdHex(w.keyId)) as CosignedHead | undefined;
  }

  lastCosigned(w: NoteVerifier): Promise<CosignedHead | undefined> {
    return Promise.resolve(this.lastCosignedNow(w));
  }

  consistencyProof(old: number, head: Checkpoint): Promise<Buffer[]> {
    return consistencyProofOffThread(this.store.db, old, head.treeSize);
  }

  record(w: NoteVerifier, head: Checkpoint, text: string, line: string, time: number): Promise<void> {
    this.store.db
      .prepare('INSERT OR REPLACE INTO checkpoint_cosignatures (witness, key_id, tree_size, root_hash, checkpoint, signature, cosigned_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(w.name, keyIdHex(w.keyId), head.treeSize, head.rootHash, text, line, time);
    return Promise.resolve();
  }
}

/** This gateway's own checkpoints, sent to audit.witnesses[] at each checkpoint. */
export class WitnessPublisher extends WitnessClient<Checkpoint> {
  private readonly chain: LocalChainLog;

  constructor(
    private readonly store: AuditStore,
    witnesses: Config['audit']['witnesses'],
    log?: Logger,
  ) {
    const chain = new LocalChainLog(store);
    super(chain, witnesses, log);
    this.chain = chain;
  }

  status(): WitnessStatus[] {
    const latest = latestCheckpoint(this.store);
    return this.targets.map((t) => {
      const last = this.chain.lastCosignedNow(t.verifier);
      const behind = last ? (this.store.db.prepare('SELECT count(*) AS n FROM checkpoints WHERE tree_size > ?').get(last.tree_size) as { n: number }).n : latest ? 1 : 0;
      return {
        name: t.name,
        url: t.url,
        state: t.lastError ? 'failing' : last ? 'ok' : 'pending',
        lastCosigned: last ? { treeSize: last.tree_size, rootHash: last.root_hash, cosignedAt: last.cosigned_at } : null,
        behind,
        lastError: t.lastError,
        failures: t.failures,
        nextRetryAt: t.nextRetryAt,
      };
    });
  }
}
