/**
 * Turns a recorded LLM/HTTP session into a readable conversation for replay: the messages each
 * request added (system, user, assistant, tool calls, tool results), the assistant's answer —
 * streamed answers as timed deltas, so they replay at their recorded pace — and the policy
 * decisions, holds, votes and denials at the moment they happened. Masked spans travel with every
 * string (see rich.ts), including strings inside SSE `data:` JSON and tool-call arguments.
 *
 * Wire formats (see /work/shared/notes/llm-wire-formats.md): OpenAI Chat Completions and Responses,
 * Anthropic Messages; anything else falls back to the JSON body.
 */
import type { AuditEvent } from '../../shared/events';
import { concatRich, EMPTY_RICH, Node, rich, type Rich } from './rich';
import { holdOf, type Timeline } from './replay';

export type Part =
  | { kind: 'text'; text: Rich }
  | { kind: 'tool_call'; id?: string; name: string; args: Rich }
  | { kind: 'tool_result'; id?: string; content: Rich }
  | { kind: 'json'; text: Rich };

export interface Turn {
  role: string;
  parts: Part[];
}

/** One piece of a response: text or a tool call, possibly arriving in many streamed deltas. */
export interface OutputOp {
  at: number;
  seq: number;
  /** Which content block it belongs to (a choice's text, a tool call by index…). */
  block: string;
  kind: 'text' | 'tool' | 'json';
  /** Tool name (set by the op that opens the block). */
  name?: string;
  id?: string;
  text: Rich;
}

export type Block =
  | { type: 'exchange'; at: number; seq: number; exchange: number; method: string; path: string; model?: string; stream: boolean; tools: string[]; status?: number }
  | { type: 'turn'; at: number; seq: number; exchange: number; turn: Turn }
  | { type: 'output'; at: number; seq: number; exchange: number; ops: OutputOp[]; endAt: number; status?: number }
  | { type: 'notice'; at: number; seq: number; tone: 'hold' | 'approve' | 'deny' | 'info' | 'error'; title: string; detail?: Rich };

export interface Conversation {
  blocks: Block[];
  exchanges: number;
}

type Ctx = { at: (seq: number) => number };

function asNode(e: AuditEvent): Node {
  return Node.root(e.payload, e.spans);
}

/** The body inside a recorded request/response payload, decoding JSON text when needed. */
export function bodyOf(n: Node): Node {
  for (const key of ['body', 'json', 'data']) {
    const b = n.get(key);
    if (b.isString) return b.json() ?? b;
    if (b.exists) return b;
  }
  return n;
}

function contentParts(content: Node): Part[] {
  if (content.isString) return [{ kind: 'text', text: content.rich() }];
  if (!content.isArray) return content.exists ? [{ kind: 'json', text: content.jsonRich() }] : [];
  const parts: Part[] = [];
  for (const item of content.items()) {
    if (item.isString) {
      parts.push({ kind: 'text', text: item.rich() });
      continue;
    }
    const type = item.get('type').str();
    if (type === 'text' || type === 'input_text' || type === 'output_text') parts.push({ kind: 'text', text: item.get('text').rich() });
    else if (type === 'tool_use') parts.push({ kind: 'tool_call', id: item.get('id').str(), name: item.get('name').str() ?? 'tool', args: item.get('input').jsonRich() });
    else if (type === 'tool_result') parts.push({ kind: 'tool_result', id: item.get('tool_use_id').str(), content: textOrJson(item.get('content')) });
    else if (type === 'image_url' || type === 'image' || type === 'input_image') parts.push({ kind: 'text', text: rich('[image]') });
    else parts.push({ kind: 'json', text: item.jsonRich() });
  }
  return parts;
}

function textOrJson(n: Node): Rich {
  if (n.isString) return n.rich();
  if (n.isArray) {
    const texts = n.items().map((i) => (i.get('type').str() === 'text' ? i.get('text').rich() : i.jsonRich()));
    return joinRich(texts, '\n');
  }
  return n.exists ? n.jsonRich() : EMPTY_RICH;
}

