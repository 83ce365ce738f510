/**
 * The masking engine (DESIGN.md, Masking): validated detectors, three strategies (redact, mask,
 * keyed hash), per-rule scopes, LLM-structure-aware bodies, event-by-event stream masking with a
 * bounded holdback, PostgreSQL row masking. It fails closed: every method throws MaskingError
 * when it cannot mask (detector error, time budget exceeded, unparseable body under a JSON-path
 * rule), and the proxies refuse the request.
 *
 * Proxies call:
 *   const engine = createMaskingEngine(config, { hmacKey });          // gateway.ts
 *   const m = engine.forConnection(connection, decision.mask);        // null: nothing to do
 *   m.request(path, contentType, body, decision.mask)  → MaskedBody   // before forwarding upstream
 *   m.response(path, contentType, body, decision.mask) → MaskedBody   // before answering the client
 *   const s = m.stream(path, decision.mask); s.push(event) … s.end()  // text/event-stream responses
 *   engine.rows(connection, decision.mask).value(column, text, scope)  // PostgreSQL DataRow values
 */
import { z } from 'zod';
import type { DetectorInfo } from '../../shared/api';
import { type Config, type ConfigIssue, type Connection, CustomDetector, MaskingRule, type PolicyRule } from '../../shared/config';
import { maskBody, PlanCache } from './body';
import { BUILTIN_DETECTORS, DETECTOR_GROUPS, type Detector } from './detectors';
import { DataRowMasker } from './rows';
import { apiShape, type JsonRequestContext, maskJsonRequest } from './request';
import { type CompiledRule, jsonPathCovers, type MaskEnv, MaskPlan, RuleSet } from './rules';
import { Holdback, SseStreamMasker, TextChannel } from './stream';
import { type ConnectionMasker, type MaskedBody, type MaskedValue, MaskingError, type MaskingEngine, type RowMasker, type StreamMasker, type TextStreamMasker } from './types';
import { VALIDATORS } from './validators';

export { MaskingError };
export type { MaskedBody, StreamMasker, RowMasker, ConnectionMasker };

export interface MaskingEngineOptions {
  /** Per-install key for `hash` tokens (HMAC-SHA-256). */
  hmacKey: Buffer;
  /** Time allowed per call and per MiB of input before failing closed (ms). Default 500. */
  budgetMs?: number;
  /** Extra named validators for custom detectors (in addition to luhn, iban, aba, …). */
  validators?: Record<string, (value: string) => boolean>;
}

export interface MaskingConfig {
  detectors: CustomDetector[];
  masking: MaskingRule[];
}

/** A detector as the console lists it. */
const MaskingConfigSchema = z.object({ detectors: z.array(CustomDetector).default([]), masking: z.array(MaskingRule).default([]) }).strict();

/**
 * Validates a `{detectors, masking}` document with the config schema, then compiles it (regular
 * expressions, detector references, JSON paths, column patterns). `connections` (names), when
 * given, are checked against rules' `connections`.
 */
export function validateMaskingConfig(
  input: unknown,
  opts: { connections?: string[]; validators?: Record<string, (v: string) => boolean> } = {},
): { ok: true; config: MaskingConfig } | { ok: false; issues: ConfigIssue[] } {
  const parsed = MaskingConfigSchema.safeParse(input ?? {});
  if (!parsed.success)
    return { ok: false, issues: parsed.error.issues.map((i) => ({ path: i.path.map((p) => (typeof p === 'symbol' ? String(p) : p)), message: i.message })) };
  const config = parsed.data;
  const issues: ConfigIssue[] = [];
  if (opts.connections) {
    const known = new Set(opts.connections);
    config.masking.forEach((m, i) =>
      m.connections?.forEach((c, j) => {
        if (!known.has(c)) issues.push({ path: ['masking', i, 'connections', j], message: `unknown connection "${c}"` });
      }),
    );
  }
  try {
    new RuleSet(config, { validators: { ...VALIDATORS, ...opts.validators } });
  } catch (err) {
    const message = (err as Error).message;
    const d = /^detector "([^"]+)"/.exec(message);
    const r = /^masking rule "([^"]+)"/.exec(message);
    const path: (string | number)[] = d ? ['detectors', config.detectors.findIndex((x) => x.id === d[1])] : r ? ['masking', config.masking.findIndex((x) => x.id === r[1])] : [];
    // Point at the detector id itself when the rule names one that does not exist.
    const unknown = r && /unknown detector "([^"]+)"/.exec(message);
    if (unknown) {
      const j = (config.masking[path[1] as number]?.detectors ?? []).indexOf(unknown[1]!);
      if (j >= 0) path.push('detectors', j);
    }
    issues.push({ path, message });
  }
  return issues.length ? { ok: false, issues } : { ok: true, config };
}

