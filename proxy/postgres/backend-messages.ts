/**
 * Backend (server → client) messages: parsers for what the gateway reads from the upstream server,
 * builders for what it sends to clients itself. Formats:
 * https://www.postgresql.org/docs/current/protocol-message-formats.html
 */
import { BufferReader } from './buffer-reader';
import { MessageWriter } from './buffer-writer';
import { ProtocolError } from './message-buffer';
import { AuthCode, BackendCode } from './message-codes';

export type AuthenticationMessage =
  | { type: 'ok' }
  | { type: 'cleartext' }
  | { type: 'md5'; salt: Buffer }
  | { type: 'sasl'; mechanisms: string[] }
  | { type: 'sasl-continue'; data: Buffer }
  | { type: 'sasl-final'; data: Buffer }
  | { type: 'other'; code: number };

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONOK */
export function parseAuthentication(body: Buffer): AuthenticationMessage {
  const r = new BufferReader(body, 'Authentication');
  const code = r.int32();
  switch (code) {
    case AuthCode.Ok:
      return { type: 'ok' };
    case AuthCode.CleartextPassword:
      return { type: 'cleartext' };
    case AuthCode.MD5Password:
      return { type: 'md5', salt: Buffer.from(r.bytes(4)) };
    case AuthCode.SASL: {
      const mechanisms: string[] = [];
      while (r.remaining > 0) {
        const m = r.cstring();
        if (m === '') break;
        mechanisms.push(m);
      }
      return { type: 'sasl', mechanisms };
    }
    case AuthCode.SASLContinue:
      return { type: 'sasl-continue', data: Buffer.from(r.rest()) };
    case AuthCode.SASLFinal:
      return { type: 'sasl-final', data: Buffer.from(r.rest()) };
    default:
      return { type: 'other', code };
  }
}

/** Error and notice fields by their one-letter code (S, V, C, M, D, H, P, W, …). */
export type ErrorFields = Map<string, string>;

/**
 * https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-ERRORRESPONSE
 * https://www.postgresql.org/docs/current/protocol-error-fields.html
 */
export function parseErrorFields(body: Buffer): ErrorFields {
  const r = new BufferReader(body, 'ErrorResponse');
  const fields: ErrorFields = new Map();
  while (r.remaining > 0) {
    const t = r.byte();
    if (t === 0) break;
    fields.set(String.fromCharCode(t), r.cstring());
  }
  return fields;
}