function joinRich(list: Rich[], sep: string): Rich {
  const parts: Rich[] = [];
  list.forEach((r, i) => {
    if (i) parts.push(rich(sep));
    parts.push(r);
  });
  return concatRich(parts);
}

/** Tool-call arguments: JSON text pretty-printed with its marks, or the text as it is. */
function argsRich(n: Node): Rich {
  if (!n.isString) return n.exists ? n.jsonRich() : EMPTY_RICH;
  const decoded = n.json();
  return decoded && (decoded.isObject || decoded.isArray) ? decoded.jsonRich() : n.rich();
}

/** The input turns of a request body, for every supported API. */
export function requestTurns(body: Node): Turn[] {
  const turns: Turn[] = [];
  // Anthropic `system`, Responses `instructions`
  const system = body.get('system');
  if (system.exists) turns.push({ role: 'system', parts: contentParts(system) });
  const instructions = body.get('instructions');
  if (instructions.isString) turns.push({ role: 'system', parts: [{ kind: 'text', text: instructions.rich() }] });

  const messages = body.get('messages');
  if (messages.isArray) {
    for (const m of messages.items()) {
      const role = m.get('role').str() ?? 'user';
      const parts = contentParts(m.get('content'));
      for (const tc of m.get('tool_calls').items())
        parts.push({ kind: 'tool_call', id: tc.get('id').str(), name: tc.at('function', 'name').str() ?? 'tool', args: argsRich(tc.at('function', 'arguments')) });
      if (role === 'tool') turns.push({ role: 'tool', parts: [{ kind: 'tool_result', id: m.get('tool_call_id').str(), content: textOrJson(m.get('content')) }] });
      else turns.push({ role, parts });
    }
    return turns;
  }
  const input = body.get('input');
  if (input.isString) {
    turns.push({ role: 'user', parts: [{ kind: 'text', text: input.rich() }] });
  } else if (input.isArray) {
    for (const item of input.items()) {
      if (item.isString) {
        // embeddings: a list of strings
        turns.push({ role: 'user', parts: [{ kind: 'text', text: item.rich() }] });
        continue;
      }
      const type = item.get('type').str();
      if (type === 'function_call_output') turns.push({ role: 'tool', parts: [{ kind: 'tool_result', id: item.get('call_id').str(), content: textOrJson(item.get('output')) }] });
      else if (type === 'function_call') turns.push({ role: 'assistant', parts: [{ kind: 'tool_call', id: item.get('call_id').str(), name: item.get('name').str() ?? 'tool', args: argsRich(item.get('arguments')) }] });
      else turns.push({ role: item.get('role').str() ?? 'user', parts: contentParts(item.get('content')) });
    }
  } else if (input.exists) turns.push({ role: 'user', parts: [{ kind: 'json', text: input.jsonRich() }] });
  const prompt = body.get('prompt');
  if (prompt.isString) turns.push({ role: 'user', parts: [{ kind: 'text', text: prompt.rich() }] });
  if (!turns.length && body.exists) turns.push({ role: 'request', parts: [{ kind: body.isString ? 'text' : 'json', text: body.isString ? body.rich() : body.jsonRich() }] });
  return turns;
}

