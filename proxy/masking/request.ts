/**
 * Masking of a parsed JSON request body: every value that can reach the model — every string,
 * every number and every object key — except the structural fields of the connection's API
 * (ids, `model`, `role`, `type`, enum values, tool and function names).
 *
 * Structural values are forwarded as the client sent them (the upstream matches ids and names),
 * but they are still scanned: a detector hit there counts for policy, and when a masking rule
 * would mask it the request is refused, since the gateway may neither rewrite nor forward it.
 * Inside free-form data (tool arguments and input, JSON schemas, `metadata`) nothing is
 * structural. On `http` connections nothing is structural anywhere.
 *
 * The walk is iterative (the reader already bounds the depth, but input size never drives
 * recursion here either), and it allocates nothing for a value in which nothing matched.
 */
import type { ConnectionKind } from '../../shared/config';
import type { MaskSpan } from '../../shared/events';
import { BUILTIN_BY_ID } from './detectors';
import { addCounts, type CompiledRule, type MaskPlan, wholeValueDetector } from './rules';
import type { Match } from './scanner';
import { MaskingError } from './types';
import { notPlaceholder } from './validators';

/** JSON keys whose whole string value is a credential (masked as PASSWORD when that detector is on). */
const SECRET_KEY = /^(?:password|passwd|pwd|pass|passphrase|secret|client[_-]?secret|api[_-]?key|apikey|access[_-]?token|refresh[_-]?token|auth[_-]?token|private[_-]?key|credentials?)$/i;
const PASSWORD = BUILTIN_BY_ID.get('password')!;

/** A request the gateway refuses because of what is in it (not because masking broke): 400. */
export class UnmaskableValueError extends MaskingError {
  readonly status = 400;
}

export interface ApiShape {
  /** Keys whose values (and everything under them) are structural: scanned, never rewritten. */
  structural: ReadonlySet<string>;
  /** Keys whose subtree is free-form data: nothing under them is structural. */
  data: ReadonlySet<string>;
  /** The API's own key names: fixed words, so they are not scanned as keys. */
  vocabulary: ReadonlySet<string>;
}

const COMMON_STRUCTURAL = ['id', 'object', 'model', 'role', 'type', 'name', 'user', 'status', 'index', 'created', 'created_at', 'media_type', 'file_id', 'signature'];

/** OpenAI Chat Completions, Responses, Embeddings, Completions, Batches, Files, Audio, Images. */
const OPENAI: ApiShape = shape(
  [
    ...COMMON_STRUCTURAL,
    'call_id', 'tool_call_id', 'item_id', 'previous_response_id', 'conversation', 'response_id', 'custom_id', 'method', 'service_tier',
    'reasoning_effort', 'effort', 'detail', 'format', 'voice', 'encoding_format', 'modalities', 'include', 'truncation', 'tool_choice',
    'prompt_cache_key', 'safety_identifier', 'purpose', 'endpoint', 'completion_window', 'input_file_id', 'vector_store_ids', 'quality',
    'size', 'style', 'verbosity', 'finish_reason', 'encrypted_content',
  ],
  ['parameters', 'schema', 'metadata', 'input_schema', 'arguments'],
  [
    'messages', 'content', 'text', 'tools', 'function', 'functions', 'description', 'parameters', 'properties', 'required', 'items', 'enum',
    'additionalProperties', 'strict', 'tool_calls', 'refusal', 'audio', 'image_url', 'input_audio', 'file', 'file_data', 'filename',
    'prediction', 'response_format', 'json_schema', 'schema', 'metadata', 'instructions', 'input', 'output', 'arguments', 'summary',
    'reasoning', 'temperature', 'top_p', 'max_tokens', 'max_completion_tokens', 'max_output_tokens', 'stream', 'stream_options',
    'include_usage', 'n', 'stop', 'seed', 'logprobs', 'top_logprobs', 'logit_bias', 'presence_penalty', 'frequency_penalty',
    'parallel_tool_calls', 'store', 'prompt', 'suffix', 'echo', 'best_of', 'dimensions', 'url', 'body', 'anyOf', 'allOf', 'oneOf',
    'default', 'minimum', 'maximum', 'pattern', 'title', 'data', 'web_search_options', 'annotations', 'background', 'tool_resources',
  ],
);

