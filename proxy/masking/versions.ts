/**
 * Masking versions: every `{detectors, masking}` set the gateway has enforced, in the
 * `policy_versions` table (kind `masking`; version numbers are shared with policy versions), each
 * with its author, and each change recorded in the chained log as `masking.changed` with the full
 * rules — so an auditor can tell which masking applied to any recorded event.
 *
 * At start the gateway enforces the config file's masking if it changed since the previous start
 * (an edited file wins and is recorded as a new version); otherwise the latest version, which may
 * come from the console (`PUT /api/masking`), so console edits survive restarts.
 */
import { createHash } from 'node:crypto';
import type Database from 'better-sqlite3';
import { canonicalize } from '../../shared/canonical-json';
import type { CustomDetector, MaskingRule } from '../../shared/config';
import { type AuditStore, StoreUnavailableError } from '../audit/store';
import { type VersionMeta, VersionTable } from '../audit/version-table';
import type { EventBus } from '../bus';
import type { Logger } from '../log';
import { type MaskingConfig, validateMaskingConfig } from './engine';
import type { MaskingEngine } from './types';

export type MaskingVersion = VersionMeta & MaskingConfig;

const CONFIG_HASH_KEY = 'masking.configHash';

export function maskingHash(config: MaskingConfig): string {
  return createHash('sha256').update(canonicalize({ detectors: config.detectors, masking: config.masking })).digest('hex');
}

export class MaskingHistory extends VersionTable<MaskingConfig> {
  constructor(db: Database.Database) {
    super(db, 'masking', (b) => ({ detectors: b.detectors ?? [], masking: b.masking ?? [] }));
  }

  list(limit = 200, offset = 0): { total: number; versions: (Omit<MaskingVersion, 'detectors' | 'masking'> & { rules: number; detectors: number })[] } {
    const { total, versions } = this.page(limit, offset);
    return { total, versions: versions.map((v) => ({ ...v, rules: v.masking.length, detectors: v.detectors.length })) };
  }
}

/** What a masking change touches besides the store. */
export interface MaskingDeps {
  store: AuditStore;
  bus: EventBus;
  masking: MaskingEngine;
  config: { masking: MaskingRule[]; detectors: CustomDetector[] };
}

export interface MaskingChange {
  config: MaskingConfig;
  author: { subject: string; name: string };
  source: 'config' | 'console';
  note?: string;
}

/**
 * Records a new version (row + chained `masking.changed` event, one transaction), then applies it
 * to the engine and publishes `masking.updated`. The config must already be validated
 * (validateMaskingConfig). Throws StoreUnavailableError when it cannot be recorded, and then the
 * running rules stay as they were.
 */
export function applyMaskingChange(deps: MaskingDeps, change: MaskingChange): MaskingVersion {
  const history = new MaskingHistory(deps.store.db);
  const previous = history.latest()?.version ?? null;
  const now = Date.now();
  let version = 0;
  try {
    deps.store.transaction(() => {
      version = history.insert({ detectors: change.config.detectors, masking: change.config.masking }, change.author.subject, { authorName: change.author.name, source: change.source, ...(change.note ? { note: change.note } : {}) }, now);
      deps.store.append({
        kind: 'masking.changed',
        actor: change.author.subject,
        payload: {
          version,
          previousVersion: previous,
          source: change.source,
          actorName: change.author.name,
          detectors: change.config.detectors,
          masking: change.config.masking,
          hash: maskingHash(change.config),
          ...(change.note ? { note: change.note } : {}),
        },
        time: now,
      });
    });
  } catch (err) {
    throw err instanceof StoreUnavailableError ? err : new StoreUnavailableError(err);
  }
  deps.masking.reload(change.config);
  deps.config.masking = change.config.masking;
  deps.config.detectors = change.config.detectors;
  deps.bus.publish({ type: 'masking.updated', version, author: change.author.name });
  return { version, author: change.author.subject, authorName: change.author.name, createdAt: now, source: change.source, ...(change.note ? { note: change.note } : {}), ...change.config };
}

/**
 * At gateway start: decide which masking to enforce (see the file comment) and record the config
 * file's masking as a version when it is new. Returns the version in force.
 */
export function syncMaskingAtStart(deps: MaskingDeps & { log: Logger }, configFile: string | undefined): MaskingVersion {
  const history = new MaskingHistory(deps.store.db);
  const fileConfig: MaskingConfig = { detectors: deps.config.detectors, masking: deps.config.masking };
  const hash = maskingHash(fileConfig);
  const latest = history.latest();
  const author = { subject: 'config', name: configFile ? `config file ${configFile}` : 'embedded default config' };
  const fromConfig = () => {
    const v = latest && maskingHash(latest) === hash ? latest : applyMaskingChange(deps, { config: fileConfig, author, source: 'config' });
    deps.store.setMeta(CONFIG_HASH_KEY, hash);
    return v;
  };
  if (!latest || deps.store.meta(CONFIG_HASH_KEY) !== hash) return fromConfig();
  // The file is unchanged since the last start: keep enforcing the latest version (console edits).
  const checked = validateMaskingConfig({ detectors: latest.detectors, masking: latest.masking });
  if (!checked.ok) {
    deps.log.error(`masking version ${latest.version} cannot be loaded (${checked.issues.map((i) => i.message).join('; ')}); enforcing the config file's masking`);
    return fromConfig();
  }
  deps.masking.reload(checked.config);
  deps.config.masking = checked.config.masking;
  deps.config.detectors = checked.config.detectors;
  return latest;
}