/** Ops for a complete (non-streamed) response body. */
export function responseOps(body: Node, at: number, seq: number): OutputOp[] {
  const ops: OutputOp[] = [];
  const push = (op: Omit<OutputOp, 'at' | 'seq'>) => ops.push({ ...op, at, seq });
  const choices = body.get('choices');
  if (choices.isArray) {
    for (const c of choices.items()) {
      const i = c.get('index').num() ?? 0;
      const msg = c.get('message');
      const content = msg.get('content');
      if (content.exists) push({ block: `c${i}:text`, kind: 'text', text: content.isString ? content.rich() : textOrJson(content) });
      msg
        .get('tool_calls')
        .items()
        .forEach((tc, j) => push({ block: `c${i}:tool${j}`, kind: 'tool', id: tc.get('id').str(), name: tc.at('function', 'name').str() ?? 'tool', text: argsRich(tc.at('function', 'arguments')) }));
      // legacy completions
      const text = c.get('text');
      if (text.isString) push({ block: `c${i}:text`, kind: 'text', text: text.rich() });
    }
    return ops;
  }
  const content = body.get('content');
  if (body.get('type').str() === 'message' && content.isArray) {
    content.items().forEach((b, j) => {
      const type = b.get('type').str();
      if (type === 'text') push({ block: `b${j}`, kind: 'text', text: b.get('text').rich() });
      else if (type === 'tool_use') push({ block: `b${j}`, kind: 'tool', id: b.get('id').str(), name: b.get('name').str() ?? 'tool', text: b.get('input').jsonRich() });
      else push({ block: `b${j}`, kind: 'json', text: b.jsonRich() });
    });
    return ops;
  }
  const output = body.get('output');
  if (output.isArray) {
    output.items().forEach((item, j) => {
      const type = item.get('type').str();
      if (type === 'message')
        push({ block: `o${j}`, kind: 'text', text: joinRich(item.get('content').items().map((c) => c.get('text').rich()), '') });
      else if (type === 'function_call') push({ block: `o${j}`, kind: 'tool', id: item.get('call_id').str(), name: item.get('name').str() ?? 'tool', text: argsRich(item.get('arguments')) });
      else if (type !== 'reasoning') push({ block: `o${j}`, kind: 'json', text: item.jsonRich() });
    });
    return ops;
  }
  const data = body.get('data');
  if (data.isArray && body.get('object').str() === 'list') {
    push({ block: 'summary', kind: 'text', text: rich(`${data.items().length} embedding${data.items().length === 1 ? '' : 's'} returned`) });
    return ops;
  }
  const error = body.get('error');
  if (error.exists) {
    const message = error.isObject ? error.get('message') : error;
    push({ block: 'error', kind: 'text', text: message.isString ? message.rich() : error.jsonRich() });
    return ops;
  }
  if (body.exists) push({ block: 'body', kind: body.isString ? 'text' : 'json', text: body.isString ? body.rich() : body.jsonRich() });
  return ops;
}

/** The SSE events inside one recorded chunk payload: `{event, data}`, `{events: [...]}` or `{data: {...}}`. */
export function sseEvents(payload: Node): { event?: string; data: Node }[] {
  const list = payload.get('events');
  if (list.isArray) return list.items().map((e) => ({ event: e.get('event').str(), data: e.get('data') }));
  const data = payload.get('data');
  if (data.exists) return [{ event: payload.get('event').str(), data }];
  return [];
}

