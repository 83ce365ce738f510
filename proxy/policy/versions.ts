/**
 * Policy versions: every set of rules the gateway has enforced, in the `policy_versions` table
 * (kind `policies`), each with its author, and each change recorded in the chained log as
 * `policy.changed` with the full rules — so an auditor can tell which rules decided any request.
 *
 * At start the gateway enforces the config file's rules if they changed since the previous start
 * (an edited file wins, and is recorded as a new version); otherwise the latest version, which may
 * come from the console (`PUT /api/policies`), so console edits survive restarts.
 */
import { createHash } from 'node:crypto';
import type Database from 'better-sqlite3';
import { canonicalize } from '../../shared/canonical-json';
import type { PolicyRule } from '../../shared/config';
import type { AuditStore } from '../audit/store';
import { type VersionMeta, VersionTable } from '../audit/version-table';
import type { MaskingEngine } from '../masking/types';
import { StoreUnavailableError } from '../audit/store';
import type { EventBus } from '../bus';
import type { Logger } from '../log';
import { checkPolicies, parsePolicies, type PolicyContext } from './check';
import { PolicyEngine } from './engine';

export type PolicyVersion = VersionMeta & { rules: PolicyRule[] };

export type PolicyVersionSummary = Omit<PolicyVersion, 'rules'> & { rules: number };

const CONFIG_HASH_KEY = 'policies.configHash';

export function policiesHash(rules: PolicyRule[]): string {
  return createHash('sha256').update(canonicalize(rules)).digest('hex');
}

export class PolicyHistory extends VersionTable<{ rules: PolicyRule[] }> {
  constructor(db: Database.Database) {
    super(db, 'policies', (b) => ({ rules: b.rules ?? [] }));
  }

  list(limit = 200, offset = 0): { total: number; versions: PolicyVersionSummary[] } {
    const { total, versions } = this.page(limit, offset);
    return { total, versions: versions.map((v) => ({ ...v, rules: v.rules.length })) };
  }
}

/** What a policy change touches besides the store. */
export interface PolicyDeps {
  store: AuditStore;
  bus: EventBus;
  policy: PolicyEngine;
  config: { policies: PolicyRule[] };
  /** The masking engine scans for the detectors policies match on, even where no rule masks. */
  masking?: Pick<MaskingEngine, 'watchDetectors'>;
}

/** Tells the masking engine which detectors the rules in force match on (`match.detectors`). */
function watchPolicyDetectors(masking: Pick<MaskingEngine, 'watchDetectors'> | undefined, rules: PolicyRule[]): void {
  masking?.watchDetectors?.(rules.flatMap((r) => r.match.detectors ?? []));
}

export interface PolicyChange {
  rules: PolicyRule[];
  author: { subject: string; name: string };
  source: 'config' | 'console';
  note?: string;
}

/**
 * Records a new version (row + chained `policy.changed` event, one transaction), then enforces it
 * and publishes `policy.updated`. Throws StoreUnavailableError when it cannot be recorded; the
 * running rules then stay as they were.
 */
export function applyPolicyChange(deps: PolicyDeps, change: PolicyChange): PolicyVersion {
  const history = new PolicyHistory(deps.store.db);
  const previous = history.latest()?.version ?? null;
  const now = Date.now();
  // Compile first: a rule set the engine cannot load is never recorded as enforced.
  new PolicyEngine(change.rules);
  let version = 0;
  try {
    deps.store.transaction(() => {
      version = history.insert({ rules: change.rules }, change.author.subject, { authorName: change.author.name, source: change.source, ...(change.note ? { note: change.note } : {}) }, now);
      deps.store.append({
        kind: 'policy.changed',
        actor: change.author.subject,
        payload: { version, previousVersion: previous, source: change.source, actorName: change.author.name, rules: change.rules, hash: policiesHash(change.rules), ...(change.note ? { note: change.note } : {}) },
        time: now,
      });
    });
  } catch (err) {
    throw err instanceof StoreUnavailableError ? err : new StoreUnavailableError(err);
  }
  deps.policy.load(change.rules);
  deps.config.policies = change.rules;
  watchPolicyDetectors(deps.masking, change.rules);
  deps.bus.publish({ type: 'policy.updated', version, author: change.author.name });
  return { version, author: change.author.subject, authorName: change.author.name, createdAt: now, source: change.source, ...(change.note ? { note: change.note } : {}), rules: change.rules };
}

/**
 * At gateway start: decide which rules to enforce (see the file comment) and record the config's
 * rules as a version when they are new. Returns the version in force.
 */
export function syncPoliciesAtStart(
  deps: PolicyDeps & { log: Logger },
  ctx: PolicyContext,
  configFile: string | undefined,
): PolicyVersion {
  const history = new PolicyHistory(deps.store.db);
  const configRules = deps.config.policies;
  const hash = policiesHash(configRules);
  const latest = history.latest();
  const author = { subject: 'config', name: configFile ? `config file ${configFile}` : 'embedded default config' };
  const fromConfig = () => {
    const v = latest && policiesHash(latest.rules) === hash ? latest : applyPolicyChange(deps, { rules: configRules, author, source: 'config' });
    deps.store.setMeta(CONFIG_HASH_KEY, hash);
    return v;
  };
  if (!latest || deps.store.meta(CONFIG_HASH_KEY) !== hash) return fromConfig();
  // The config is unchanged since the last start: keep enforcing the latest version (console edits).
  const parsed = parsePolicies(latest.rules);
  const errors = parsed.ok ? checkPolicies(parsed.rules, ctx).filter((i) => i.level === 'error') : parsed.issues;
  if (!parsed.ok || errors.length) {
    deps.log.error(`policy version ${latest.version} cannot be loaded (${errors.map((e) => e.message).join('; ')}); enforcing the config file's rules`);
    return fromConfig();
  }
  deps.policy.load(parsed.rules);
  deps.config.policies = parsed.rules;
  watchPolicyDetectors(deps.masking, parsed.rules);
  return latest;
}
