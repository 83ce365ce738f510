/**
 * The worker thread behind off-loop.ts: reads, masks and scans large request bodies, and masks
 * large responses, with an engine rebuilt from the gateway's (same rules, same HMAC key), so a
 * body of megabytes never holds the gateway's event loop.
 */
import { parentPort } from 'node:worker_threads';
import type { Connection } from '../../shared/config';
import { canonicalPayload } from '../audit/chain';
import { type CustodyMaskingEngine, type EngineSource, engineFromSource } from '../masking/engine';
import { UnmaskableValueError } from '../masking/request';
import { MaskingError } from '../masking/types';
import { describeRequest } from '../policy/llm-request';
import { GatewayError } from './errors';
import type { OffLoopFailure, OffLoopReply, OffLoopRequest } from './off-loop';
import { policyValue, readRequest } from './request-body';
import { inspectRequest } from './request-inspection';

let engine: CustodyMaskingEngine | undefined;

function failure(err: unknown): OffLoopFailure {
  if (err instanceof GatewayError) return { kind: 'gateway', status: err.status, code: err.code, message: err.message };
  if (err instanceof UnmaskableValueError) return { kind: 'unmaskable', message: err.message };
  if (err instanceof MaskingError) return { kind: 'masking', message: err.message };
  return { kind: 'internal', message: err instanceof Error ? (err.stack ?? err.message) : String(err) };
}

/**
 * The canonical JSON of what will be recorded (the masked body and its spans), written here so the
 * gateway's thread does not walk megabytes again to record them (proxy/audit/chain.ts).
 */
function canonicalOf(body: unknown, spans: readonly unknown[]): { body?: string; spans?: string } {
  return {
    ...(typeof body === 'object' && body !== null ? { body: canonicalPayload(body) } : {}),
    ...(spans.length ? { spans: canonicalPayload(spans) } : {}),
  };
}

function handle(req: OffLoopRequest): OffLoopReply {
  if (!engine) return { id: req.id, ok: false, error: { kind: 'masking', message: 'masking failed closed: the masking thread has no rules' } };
  const body = Buffer.from(req.body.buffer, req.body.byteOffset, req.body.byteLength);
  const connection = req.connection as Connection;
  try {
    if (req.op === 'response') {
      const masker = engine.forConnection(connection, req.extraRules ?? []);
      if (!masker) throw new MaskingError(`masking failed closed: no masking rule applies to connection ${connection.name} any more`);
      const m = masker.response(req.path, req.contentType, body, req.extraRules);
      return { id: req.id, ok: true, response: m, canonical: canonicalOf(m.log, m.spans) };
    }
    let read;
    try {
      read = readRequest(connection.kind, req.path, req.contentType, body);
    } catch (err) {
      return { id: req.id, ok: false, error: failure(err) };
    }
    const facts = describeRequest(connection.kind, req.path, policyValue(read));
    const described = { model: facts.model, tools: facts.tools, stream: facts.stream, text: facts.text, ...(req.wantAll ? { all: facts.all } : {}) };
    const masker = engine.forConnection(connection, req.maskerRules);
    try {
      const inspected = inspectRequest(masker, read, body, { contentType: req.contentType, search: req.search, headers: req.headers }, { inspect: req.inspect, passthroughTypes: connection.passthroughTypes, extraRules: req.extraRules });
      return { id: req.id, ok: true, facts: described, inspected, canonical: canonicalOf(inspected.log.body, inspected.spans) };
    } catch (err) {
      return { id: req.id, ok: true, facts: described, maskError: failure(err) };
    }
  } catch (err) {
    return { id: req.id, ok: false, error: failure(err) };
  }
}

parentPort?.on('message', (msg: { engine: EngineSource } | OffLoopRequest) => {
  if ('engine' in msg) {
    try {
      engine = engineFromSource(msg.engine);
    } catch {
      engine = undefined; // every request is then refused (fail closed)
    }
    return;
  }
  const reply = handle(msg);
  // The bytes to forward go back in buffers of their own, moved rather than copied (a Buffer may be
  // a view into a larger pool, all of which a copy would carry).
  const transfer: ArrayBuffer[] = [];
  const own = (bytes: Uint8Array): Buffer => {
    const copy = new Uint8Array(bytes.byteLength);
    copy.set(bytes);
    transfer.push(copy.buffer);
    return copy as Buffer;
  };
  if (reply.ok && reply.inspected) reply.inspected.forward = own(reply.inspected.forward);
  if (reply.ok && reply.response) reply.response.forward = own(reply.response.forward);
  parentPort!.postMessage(reply, transfer);
});
