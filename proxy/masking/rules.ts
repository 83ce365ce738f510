/**
 * Masking rules compiled for use: which detectors each rule masks, in which scopes, with which
 * strategy. A MaskPlan is the rule set that applies to one message in one direction; it scans a
 * text once and renders it twice — for the forward scope (what goes upstream, or back to the
 * client) and for the log (always masked for anything any rule masks).
 */
import { createHmac } from 'node:crypto';
import type { CustomDetector, MaskingRule, MaskScope } from '../../shared/config';
import type { MaskSpan } from '../../shared/events';
import { BUILTIN_BY_ID, BUILTIN_DETECTORS, DETECTOR_GROUPS, type Detector } from './detectors';
import { compileCustomDetector, type Match, resolveOverlaps, scanText } from './scanner';
import type { ColumnPattern, CompiledRule, JsonPathStep } from './compiled-rule';
import { fitToScreen, labelKeepingEscapes } from './terminal-width';
import { MaskingError } from './types';

export type RenderScope = MaskScope;

export type { ColumnPattern, CompiledRule, JsonPathStep } from './compiled-rule';

/** Parses `users.ssn`, `*.email`, `ssn`, `public.users.ssn` (schema ignored). */
export function parseColumnPattern(text: string): ColumnPattern {
  const parts = text.trim().toLowerCase().split('.');
  if (!parts.every((p) => p.length > 0) || parts.length > 3) throw new Error(`invalid column pattern "${text}" (expected column, table.column or *.column)`);
  const column = parts[parts.length - 1]!;
  const table = parts.length >= 2 ? parts[parts.length - 2] : undefined;
  return { table: table === '*' ? undefined : table, column };
}

