/**
 * Policy versions: every set of rules the gateway has enforced, a versioned document
 * (proxy/audit/versioned-document.ts) of kind `policies`, each change recorded as `policy.changed`
 * with the full rules. At start the config file's rules win when the file changed; otherwise the
 * latest version (which may come from `PUT /api/policies`) stays in force.
 */
import type { PolicyVersion, PolicyVersionSummary } from '../../shared/api';
import type { PolicyRule } from '../../shared/config';
import type { AuditStore } from '../audit/store';
import { type DocumentChange, type DocumentKind, VersionedDocument } from '../audit/versioned-document';
import type { EventBus } from '../bus';
import type { Logger } from '../log';
import type { MaskingEngine } from '../masking/types';
import { checkPolicies, parsePolicies, type PolicyContext } from './check';
import { PolicyEngine } from './engine';

interface PolicyContent {
  rules: PolicyRule[];
}

const POLICIES: DocumentKind<PolicyContent, PolicyVersionSummary> = {
  kind: 'policies',
  noun: 'policy',
  fileNoun: "the config file's rules",
  changedEvent: 'policy.changed',
  updatedMessage: 'policy.updated',
  configHashKey: 'policies.configHash',
  decode: (body) => ({ rules: body.rules ?? [] }),
  hashed: (content) => content.rules,
  summarize: (version) => ({ ...version, rules: version.rules.length }),
};

/** Every version of the rules (`GET /api/policies/versions`). */
export function policyHistory(store: AuditStore): VersionedDocument<PolicyContent, PolicyVersionSummary> {
  return new VersionedDocument(store, POLICIES);
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

export type PolicyChange = Omit<DocumentChange<PolicyContent>, 'content'> & PolicyContent;

/** Enforces `rules`, and tells the masking engine which detectors they match on (`match.detectors`). */
function enforce(deps: PolicyDeps, rules: PolicyRule[]): void {
  deps.policy.load(rules);
  deps.config.policies = rules;
  deps.masking?.watchDetectors?.(rules.flatMap((r) => r.match.detectors ?? []));
}

/**
 * Records a new version (row + chained `policy.changed` event, one transaction), then enforces it
 * and publishes `policy.updated`. Throws StoreUnavailableError when it cannot be recorded; the
 * running rules then stay as they were.
 */
export function applyPolicyChange(deps: PolicyDeps, change: PolicyChange): PolicyVersion {
  // Compile first: a rule set the engine cannot load is never recorded as enforced.
  new PolicyEngine(change.rules);
  const { rules, ...who } = change;
  return policyHistory(deps.store).change({ ...who, content: { rules } }, (content) => enforce(deps, content.rules), deps.bus);
}

/**
 * At gateway start: decide which rules to enforce (see the file comment) and record the config's
 * rules as a version when they are new. Returns the version in force.
 */
export function syncPoliciesAtStart(deps: PolicyDeps & { log: Logger }, ctx: PolicyContext, configFile: string | undefined): PolicyVersion {
  return policyHistory(deps.store).atStart(
    { bus: deps.bus, log: deps.log, configFile },
    { rules: deps.config.policies },
    (stored) => {
      const parsed = parsePolicies(stored.rules);
      if (!parsed.ok) return { ok: false, problems: parsed.issues.map((i) => i.message) };
      const errors = checkPolicies(parsed.rules, ctx).filter((i) => i.level === 'error');
      return errors.length ? { ok: false, problems: errors.map((e) => e.message) } : { ok: true, content: { rules: parsed.rules } };
    },
    (content) => enforce(deps, content.rules),
  );
}
