/**
 * The hash chain's definitions (docs/AUDIT.md): canonical JSON of payloads and event bodies, and
 * the SHA-256 chain over them. Shared by the appending side (the store, its commit thread) and the
 * verifier.
 *
 *   payloadHash = SHA-256(canonical({payload, spans}))
 *   body        = {seq, time, kind, session, actor, connection, payloadHash}
 *   hash        = SHA-256(prevHash ‖ canonical(body)), prevHash of seq 1 = 32 zero bytes.
 */
import { createHash, hash as oneShotHash } from 'node:crypto';
import { canonicalize } from '../../shared/canonical-json';
import type { AuditEvent, MaskSpan } from '../../shared/events';

export const GENESIS_HASH = '0'.repeat(64);
export function sha256hex(data: string | Uint8Array): string {
  return oneShotHash('sha256', data, 'hex');
}

export function payloadHashOf(payload: unknown, spans: MaskSpan[]): string {
  return sha256hex(canonicalize({ payload, spans }));
}

export function eventBody(e: Pick<AuditEvent, 'seq' | 'time' | 'kind' | 'session' | 'actor' | 'connection' | 'payloadHash'>) {
  return { seq: e.seq, time: e.time, kind: e.kind, session: e.session, actor: e.actor, connection: e.connection, payloadHash: e.payloadHash };
}

export function chainHash(prevHash: string, body: ReturnType<typeof eventBody>): string {
  return chainHashOfText(prevHash, canonicalEventBody(body));
}

const CHAIN_INPUT = Buffer.alloc(8192);

/** SHA-256(prevHash bytes ‖ canonical body text), hex; `prevHash` as 64 hex digits. */
export function chainHashOfText(prevHash: string, canonicalBody: string): string {
  // One reusable input buffer instead of a Buffer per event: this runs once per append and per verified row.
  if (prevHash.length === 64 && canonicalBody.length * 3 <= CHAIN_INPUT.length - 32 && CHAIN_INPUT.write(prevHash, 0, 32, 'hex') === 32) {
    const n = CHAIN_INPUT.write(canonicalBody, 32, 'utf8');
    return oneShotHash('sha256', CHAIN_INPUT.subarray(0, 32 + n), 'hex');
  }
  return createHash('sha256').update(Buffer.from(prevHash, 'hex')).update(canonicalBody).digest('hex');
}

/** Object keys as JSON strings: payloads repeat a few hundred keys, each quoted once. */
const quotedKeys = new Map<string, string>();
function quoteKey(k: string): string {
  let q = quotedKeys.get(k);
  if (q === undefined) {
    q = JSON.stringify(k);
    if (quotedKeys.size < 4096) quotedKeys.set(k, q);
  }
  return q;
}

/**
 * Canonical texts computed elsewhere (a worker thread that masked a large body also writes its
 * canonical JSON), by the object they encode: `canonicalPayload` uses them instead of walking the
 * object again on the gateway's thread. Whoever registers one vouches it is `canonicalPayload(v)`.
 */
const precomputed = new WeakMap<object, string>();
/** No lookups on the hot path until something was registered. */
let anyPrecomputed = false;

/** Registers `text` as the canonical JSON of `value` (see `precomputed`). */
export function withCanonicalText<T extends object>(value: T, text: string): T {
  precomputed.set(value, text);
  anyPrecomputed = true;
  return value;
}

/**
 * RFC 8785 canonical JSON, byte for byte what shared/canonical-json's `canonicalize` writes (a
 * property test holds the two together), built with string appends instead of arrays and closures:
 * it runs once per appended payload, the gateway's hottest path. Keys that already arrive in order
 * (most of the gateway's own payloads) are not sorted again.
 */
export function canonicalPayload(v: unknown): string {
  if (v === null) return 'null';
  switch (typeof v) {
    case 'string':
      return JSON.stringify(v);
    case 'number':
      if (!Number.isFinite(v)) throw new TypeError('canonical JSON cannot encode NaN or Infinity');
      // ECMAScript Number::toString, as RFC 8785 and JSON.stringify write numbers.
      return String(v);
    case 'boolean':
      return v ? 'true' : 'false';
    case 'object': {
      if (anyPrecomputed) {
        const known = precomputed.get(v);
        if (known !== undefined) return known;
      }
      if (Array.isArray(v)) {
        let s = '[';
        for (let i = 0; i < v.length; i++) {
          if (i) s += ',';
          const x: unknown = v[i];
          s += x === undefined ? 'null' : canonicalPayload(x);
        }
        return `${s}]`;
      }
      const o = v as Record<string, unknown> & { toJSON?: () => unknown };
      if (typeof o.toJSON === 'function') return canonicalPayload(o.toJSON());
      const keys = Object.keys(o);
      for (let i = 1; i < keys.length; i++) {
        if (keys[i - 1]! > keys[i]!) {
          keys.sort();
          break;
        }
      }
      let s = '{';
      let first = true;
      for (const k of keys) {
        const x = o[k];
        if (x === undefined) continue;
        if (!first) s += ',';
        first = false;
        s += `${quoteKey(k)}:${canonicalPayload(x)}`;
      }
      return `${s}}`;
    }
    case 'undefined':
      throw new TypeError('canonical JSON cannot encode undefined');
    default:
      throw new TypeError(`canonical JSON cannot encode a ${typeof v}`);
  }
}

const jsonOrNull = (v: string | null) => (v === null ? 'null' : JSON.stringify(v));

/**
 * canonical(body) written out directly: the same bytes `canonicalize(eventBody(e))` produces (keys in
 * RFC 8785 order: actor, connection, kind, payloadHash, seq, session, time), without walking an
 * object. The verifier uses it to hash a million stored rows quickly.
 */
export function canonicalEventBody(b: ReturnType<typeof eventBody>): string {
  if (!Number.isFinite(b.seq) || !Number.isFinite(b.time)) throw new TypeError('canonical JSON cannot encode NaN or Infinity');
  return `{"actor":${jsonOrNull(b.actor)},"connection":${jsonOrNull(b.connection)},"kind":${JSON.stringify(b.kind)},"payloadHash":${JSON.stringify(b.payloadHash)},"seq":${b.seq},"session":${jsonOrNull(b.session)},"time":${b.time}}`;
}

