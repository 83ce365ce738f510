/**
 * The policy editor's YAML view: parse with line numbers (the `yaml` package) and validate with the
 * very schema the gateway uses (shared/config.ts), so an invalid rule is refused in the browser with
 * the gateway's own message, on the line it sits on, as the user types.
 */
import { LineCounter, parseDocument, stringify, type Node as YamlNode } from 'yaml';
import { Config, formatIssuePath, type CustomDetector, type MaskingRule, PolicyRule, SqlClass } from '../../shared/config';
import { yamlLineOf as lineOf } from '../../shared/yaml-lines';

export interface RulesDoc {
  policies: PolicyRule[];
  masking: MaskingRule[];
  detectors: CustomDetector[];
}

export interface RulesIssue {
  line: number;
  /** `policies[0].hold.approvers`, or '' for the document. */
  field: string;
  message: string;
}

export type RulesValidation = { ok: true; value: RulesDoc; issues: [] } | { ok: false; issues: RulesIssue[] };

/** Names the validation needs from outside the document (policies may only name known connections). */
export interface RulesContext {
  connections: string[];
  /**
   * false when this gateway does not let the console edit masking rules: the document then holds
   * policies only, and a policy's `mask: [ids]` cannot be checked here (the gateway checks it).
   */
  maskingEditable?: boolean;
}

const KEYS = ['policies', 'masking', 'detectors'] as const;

export function validateRulesYaml(text: string, ctx: RulesContext): RulesValidation {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    return {
      ok: false,
      issues: doc.errors.map((e) => ({ line: Math.min(e.linePos?.[0]?.line ?? lines.linePos(e.pos[0]).line, text.split('\n').length), field: '', message: `invalid YAML: ${e.message.split('\n')[0]}` })),
    };
  }
  const value: unknown = doc.toJS() ?? {};
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return { ok: false, issues: [{ line: 1, field: '', message: 'expected a mapping with policies: and masking:' }] };
  const obj = value as Record<string, unknown>;
  const maskingEditable = ctx.maskingEditable ?? true;
  const allowed: readonly string[] = maskingEditable ? KEYS : ['policies'];
  const extra = Object.keys(obj).filter((k) => !allowed.includes(k));
  if (extra.length)
    return {
      ok: false,
      issues: extra.map((k) => ({
        line: lineOf(doc.contents as YamlNode | null, [k], lines),
        field: k,
        message: maskingEditable || !(KEYS as readonly string[]).includes(k) ? `unknown key "${k}" (this editor holds ${allowed.join(', ')})` : `${k} cannot be edited from the console on this gateway; edit the config file`,
      })),
    };
  // Connections only matter here by name; stand-ins keep their own validation out of the way.
  const connections = ctx.connections.map((name) => ({ name, kind: 'http', upstream: 'http://connection.invalid' }));
  const r = Config.safeParse({ connections, policies: obj['policies'] ?? [], masking: obj['masking'] ?? [], detectors: obj['detectors'] ?? [] });
  const issues = r.success
    ? []
    : r.error.issues
        .filter((i) => maskingEditable || !/^unknown masking rule/.test(i.message))
        .map((i) => {
          const path = i.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
          return { line: lineOf(doc.contents as YamlNode | null, path, lines), field: formatIssuePath(path), message: i.message };
        });
  if (issues.length) return { ok: false, issues };
  if (r.success) return { ok: true, value: { policies: r.data.policies, masking: r.data.masking, detectors: r.data.detectors }, issues: [] };
  // Only unknown-masking-rule issues, which this gateway checks itself: validate the policies alone.
  const policies = (Array.isArray(obj['policies']) ? obj['policies'] : []).map((p) => PolicyRule.parse(p));
  return { ok: true, value: { policies, masking: [], detectors: [] }, issues: [] };
}

/** Drops default-valued noise so the YAML reads like a hand-written config. */
function tidyPolicy(p: PolicyRule): Record<string, unknown> {
  const out: Record<string, unknown> = { name: p.name };
  if (p.match && Object.keys(p.match).length) out['match'] = p.match;
  out['action'] = p.action;
  if (p.reason) out['reason'] = p.reason;
  if (p.mask?.length) out['mask'] = p.mask;
  if (p.hold) {
    const h: Record<string, unknown> = { approvers: p.hold.approvers };
    if (p.hold.min !== 1) h['min'] = p.hold.min;
    if (p.hold.denyMin !== 1) h['denyMin'] = p.hold.denyMin;
    if (p.hold.timeout !== '5m') h['timeout'] = p.hold.timeout;
    if (p.hold.reason !== 'optional') h['reason'] = p.hold.reason;
    out['hold'] = h;
  }
  return out;
}