export interface FieldDescription {
  name: string;
  tableOid: number;
  column: number;
  typeOid: number;
  typeSize: number;
  typeModifier: number;
  /** 0 text, 1 binary; in a Describe-statement reply always 0 (formats are chosen at Bind). */
  format: number;
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-ROWDESCRIPTION */
export function parseRowDescription(body: Buffer): FieldDescription[] {
  const r = new BufferReader(body, 'RowDescription');
  const n = r.int16();
  const fields: FieldDescription[] = [];
  for (let i = 0; i < n; i++) {
    fields.push({ name: r.cstring(), tableOid: r.uint32(), column: r.int16(), typeOid: r.uint32(), typeSize: r.int16(), typeModifier: r.int32(), format: r.int16() });
  }
  return fields;
}

/**
 * Walks a DataRow without copying: calls `each(index, start, end)` with byte offsets into `body`
 * (start = -1 for NULL). https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-DATAROW
 */
export function forEachDataRowValue(body: Buffer, each: (index: number, start: number, end: number) => void): number {
  if (body.length < 2) throw new ProtocolError('malformed DataRow message: no column count');
  const n = body.readInt16BE(0);
  let pos = 2;
  for (let i = 0; i < n; i++) {
    if (pos + 4 > body.length) throw new ProtocolError('malformed DataRow message: a field runs past the end');
    const len = body.readInt32BE(pos);
    pos += 4;
    if (len === -1) each(i, -1, -1);
    else {
      if (len < 0 || pos + len > body.length) throw new ProtocolError('malformed DataRow message: a field runs past the end');
      each(i, pos, pos + len);
      pos += len;
    }
  }
  return n;
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-COMMANDCOMPLETE */
export function parseCommandComplete(body: Buffer): string {
  return new BufferReader(body, 'CommandComplete').cstring();
}

/** Rows affected or returned, from a command tag such as `SELECT 5`, `INSERT 0 3`, `UPDATE 2`; null if none. */
export function rowCountOfTag(tag: string): number | null {
  const m = /\s(\d+)$/.exec(tag);
  return m ? Number(m[1]) : null;
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-BACKENDKEYDATA */
export function parseBackendKeyData(body: Buffer): { pid: number; secret: Buffer } {
  const r = new BufferReader(body, 'BackendKeyData');
  return { pid: r.int32(), secret: Buffer.from(r.rest()) };
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PARAMETERSTATUS */
export function parseParameterStatus(body: Buffer): { name: string; value: string } {
  const r = new BufferReader(body, 'ParameterStatus');
  return { name: r.cstring(), value: r.cstring() };
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-COPYINRESPONSE */
export function parseCopyResponse(body: Buffer): { format: number; columnFormats: number[] } {
  const r = new BufferReader(body, 'CopyResponse');
  const format = r.byte();
  const n = r.int16();
  const columnFormats: number[] = [];
  for (let i = 0; i < n; i++) columnFormats.push(r.int16());
  return { format, columnFormats };
}

// ---- builders (gateway → client) ----

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONOK */
export function buildAuthenticationOk(): Buffer {
  return new MessageWriter(BackendCode.Authentication, 4).int32(AuthCode.Ok).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONCLEARTEXTPASSWORD */
export function buildAuthenticationCleartextPassword(): Buffer {
  return new MessageWriter(BackendCode.Authentication, 4).int32(AuthCode.CleartextPassword).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONMD5PASSWORD */
export function buildAuthenticationMD5Password(salt: Buffer): Buffer {
  return new MessageWriter(BackendCode.Authentication, 8).int32(AuthCode.MD5Password).bytes(salt).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONSASL */
export function buildAuthenticationSASL(mechanisms: string[]): Buffer {
  const w = new MessageWriter(BackendCode.Authentication).int32(AuthCode.SASL);
  for (const m of mechanisms) w.cstring(m);
  return w.byte(0).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONSASLCONTINUE */
export function buildAuthenticationSASLContinue(data: Buffer): Buffer {
  return new MessageWriter(BackendCode.Authentication).int32(AuthCode.SASLContinue).bytes(data).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-AUTHENTICATIONSASLFINAL */
export function buildAuthenticationSASLFinal(data: Buffer): Buffer {
  return new MessageWriter(BackendCode.Authentication).int32(AuthCode.SASLFinal).bytes(data).finish();
}

export interface ErrorInit {
  severity: 'ERROR' | 'FATAL' | 'PANIC' | 'WARNING' | 'NOTICE' | 'DEBUG' | 'INFO' | 'LOG';
  code: string;
  message: string;
  detail?: string;
  hint?: string;
}

function errorLike(code: number, e: ErrorInit): Buffer {
  const w = new MessageWriter(code, 64 + e.message.length);
  w.byte(0x53).cstring(e.severity); // S: localized severity
  w.byte(0x56).cstring(e.severity); // V: non-localized severity
  w.byte(0x43).cstring(e.code); // C: SQLSTATE
  w.byte(0x4d).cstring(e.message); // M
  if (e.detail) w.byte(0x44).cstring(e.detail); // D
  if (e.hint) w.byte(0x48).cstring(e.hint); // H
  return w.byte(0).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-ERRORRESPONSE */
export function buildErrorResponse(e: ErrorInit): Buffer {
  return errorLike(BackendCode.ErrorResponse, e);
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-NOTICERESPONSE */
export function buildNoticeResponse(e: ErrorInit): Buffer {
  return errorLike(BackendCode.NoticeResponse, e);
}

/** Rebuilds an ErrorResponse or NoticeResponse from (possibly rewritten) fields. */
export function buildErrorFields(code: number, fields: ErrorFields): Buffer {
  const w = new MessageWriter(code);
  for (const [k, v] of fields) w.byte(k.charCodeAt(0)).cstring(v);
  return w.byte(0).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-PARAMETERSTATUS */
export function buildParameterStatus(name: string, value: string): Buffer {
  return new MessageWriter(BackendCode.ParameterStatus).cstring(name).cstring(value).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-BACKENDKEYDATA */
export function buildBackendKeyData(pid: number, secret: Buffer): Buffer {
  return new MessageWriter(BackendCode.BackendKeyData, 4 + secret.length).int32(pid).bytes(secret).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-READYFORQUERY */
export function buildReadyForQuery(status: 'I' | 'T' | 'E'): Buffer {
  return new MessageWriter(BackendCode.ReadyForQuery, 1).byte(status.charCodeAt(0)).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-NEGOTIATEPROTOCOLVERSION */
export function buildNegotiateProtocolVersion(newestMinor: number, unrecognized: string[]): Buffer {
  const w = new MessageWriter(BackendCode.NegotiateProtocolVersion).int32(newestMinor).int32(unrecognized.length);
  for (const o of unrecognized) w.cstring(o);
  return w.finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-ROWDESCRIPTION */
export function buildRowDescription(fields: FieldDescription[]): Buffer {
  const w = new MessageWriter(BackendCode.RowDescription).int16(fields.length);
  for (const f of fields) w.cstring(f.name).int32(f.tableOid | 0).int16(f.column).int32(f.typeOid | 0).int16(f.typeSize).int32(f.typeModifier).int16(f.format);
  return w.finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-DATAROW */
export function buildDataRow(values: (Buffer | string | null)[]): Buffer {
  const w = new MessageWriter(BackendCode.DataRow).int16(values.length);
  for (const v of values) {
    if (v === null) w.int32(-1);
    else {
      const b = typeof v === 'string' ? Buffer.from(v) : v;
      w.int32(b.length).bytes(b);
    }
  }
  return w.finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-COMMANDCOMPLETE */
export function buildCommandComplete(tag: string): Buffer {
  return new MessageWriter(BackendCode.CommandComplete).cstring(tag).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-NOTIFICATIONRESPONSE */
export function buildNotificationResponse(pid: number, channel: string, payload: string): Buffer {
  return new MessageWriter(BackendCode.NotificationResponse).int32(pid).cstring(channel).cstring(payload).finish();
}

/** https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-COPYDATA */
export function buildCopyData(data: Buffer): Buffer {
  return new MessageWriter(BackendCode.CopyData, data.length).bytes(data).finish();
}
