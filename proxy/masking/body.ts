/**
 * Masks one complete request or response body: JSON by structure (LLM APIs) or by JSON path
 * (generic HTTP), anything textual as text, binary passed through unscanned. The forward bytes are
 * the original bytes unless a forward-scope rule changed something, and then only the changed
 * strings are rewritten (spliceJsonStrings).
 *
 * The HTTP proxy uses this for responses; requests are read by the gateway itself and masked in
 * every value and key (proxy/http/request-body.ts, request.ts).
 */
import type { ConnectionKind } from '../../shared/config';
import type { MaskSpan } from '../../shared/events';
import { BUILTIN_BY_ID } from './detectors';
import { MAX_JSON_DEPTH, nestedDeeperThan } from './json';
import { addCounts, type CompiledRule, jsonPathCovers, jsonPointer, type MaskEnv, MaskPlan, wholeValueDetector } from './rules';
import type { Match } from './scanner';
import { allStringLeaves, anthropicLeaves, type JsonPath, type LeafVisitor, openAiLeaves, spliceJsonStrings, STRUCTURAL_KEYS } from './structure';
import { type MaskedBody, MaskingError } from './types';
import { notPlaceholder } from './validators';

/** JSON keys whose whole string value is a credential (masked as PASSWORD when that detector is on). */
const SECRET_KEY = /^(?:password|passwd|pwd|pass|passphrase|secret|client[_-]?secret|api[_-]?key|apikey|access[_-]?token|refresh[_-]?token|auth[_-]?token|private[_-]?key|credentials?)$/i;
const PASSWORD = BUILTIN_BY_ID.get('password')!;

export type BodyKind = 'json' | 'text' | 'binary';

const TEXTUAL = /^(text\/|application\/(x-www-form-urlencoded|xml|javascript|x-javascript|yaml|x-yaml|graphql|csv|sql)|multipart\/)|\+xml\b/;
const BINARY = /^(image|audio|video|font)\/|^application\/(octet-stream|pdf|zip|gzip|x-gzip|x-tar|protobuf|x-protobuf|grpc|vnd\.|msgpack|cbor)/;

