/**
 * Frontend (client → server) messages: parsers for what the gateway reads from clients, builders for
 * what it sends to the upstream server. Formats:
 * https://www.postgresql.org/docs/current/protocol-message-formats.html
 */
import { BufferReader } from './buffer-reader';
import { MessageWriter } from './buffer-writer';
import { ProtocolError } from './message-buffer';
import { FrontendCode, SqlState, StartupCode } from './message-codes';

export type StartupPacket =
  | { kind: 'startup'; major: number; minor: number; params: Map<string, string> }
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  | { kind: 'cancel'; pid: number; secret: Buffer };

/**
 * Parses an untyped startup-phase packet (body = everything after the length): StartupMessage,
 * SSLRequest, GSSENCRequest or CancelRequest.
 * https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-STARTUPMESSAGE
 */
export function parseStartupPacket(body: Buffer): StartupPacket {
  const r = new BufferReader(body, 'startup');
  const code = r.uint32();
  if (code === StartupCode.SSLRequest) return { kind: 'ssl' };
  if (code === StartupCode.GSSENCRequest) return { kind: 'gssenc' };
  if (code === StartupCode.CancelRequest) {
    const pid = r.int32();
    // Protocol 3.2 allows a longer secret key; 3.0 has exactly four bytes.
    const secret = Buffer.from(r.rest());
    if (secret.length < 4 || secret.length > 256) throw new ProtocolError('malformed CancelRequest: the secret key must be 4 to 256 bytes');
    return { kind: 'cancel', pid, secret };
  }
  const major = code >>> 16;
  const minor = code & 0xffff;
  if (major !== 3)
    throw new ProtocolError(`unsupported frontend protocol ${major}.${minor}: the gateway speaks protocol 3.0`, SqlState.FeatureNotSupported);
  const params = new Map<string, string>();
  while (r.remaining > 0) {
    const name = r.cstring();
    if (name === '') break;
    params.set(name, r.cstring());
  }
  return { kind: 'startup', major, minor, params };
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PARSE */
export interface ParseMessage {
  name: string;
  query: string;
  paramTypes: number[];
}

export function parseParse(body: Buffer): ParseMessage {
  const r = new BufferReader(body, 'Parse');
  const name = r.cstring();
  const query = r.cstring();
  const n = r.int16();
  const paramTypes: number[] = [];
  for (let i = 0; i < n; i++) paramTypes.push(r.uint32());
  return { name, query, paramTypes };
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-BIND */
export interface BindMessage {
  portal: string;
  statement: string;
  paramFormats: number[];
  /** null = SQL NULL. Views into the message. */
  params: (Buffer | null)[];
  resultFormats: number[];
}

export function parseBind(body: Buffer): BindMessage {
  const r = new BufferReader(body, 'Bind');
  const portal = r.cstring();
  const statement = r.cstring();
  const nf = r.int16();
  const paramFormats: number[] = [];
  for (let i = 0; i < nf; i++) paramFormats.push(r.int16());
  const np = r.int16();
  const params: (Buffer | null)[] = [];
  for (let i = 0; i < np; i++) {
    const len = r.int32();
    params.push(len === -1 ? null : r.bytes(len));
  }
  const nr = r.int16();
  const resultFormats: number[] = [];
  for (let i = 0; i < nr; i++) resultFormats.push(r.int16());
  return { portal, statement, paramFormats, params, resultFormats };
}

/** Describe and Close share a layout: Byte1 'S' (statement) or 'P' (portal), String name. */
export interface TargetMessage {
  target: 'S' | 'P';
  name: string;
}

/**
 * https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-DESCRIBE
 * https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-CLOSE
 */
export function parseTarget(body: Buffer, what: 'Describe' | 'Close'): TargetMessage {
  const r = new BufferReader(body, what);
  const t = r.byte();
  if (t !== 0x53 && t !== 0x50) throw new ProtocolError(`malformed ${what} message: expected 'S' or 'P', got 0x${t.toString(16)}`);
  return { target: t === 0x53 ? 'S' : 'P', name: r.cstring() };
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-EXECUTE */
export function parseExecute(body: Buffer): { portal: string; maxRows: number } {
  const r = new BufferReader(body, 'Execute');
  return { portal: r.cstring(), maxRows: r.int32() };
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-QUERY */
export function parseQuery(body: Buffer): string {
  const end = body.indexOf(0);
  if (end < 0) throw new ProtocolError('malformed Query message: the query string is not terminated');
  return body.toString('utf8', 0, end);
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PASSWORDMESSAGE */
export function parsePasswordMessage(body: Buffer): string {
  return new BufferReader(body, 'PasswordMessage').cstring();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-FUNCTIONCALL */
export function parseFunctionCall(body: Buffer): { functionOid: number; args: number } {
  const r = new BufferReader(body, 'FunctionCall');
  const functionOid = r.uint32();
  const nf = r.int16();
  for (let i = 0; i < nf; i++) r.int16();
  return { functionOid, args: r.int16() };
}

// ---- builders (gateway → upstream) ----

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-STARTUPMESSAGE */
export function buildStartupMessage(params: Record<string, string>): Buffer {
  const w = new MessageWriter(undefined, 128).int32(StartupCode.Protocol3);
  for (const [k, v] of Object.entries(params)) w.cstring(k).cstring(v);
  return w.byte(0).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-SSLREQUEST */
export function buildSSLRequest(): Buffer {
  return new MessageWriter(undefined, 4).int32(StartupCode.SSLRequest).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-CANCELREQUEST */
export function buildCancelRequest(pid: number, secret: Buffer): Buffer {
  return new MessageWriter(undefined, 8 + secret.length).int32(StartupCode.CancelRequest).int32(pid).bytes(secret).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PASSWORDMESSAGE */
export function buildPasswordMessage(password: string): Buffer {
  return new MessageWriter(FrontendCode.Password).cstring(password).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-SASLINITIALRESPONSE */
export function buildSASLInitialResponse(mechanism: string, data: Buffer): Buffer {
  return new MessageWriter(FrontendCode.Password).cstring(mechanism).int32(data.length).bytes(data).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-SASLRESPONSE */
export function buildSASLResponse(data: Buffer): Buffer {
  return new MessageWriter(FrontendCode.Password).bytes(data).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-QUERY */
export function buildQuery(sql: string): Buffer {
  return new MessageWriter(FrontendCode.Query).cstring(sql).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PARSE */
export function buildParse(name: string, query: string, paramTypes: number[] = []): Buffer {
  const w = new MessageWriter(FrontendCode.Parse).cstring(name).cstring(query).int16(paramTypes.length);
  for (const t of paramTypes) w.int32(t | 0);
  return w.finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-BIND */
export function buildBind(portal: string, statement: string, params: (Buffer | string | null)[] = [], resultFormats: number[] = []): Buffer {
  const w = new MessageWriter(FrontendCode.Bind).cstring(portal).cstring(statement).int16(0).int16(params.length);
  for (const p of params) {
    if (p === null) w.int32(-1);
    else {
      const b = typeof p === 'string' ? Buffer.from(p) : p;
      w.int32(b.length).bytes(b);
    }
  }
  w.int16(resultFormats.length);
  for (const f of resultFormats) w.int16(f);
  return w.finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-DESCRIBE */
export function buildDescribe(target: 'S' | 'P', name: string): Buffer {
  return new MessageWriter(FrontendCode.Describe).byte(target.charCodeAt(0)).cstring(name).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-CLOSE */
export function buildClose(target: 'S' | 'P', name: string): Buffer {
  return new MessageWriter(FrontendCode.Close).byte(target.charCodeAt(0)).cstring(name).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-EXECUTE */
export function buildExecute(portal: string, maxRows = 0): Buffer {
  return new MessageWriter(FrontendCode.Execute).cstring(portal).int32(maxRows).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-SYNC */
export function buildSync(): Buffer {
  return new MessageWriter(FrontendCode.Sync, 0).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-FLUSH */
export function buildFlush(): Buffer {
  return new MessageWriter(FrontendCode.Flush, 0).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-TERMINATE */
export function buildTerminate(): Buffer {
  return new MessageWriter(FrontendCode.Terminate, 0).finish();
}
