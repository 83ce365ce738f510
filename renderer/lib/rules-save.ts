/**
 * Saving a reviewed draft of the rules: the policies and the masking rules are two versioned
 * documents on the gateway (`PUT /api/policies`, `PUT /api/masking`), saved one after the other,
 * each only when it changed. The order matters: the gateway refuses masking that the rules in force
 * still reference, and rules that reference masking it lacks.
 */
import type { ConsoleApi } from './api-types';
import type { RulesDoc } from './rules-yaml';

/** The rules as the gateway last returned them: what a draft is compared with and saved over. */
export interface SavedRules {
  doc: RulesDoc;
  /** false: masking rules are not editable here (no reviewer role, or the gateway keeps them in its config file). */
  maskingEditable: boolean;
  /** The versions the draft started from: a save over someone else's newer version is refused (409). */
  policiesVersion: number | null;
  maskingVersion: number | null;
}

export function policiesChanged(draft: RulesDoc, saved: SavedRules): boolean {
  return JSON.stringify(draft.policies) !== JSON.stringify(saved.doc.policies);
}

export function maskingChanged(draft: RulesDoc, saved: SavedRules): boolean {
  return JSON.stringify({ m: draft.masking, d: draft.detectors }) !== JSON.stringify({ m: saved.doc.masking, d: saved.doc.detectors });
}

/**
 * Which document goes first: when the draft drops a masking rule that the saved policies use, the
 * policies (which stop using it); otherwise the masking (which new policies may use).
 */
export function saveOrder(draft: RulesDoc, saved: SavedRules): ('policies' | 'masking')[] {
  const ids = new Set(draft.masking.map((m) => m.id));
  const dropsReferenced = saved.doc.policies.some((p) => (p.mask ?? []).some((id) => !ids.has(id)));
  return dropsReferenced ? ['policies', 'masking'] : ['masking', 'policies'];
}

/** Saves what changed, in the order the gateway accepts; a refusal stops there and is thrown. */
export async function saveRules(api: Pick<ConsoleApi, 'putPolicies' | 'putMasking'>, draft: RulesDoc, saved: SavedRules): Promise<void> {
  for (const documentKind of saveOrder(draft, saved)) {
    if (documentKind === 'masking' && maskingChanged(draft, saved) && saved.maskingEditable) await api.putMasking(draft.masking, draft.detectors, saved.maskingVersion);
    if (documentKind === 'policies' && policiesChanged(draft, saved)) await api.putPolicies(draft.policies, saved.policiesVersion);
  }
}
