/**
 * The group's combined checkpoint seen from the gateway's thread (docs/SCALE-OUT.md, "The log's
 * shape"). Its worker (combined-worker.ts) makes and cosigns them against the store, off the
 * proxies' event loop, on its own connection; this side keeps the worker's last status for
 * `/api/health` and the Audit page, and records each refusal in this gateway's own chain
 * (`group.checkpoint.refused`), which keeps it even when the store's copy is what was tampered with.
 */
import { Worker } from 'node:worker_threads';
import type { CombinedCheckpointHealth } from '../../../shared/api';
import { type Config, parseDuration, type StoreConfig } from '../../../shared/config';
import type { WitnessStatus } from '../../../shared/evidence';
import type { GroupCheckpointRefusedPayload } from '../../../shared/events';
import type { Logger } from '../../log';
import { workerSource } from '../../worker-source';
import type { CheckpointSigner } from '../checkpoint-signer';
import type { AuditStore } from '../store';
import type { GatewayIdentity } from './enrolment';
import { storeConnection, storeLabel } from './schema';

/** What the worker last saw. */
export interface CombinedWorkerStatus {
  /** This gateway is an enrolled or approved member (only members make and cosign). */
  member: boolean;
  latest: CombinedCheckpointHealth['latest'];
  signed: CombinedCheckpointHealth['signed'];
  error?: string;
  failingSince?: number;
  /** The witnesses of the group log (audit.witnesses[]): what each cosigned, and this gateway's last try. */
  witnesses?: WitnessStatus[];
}

export type CombinedRefusal = Omit<GroupCheckpointRefusedPayload, 'store'>;
export type CombinedWorkerCommand = { type: 'stop' };
export type CombinedWorkerMessage =
  | { type: 'status'; status: CombinedWorkerStatus }
  | { type: 'refused'; refusal: CombinedRefusal }
  /** A gateway row claims membership that the chains do not prove (member-trust.ts): its chain is left out. Said once per gateway and reason. */
  | { type: 'untrusted'; gateway: string; reason: string }
  /** A line for the gateway's log (the group log's witness client). */
  | { type: 'log'; level: 'info' | 'error'; message: string }
  | { type: 'stopped' };

interface Deps {
  store: AuditStore;
  log: Logger;
  config: StoreConfig;
  signer: CheckpointSigner;
  identity: GatewayIdentity;
  /** `audit.groupCheckpointInterval` */
  interval: string;
  /** `audit.witnesses`: the group log's heads go to them too. */
  witnesses?: Config['audit']['witnesses'];
}

export class CombinedCheckpoints {
  private status: CombinedWorkerStatus = { member: false, latest: null, signed: null };
  private refusal: CombinedCheckpointHealth['refusal'] = null;
  private readonly label: string;
  private stopped: Promise<void> | undefined;
  private resolveStopped: (() => void) | undefined;

  private constructor(
    private readonly worker: Worker,
    private readonly deps: Deps,
  ) {
    this.label = storeLabel(deps.config.url);
    worker.on('message', (m: CombinedWorkerMessage) => this.take(m));
    worker.on('error', (err) => {
      this.status = { ...this.status, error: `the combined checkpoint worker failed: ${err.message}`, failingSince: this.status.failingSince ?? Date.now() };
      deps.log.error(`shared store: ${this.status.error}`);
      this.resolveStopped?.();
    });
    worker.on('exit', () => this.resolveStopped?.());
  }

  /** Starts the worker that makes and cosigns the group's combined checkpoints as this gateway. */
  static start(deps: Deps): CombinedCheckpoints {
    const src = workerSource(import.meta.url, './combined-worker');
    if (!src) throw new Error('the combined checkpoint worker cannot be loaded from this build');
    const worker = new Worker(src.entry, {
      ...src.options,
      workerData: { conn: storeConnection(deps.config), identity: deps.identity, signingKey: deps.signer.signingKeyForThread(), intervalMs: parseDuration(deps.interval), dbPath: deps.store.path, witnesses: deps.witnesses ?? [] },
    });
    return new CombinedCheckpoints(worker, deps);
  }

  private take(m: CombinedWorkerMessage): void {
    if (m.type === 'stopped') {
      this.resolveStopped?.();
      return;
    }
    if (m.type === 'log') {
      this.deps.log[m.level](m.message);
      return;
    }
    if (m.type === 'untrusted') {
      this.deps.log.warn(`shared store ${this.label}: combined checkpoints leave out the chain of gateway ${m.gateway}, which is not proven a member: ${m.reason}`);
      return;
    }
    if (m.type === 'refused') {
      const r = m.refusal;
      this.refusal = { at: Date.now(), role: r.role, chain: r.chain, problem: r.problem, message: r.message };
      this.deps.log.error(`shared store ${this.label}: refused to ${r.role} the group's combined checkpoint: ${r.message}`);
      try {
        this.deps.store.append({ kind: 'group.checkpoint.refused', actor: 'system', payload: { store: this.label, ...r } satisfies GroupCheckpointRefusedPayload });
      } catch (err) {
        this.deps.log.error(`shared store: the refusal could not be recorded here (${(err as Error).message})`);
      }
      return;
    }
    const was = this.status;
    this.status = m.status;
    if (m.status.error && !was.error) this.deps.log.warn(`shared store ${this.label}: combined checkpoints: ${m.status.error}; retrying`);
  }

  health(): CombinedCheckpointHealth {
    const s = this.status;
    const r = this.refusal;
    const state: CombinedCheckpointHealth['state'] = r ? 'refused' : s.error ? 'failing' : s.member && s.signed ? 'ok' : 'waiting';
    const cause = r
      ? `this gateway refused to ${r.role} the group's combined checkpoint at ${new Date(r.at).toISOString()}: ${r.message} (recorded in its chain as group.checkpoint.refused; custody verify --store names the chain)`
      : s.error
        ? `combined checkpoints cannot be made or cosigned: ${s.error}`
        : undefined;
    const witnesses = (s.witnesses ?? []).map((w) => ({ name: w.name, state: w.state, cosignedTreeSize: w.lastCosigned?.treeSize ?? null, behind: w.behind, failures: w.failures }));
    return { state, ...(cause ? { cause } : {}), interval: this.deps.interval, latest: s.latest, signed: s.signed, refusal: r, ...(this.deps.witnesses?.length ? { witnesses } : {}) };
  }

  /** Ends the worker (a round in progress finishes first, within `ms`). */
  stop(ms = 2000): Promise<void> {
    this.stopped ??= new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.resolveStopped = () => {
        clearTimeout(timer);
        resolve();
      };
      this.worker.postMessage({ type: 'stop' } satisfies CombinedWorkerCommand);
    }).finally(() => void this.worker.terminate());
    return this.stopped;
  }
}
