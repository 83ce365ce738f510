/**
 * Applies a connections, policy or masking version that another gateway of the shared store made
 * (audit/shared-store/doc-sync.ts): checked here exactly as a console edit is, then recorded as this
 * gateway's own version (`source: group`, naming where it came from) and enforced (connections:
 * stored, applied at the next start, as console changes are; connections/store.ts). A version this
 * gateway cannot load (it names a connection or masking rule this gateway lacks) is not applied:
 * the gateway keeps its rules and says why in the log.
 */
import type { ConfigIssue } from '../shared/config';
import type { PulledDocument } from './audit/shared-store/doc-sync';
import { applyGroupConnections, connectionsNow, fileConfig } from './connections/store';
import { validateMaskingConfig } from './masking/engine';
import { applyMaskingChange } from './masking/versions';
import { checkPolicies, parsePolicies } from './policy/check';
import { policyContext } from './policy/context';
import { applyPolicyChange } from './policy/versions';
import type { GatewayServices } from './services';

export function applyGroupDocument(s: GatewayServices, doc: PulledDocument): void {
  const from = `version ${doc.version} of gateway ${doc.gateway}`;
  const who = { author: { subject: doc.author, name: doc.authorName }, source: 'group' as const, note: `from the shared store: ${from}` };
  const noun = { policies: 'policy', masking: 'masking', connections: 'connections' }[doc.kind];
  const refuse = (problems: string[]) => s.log.error(`shared store: ${noun} ${from} cannot be enforced here (${problems.join('; ')}); this gateway keeps its rules`);
  try {
    if (doc.kind === 'connections') {
      // Applied before the round's policy version (doc-sync.ts orders kinds), which may name them.
      const problems = applyGroupConnections(fileConfig(s), doc.content, { author: who.author, note: who.note });
      if (problems.length) return refuse(problems);
      s.log.info(`shared store: took connections ${from} (they apply when this gateway restarts)`);
      return;
    }
    if (doc.kind === 'policies') {
      const parsed = parsePolicies(doc.content['rules']);
      if (!parsed.ok) return refuse(parsed.issues.map((i) => i.message));
      const errors = checkPolicies(parsed.rules, policyContext(s)).filter((i) => i.level === 'error');
      if (errors.length) return refuse(errors.map((e) => e.message));
      applyPolicyChange(s, { rules: parsed.rules, ...who });
      s.log.info(`shared store: enforcing policy ${from}`);
      return;
    }
    const r = validateMaskingConfig({ detectors: doc.content['detectors'] ?? [], masking: doc.content['masking'] ?? [] }, { connections: connectionsNow(s.config, s.store).map((c) => c.name) });
    if (!r.ok) return refuse(r.issues.map((i: ConfigIssue) => i.message));
    applyMaskingChange(s, { config: r.config, ...who });
    s.log.info(`shared store: enforcing masking ${from}`);
  } catch (err) {
    // The store could not record it: not enforced (a version is enforced only once recorded); the next round tries again.
    s.log.error(`shared store: ${from} could not be recorded here (${(err as Error).message}); this gateway keeps its rules`);
  }
}
