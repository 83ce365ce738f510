/**
 * Policy validation beyond the schema: what `custody policy check`, `PUT /api/policies` and the
 * console's editor report.
 *
 * Errors (the rules cannot be loaded): schema violations, a `content` regex that does not compile,
 * a `mask` action naming a masking rule that does not exist.
 * Warnings (the rules load, but some can never fire or are suspicious): a connection that does not
 * exist, an SQL match on HTTP-only connections or an HTTP/LLM match on PostgreSQL-only ones, SQL and
 * HTTP conditions in one rule, a detector that does not exist, a `users` value that looks like a
 * display name rather than an issuer-qualified subject or key id, a rule shadowed by
 * an earlier rule that matches everything it matches (first match wins, so every action is
 * terminal), and duplicate rule names (holds and grants refer to rules by name).
 */
import { z } from 'zod';
import type { PolicyIssue } from '../../shared/api';
import { type ConfigIssue, type ConnectionKind, type MaskingRule, PolicyRule, type SqlClass } from '../../shared/config';
import { BUILTIN_DETECTORS, DETECTOR_GROUPS } from '../masking/detectors';
import { compileContentRegex } from './engine';

export interface PolicyContext {
  /** Connections that exist (config and console); undefined: unknown, skip connection checks. */
  connections?: { name: string; kind: ConnectionKind }[];
  /** Masking rules that exist; undefined: unknown, skip masking checks. */
  masking?: Pick<MaskingRule, 'id' | 'connections'>[];
  /** Custom detector ids from the config (built-in detectors and groups are always known). */
  detectors?: string[];
}

/** Detector ids and group names a policy may name: built-ins, groups (`pii`, `secrets`, …) and custom ones. */
export function knownDetectors(custom: string[] = []): Set<string> {
  return new Set([...BUILTIN_DETECTORS.map((d) => d.id), ...Object.keys(DETECTOR_GROUPS), ...custom]);
}

export const PolicyList = z.array(PolicyRule);

/** Validates a list of rules against the schema; issues carry paths like `[2, 'hold', 'approvers']`. */
export function parsePolicies(value: unknown): { ok: true; rules: PolicyRule[] } | { ok: false; issues: ConfigIssue[] } {
  const r = PolicyList.safeParse(value);
  if (r.success) return { ok: true, rules: r.data };
  return { ok: false, issues: r.error.issues.map((i) => ({ path: i.path.map((p) => (typeof p === 'symbol' ? String(p) : p)), message: i.message })) };
}

const HTTP_KINDS: ConnectionKind[] = ['openai', 'anthropic', 'http'];

function hasHttpConditions(r: PolicyRule): boolean {
  const m = r.match;
  // `paths` also names file-transfer paths when the rule matches SSH operations.
  return m.methods !== undefined || (m.paths !== undefined && m.ssh === undefined) || m.model !== undefined || m.tools !== undefined;
}

function hasSshConditions(r: PolicyRule): boolean {
  return r.match.commands !== undefined || r.match.ssh !== undefined;
}

function subset<T>(later: T[] | undefined, earlier: T[] | undefined, norm: (x: T) => unknown = (x) => x): boolean {
  if (earlier === undefined) return true;
  if (later === undefined) return false;
  const e = new Set(earlier.map(norm));
  return later.every((x) => e.has(norm(x)));
}

/** Classes every statement of a class also carries (a `read_only` statement is a `select`, …). */
const IMPLIED: Partial<Record<SqlClass, SqlClass[]>> = {
  read_only: ['select'],
  delete_without_where: ['delete'],
  update_without_where: ['update'],
  routine_ddl: ['ddl'],
  set_role: ['set'],
};

/** Every statement `later` matches by class is matched by `earlier`: its class, or one it implies, is listed there. */
function sqlCovered(later: SqlClass[] | undefined, earlier: SqlClass[] | undefined): boolean {
  if (earlier === undefined) return true;
  if (later === undefined) return false;
  const e = new Set(earlier);
  return later.every((x) => e.has(x) || (IMPLIED[x] ?? []).some((y) => e.has(y)));
}