/** Ops for one streamed SSE event (OpenAI chat chunks, Responses events, Anthropic events). */
export function streamEventOps(ev: { event?: string; data: Node }, at: number, seq: number): OutputOp[] {
  const raw = ev.data.str();
  if (raw !== undefined && raw.trim() === '[DONE]') return [];
  const d = ev.data.isString ? ev.data.json() : ev.data;
  if (!d) return raw ? [{ at, seq, block: 'raw', kind: 'text', text: ev.data.rich() }] : [];
  const ops: OutputOp[] = [];
  const push = (op: Omit<OutputOp, 'at' | 'seq'>) => ops.push({ ...op, at, seq });
  const type = d.get('type').str() ?? ev.event;
  // OpenAI chat.completion.chunk
  const choices = d.get('choices');
  if (choices.isArray) {
    for (const c of choices.items()) {
      const i = c.get('index').num() ?? 0;
      const delta = c.get('delta');
      const content = delta.get('content');
      if (content.isString && content.str()) push({ block: `c${i}:text`, kind: 'text', text: content.rich() });
      for (const tc of delta.get('tool_calls').items()) {
        const j = tc.get('index').num() ?? 0;
        push({ block: `c${i}:tool${j}`, kind: 'tool', id: tc.get('id').str(), name: tc.at('function', 'name').str(), text: tc.at('function', 'arguments').rich() });
      }
    }
    return ops;
  }
  switch (type) {
    // Anthropic Messages
    case 'content_block_start': {
      const i = d.get('index').num() ?? 0;
      const cb = d.get('content_block');
      if (cb.get('type').str() === 'tool_use') push({ block: `b${i}`, kind: 'tool', id: cb.get('id').str(), name: cb.get('name').str() ?? 'tool', text: EMPTY_RICH });
      else if (cb.get('text').str()) push({ block: `b${i}`, kind: 'text', text: cb.get('text').rich() });
      break;
    }
    case 'content_block_delta': {
      const i = d.get('index').num() ?? 0;
      const delta = d.get('delta');
      const dt = delta.get('type').str();
      if (dt === 'text_delta') push({ block: `b${i}`, kind: 'text', text: delta.get('text').rich() });
      else if (dt === 'input_json_delta') push({ block: `b${i}`, kind: 'tool', text: delta.get('partial_json').rich() });
      break;
    }
    // OpenAI Responses
    case 'response.output_text.delta':
      push({ block: `o${d.get('output_index').num() ?? 0}`, kind: 'text', text: d.get('delta').rich() });
      break;
    case 'response.output_item.added': {
      const item = d.get('item');
      if (item.get('type').str() === 'function_call')
        push({ block: `o${d.get('output_index').num() ?? 0}`, kind: 'tool', id: item.get('call_id').str(), name: item.get('name').str() ?? 'tool', text: EMPTY_RICH });
      break;
    }
    case 'response.function_call_arguments.delta':
      push({ block: `o${d.get('output_index').num() ?? 0}`, kind: 'tool', text: d.get('delta').rich() });
      break;
    case 'error': {
      const e = d.get('error');
      push({ block: 'error', kind: 'text', text: (e.get('message').isString ? e.get('message') : d.get('message')).rich() });
      break;
    }
    default:
      break;
  }
  return ops;
}

export interface MaterializedPart {
  block: string;
  kind: 'text' | 'tool' | 'json';
  name?: string;
  id?: string;
  text: Rich;
}

/** The answer as it stood at `position`: deltas at or before it, concatenated per block. */
export function materialize(ops: readonly OutputOp[], position: number): MaterializedPart[] {
  const order: string[] = [];
  const acc = new Map<string, { kind: OutputOp['kind']; name?: string; id?: string; parts: Rich[] }>();
  for (const op of ops) {
    if (op.at > position) break;
    let b = acc.get(op.block);
    if (!b) {
      b = { kind: op.kind, parts: [] };
      acc.set(op.block, b);
      order.push(op.block);
    }
    if (op.name) b.name = op.name;
    if (op.id) b.id = op.id;
    b.parts.push(op.text);
  }
  return order.map((block) => {
    const b = acc.get(block)!;
    let text = concatRich(b.parts);
    if (b.kind === 'tool' && text.text) {
      // Streamed arguments arrive as JSON fragments; pretty-print once they parse.
      const decoded = new Node(text.text, '', new Map([['', text.marks]])).json();
      if (decoded && (decoded.isObject || decoded.isArray)) text = decoded.jsonRich();
    }
    return { block, kind: b.kind, name: b.name, id: b.id, text };
  });
}

function turnSignature(t: Turn): string {
  return `${t.role}\u0000${t.parts.map((p) => (p.kind === 'tool_call' ? `${p.name}(${p.args.text})` : p.kind === 'tool_result' ? p.content.text : p.text.text)).join('\u0001')}`;
}

function outputSignature(ops: OutputOp[]): string {
  const parts = materialize(ops, Infinity);
  return `assistant\u0000${parts.map((p) => (p.kind === 'tool' ? `${p.name}(${p.text.text})` : p.text.text)).join('\u0001')}`;
}