/** How a body is treated, from its Content-Type, sniffing when there is none. */
export function classifyBody(contentType: string | undefined, body: Buffer): BodyKind {
  const ct = (contentType ?? '').toLowerCase().trim();
  if (/\bjson\b|\+json\b/.test(ct)) return 'json';
  if (TEXTUAL.test(ct)) return 'text';
  if (BINARY.test(ct)) return 'binary';
  let k = 0;
  while (k < body.length && (body[k] === 0x20 || body[k] === 0x0a || body[k] === 0x0d || body[k] === 0x09)) k++;
  if (body[k] === 0x7b || body[k] === 0x5b) return 'json';
  if (body.includes(0)) return 'binary';
  return decodeText(body) !== null ? 'text' : 'binary';
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
function decodeText(body: Buffer): string | null {
  try {
    return utf8.decode(body);
  } catch {
    return null;
  }
}

/** Rule subsets → plans, so that generic JSON leaves under different jsonPaths share compiled plans. */
export class PlanCache {
  private plans = new Map<string, MaskPlan>();
  constructor(
    private readonly forward: 'upstream' | 'client',
    private readonly watched: MaskPlan['scanDetectors'],
    private readonly env: MaskEnv,
  ) {}
  get(rules: CompiledRule[]): MaskPlan {
    const key = rules.map((r) => r.id).join('\0');
    let p = this.plans.get(key);
    if (!p) {
      p = new MaskPlan(rules, this.forward, this.watched, this.env);
      this.plans.set(key, p);
    }
    return p;
  }
}

export interface BodyContext {
  kind: ConnectionKind;
  rules: CompiledRule[];
  /** The plan for LLM structure and plain text (every rule). */
  plan: MaskPlan;
  plans: PlanCache;
}

interface Accumulator {
  spans: MaskSpan[];
  counts: Record<string, number>;
  hits: Set<string>;
}

/** Masks one leaf string (with its JSON key as context) and returns forward and log renderings. */
function maskLeaf(plan: MaskPlan, value: string, key: string | number | undefined, whole: CompiledRule[], pointer: string, deadline: number, acc: Accumulator) {
  let matches: Match[];
  const wholeRule = whole[0];
  if (wholeRule) {
    const type = typeof key === 'string' ? key.replace(/[^A-Za-z0-9]+/g, '_').toUpperCase() || 'VALUE' : 'VALUE';
    matches = value ? [{ detector: wholeValueDetector(type), start: 0, end: value.length, rule: wholeRule }] : [];
  } else if (typeof key === 'string' && SECRET_KEY.test(key) && plan.maskDetectors.includes(PASSWORD) && notPlaceholder(value)) {
    matches = [{ detector: PASSWORD, start: 0, end: value.length }];
    acc.hits.add(PASSWORD.id);
  } else if (typeof key === 'string') {
    const prefix = `${key}: `;
    matches = plan.scan(prefix + value, deadline, prefix.length, acc.hits).map((m) => ({ ...m, start: m.start - prefix.length, end: m.end - prefix.length }));
  } else matches = plan.scan(value, deadline, 0, acc.hits);
  if (!matches.length) return undefined;
  const { fwd, log } = plan.renderBoth(value, matches, pointer);
  for (const sp of log.spans) acc.spans.push(sp); // a spread of 100k spans would overflow the stack
  addCounts(acc.counts, log.counts);
  return { fwd, log };
}

export function maskBody(ctx: BodyContext, contentType: string | undefined, body: Buffer): MaskedBody {
  const acc: Accumulator = { spans: [], counts: {}, hits: new Set() };
  const result = (forward: Buffer, log: unknown): MaskedBody => ({ forward, log, spans: acc.spans, counts: acc.counts, detectorHits: [...acc.hits] });
  if (!body.length) return result(body, '');
  const kind = classifyBody(contentType, body);
  if (kind === 'binary') return result(body, { binary: true, contentType: contentType ?? null, bytes: body.length });
  const deadline = performance.now() + ctx.plan.env.budgetMs * Math.max(1, body.length / (1 << 20));
  const needsStructure = ctx.kind === 'http' && ctx.rules.some((r) => r.jsonPaths);
  const text = decodeText(body);
  if (kind === 'json' && text !== null) {
    let parsed: unknown;
    let ok = true;
    try {
      parsed = JSON.parse(text);
    } catch {
      ok = false;
    }
    // The walks below recurse once per level: past the request limit, refuse rather than overflow.
    if (ok && typeof parsed === 'object' && parsed !== null && nestedDeeperThan(text, MAX_JSON_DEPTH))
      throw new MaskingError(`masking failed closed: the body is JSON nested deeper than ${MAX_JSON_DEPTH} levels`);
    if (ok && typeof parsed === 'object' && parsed !== null) return maskJson(ctx, text, parsed, body, deadline, acc, result);
    if (!ok && needsStructure) throw new MaskingError('masking failed closed: a rule with jsonPaths applies but the body is not valid JSON');
  } else if (needsStructure && kind === 'json') throw new MaskingError('masking failed closed: a rule with jsonPaths applies but the body is not UTF-8 JSON');
  // Plain text; bytes that are not UTF-8 are read as Latin-1 so that unchanged bytes survive.
  const encoding: BufferEncoding = text !== null ? 'utf8' : 'latin1';
  const str = text ?? body.toString('latin1');
  const plan = ctx.plan;
  const matches = plan.scan(str, deadline, 0, acc.hits);
  if (!matches.length) return result(body, str);
  const { fwd, log } = plan.renderBoth(str, matches, '');
  for (const sp of log.spans) acc.spans.push(sp);
  addCounts(acc.counts, log.counts);
  return result(fwd.changed ? Buffer.from(fwd.text, encoding) : body, log.text);
}

function maskJson(
  ctx: BodyContext,
  text: string,
  parsed: object,
  body: Buffer,
  deadline: number,
  acc: Accumulator,
  result: (forward: Buffer, log: unknown) => MaskedBody,
): MaskedBody {
  const fwdChanges = new Map<string, string>();
  const logEdits: [Record<string | number, unknown>, string | number, string][] = [];
  const onLeaf = (plan: MaskPlan, whole: CompiledRule[]): LeafVisitor => (container, key, path) => {
    const c = container as Record<string | number, unknown>;
    const value = c[key] as string;
    const pointer = jsonPointer(path);
    const parentKey = typeof key === 'number' ? lastStringKey(path) : key;
    const r = maskLeaf(plan, value, parentKey, whole, pointer, deadline, acc);
    if (!r) return;
    if (r.fwd.changed) fwdChanges.set(pointer, r.fwd.text);
    if (r.log.changed) logEdits.push([c, key, r.log.text]);
  };
  const visitLlm = onLeaf(ctx.plan, []);
  let known = false;
  if (ctx.kind === 'openai') known = openAiLeaves(parsed, visitLlm);
  else if (ctx.kind === 'anthropic') known = anthropicLeaves(parsed, visitLlm);
  if (ctx.kind === 'http') {
    allStringLeaves(parsed, [], (container, key, path) => {
      const applicable = ctx.rules.filter((r) => !r.jsonPaths || (r.detectors.length > 0 && jsonPathCovers(r.jsonPaths, path)));
      const whole = ctx.rules.filter((r) => r.jsonPaths && r.detectors.length === 0 && jsonPathCovers(r.jsonPaths, path));
      if (!applicable.length && !whole.length) return;
      onLeaf(ctx.plans.get(applicable), whole)(container, key, path);
    });
  } else if (!known) {
    // an endpoint whose shape is not known (files, batches, …): every string but identifiers
    allStringLeaves(parsed, [], visitLlm, STRUCTURAL_KEYS);
  }
  for (const [c, k, v] of logEdits) c[k] = v;
  const forward = fwdChanges.size ? Buffer.from(spliceJsonStrings(text, fwdChanges), 'utf8') : body;
  return result(forward, parsed);
}

function lastStringKey(path: JsonPath): string | undefined {
  for (let i = path.length - 1; i >= 0; i--) if (typeof path[i] === 'string') return path[i] as string;
  return undefined;
}
