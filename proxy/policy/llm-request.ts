/**
 * What a policy needs to know about an LLM request body: the model, whether tools are involved,
 * and the request's text (for `match.content`). Knows the shapes of OpenAI Chat Completions,
 * Responses, Embeddings and legacy Completions (platform.openai.com/docs/api-reference) and
 * Anthropic Messages (docs.anthropic.com/en/api/messages); any other JSON body contributes all of
 * its string values as text. The text is computed only when something reads it. A query string
 * contributes its keys and values (queryText).
 */
import type { ConnectionKind } from '../../shared/config';

export interface RequestFacts {
  model?: string;
  tools: boolean;
  stream: boolean;
  /** Lazily computed prompt text (what approvers are shown). */
  readonly text: string;
  /** Lazily computed: every string, number and object key of the body, for `match.content`. */
  readonly all: string;
}

type Json = Record<string, unknown>;

const isObj = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const nonEmptyArray = (v: unknown): boolean => Array.isArray(v) && v.length > 0;

/** Text parts of an OpenAI/Anthropic `content` value (string, or an array of parts/blocks). */
function contentText(content: unknown, out: string[]): void {
  if (typeof content === 'string') {
    out.push(content);
    return;
  }
  if (!Array.isArray(content)) return;
  for (const part of content) {
    if (typeof part === 'string') out.push(part);
    else if (isObj(part)) {
      if (typeof part['text'] === 'string') out.push(part['text']);
      if (part['type'] === 'tool_result') contentText(part['content'], out);
      if (part['type'] === 'tool_use' && part['input'] !== undefined) out.push(JSON.stringify(part['input']));
    }
  }
}

function openAiMessagesText(messages: unknown, out: string[]): void {
  if (!Array.isArray(messages)) return;
  for (const m of messages) {
    if (!isObj(m)) continue;
    contentText(m['content'], out);
    if (Array.isArray(m['tool_calls']))
      for (const call of m['tool_calls']) {
        const fn = isObj(call) ? call['function'] : undefined;
        if (isObj(fn) && typeof fn['arguments'] === 'string') out.push(fn['arguments']);
      }
  }
}

function responsesInputText(input: unknown, out: string[]): void {
  if (typeof input === 'string') {
    out.push(input);
    return;
  }
  if (!Array.isArray(input)) return;
  for (const item of input) {
    if (typeof item === 'string') out.push(item);
    else if (isObj(item)) {
      contentText(item['content'], out);
      if (typeof item['arguments'] === 'string') out.push(item['arguments']);
      if (typeof item['output'] === 'string') out.push(item['output']);
    }
  }
}

function allStrings(value: unknown, out: string[]): void {
  const stack = [value];
  while (stack.length) {
    const v = stack.pop();
    if (typeof v === 'string') out.push(v);
    else if (Array.isArray(v)) for (let i = v.length - 1; i >= 0; i--) stack.push(v[i]);
    else if (isObj(v)) {
      const keys = Object.keys(v);
      for (let i = keys.length - 1; i >= 0; i--) stack.push(v[keys[i]!]);
    }
  }
}

/** Every string, number and key under `value`, iteratively (policy sees what the upstream reads). */
function allValues(value: unknown): string {
  const out: string[] = [];
  const stack = [value];
  while (stack.length) {
    const v = stack.pop();
    if (typeof v === 'string') out.push(v);
    else if (typeof v === 'number') out.push(String(v));
    else if (Array.isArray(v)) for (let i = v.length - 1; i >= 0; i--) stack.push(v[i]);
    else if (isObj(v)) {
      const keys = Object.keys(v);
      for (let i = keys.length - 1; i >= 0; i--) stack.push(v[keys[i]!], keys[i]);
    }
  }
  return out.join('\n');
}

function hasToolItems(list: unknown, types: string[]): boolean {
  if (!Array.isArray(list)) return false;
  for (const item of list) {
    if (!isObj(item)) continue;
    if (types.includes(item['type'] as string) || types.includes(item['role'] as string)) return true;
    if (nonEmptyArray(item['tool_calls'])) return true;
    if (Array.isArray(item['content']) && item['content'].some((p) => isObj(p) && types.includes(p['type'] as string))) return true;
  }
  return false;
}

function lastSegment(path: string): string {
  const p = path.replace(/\/+$/, '');
  return p.slice(p.lastIndexOf('/') + 1);
}

/** Describes a parsed request body; `path` is the path after the connection name, without query. */
export function describeRequest(kind: ConnectionKind, path: string, body: unknown): RequestFacts {
  return isObj(body) ? new BodyFacts(kind, path, body) : new OtherFacts(body);
}

