/**
 * Ordered policy rules, first match wins, no match allows (DESIGN.md, Policy). A rule matches when
 * every condition it names holds; conditions it omits match anything.
 */
import type { PolicyRule, SqlClass } from '../../shared/config';
import { DETECTOR_GROUPS } from '../masking/detectors';
import { CONTENT_BUDGET_MS, LinearPattern, ScanBudgetError } from '../masking/pattern';
import { analyzeRegex } from '../masking/scanner';
import { commandMatches, compileCommandPattern } from './shell-commands';
import type { PolicyDecision, PolicyEvaluator, PolicyInput } from './types';

/** A compiled `match.content` pattern. */
export interface ContentPattern {
  source: string;
  /** Throws ScanBudgetError when the text takes longer than the budget. */
  test(text: string): boolean;
}

/**
 * `match.content` on the linear-time engine (proxy/masking/pattern.ts); `(?i)` prefix →
 * case-insensitive, as in the config examples. Throws PatternError naming `who` for a pattern the
 * engine cannot run (backreferences, lookaround) or that does not parse.
 */
export function compileContentRegex(source: string, who = 'match.content', budgetMs = CONTENT_BUDGET_MS): ContentPattern {
  const ci = source.startsWith('(?i)');
  const body = ci ? source.slice(4) : source;
  const lp = LinearPattern.compile(body, who, ci);
  let longest = Infinity;
  try {
    longest = analyzeRegex(body).maxLength;
  } catch {
    // RE2-only syntax the analyser does not read: treated as unbounded
  }
  return { source, test: (text) => lp.test(text, performance.now() + budgetMs, longest, who) };
}

/**
 * Glob with `*` (any run of characters within the path) for `match.paths`, matched against the
 * canonical path (proxy/http/path.ts). Many upstream routers ignore case, so a rule that refuses
 * or restrains (`deny`, `hold`, `mask`) matches `/ADMIN` as `/admin`; an `allow` rule matches the
 * exact case, so a spelling that only some routers equate never widens what is allowed.
 */
function globToRegex(glob: string, action: PolicyRule['action']): RegExp {
  return new RegExp(`^${glob.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`, action === 'allow' ? '' : 'i');
}

/** Statement classes that are risky when the parser could not tell (fail closed). */
const UNKNOWN_MATCHES_RISKY = true;

interface CompiledRule {
  rule: PolicyRule;
  content?: ContentPattern;
  paths?: RegExp[];
  methods?: Set<string>;
  /** Detector ids, with group names (`pii`, `secrets`, …) expanded to their members. */
  detectors?: Set<string>;
  /** `match.commands`, split into words and normalised like parsed commands. */
  commands?: string[][];
  /** `match.paths` as globs over file-transfer paths, where `*` crosses `/` (SSH rules). */
  filePaths?: RegExp[];
}

/** File-transfer path globs: `*` matches any characters (`/` included), `?` one; always case-sensitive. */
function filePathGlob(glob: string): RegExp {
  return new RegExp(`^${glob.split('*').map((p) => p.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\?/g, '.')).join('.*')}$`, 's');
}

/** Expands detector group names (`pii`, `secrets`, `all`, …) into detector ids. */
export function expandDetectors(ids: readonly string[]): string[] {
  return [...new Set(ids.flatMap((d) => DETECTOR_GROUPS[d] ?? [d]))];
}

export class PolicyEngine implements PolicyEvaluator {
  private compiled: CompiledRule[] = [];

  /** `contentBudgetMs`: how long one `content` pattern may take over one request's text. */
  constructor(
    rules: PolicyRule[],
    private readonly opts: { contentBudgetMs?: number } = {},
  ) {
    this.load(rules);
  }

  /** Replaces the rules; throws on an invalid regular expression (validated before saving). */
  load(rules: PolicyRule[]): void {
    this.compiled = rules.map((rule) => ({
      rule,
      content: rule.match.content !== undefined ? compileContentRegex(rule.match.content, `policy rule "${rule.name}"`, this.opts.contentBudgetMs) : undefined,
      paths: rule.match.paths?.map((g) => globToRegex(g, rule.action)),
      methods: rule.match.methods ? new Set(rule.match.methods.map((m) => m.toUpperCase())) : undefined,
      detectors: rule.match.detectors ? new Set(expandDetectors(rule.match.detectors)) : undefined,
      commands: rule.match.commands?.map(compileCommandPattern),
      filePaths: rule.match.ssh ? rule.match.paths?.map(filePathGlob) : undefined,
    }));
  }

  /**
   * Does a rule that reads content (`content` or `detectors`) apply to `connection`? Then a request
   * body the gateway cannot inspect is refused rather than forwarded unseen.
   */
  inspects(connection: string): boolean {
    return this.compiled.some((c) => (c.content !== undefined || c.detectors !== undefined) && (!c.rule.match.connections || c.rule.match.connections.includes(connection)));
  }

  get rules(): PolicyRule[] {
    return this.compiled.map((c) => c.rule);
  }

  /**
   * A `content` pattern that runs out of its budget cannot say whether its rule matches: the
   * request is denied in that rule's name (fail closed, for every proxy and for dry-run alike).
   */
  evaluate(input: PolicyInput): PolicyDecision {
    for (const c of this.compiled) {
      let hit: boolean;
      try {
        hit = matches(c, input);
      } catch (err) {
        if (!(err instanceof ScanBudgetError)) throw err;
        return { action: 'deny', rule: c.rule.name, reason: `${err.message.replace(/; the request was refused \(fail closed\)$/, '')}, so the gateway cannot tell whether the rule matches` };
      }
      if (hit) {
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
  if (m.ssh || c.commands) {
    const ssh = input.ssh;
    if (!ssh) return false;
    if (m.ssh && !m.ssh.some((o) => ssh.operations.includes(o))) return false;
    // Allow-lists allow only what they name; hold and deny take anything the gateway cannot see as a match.
    const allow = c.rule.action === 'allow';
    if (c.commands) {
      if (!ssh.commands) return false;
      const named = (argv: string[]) => c.commands!.some((p) => commandMatches(p, argv));
      if (allow ? ssh.unknown || !ssh.commands.length || !ssh.commands.every(named) : !ssh.unknown && !ssh.commands.some(named)) return false;
    }
    if (c.filePaths) {
      if (!ssh.paths?.length) return false;
      const named = (p: string) => c.filePaths!.some((re) => re.test(p));
      if (allow ? !ssh.paths.every(named) : !ssh.paths.some(named)) return false;
    }
  } else if (c.methods || c.paths || m.model || m.tools !== undefined) {
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