function atOf(ctx: Ctx, e: AuditEvent): number {
  return ctx.at(e.seq);
}

/** Builds the conversation blocks for a session's events, placed on the timeline's clock. */
export function buildConversation(events: readonly AuditEvent[], timeline: Timeline): Conversation {
  const atBySeq = new Map(timeline.items.map((i) => [i.seq, i.at]));
  const ctx: Ctx = { at: (seq) => atBySeq.get(seq) ?? 0 };
  const blocks: Block[] = [];
  let exchange = -1;
  let output: Extract<Block, { type: 'output' }> | undefined;
  let header: Extract<Block, { type: 'exchange' }> | undefined;
  /** Signatures of what the reader has already seen, to show only what each request adds. */
  let shown: string[] = [];
  const finishOutput = () => {
    if (output) {
      output.endAt = output.ops.length ? output.ops[output.ops.length - 1]!.at : output.at;
      if (output.ops.length) shown.push(outputSignature(output.ops));
    }
    output = undefined;
  };
  const redundant = redundantHoldFacts(events);
  for (const e of [...events].sort((a, b) => a.seq - b.seq)) {
    if (redundant.has(e.seq)) continue;
    const n = asNode(e);
    const at = atOf(ctx, e);
    switch (e.kind) {
      case 'http.request': {
        finishOutput();
        exchange++;
        const body = bodyOf(n);
        const tools = body
          .get('tools')
          .items()
          .map((t) => t.at('function', 'name').str() ?? t.get('name').str() ?? 'tool');
        header = {
          type: 'exchange',
          at,
          seq: e.seq,
          exchange,
          method: n.get('method').str() ?? 'POST',
          path: n.get('path').str() ?? '',
          model: body.get('model').str() ?? n.get('model').str(),
          stream: body.get('stream').value === true,
          tools,
        };
        blocks.push(header);
        const turns = requestTurns(body);
        const sigs = turns.map(turnSignature);
        let skip = 0;
        while (skip < sigs.length && skip < shown.length && sigs[skip] === shown[skip]) skip++;
        // The assistant's previous answer, echoed back in a slightly different shape, counts as seen.
        if (skip > 0 && skip === shown.length - 1 && turns[skip]?.role === 'assistant') skip++;
        if (skip < shown.length - 1) skip = 0; // a different conversation on the same connection
        turns.slice(skip).forEach((turn) => blocks.push({ type: 'turn', at, seq: e.seq, exchange, turn }));
        shown = sigs;
        break;
      }
      case 'http.response': {
        const status = n.get('status').num();
        if (header) header.status = status;
        const body = bodyOf(n);
        const streamed = n.get('stream').value === true || /event-stream/.test(n.at('headers', 'content-type').str() ?? n.get('contentType').str() ?? '');
        output = { type: 'output', at, seq: e.seq, exchange, ops: [], endAt: at, status };
        blocks.push(output);
        if (!streamed && (body !== n || n.get('body').exists)) output.ops.push(...responseOps(body, at, e.seq));
        break;
      }
      case 'http.chunk': {
        if (!output) {
          output = { type: 'output', at, seq: e.seq, exchange, ops: [], endAt: at };
          blocks.push(output);
        }
        for (const ev of sseEvents(n)) output.ops.push(...streamEventOps(ev, at, e.seq));
        break;
      }
      case 'http.error':
        blocks.push({ type: 'notice', at, seq: e.seq, tone: 'error', title: 'Error', detail: (n.get('message').isString ? n.get('message') : n).rich() });
        break;
      case 'policy.decision': {
        const action = n.get('action').str() ?? 'allow';
        if (action === 'allow' && !n.get('rule').str()) break;
        const rule = n.get('rule').str();
        const reason = n.get('reason');
        blocks.push({
          type: 'notice',
          at,
          seq: e.seq,
          tone: action === 'deny' ? 'deny' : action === 'hold' ? 'hold' : 'info',
          title: `Policy ${action}${rule ? ` — rule ${rule}` : ''}`,
          detail: reason.isString ? reason.rich() : undefined,
        });
        break;
      }
      default: {
        const notice = holdNotice(e, at);
        if (notice) blocks.push(notice);
      }
    }
  }
  finishOutput();
  // Keep ops time-ordered for materialize().
  for (const b of blocks) if (b.type === 'output') b.ops.sort((x, y) => x.at - y.at || x.seq - y.seq);
  return { blocks, exchanges: exchange + 1 };
}