/** Anthropic Messages, Message Batches, Files, token counting. */
const ANTHROPIC: ApiShape = shape(
  [...COMMON_STRUCTURAL, 'tool_use_id', 'stop_reason', 'user_id', 'cache_control', 'ttl', 'disable_parallel_tool_use', 'tool_choice', 'budget_tokens', 'container', 'custom_id', 'service_tier'],
  ['input', 'input_schema'],
  [
    'messages', 'content', 'text', 'system', 'tools', 'description', 'input_schema', 'properties', 'required', 'items', 'enum', 'source', 'data',
    'url', 'title', 'context', 'citations', 'cited_text', 'document_title', 'document_index', 'start_char_index', 'end_char_index',
    'start_page_number', 'end_page_number', 'start_block_index', 'end_block_index', 'search_result_index', 'max_tokens', 'temperature',
    'top_p', 'top_k', 'stop_sequences', 'stream', 'metadata', 'thinking', 'input', 'is_error', 'requests', 'params', 'enabled',
  ],
);

/** Generic HTTP: nothing is structural. */
const HTTP: ApiShape = shape([], [], []);

function shape(structural: string[], data: string[], vocabulary: string[]): ApiShape {
  return { structural: new Set(structural), data: new Set(data), vocabulary: new Set([...vocabulary, ...structural]) };
}

export function apiShape(kind: ConnectionKind): ApiShape {
  return kind === 'openai' ? OPENAI : kind === 'anthropic' ? ANTHROPIC : HTTP;
}

/** Scanning mode of a subtree. */
const NORMAL = 0;
const STRUCTURAL = 1;
const DATA = 2;
type Mode = typeof NORMAL | typeof STRUCTURAL | typeof DATA;

type Container = Record<string, unknown> | unknown[];

export interface JsonRequestContext {
  shape: ApiShape;
  /** Every rule that applies (text, keys, and values no JSON-path rule singles out). */
  plan: MaskPlan;
  /** For `http` connections with `jsonPaths` rules: the plan and whole-value rules at a path. */
  planAt?: (path: readonly (string | number)[]) => { plan: MaskPlan; whole: CompiledRule[] } | undefined;
  /** With `planAt`: the plan for object keys (the rules without `jsonPaths`). */
  keyPlan?: MaskPlan;
  deadline: number;
}

export interface MaskedJson {
  /** The JSON text to forward (the gateway's own serialisation). */
  forward: string;
  /** The body as recorded: masked for every rule (the parsed value itself when nothing was masked). */
  log: unknown;
  spans: MaskSpan[];
  counts: Record<string, number>;
  detectorHits: string[];
}

type Edits = Map<Container, Map<string | number, unknown>>;

function setEdit(m: Edits, c: Container, k: string | number, v: unknown): void {
  let e = m.get(c);
  if (!e) m.set(c, (e = new Map()));
  e.set(k, v);
}