interface State {
  rules: RuleSet;
  /** MaskPlans by direction and rule-id list, built on first use. */
  plans: Map<string, MaskPlan>;
  /**
   * Without extra rules (nearly every request): the plan by direction and connection, and the rules
   * by connection, so a request does not filter the rules and build a key for each body it masks.
   * Rebuilt with the state, so a reload never serves an old plan.
   */
  plainPlans: Map<string, MaskPlan>;
  plainRules: Map<string, CompiledRule[]>;
}

export class CustodyMaskingEngine implements MaskingEngine {
  private state: State;
  private watched: Detector[] = [];
  private readonly env: MaskEnv;
  private readonly validators: Record<string, (v: string) => boolean>;
  /** What the rules were built from, for an engine built elsewhere (a worker thread) to match this one. */
  private source: EngineSource;

  constructor(config: MaskingConfig & { policies?: PolicyRule[] }, opts: MaskingEngineOptions) {
    if (!opts.hmacKey?.length) throw new MaskingError('the masking engine needs a per-install HMAC key');
    this.env = { hmacKey: opts.hmacKey, budgetMs: opts.budgetMs ?? 500 };
    this.validators = { ...VALIDATORS, ...opts.validators };
    this.state = this.compile(config);
    this.source = { generation: 1, detectors: config.detectors, masking: config.masking, watch: [], hmacKey: opts.hmacKey, budgetMs: this.env.budgetMs, customValidators: opts.validators !== undefined };
    if (config.policies) this.watchDetectors(config.policies.flatMap((p) => p.match.detectors ?? []));
  }