/**
 * Events whose fact another event already states, so a replay says each fact once (shared by the
 * LLM and SQL views): a `hold` policy decision is told by the hold it created (which names the rule
 * and the approvers), and an approval or denial is told by the votes that made it. A resolution
 * nobody voted for (timed out, cancelled, abandoned) is its own fact and stays.
 */
export function redundantHoldFacts(events: readonly AuditEvent[]): Set<number> {
  const skip = new Set<number>();
  const created = events.some((e) => e.kind === 'hold.created');
  const votes = new Map<string, Set<string>>();
  for (const e of events) {
    if (e.kind !== 'hold.vote') continue;
    const id = String(holdOf(e)['id'] ?? (e.payload as Record<string, unknown> | null)?.['id'] ?? '');
    const decision = (e.payload as Record<string, unknown> | null)?.['decision'] === 'deny' ? 'denied' : 'approved';
    votes.set(id, (votes.get(id) ?? new Set()).add(decision));
  }
  for (const e of events) {
    const p = (e.payload ?? {}) as Record<string, unknown>;
    if (e.kind === 'policy.decision' && p['action'] === 'hold' && created) skip.add(e.seq);
    if (e.kind === 'hold.resolved') {
      const h = holdOf(e);
      const state = String(h['state'] ?? p['state'] ?? '');
      if (votes.get(String(h['id'] ?? p['id'] ?? ''))?.has(state)) skip.add(e.seq);
    }
  }
  return skip;
}

/** Hold, vote and resolution events as inline notices (shared by the LLM and SQL views). */
export function holdNotice(e: AuditEvent, at: number): Extract<Block, { type: 'notice' }> | undefined {
  const n = asNode(e);
  const h = holdOf(e);
  const s = (v: unknown) => (typeof v === 'string' ? v : undefined);
  switch (e.kind) {
    case 'hold.created': {
      const approvers = Array.isArray(h['approvers']) ? (h['approvers'] as string[]).join(', ') : '';
      const min = typeof h['min'] === 'number' ? h['min'] : 1;
      return { type: 'notice', at, seq: e.seq, tone: 'hold', title: `Held for approval by ${approvers || 'approvers'} (${min} needed) — rule ${s(h['rule']) ?? '?'}` };
    }
    case 'hold.vote': {
      const approve = n.get('decision').str() !== 'deny';
      const by = n.get('byName').str() ?? n.get('by').str() ?? e.actor ?? 'someone';
      const reason = n.get('reason');
      return { type: 'notice', at, seq: e.seq, tone: approve ? 'approve' : 'deny', title: `${approve ? 'Approved' : 'Denied'} by ${by}`, detail: reason.isString && reason.str() ? reason.rich() : undefined };
    }
    case 'hold.resolved': {
      const state = s(h['state']) ?? n.get('state').str() ?? 'resolved';
      const tone = state === 'approved' ? 'approve' : 'deny';
      const resolution = s(h['resolution']) ?? n.get('reason').str();
      return { type: 'notice', at, seq: e.seq, tone, title: `Hold ${state}`, detail: resolution ? rich(resolution) : undefined };
    }
    case 'recording.viewed':
      return undefined;
    case 'session.start':
    case 'session.end':
      return { type: 'notice', at, seq: e.seq, tone: 'info', title: e.kind === 'session.start' ? 'Session started' : 'Session ended' };
    default:
      return undefined;
  }
}