/** Every detector `later` names (groups expanded to their members) is named by `earlier` or one of its groups. */
function detectorsCovered(later: string[] | undefined, earlier: string[] | undefined): boolean {
  if (earlier === undefined) return true;
  if (later === undefined) return false;
  const expand = (ids: string[]) => ids.flatMap((d) => DETECTOR_GROUPS[d] ?? [d]);
  const e = new Set(expand(earlier));
  return expand(later).every((d) => e.has(d));
}

function globToRegex(glob: string): RegExp {
  return new RegExp(`^${glob.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
}

/** True when every request `later` matches is also matched by `earlier`. Conservative: false when unsure. */
export function covers(earlier: PolicyRule, later: PolicyRule): boolean {
  const e = earlier.match;
  const l = later.match;
  if (!subset(l.connections, e.connections)) return false;
  if (!subset(l.users, e.users)) return false;
  if (!subset(l.groups, e.groups)) return false;
  if (!subset(l.methods, e.methods, (m) => m.toUpperCase())) return false;
  if (e.paths !== undefined) {
    if (l.paths === undefined) return false;
    const globs = e.paths.map(globToRegex);
    if (!l.paths.every((p) => globs.some((g) => g.test(p)))) return false;
  }
  if (!subset(l.model, e.model)) return false;
  if (e.tools !== undefined && e.tools !== l.tools) return false;
  if (!sqlCovered(l.sql, e.sql)) return false;
  if (!subset(l.ssh, e.ssh)) return false;
  // Command globs match every command for allow and any command (or an unknown one) for deny and
  // hold, so one command list covering another is not decided here: never claimed.
  if (e.commands !== undefined) return false;
  // A non-allow SQL rule also matches statements the parser could not classify; an allow rule does not.
  if (e.sql !== undefined && earlier.action === 'allow' && later.action !== 'allow' && !e.sql.includes('unknown')) return false;
  if (e.content !== undefined && e.content !== l.content) return false;
  if (!detectorsCovered(l.detectors, e.detectors)) return false;
  return true;
}

/** Every problem with `rules` in `ctx`; errors first, then warnings, each in rule order. */
export function checkPolicies(rules: PolicyRule[], ctx: PolicyContext = {}): PolicyIssue[] {
  const issues: PolicyIssue[] = [];
  const known = ctx.connections ? new Map(ctx.connections.map((c) => [c.name, c.kind] as const)) : undefined;
  const maskIds = ctx.masking ? new Set(ctx.masking.map((m) => m.id)) : undefined;
  const seenNames = new Map<string, number>();

  rules.forEach((r, i) => {
    const at = (level: PolicyIssue['level'], path: (string | number)[], message: string) => issues.push({ level, rule: i, name: r.name, path: [i, ...path], message });
    const m = r.match;

    if (m.content !== undefined) {
      try {
        compileContentRegex(m.content, `policy rule "${r.name}"`);
      } catch (err) {
        at('error', ['match', 'content'], (err as Error).message);
      }
    }
    if (maskIds) for (const [j, id] of (r.mask ?? []).entries()) if (!maskIds.has(id)) at('error', ['mask', j], `unknown masking rule "${id}"`);
    for (const [j, u] of (m.users ?? []).entries()) {
      if (/^(key|local):/.test(u) || /^https?:\/\/[^#\s]+#\S+$/.test(u)) continue;
      at('warning', ['match', 'users', j], `"${u}" looks like a display name, not a verified identity: it matches API keys named so (any of them) and never an OIDC user; use <issuer>#<verified claim> (e.g. https://idp.example.com#${u.includes('@') ? u : '<sub>'}) or key:<id>`);
    }

    const prev = seenNames.get(r.name);
    if (prev !== undefined) at('warning', ['name'], `rule name "${r.name}" is also used by rule #${prev + 1}; holds and grants refer to rules by name`);
    else seenNames.set(r.name, i);

    // Which connections can this rule ever see?
    let candidates: { name: string; kind: ConnectionKind }[] | undefined;
    if (known) {
      if (m.connections) {
        const unknown = m.connections.filter((c) => !known.has(c));
        if (unknown.length === m.connections.length) {
          at('warning', ['match', 'connections'], `never fires: no connection named ${unknown.map((c) => `"${c}"`).join(', ')}`);
          return;
        }
        for (const c of unknown) at('warning', ['match', 'connections', m.connections.indexOf(c)], `connection "${c}" does not exist; that part of the rule never matches`);
        candidates = m.connections.filter((c) => known.has(c)).map((c) => ({ name: c, kind: known.get(c)! }));
      } else candidates = [...known].map(([name, kind]) => ({ name, kind }));
    }

    if (m.sql && hasHttpConditions(r)) {
      at('warning', ['match'], 'never fires: it matches SQL statement classes and HTTP/LLM conditions, but a request is either SQL or HTTP');
      return;
    }
    if (hasSshConditions(r) && (m.sql || hasHttpConditions(r))) {
      at('warning', ['match'], 'never fires: it matches SSH commands or operations together with SQL or HTTP conditions, but a request is of one protocol');
      return;
    }
    if (candidates && candidates.length > 0) {
      if (hasSshConditions(r) && !candidates.some((c) => c.kind === 'ssh')) {
        at('warning', ['match', m.commands ? 'commands' : 'ssh'], `never fires: ${m.commands ? 'commands' : 'ssh'} matches only SSH connections, and ${candidates.map((c) => `${c.name} (${c.kind})`).join(', ')} ${candidates.length === 1 ? 'is not one' : 'are not'}`);
        return;
      }
      if (m.sql && !candidates.some((c) => c.kind === 'postgres')) {
        at('warning', ['match', 'sql'], `never fires: sql matches only PostgreSQL statements, and ${candidates.map((c) => `${c.name} (${c.kind})`).join(', ')} ${candidates.length === 1 ? 'is' : 'are'} HTTP`);
        return;
      }
      if (hasHttpConditions(r) && !candidates.some((c) => HTTP_KINDS.includes(c.kind))) {
        const what = ['methods', 'paths', 'model', 'tools'].filter((k) => m[k as keyof typeof m] !== undefined).join(', ');
        at('warning', ['match'], `never fires: ${what} match HTTP/LLM requests, and ${candidates.map((c) => c.name).join(', ')} ${candidates.length === 1 ? `is ${candidates[0]!.kind === 'ssh' ? 'an SSH' : 'a PostgreSQL'} connection` : 'are not HTTP connections'}`);
        return;
      }
    } else if (candidates && candidates.length === 0 && (m.sql || hasHttpConditions(r) || hasSshConditions(r))) {
      at('warning', ['match'], `no connection is configured yet that this rule could match`);
    }

    if (r.action === 'allow' && m.sql?.includes('select')) {
      at('warning', ['match', 'sql'], 'allowing select also allows statements that write while they read (WITH … DELETE, SELECT f() where f writes, SELECT … FOR UPDATE); allow read_only instead');
    }

    if (m.detectors) {
      const detectors = knownDetectors(ctx.detectors);
      const unknown = m.detectors.filter((d) => !detectors.has(d));
      if (unknown.length === m.detectors.length) {
        at('warning', ['match', 'detectors'], `never fires: no detector named ${unknown.map((d) => `"${d}"`).join(', ')}`);
        return;
      }
      for (const d of unknown) at('warning', ['match', 'detectors', m.detectors.indexOf(d)], `detector "${d}" does not exist; that part of the rule never matches`);
    }

    for (let j = 0; j < i; j++) {
      const e = rules[j]!;
      if (covers(e, r)) {
        at('warning', [], `never fires: rule #${j + 1} "${e.name}" (${e.action}) comes first and matches everything this rule matches`);
        break;
      }
    }
  });
  return issues.sort((a, b) => (a.level === b.level ? 0 : a.level === 'error' ? -1 : 1));
}

/** One line per issue: `rule #3 "name": message (path)`. */
export function formatPolicyIssue(i: PolicyIssue): string {
  const where = i.rule !== undefined ? `rule #${i.rule + 1} "${i.name}"` : 'policies';
  const field = i.path.slice(1).join('.');
  return `${i.level}: ${where}${field ? ` (${field})` : ''}: ${i.message}`;
}
