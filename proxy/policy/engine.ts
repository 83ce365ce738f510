/**
 * Ordered policy rules, first match wins, no match allows (DESIGN.md, Policy). A rule matches when
 * every condition it names holds; conditions it omits match anything.
 */
import type { PolicyRule, SqlClass } from '../../shared/config';
import { DETECTOR_GROUPS } from '../masking/detectors';
import type { PolicyDecision, PolicyEvaluator, PolicyInput } from './types';

/** `(?i)` prefix → case-insensitive, as in the config examples. */
export function compileContentRegex(source: string): RegExp {
  return source.startsWith('(?i)') ? new RegExp(source.slice(4), 'iu') : new RegExp(source, 'u');
}

/** Glob with `*` (any run of characters within the path) for `match.paths`. */
function globToRegex(glob: string): RegExp {
  return new RegExp(`^${glob.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
}

/** Statement classes that are risky when the parser could not tell (fail closed). */
const UNKNOWN_MATCHES_RISKY = true;

interface CompiledRule {
  rule: PolicyRule;
  content?: RegExp;
  paths?: RegExp[];
  methods?: Set<string>;
  /** Detector ids, with group names (`pii`, `secrets`, …) expanded to their members. */
  detectors?: Set<string>;
}

/** Expands detector group names (`pii`, `secrets`, `all`, …) into detector ids. */
export function expandDetectors(ids: readonly string[]): string[] {
  return [...new Set(ids.flatMap((d) => DETECTOR_GROUPS[d] ?? [d]))];
}

export class PolicyEngine implements PolicyEvaluator {
  private compiled: CompiledRule[] = [];

  constructor(rules: PolicyRule[]) {
    this.load(rules);
  }

  /** Replaces the rules; throws on an invalid regular expression (validated before saving). */
  load(rules: PolicyRule[]): void {
    this.compiled = rules.map((rule) => ({
      rule,
      content: rule.match.content !== undefined ? compileContentRegex(rule.match.content) : undefined,
      paths: rule.match.paths?.map(globToRegex),
      methods: rule.match.methods ? new Set(rule.match.methods.map((m) => m.toUpperCase())) : undefined,
      detectors: rule.match.detectors ? new Set(expandDetectors(rule.match.detectors)) : undefined,
    }));
  }

  get rules(): PolicyRule[] {
    return this.compiled.map((c) => c.rule);
  }

  evaluate(input: PolicyInput): PolicyDecision {
    for (const c of this.compiled) {
      if (matches(c, input)) {
        const r = c.rule;
        return { action: r.action, rule: r.name, reason: r.reason, mask: r.mask, hold: r.hold };
      }
    }
    return { action: 'allow' };
  }
}

function matches(c: CompiledRule, input: PolicyInput): boolean {
  const m = c.rule.match;
  if (m.connections && !m.connections.includes(input.connection)) return false;
  // An OIDC name is only unique within its issuer: those match by the issuer-qualified subject.
  if (m.users && !m.users.some((u) => u === input.identity.subject || (input.identity.via !== 'oidc' && u === input.identity.name))) return false;
  if (m.groups && !m.groups.some((g) => input.identity.groups.includes(g))) return false;
  if (c.methods || c.paths || m.model || m.tools !== undefined) {
    if (!input.http) return false;
    if (c.methods && !c.methods.has(input.http.method.toUpperCase())) return false;
    if (c.paths && !c.paths.some((re) => re.test(input.http!.path))) return false;
    if (m.model && (!input.http.model || !m.model.includes(input.http.model))) return false;
    if (m.tools !== undefined && m.tools !== input.http.tools) return false;
  }
  if (m.sql) {
    if (!input.sql) return false;
    const wanted = new Set<SqlClass>(m.sql);
    const hit = input.sql.classes.some((k) => wanted.has(k)) || (UNKNOWN_MATCHES_RISKY && input.sql.classes.includes('unknown') && c.rule.action !== 'allow');
    if (!hit) return false;
  }
  if (c.content && !c.content.test(input.text)) return false;
  if (c.detectors && !input.detectorHits.some((d) => c.detectors!.has(d))) return false;
  return true;
}