/** Parses the JSONPath subset `$.a.b`, `$.items[*].text`, `$['a b'][0]`, `$.*`. */
export function parseJsonPath(text: string): JsonPathStep[] {
  const src = text.trim();
  if (!src.startsWith('$')) throw new Error(`invalid JSONPath "${text}": it must start with $`);
  const steps: JsonPathStep[] = [];
  let i = 1;
  while (i < src.length) {
    const rest = src.slice(i);
    let m: RegExpExecArray | null;
    if ((m = /^\.([A-Za-z_$][\w$-]*)/.exec(rest))) steps.push({ name: m[1]! });
    else if ((m = /^\.\*/.exec(rest)) || (m = /^\[\*\]/.exec(rest))) steps.push({ any: true });
    else if ((m = /^\[(\d+)\]/.exec(rest))) steps.push({ index: Number(m[1]) });
    else if ((m = /^\[(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")\]/.exec(rest))) steps.push({ name: (m[1] ?? m[2]!).replace(/\\(.)/g, '$1') });
    else throw new Error(`invalid JSONPath "${text}": unsupported syntax at "${rest}" (supported: $.a.b, [*], [n], ['name'])`);
    i += m[0].length;
  }
  return steps;
}

/** Does `path` (keys from the root to a string) lie at or under one of `paths`? */
export function jsonPathCovers(paths: JsonPathStep[][], path: readonly (string | number)[]): boolean {
  outer: for (const steps of paths) {
    if (steps.length > path.length) continue;
    for (let i = 0; i < steps.length; i++) {
      const s = steps[i]!;
      const k = path[i]!;
      if ('any' in s) continue;
      if ('index' in s ? k !== s.index : k !== s.name) continue outer;
    }
    return true;
  }
  return false;
}

export interface RuleSetOptions {
  validators: Record<string, (v: string) => boolean>;
}

/** The compiled masking config. Construction throws Error naming the rule or detector at fault. */
export class RuleSet {
  readonly detectors = new Map<string, Detector>();
  readonly rules: CompiledRule[] = [];
  readonly byId = new Map<string, CompiledRule>();

  constructor(config: { detectors: CustomDetector[]; masking: MaskingRule[] }, opts: RuleSetOptions) {
    for (const d of BUILTIN_DETECTORS) this.detectors.set(d.id, d);
    for (const def of config.detectors) {
      if (this.detectors.has(def.id) || DETECTOR_GROUPS[def.id]) throw new Error(`detector "${def.id}": the id is taken by a built-in detector or group; choose another`);
      this.detectors.set(def.id, compileCustomDetector(def, opts.validators));
    }
    for (const rule of config.masking) {
      if (this.byId.has(rule.id)) throw new Error(`masking rule "${rule.id}" is defined twice`);
      const detectors: Detector[] = [];
      for (const name of rule.detectors) {
        const ids = DETECTOR_GROUPS[name] ?? [name];
        for (const id of ids) {
          const d = this.detectors.get(id);
          if (!d) {
            const custom = config.detectors.map((c) => c.id);
            throw new Error(
              `masking rule "${rule.id}": unknown detector "${name}" (built-in: ${BUILTIN_DETECTORS.map((b) => b.id).join(', ')}; groups: ${Object.keys(DETECTOR_GROUPS).join(', ')}${custom.length ? `; custom: ${custom.join(', ')}` : ''})`,
            );
          }
          if (!detectors.includes(d)) detectors.push(d);
        }
      }
      let columns: ColumnPattern[] | undefined;
      let jsonPaths: JsonPathStep[][] | undefined;
      try {
        columns = rule.columns?.map(parseColumnPattern);
        jsonPaths = rule.jsonPaths?.map(parseJsonPath);
      } catch (err) {
        throw new Error(`masking rule "${rule.id}": ${(err as Error).message}`);
      }
      if (!detectors.length && !columns?.length && !jsonPaths?.length)
        throw new Error(`masking rule "${rule.id}" masks nothing: give it detectors, columns or jsonPaths`);
      const compiled: CompiledRule = {
        id: rule.id,
        rule,
        detectors,
        scope: new Set(rule.scope),
        connections: rule.connections ? new Set(rule.connections) : undefined,
        columns,
        jsonPaths,
      };
      this.rules.push(compiled);
      this.byId.set(rule.id, compiled);
    }
  }

  /** Rules for a connection, in config order, plus `extraRules` (a policy's `mask` action) wherever they are. */
  forConnection(name: string, extraRules: readonly string[] = []): CompiledRule[] {
    const extra = new Set<string>();
    for (const id of extraRules) {
      if (!this.byId.has(id)) throw new MaskingError(`masking failed closed: a policy asks for masking rule "${id}", which does not exist`);
      extra.add(id);
    }
    return this.rules.filter((r) => !r.connections || r.connections.has(name) || extra.has(r.id));
  }
}

/** A detector standing for a whole value masked by a column or JSON-path rule. */
const wholeValueDetectors = new Map<string, Detector>();
export function wholeValueDetector(type: string): Detector {
  let d = wholeValueDetectors.get(type);
  if (!d) {
    d = { id: `whole:${type}`, type, kind: 'custom', description: 'whole value', priority: 1000, maxLength: Infinity };
    wholeValueDetectors.set(type, d);
  }
  return d;
}

export interface MaskEnv {
  hmacKey: Buffer;
  budgetMs: number;
}

export interface Rendered {
  text: string;
  spans: MaskSpan[];
  counts: Record<string, number>;
  changed: boolean;
}

/** Replacement text for `value` under `rule` (DESIGN.md, Masking: redact → [TYPE] | mask | hash). */
/** How masked values are written into terminal output: as wide as the value (`screen`, a pty) or as their label. */
export type TerminalRender = 'screen' | 'label';

export function replacement(rule: MaskingRule, detector: Detector, value: string, hmacKey: Buffer): string {
  switch (rule.strategy) {
    case 'redact':
      return `[${detector.type}]`;
    case 'hash': {
      const norm = detector.normalize ? detector.normalize(value) : value;
      return `[${detector.type}:${createHmac('sha256', hmacKey).update(`${detector.type}\0${norm}`).digest('hex').slice(0, 8)}]`;
    }
    case 'mask': {
      const chars = [...value];
      let keep = rule.keepLast;
      for (let i = chars.length - 1; i >= 0; i--) {
        const c = chars[i]!;
        if (c === ' ' || c === '-' || c === '\n' || c === '\r') continue;
        if (keep > 0) keep--;
        else chars[i] = '*';
      }
      return chars.join('');
    }
  }
}

/** Texts up to this long are remembered when a plan finds nothing in them (MaskPlan.clean). */
const CLEAN_TEXT_MAX = 1024;
/** How many such texts a plan remembers; past it, it starts again. */
const CLEAN_TEXTS_KEPT = 512;

/**
 * The rules that apply to one message, and what each detector's matches become in each scope.
 * `forward` is the scope of the bytes sent on: `upstream` for requests, `client` for responses.
 */
export class MaskPlan {
  /** Detectors whose matches some rule masks. */
  readonly maskDetectors: Detector[];
  /** Detectors scanned: masked ones plus those a policy only watches (`match.detectors`). */
  readonly scanDetectors: Detector[];
  private readonly forwardRule = new Map<Detector, CompiledRule>();
  private readonly logRule = new Map<Detector, CompiledRule>();
  /** Some rule masks the forward scope (else forward bytes are never rewritten). */
  readonly forwardActive: boolean;
  /** Some policy matches on detectors (`match.detectors`): their hits must be looked for. */
  readonly watching: boolean;
  /**
   * Short texts in which this plan's detectors found nothing. Clients send the same model names,
   * roles, header lines and system prompts with every request; a scan depends only on the text and
   * the plan, so a text found clean stays clean for this plan (a rule change makes a new plan).
   */
  private readonly clean = new Set<string>();

  constructor(
    readonly rules: CompiledRule[],
    readonly forward: 'upstream' | 'client',
    watched: readonly Detector[],
    readonly env: MaskEnv,
  ) {
    for (const r of rules) {
      for (const d of r.detectors) {
        if (!this.logRule.has(d)) this.logRule.set(d, r);
        if (r.scope.has(forward) && !this.forwardRule.has(d)) this.forwardRule.set(d, r);
      }
    }
    this.maskDetectors = [...this.logRule.keys()];
    this.scanDetectors = [...this.maskDetectors, ...watched.filter((d) => !this.logRule.has(d))];
    this.watching = watched.length > 0;
    this.forwardActive = rules.some((r) => r.scope.has(forward));
    this.forwardSameAsLog = [...this.logRule].every(([d, r]) => this.forwardRule.get(d) === r);
  }

  /** Every masked detector is masked by the same rule forward and in the log: one rendering serves both. */
  readonly forwardSameAsLog: boolean;

  /** Renders for the forward scope and the log (once when they are the same). */
  renderBoth(text: string, matches: readonly Match[], path: string | undefined, terminal?: TerminalRender): { fwd: Rendered; log: Rendered } {
    const log = this.render(text, matches, 'log', path, terminal);
    if (this.forwardSameAsLog && !matches.some((m) => m.rule)) return { fwd: log, log };
    return { fwd: this.render(text, matches, this.forward, undefined, terminal), log };
  }

  /** The rule that masks `detector` in `scope`, if any. */
  ruleFor(detector: Detector, scope: RenderScope): CompiledRule | undefined {
    return scope === 'log' ? this.logRule.get(detector) : scope === this.forward ? this.forwardRule.get(detector) : undefined;
  }

  deadline(): number {
    return performance.now() + this.env.budgetMs;
  }

  /**
   * Scans `text` (values before `from` are context only) and returns the matches to mask, resolved
   * for overlaps, plus the ids of every detector that found something.
   */
  scan(text: string, deadline: number, from = 0, hits?: Set<string>, scanFrom?: number): Match[] {
    if (!this.scanDetectors.length) return [];
    const whole = from === 0 && scanFrom === undefined && text.length <= CLEAN_TEXT_MAX;
    if (whole && this.clean.has(text)) return [];
    const all = scanText(text, this.scanDetectors, { from, scanFrom, deadline, budgetMs: this.env.budgetMs });
    if (!all.length) {
      // nearly every value: nothing found
      if (whole) {
        if (this.clean.size >= CLEAN_TEXTS_KEPT) this.clean.clear();
        this.clean.add(text);
      }
      return all;
    }
    if (hits) for (const m of all) hits.add(m.detector.id);
    return resolveOverlaps(all.filter((m) => this.logRule.has(m.detector)));
  }

  /**
   * Renders `text` with `matches` (offsets relative to `text`) replaced as `scope` requires.
   * Spans point into the rendered text. A match that carries its own rule (a whole value masked by
   * a column or JSON-path rule) uses that rule. `terminal`: text for a terminal (terminal-width.ts):
   * on a `screen` each replacement takes the cells of the value it replaces; as `label` it is the
   * plain label followed by the escape sequences the value held.
   */
  render(text: string, matches: readonly Match[], scope: RenderScope, path: string | undefined, terminal?: TerminalRender): Rendered {
    let out = '';
    let last = 0;
    const spans: MaskSpan[] = [];
    const counts: Record<string, number> = {};
    for (const m of matches) {
      const rule = m.rule ? (scope === 'log' || m.rule.scope.has(scope) ? m.rule : undefined) : this.ruleFor(m.detector, scope);
      if (!rule) continue;
      const value = text.slice(m.start, m.end);
      const label = replacement(rule.rule, m.detector, value, this.env.hmacKey);
      const rep = terminal === 'screen' ? fitToScreen(label, value) : terminal === 'label' ? labelKeepingEscapes(label, value) : label;
      out += text.slice(last, m.start);
      const span: MaskSpan = { type: m.detector.type, start: out.length, end: out.length + rep.length, rule: rule.id };
      if (path !== undefined) span.path = path;
      spans.push(span);
      out += rep;
      last = m.end;
      counts[m.detector.type] = (counts[m.detector.type] ?? 0) + 1;
    }
    if (!spans.length) return { text, spans, counts, changed: false };
    out += text.slice(last);
    return { text: out, spans, counts, changed: true };
  }
}

export function addCounts(into: Record<string, number>, from: Record<string, number>): void {
  for (const k in from) into[k] = (into[k] ?? 0) + from[k]!;
}

/** RFC 6901 JSON pointer of a path. */
export function jsonPointer(path: readonly (string | number)[]): string {
  let s = '';
  for (const k of path) s += '/' + String(k).replace(/~/g, '~0').replace(/\//g, '~1');
  return s;
}

export { BUILTIN_BY_ID };