const esc = (k: string | number) => String(k).replace(/~/g, '~0').replace(/\//g, '~1');

/** Masks a parsed request body; `value` itself is not changed. */
export function maskJsonRequest(ctx: JsonRequestContext, value: unknown): MaskedJson {
  return new RequestWalk(ctx).run(value);
}

/**
 * One walk of a request body. A class, not closures: it runs for every request, and nothing is
 * allocated per call beyond the walk itself unless something matches.
 */
class RequestWalk {
  private readonly spans: MaskSpan[] = [];
  private readonly counts: Record<string, number> = {};
  private readonly hits = new Set<string>();
  /** Edits on the original containers, made only when something matched. */
  private fwdValues: Edits | undefined;
  private fwdKeys: Edits | undefined;
  private logValues: Edits | undefined;
  private logKeys: Edits | undefined;
  private readonly api: ApiShape;
  /** The keys and indices from the root to the container being walked. */
  private readonly path: (string | number)[] = [];

  constructor(private readonly ctx: JsonRequestContext) {
    this.api = ctx.shape;
  }

  private pointer(last?: string | number): string {
    let s = '';
    for (const k of this.path) s += '/' + esc(k);
    return last === undefined ? s : `${s}/${esc(last)}`;
  }

  /** Scans one text; returns the rendered forward and log text when something is masked. */
  private maskText(text: string, contextKey: string | undefined, mode: Mode, where: string | number | undefined, isKey: boolean): { fwd: string; log: string; fwdChanged: boolean } | undefined {
    const { ctx, api, hits } = this;
    let plan = isKey ? (ctx.keyPlan ?? ctx.plan) : ctx.plan;
    let whole: CompiledRule[] | undefined;
    if (ctx.planAt && !isKey) {
      const at = ctx.planAt(where === undefined ? this.path : [...this.path, where]);
      if (!at) return undefined;
      plan = at.plan;
      whole = at.whole;
    }
    let matches: Match[];
    if (whole?.length && !isKey) {
      const type = contextKey ? contextKey.replace(/[^A-Za-z0-9]+/g, '_').toUpperCase() || 'VALUE' : 'VALUE';
      matches = text ? [{ detector: wholeValueDetector(type), start: 0, end: text.length, rule: whole[0] }] : [];
    } else if (!isKey && contextKey !== undefined && !api.vocabulary.has(contextKey) && SECRET_KEY.test(contextKey) && plan.maskDetectors.includes(PASSWORD) && notPlaceholder(text)) {
      matches = [{ detector: PASSWORD, start: 0, end: text.length }];
      hits.add(PASSWORD.id);
    } else if (!isKey && contextKey !== undefined && !api.vocabulary.has(contextKey)) {
      // The key is context for keyword detectors ("dob": …, "ssn": …); values before `from` are not masked.
      const prefix = `${contextKey}: `;
      matches = plan.scan(prefix + text, ctx.deadline, prefix.length, hits);
      for (const m of matches) {
        m.start -= prefix.length;
        m.end -= prefix.length;
      }
    } else matches = plan.scan(text, ctx.deadline, 0, hits);
    if (!matches.length) return undefined;
    if (mode === STRUCTURAL) {
      const at = isKey ? `a key under ${this.pointer() || '/'}` : `${this.pointer(where)}`;
      throw new UnmaskableValueError(
        `the request carries ${matches.map((m) => m.detector.type).join(', ')} at ${at}, a field the gateway forwards as sent (ids, names, roles, types); it cannot be masked there, so the request was refused`,
      );
    }
    const { fwd, log } = plan.renderBoth(text, matches, isKey ? this.pointer() : this.pointer(where));
    for (const s of log.spans) this.spans.push(s);
    addCounts(this.counts, log.counts);
    return { fwd: fwd.text, log: log.text, fwdChanged: fwd.changed };
  }

  private leaf(container: Container, key: string | number, v: unknown, contextKey: string | undefined, mode: Mode): void {
    let text: string;
    if (typeof v === 'string') text = v;
    else if (typeof v === 'number') text = String(v);
    else return;
    const m = this.maskText(text, contextKey, mode === NORMAL && contextKey !== undefined && this.api.structural.has(contextKey) ? STRUCTURAL : mode, key, false);
    if (!m) return;
    // A masked number is forwarded as the masked text: the digits are gone, so is the number.
    if (m.fwdChanged) setEdit((this.fwdValues ??= new Map()), container, key, m.fwd);
    setEdit((this.logValues ??= new Map()), container, key, m.log);
  }

  private childMode(mode: Mode, key: string): Mode {
    if (mode !== NORMAL) return mode;
    if (this.api.data.has(key)) return DATA;
    if (this.api.structural.has(key)) return STRUCTURAL;
    return NORMAL;
  }

  run(value: unknown): MaskedJson {
    const { api, path } = this;
    if (typeof value !== 'object' || value === null) {
      if (typeof value !== 'string' && typeof value !== 'number') return this.result(JSON.stringify(value), value);
      const box = [value];
      this.leaf(box, 0, value, undefined, NORMAL);
      return this.result(JSON.stringify(this.fwdValues?.get(box)?.get(0) ?? value), this.logValues?.get(box)?.get(0) ?? value);
    }
    // The open containers, innermost last, as parallel arrays (no frame object per container).
    const nodes: Container[] = [value as Container];
    const keyLists: (string[] | null)[] = [Array.isArray(value) ? null : Object.keys(value)];
    const positions: number[] = [0];
    const modes: Mode[] = [NORMAL];
    while (nodes.length) {
      const top = nodes.length - 1;
      const node = nodes[top]!;
      const keys = keyLists[top]!;
      const mode = modes[top]!;
      const len = keys ? keys.length : (node as unknown[]).length;
      if (positions[top]! >= len) {
        nodes.pop();
        keyLists.pop();
        positions.pop();
        modes.pop();
        path.pop();
        continue;
      }
      const idx = positions[top]!++;
      let key: string | number;
      let contextKey: string | undefined;
      let v: unknown;
      if (keys) {
        key = keys[idx]!;
        contextKey = key;
        v = (node as Record<string, unknown>)[key];
        if (!api.vocabulary.has(key)) {
          const m = this.maskText(key, undefined, mode, undefined, true);
          if (m) {
            if (m.fwdChanged) setEdit((this.fwdKeys ??= new Map()), node, key, m.fwd);
            setEdit((this.logKeys ??= new Map()), node, key, m.log);
          }
        }
      } else {
        key = idx;
        v = (node as unknown[])[idx];
        // an array element takes its context (and structural status) from the array's key
        const parentKey = path.length ? path[path.length - 1] : undefined;
        contextKey = typeof parentKey === 'string' ? parentKey : undefined;
      }
      if (typeof v === 'object' && v !== null) {
        path.push(key);
        nodes.push(v as Container);
        keyLists.push(Array.isArray(v) ? null : Object.keys(v));
        positions.push(0);
        modes.push(keys ? this.childMode(mode, key as string) : mode);
        continue;
      }
      this.leaf(node, key, v, contextKey, mode);
    }

    // Forward: the gateway's own serialisation, with forward-scope edits substituted.
    const fwdValues = this.fwdValues ?? NO_EDITS;
    const fwdKeys = this.fwdKeys ?? NO_EDITS;
    const forward = fwdValues.size || fwdKeys.size ? JSON.stringify(value, substitute(fwdKeys, fwdValues)) : JSON.stringify(value);
    // Log: every rule's masking, on a copy (the parsed tree stays as the client sent it, for policy).
    let log = value;
    if (this.logValues || this.logKeys) log = JSON.parse(JSON.stringify(value, substitute(this.logKeys ?? NO_EDITS, this.logValues ?? NO_EDITS)));
    return this.result(forward, log);
  }

  private result(forward: string, log: unknown): MaskedJson {
    return { forward, log, spans: this.spans, counts: this.counts, detectorHits: this.hits.size ? [...this.hits] : [] };
  }
}

const NO_EDITS: Edits = new Map();

/** A JSON.stringify replacer applying key renames and value edits made on the original containers. */
function substitute(keys: Edits, values: Edits) {
  return function (this: unknown, k: string, v: unknown): unknown {
    if (typeof v === 'object' && v !== null && !Array.isArray(v) && keys.has(v as Container)) return renamed(v as Record<string, unknown>, keys.get(v as Container)!, values.get(v as Container));
    const ve = values.get(this as Container);
    if (ve) {
      const kk = Array.isArray(this) ? Number(k) : k;
      if (ve.has(kk)) return ve.get(kk);
    }
    return v;
  };
}

function define(obj: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
  else obj[key] = value;
}

/** A copy of `obj` with keys renamed (order kept) and values substituted. */
function renamed(obj: Record<string, unknown>, renames: Map<string | number, unknown>, values: Map<string | number, unknown> | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(obj)) {
    const nk = (renames.get(k) as string | undefined) ?? k;
    if (Object.prototype.hasOwnProperty.call(out, nk))
      throw new UnmaskableValueError(`two keys of one object are masked to the same text (${JSON.stringify(nk)}); the request was refused rather than forwarded with one of them lost`);
    define(out, nk, values?.has(k) ? values.get(k) : obj[k]);
  }
  return out;
}