  private compile(config: { detectors: unknown[]; masking: unknown[] }): State {
    const parsed = MaskingConfigSchema.safeParse({ detectors: config.detectors, masking: config.masking });
    if (!parsed.success) throw new MaskingError(`invalid masking config: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    try {
      return { rules: new RuleSet(parsed.data, { validators: this.validators }), plans: new Map(), plainPlans: new Map(), plainRules: new Map() };
    } catch (err) {
      throw new MaskingError(`invalid masking config: ${(err as Error).message}`);
    }
  }

  /** Replaces the rules atomically: on an invalid config it throws and the old rules stay. */
  reload(config: { detectors: unknown[]; masking: unknown[] }): void {
    const next = this.compile(config);
    this.state = next;
    this.source = { ...this.source, generation: this.source.generation + 1, detectors: config.detectors, masking: config.masking };
    // watched detectors may have been custom ones that no longer exist
    this.watched = this.watched.map((d) => next.rules.detectors.get(d.id)).filter((d): d is Detector => !!d);
  }

  /**
   * Detector ids that policies match on (`match.detectors`): they are scanned even where no rule
   * masks them, so `detectorHits` can drive the policy. Unknown ids are ignored.
   */
  watchDetectors(ids: string[]): void {
    const out: Detector[] = [];
    for (const name of ids)
      for (const id of DETECTOR_GROUPS[name] ?? [name]) {
        const d = this.state.rules.detectors.get(id);
        if (d && !out.includes(d)) out.push(d);
      }
    this.watched = out;
    this.state = { rules: this.state.rules, plans: new Map(), plainPlans: new Map(), plainRules: new Map() };
    this.source = { ...this.source, generation: this.source.generation + 1, watch: [...ids] };
  }

  /**
   * What this engine was built from, with a generation that changes whenever its rules do: an
   * engine made from it (`engineFromSource`) masks exactly as this one does.
   */
  get built(): EngineSource {
    return this.source;
  }

  generation(): number {
    return this.source.generation;
  }

  /** Built-in and custom detectors, for the console. */
  detectors(): DetectorInfo[] {
    return [...this.state.rules.detectors.values()].map((d) => ({ id: d.id, type: d.type, kind: d.kind, description: d.description }));
  }

  /** Masking rules that apply to `connection` (plus `extraRules`); throws MaskingError for an unknown extra rule. */
  rulesFor(connection: string, extraRules: readonly string[] = []): CompiledRule[] {
    const state = this.state;
    if (extraRules.length) return state.rules.forConnection(connection, extraRules);
    let rules = state.plainRules.get(connection);
    if (!rules) {
      rules = state.rules.forConnection(connection);
      state.plainRules.set(connection, rules);
    }
    return rules;
  }

  plan(connection: string, forward: 'upstream' | 'client', extraRules: readonly string[] = []): MaskPlan {
    const state = this.state;
    if (!extraRules.length) {
      const plainKey = `${forward}\0${connection}`;
      let p = state.plainPlans.get(plainKey);
      if (!p) {
        p = this.planFor(state, this.rulesFor(connection), forward);
        state.plainPlans.set(plainKey, p);
      }
      return p;
    }
    return this.planFor(state, state.rules.forConnection(connection, extraRules), forward);
  }

  /** The plan for `rules` in direction `forward`, shared by every rule list with the same ids. */
  private planFor(state: State, rules: CompiledRule[], forward: 'upstream' | 'client'): MaskPlan {
    const key = `${forward}\0${rules.map((r) => r.id).join('\0')}`;
    let p = state.plans.get(key);
    if (!p) {
      p = new MaskPlan(rules, forward, this.watched, this.env);
      state.plans.set(key, p);
    }
    return p;
  }

  /**
   * The masker for one connection, or null when no rule applies to it and no policy watches a
   * detector (the proxy then skips masking). Pass the policy decision's `mask` rule ids as
   * `extraRules` so that a masker exists when only a policy asks for masking.
   */
  forConnection(connection: Connection, extraRules: readonly string[] = []): ConnectionMasker | null {
    if (!this.rulesFor(connection.name, extraRules).length && !this.watched.length) return null;
    return new LlmConnectionMasker(this, connection);
  }

  rows(connection: Connection, extraRules: readonly string[] = []): RowMasker {
    const rules = this.rulesFor(connection.name, extraRules);
    return new DataRowMasker(rules, this.plan(connection.name, 'client', extraRules), this.plan(connection.name, 'upstream', extraRules));
  }

  get budgetMs(): number {
    return this.env.budgetMs;
  }
}

const jsonPathPlans = new WeakMap<MaskPlan, PlanCache>();

class LlmConnectionMasker implements ConnectionMasker {
  constructor(
    private readonly engine: CustodyMaskingEngine,
    private readonly connection: Connection,
  ) {}

  /** One cache of JSON-path plans per plan (plans are replaced, not changed, when the rules are). */
  private plans(plan: MaskPlan, forward: 'upstream' | 'client'): PlanCache {
    let plans = jsonPathPlans.get(plan);
    if (!plans) {
      plans = new PlanCache(forward, plan.scanDetectors.filter((d) => !plan.maskDetectors.includes(d)), plan.env);
      jsonPathPlans.set(plan, plans);
    }
    return plans;
  }

  private body(forward: 'upstream' | 'client', contentType: string | undefined, body: Buffer, extraRules?: string[]): MaskedBody {
    const plan = this.engine.plan(this.connection.name, forward, extraRules);
    const plans = this.plans(plan, forward);
    return maskBody({ kind: this.connection.kind, rules: plan.rules, plan, plans }, contentType, body);
  }

  requestValue(value: unknown, opts: { bytes: number; extraRules?: string[]; everything?: boolean }): MaskedValue {
    const plan = this.engine.plan(this.connection.name, 'upstream', opts.extraRules);
    const deadline = performance.now() + plan.env.budgetMs * Math.max(1, opts.bytes / (1 << 20));
    const ctx: JsonRequestContext = { shape: apiShape(opts.everything ? 'http' : this.connection.kind), plan, deadline };
    if (plan.rules.some((r) => r.jsonPaths)) {
      // Generic HTTP JSON with `jsonPaths` rules: which rules apply depends on where a value is.
      const plans = this.plans(plan, 'upstream');
      const rules = plan.rules;
      ctx.keyPlan = plans.get(rules.filter((r) => !r.jsonPaths));
      ctx.planAt = (path) => {
        const applicable = rules.filter((r) => !r.jsonPaths || (r.detectors.length > 0 && jsonPathCovers(r.jsonPaths, path)));
        const whole = rules.filter((r) => r.jsonPaths && r.detectors.length === 0 && jsonPathCovers(r.jsonPaths, path));
        return applicable.length || whole.length ? { plan: plans.get(applicable), whole } : undefined;
      };
    }
    return maskJsonRequest(ctx, value);
  }

  requestText(text: string, extraRules?: string[]): MaskedValue {
    const plan = this.engine.plan(this.connection.name, 'upstream', extraRules);
    const hits = new Set<string>();
    const deadline = performance.now() + plan.env.budgetMs * Math.max(1, text.length / (1 << 20));
    const matches = plan.scan(text, deadline, 0, hits);
    if (!matches.length) return { forward: text, log: text, spans: [], counts: {}, detectorHits: [...hits] };
    const { fwd, log } = plan.renderBoth(text, matches, '');
    return { forward: fwd.text, log: log.text, spans: log.spans, counts: log.counts, detectorHits: [...hits] };
  }

  request(_path: string, contentType: string | undefined, body: Buffer, extraRules?: string[]): MaskedBody {
    return this.body('upstream', contentType, body, extraRules);
  }

  response(_path: string, contentType: string | undefined, body: Buffer, extraRules?: string[]): MaskedBody {
    return this.body('client', contentType, body, extraRules);
  }

  stream(_path: string, extraRules?: string[]): SseStreamMasker {
    return new SseStreamMasker(this.engine.plan(this.connection.name, 'client', extraRules));
  }

  textStream(extraRules?: string[], opts: { screen?: boolean } = {}): TextStreamMasker {
    const plan = this.engine.plan(this.connection.name, 'client', extraRules);
    const channel = new TextChannel(plan, new Holdback(plan.scanDetectors), opts.screen ? 'screen' : 'label');
    return {
      push: (text) => channel.push(text),
      end: () => channel.flush(),
      get held() {
        return channel.held;
      },
    };
  }
}

/** The inputs of an engine, as `CustodyMaskingEngine.built` reports them (plain data: it crosses to worker threads). */
export interface EngineSource {
  generation: number;
  detectors: unknown[];
  masking: unknown[];
  /** Detector ids policies match on. */
  watch: string[];
  hmacKey: Uint8Array;
  budgetMs: number;
  /** Built with validators passed in code: such an engine cannot be rebuilt from data. */
  customValidators: boolean;
}

/** An engine that masks as the one `source` was taken from did (in a worker thread). */
export function engineFromSource(source: EngineSource): CustodyMaskingEngine {
  const engine = new CustodyMaskingEngine({ detectors: source.detectors, masking: source.masking } as MaskingConfig, { hmacKey: Buffer.from(source.hmacKey), budgetMs: source.budgetMs });
  if (source.watch.length) engine.watchDetectors(source.watch);
  return engine;
}

/**
 * Builds the gateway's masking engine from the config (`masking`, `detectors`, and `policies` for
 * the detectors they match on). Throws MaskingError naming the rule or detector when the config
 * cannot be compiled, so the gateway refuses to start rather than forward unmasked data.
 */
export function createMaskingEngine(config: Pick<Config, 'masking' | 'detectors'> & { policies?: PolicyRule[] }, opts: MaskingEngineOptions): CustodyMaskingEngine {
  return new CustodyMaskingEngine(config, opts);
}

export { BUILTIN_DETECTORS };

/** The masking part's config check (detector ids, patterns, JSON paths), for the config loader's single pass. */
export function maskingConfigIssues(raw: Record<string, unknown>): ConfigIssue[] {
  const r = validateMaskingConfig({ detectors: raw['detectors'] ?? [], masking: raw['masking'] ?? [] });
  return r.ok ? [] : r.issues;
}