function tidyMasking(m: MaskingRule): Record<string, unknown> {
  const out: Record<string, unknown> = { id: m.id, detectors: m.detectors };
  if (m.scope && m.scope.join() !== 'client,upstream,log') out['scope'] = m.scope;
  if (m.strategy && m.strategy !== 'redact') out['strategy'] = m.strategy;
  if (m.strategy === 'mask' && m.keepLast !== 4) out['keepLast'] = m.keepLast;
  for (const k of ['connections', 'columns', 'jsonPaths'] as const) if (m[k]?.length) out[k] = m[k];
  return out;
}

/** The rules as the YAML text the editor shows (`masking: false` leaves masking out). */
export function rulesToYaml(doc: { policies: PolicyRule[]; masking: MaskingRule[]; detectors?: CustomDetector[] }, opts: { masking?: boolean } = {}): string {
  const body: Record<string, unknown> = {};
  if (opts.masking ?? true) body['masking'] = doc.masking.map(tidyMasking);
  body['policies'] = doc.policies.map(tidyPolicy);
  if (doc.detectors?.length) body['detectors'] = doc.detectors;
  return stringify(body, { lineWidth: 0 });
}

/** One line of a diff. */
export interface DiffLine {
  op: ' ' | '+' | '-';
  text: string;
}

/** Line diff (LCS), for comparing policy versions. */
export function diffLines(a: string, b: string): DiffLine[] {
  const x = a.split('\n');
  const y = b.split('\n');
  const n = x.length;
  const m = y.length;
  // lcs[i][j] = LCS length of x[i..], y[j..]
  const lcs: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) lcs[i]![j] = x[i] === y[j] ? lcs[i + 1]![j + 1]! + 1 : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
  const out: DiffLine[] = [];
  let i = 0;
  let j = 0;
  while (i < n && j < m) {
    if (x[i] === y[j]) {
      out.push({ op: ' ', text: x[i]! });
      i++;
      j++;
    } else if (lcs[i + 1]![j]! >= lcs[i]![j + 1]!) out.push({ op: '-', text: x[i++]! });
    else out.push({ op: '+', text: y[j++]! });
  }
  while (i < n) out.push({ op: '-', text: x[i++]! });
  while (j < m) out.push({ op: '+', text: y[j++]! });
  return out;
}

// ---- the form for common rules --------------------------------------------------------------

export const DESTRUCTIVE_SQL = ['drop', 'truncate', 'delete_without_where', 'update_without_where'] as const;
/** Every class but read_only: with `unknown` and the rest, a catch-all for SQL statements that are not proven read-only. */
export const OTHER_SQL = SqlClass.options.filter((c) => c !== 'read_only');

export type RuleTemplate =
  | { kind: 'hold-destructive-sql'; connection: string; group: string; min: number; timeout: string; reasonRequired: boolean }
  | { kind: 'read-only-sql'; connection: string; group: string; min: number; timeout: string; reasonRequired: boolean }
  | { kind: 'hold-prompt'; connection: string; pattern: string; group: string; min: number; timeout: string; reasonRequired: boolean }
  | { kind: 'deny-model'; connection: string; models: string; reason: string }
  | { kind: 'mask-detectors'; connection: string; detectors: string[]; scope: ('client' | 'upstream' | 'log')[]; strategy: 'redact' | 'mask' | 'hash' };

const list = (s: string) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

function uniqueName(base: string, taken: string[]): string {
  if (!taken.includes(base)) return base;
  for (let i = 2; ; i++) if (!taken.includes(`${base}-${i}`)) return `${base}-${i}`;
}

/**
 * Adds a rule built from the form. Policies go first (first match wins, and a new hold or deny is
 * meant to take effect over broader allows); masking rules are appended.
 */