/** What the texts of a request are read from: which API's shape, found once from the path. */
const enum Shape {
  AnthropicMessages,
  ChatCompletions,
  Responses,
  Embeddings,
  Completions,
  Other,
}

function shapeOf(kind: ConnectionKind, path: string): Shape {
  const endpoint = lastSegment(path);
  if (kind === 'anthropic' && endpoint === 'messages') return Shape.AnthropicMessages;
  if (kind === 'http') return Shape.Other;
  if (endpoint === 'completions') return path.endsWith('chat/completions') ? Shape.ChatCompletions : Shape.Completions;
  if (endpoint === 'responses') return Shape.Responses;
  if (endpoint === 'embeddings') return Shape.Embeddings;
  return Shape.Other;
}

/**
 * The facts of a JSON object body. A class, not an object literal with closures: one is made for
 * every request, and its texts are computed only when something reads them.
 */
class BodyFacts implements RequestFacts {
  readonly model: string | undefined;
  readonly tools: boolean;
  readonly stream: boolean;
  private readonly shape: Shape;
  private textCache: string | undefined;
  private allCache: string | undefined;

  constructor(kind: ConnectionKind, path: string, private readonly body: Json) {
    this.shape = shapeOf(kind, path);
    this.model = typeof body['model'] === 'string' ? body['model'] : undefined;
    this.stream = body['stream'] === true;
    switch (this.shape) {
      case Shape.AnthropicMessages:
        this.tools = nonEmptyArray(body['tools']) || hasToolItems(body['messages'], ['tool_use', 'tool_result']);
        break;
      case Shape.ChatCompletions:
        this.tools = nonEmptyArray(body['tools']) || nonEmptyArray(body['functions']) || hasToolItems(body['messages'], ['tool', 'function']);
        break;
      case Shape.Responses:
        this.tools = nonEmptyArray(body['tools']) || hasToolItems(body['input'], ['function_call', 'function_call_output', 'custom_tool_call', 'custom_tool_call_output']);
        break;
      case Shape.Embeddings:
      case Shape.Completions:
        this.tools = false;
        break;
      default:
        this.tools = nonEmptyArray(body['tools']);
    }
  }

  get text(): string {
    if (this.textCache === undefined) {
      const out: string[] = [];
      collectText(this.shape, this.body, out);
      this.textCache = out.join('\n');
    }
    return this.textCache;
  }

  get all(): string {
    return (this.allCache ??= allValues(this.body));
  }
}

/** The prompt text of a body of `shape` (what approvers are shown). */
function collectText(shape: Shape, body: Json, out: string[]): void {
  switch (shape) {
    case Shape.AnthropicMessages:
      contentText(body['system'], out);
      if (Array.isArray(body['messages'])) for (const m of body['messages']) if (isObj(m)) contentText(m['content'], out);
      return;
    case Shape.ChatCompletions:
      openAiMessagesText(body['messages'], out);
      return;
    case Shape.Responses:
      if (typeof body['instructions'] === 'string') out.push(body['instructions']);
      responsesInputText(body['input'], out);
      return;
    case Shape.Embeddings: {
      const input = body['input'];
      if (typeof input === 'string') out.push(input);
      else if (Array.isArray(input)) for (const v of input) if (typeof v === 'string') out.push(v);
      return;
    }
    case Shape.Completions: {
      const prompt = body['prompt'];
      if (typeof prompt === 'string') out.push(prompt);
      else if (Array.isArray(prompt)) for (const v of prompt) if (typeof v === 'string') out.push(v);
      return;
    }
    default:
      allStrings(body, out);
  }
}

/** The facts of a body that is not a JSON object (text, a form, an array, nothing). */
class OtherFacts implements RequestFacts {
  readonly model = undefined;
  readonly tools = false;
  readonly stream = false;
  private allCache: string | undefined;

  constructor(private readonly body: unknown) {}

  get text(): string {
    return typeof this.body === 'string' ? this.body : '';
  }

  get all(): string {
    return (this.allCache ??= typeof this.body === 'string' ? this.body : allValues(this.body));
  }
}

/** A one-line description for approvers: `POST /chat/completions gpt-4o: "export all…"`. */
export function holdSummary(method: string, path: string, model: string | undefined, text: string, max = 160): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  const quoted = flat ? `: "${flat.length > max ? `${flat.slice(0, max)}…` : flat}"` : '';
  return `${method} ${path}${model ? ` ${model}` : ''}${quoted}`;
}

/** A query string's keys and values, decoded, one a line: what `match.content` reads of it. */
export function queryText(search: string): string {
  if (search.length <= 1) return '';
  let out = '';
  for (const [key, value] of new URLSearchParams(search)) out += `${key}\n${value}\n`;
  return out;
}