export function applyTemplate(doc: RulesDoc, t: RuleTemplate): RulesDoc {
  const names = doc.policies.map((p) => p.name);
  const on = t.connection ? { connections: [t.connection] } : {};
  const suffix = t.connection ? `-${t.connection}` : '';
  const hold = (group: string, min: number, timeout: string, reasonRequired: boolean) => ({
    approvers: list(group),
    min,
    denyMin: 1,
    timeout,
    reason: reasonRequired ? ('required' as const) : ('optional' as const),
  });
  switch (t.kind) {
    case 'hold-destructive-sql':
      return {
        ...doc,
        policies: [{ name: uniqueName(`hold-destructive-sql${suffix}`, names), match: { ...on, sql: [...DESTRUCTIVE_SQL] }, action: 'hold', hold: hold(t.group, t.min, t.timeout, t.reasonRequired) }, ...doc.policies],
      };
    case 'read-only-sql': {
      // Proven-read-only statements run; everything else on the connection waits for a decision.
      // The catch-all goes last so narrower rules (a deny of destructive SQL) still fire first.
      const allowName = uniqueName(`read-only-sql${suffix}`, names);
      return {
        ...doc,
        policies: [
          { name: allowName, match: { ...on, sql: ['read_only'] }, action: 'allow' },
          ...doc.policies,
          { name: uniqueName(`hold-other-sql${suffix}`, [...names, allowName]), match: { ...on, sql: [...OTHER_SQL] }, action: 'hold', hold: hold(t.group, t.min, t.timeout, t.reasonRequired) },
        ],
      };
    }
    case 'hold-prompt':
      return {
        ...doc,
        policies: [{ name: uniqueName(`hold-prompts${suffix}`, names), match: { ...on, content: t.pattern }, action: 'hold', hold: hold(t.group, t.min, t.timeout, t.reasonRequired) }, ...doc.policies],
      };
    case 'deny-model':
      return {
        ...doc,
        policies: [{ name: uniqueName(`deny-models${suffix}`, names), match: { ...on, model: list(t.models) }, action: 'deny', reason: t.reason || undefined }, ...doc.policies],
      };
    case 'mask-detectors':
      return {
        ...doc,
        masking: [
          ...doc.masking,
          {
            id: uniqueName(`mask${suffix || '-all'}`, doc.masking.map((m) => m.id)),
            detectors: t.detectors,
            scope: t.scope.length ? t.scope : ['client', 'upstream', 'log'],
            strategy: t.strategy,
            keepLast: 4,
            ...(t.connection ? { connections: [t.connection] } : {}),
          },
        ],
      };
  }
}

/** Moves a policy up or down (order matters: first match wins). */
export function movePolicy(doc: RulesDoc, index: number, delta: -1 | 1): RulesDoc {
  const j = index + delta;
  if (j < 0 || j >= doc.policies.length) return doc;
  const policies = doc.policies.slice();
  [policies[index], policies[j]] = [policies[j]!, policies[index]!];
  return { ...doc, policies };
}

export function removePolicy(doc: RulesDoc, index: number): RulesDoc {
  return { ...doc, policies: doc.policies.filter((_, i) => i !== index) };
}

export function removeMasking(doc: RulesDoc, index: number): RulesDoc {
  return { ...doc, masking: doc.masking.filter((_, i) => i !== index) };
}

/** One-line description of a policy for the rule list. */
export function describePolicy(p: PolicyRule): string {
  const m = p.match ?? {};
  const conds: string[] = [];
  if (m.connections?.length) conds.push(`on ${m.connections.join(', ')}`);
  if (m.sql?.length) conds.push(`SQL ${m.sql.join(', ')}`);
  if (m.model?.length) conds.push(`model ${m.model.join(', ')}`);
  if (m.content) conds.push(`content /${m.content}/`);
  if (m.groups?.length) conds.push(`groups ${m.groups.join(', ')}`);
  if (m.users?.length) conds.push(`users ${m.users.join(', ')}`);
  if (m.methods?.length) conds.push(`${m.methods.join(', ')}`);
  if (m.paths?.length) conds.push(`paths ${m.paths.join(', ')}`);
  if (m.tools !== undefined) conds.push(m.tools ? 'with tools' : 'without tools');
  if (m.detectors?.length) conds.push(`detects ${m.detectors.join(', ')}`);
  const when = conds.length ? conds.join(' · ') : 'every request';
  if (p.action === 'hold' && p.hold)
    return `${when} → hold for ${p.hold.approvers.join(', ')} (${p.hold.min} approval${p.hold.min === 1 ? '' : 's'}, times out in ${p.hold.timeout}${p.hold.reason === 'required' ? ', reason required' : ''})`;
  if (p.action === 'deny') return `${when} → deny${p.reason ? `: ${p.reason}` : ''}`;
  if (p.action === 'mask') return `${when} → mask with ${p.mask?.join(', ')}`;
  return `${when} → allow`;
}
