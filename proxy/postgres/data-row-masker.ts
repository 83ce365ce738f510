/**
 * Rewrites one DataRow at a time for the client
 * (https://www.postgresql.org/docs/current/protocol-message-formats.html#PROTOCOL-MESSAGE-FORMATS-DATAROW):
 * each value goes through the RowMasker; a value it leaves alone is copied as the raw bytes, a
 * masked one is re-encoded and every length field is recomputed. A masked value must stay valid for
 * its declared type, so only text-like types carry the masked text; for any other type (and for
 * binary values the gateway cannot render as text) a masked value becomes NULL.
 */
import type { MaskSpan } from '../../shared/events';
import type { ColumnRef, RowMasker } from '../masking/types';
import type { FieldDescription } from './backend-messages';
import { BackendCode } from './message-codes';

/** Types whose text and binary representations are both the UTF-8 text itself. */
const TEXT_LIKE = new Set([25 /* text */, 1043 /* varchar */, 1042 /* bpchar */, 19 /* name */, 705 /* unknown */, 18 /* char */]);
const JSON_OID = 114;
const JSONB_OID = 3802;

export interface ResultColumn {
  ref: ColumnRef;
  /** 0 text, 1 binary. */
  format: number;
}

/** Column refs and formats for a result, from its RowDescription (and Bind's result formats). */
export function resultColumns(fields: FieldDescription[], tableName: (oid: number) => string | undefined, resultFormats?: number[]): ResultColumn[] {
  return fields.map((f, i) => ({
    ref: { table: f.tableOid ? tableName(f.tableOid) || undefined : undefined, column: f.name, typeOid: f.typeOid },
    format: resultFormats ? (resultFormats.length === 0 ? 0 : resultFormats.length === 1 ? resultFormats[0]! : (resultFormats[i] ?? 0)) : f.format,
  }));
}

/** Renders a binary-format value as text for the types where that is cheap and exact; else undefined. */
export function binaryAsText(typeOid: number, v: Buffer): string | undefined {
  if (TEXT_LIKE.has(typeOid) || typeOid === JSON_OID) return v.toString('utf8');
  if (typeOid === JSONB_OID) return v.length > 0 && v[0] === 1 ? v.toString('utf8', 1) : undefined;
  switch (typeOid) {
    case 16:
      return v.length === 1 ? (v[0] ? 't' : 'f') : undefined;
    case 21:
      return v.length === 2 ? String(v.readInt16BE(0)) : undefined;
    case 23:
    case 26:
      return v.length === 4 ? String(typeOid === 26 ? v.readUInt32BE(0) : v.readInt32BE(0)) : undefined;
    case 20:
      return v.length === 8 ? v.readBigInt64BE(0).toString() : undefined;
    case 700:
      return v.length === 4 ? String(v.readFloatBE(0)) : undefined;
    case 701:
      return v.length === 8 ? String(v.readDoubleBE(0)) : undefined;
    case 2950:
      return v.length === 16 ? v.toString('hex').replace(/^(.{8})(.{4})(.{4})(.{4})/, '$1-$2-$3-$4-') : undefined;
    default:
      return undefined;
  }
}

/** Encodes a masked text for the wire, or null when the type cannot carry it (the value becomes NULL). */
function encodeMasked(col: ResultColumn, masked: string): Buffer | null {
  const t = col.ref.typeOid;
  if (TEXT_LIKE.has(t)) return Buffer.from(masked);
  if (t === JSON_OID || t === JSONB_OID) {
    let json = masked;
    try {
      JSON.parse(masked);
    } catch {
      json = JSON.stringify(masked);
    }
    return col.format === 1 && t === JSONB_OID ? Buffer.concat([Buffer.from([1]), Buffer.from(json)]) : Buffer.from(json);
  }
  return null;
}

export interface MaskedRow {
  /** The DataRow to send (the original message when nothing changed). */
  message: Buffer;
  changed: boolean;
  counts: Record<string, number>;
}

/**
 * Masks the DataRow `raw` (whole message, type byte included) for the client. `columns` may be
 * shorter than the row (no description known): such values are masked as free text if text-like
 * is unknowable, i.e. left to the RowMasker with an unnamed column.
 */
export function maskDataRow(raw: Buffer, columns: ResultColumn[], masker: RowMasker): MaskedRow {
  const n = raw.readInt16BE(5);
  let pos = 7;
  let replaced: (Buffer | null | undefined)[] | null = null;
  let counts: Record<string, number> = {};
  for (let i = 0; i < n; i++) {
    const len = raw.readInt32BE(pos);
    pos += 4;
    if (len === -1) continue;
    const start = pos;
    pos += len;
    const col = columns[i] ?? { ref: { column: `?column${i + 1}?`, typeOid: 0 }, format: 0 };
    const value = raw.subarray(start, pos);
    let out: Buffer | null | undefined;
    if (col.format === 0) {
      const r = masker.value(col.ref, value.toString('utf8'), 'client');
      if (r) {
        out = encodeMasked(col, r.text);
        counts = addCounts(counts, r.counts);
      }
    } else {
      const text = binaryAsText(col.ref.typeOid, value);
      // Unknown binary layout: ask with an empty value, which only a column rule can match.
      const r = masker.value(col.ref, text ?? '', 'client');
      if (r) {
        out = text !== undefined ? encodeMasked(col, r.text) : null;
        counts = addCounts(counts, r.counts);
      }
    }
    if (out !== undefined) {
      replaced ??= new Array<Buffer | null | undefined>(n);
      replaced[i] = out;
    }
  }
  if (!replaced) return { message: raw, changed: false, counts };
  return { message: rebuildDataRow(raw, n, replaced), changed: true, counts };
}

function rebuildDataRow(raw: Buffer, n: number, replaced: (Buffer | null | undefined)[]): Buffer {
  // First pass: the new length. Untouched columns keep their raw length.
  let total = 4 + 2;
  let pos = 7;
  for (let i = 0; i < n; i++) {
    const len = raw.readInt32BE(pos);
    pos += 4 + (len > 0 ? len : 0);
    const r = replaced[i];
    total += 4 + (r === undefined ? Math.max(len, 0) : r === null ? 0 : r.length);
  }
  const out = Buffer.allocUnsafe(1 + total);
  out[0] = BackendCode.DataRow;
  out.writeInt32BE(total, 1);
  out.writeInt16BE(n, 5);
  let src = 7;
  let dst = 7;
  for (let i = 0; i < n; i++) {
    const len = raw.readInt32BE(src);
    const body = len > 0 ? len : 0;
    const r = replaced[i];
    if (r === undefined) {
      raw.copy(out, dst, src, src + 4 + body);
      dst += 4 + body;
    } else if (r === null) {
      out.writeInt32BE(-1, dst);
      dst += 4;
    } else {
      out.writeInt32BE(r.length, dst);
      r.copy(out, dst + 4);
      dst += 4 + r.length;
    }
    src += 4 + body;
  }
  return out;
}

function addCounts(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  for (const [k, v] of Object.entries(b)) a[k] = (a[k] ?? 0) + v;
  return a;
}

/** One recorded row: values as text (binary values the gateway cannot render: `\x…` hex), masked for the log. */
export function rowForLog(raw: Buffer, columns: ResultColumn[], masker: RowMasker, rowIndex: number, spans: MaskSpan[], pathPrefix: string): (string | null)[] {
  const n = raw.readInt16BE(5);
  const values: (string | null)[] = new Array<string | null>(n);
  let pos = 7;
  for (let i = 0; i < n; i++) {
    const len = raw.readInt32BE(pos);
    pos += 4;
    if (len === -1) {
      values[i] = null;
      continue;
    }
    const v = raw.subarray(pos, pos + len);
    pos += len;
    const col = columns[i];
    let text = !col || col.format === 0 ? v.toString('utf8') : (binaryAsText(col.ref.typeOid, v) ?? `\\x${v.toString('hex')}`);
    if (masker.active) {
      const r = masker.value(col?.ref ?? { column: `?column${i + 1}?`, typeOid: 0 }, text, 'log');
      if (r) {
        text = r.text;
        for (const s of r.spans) spans.push({ ...s, path: `${pathPrefix}/${rowIndex}/${i}` });
      }
    }
    values[i] = text;
  }
  return values;
}

/** The masked text as the column's type can carry it, or null when the value must become NULL. */
function maskedTextFor(col: ResultColumn | undefined, masked: string): string | null {
  const t = col?.ref.typeOid ?? 25;
  if (TEXT_LIKE.has(t)) return masked;
  if (t === JSON_OID || t === JSONB_OID) {
    try {
      JSON.parse(masked);
      return masked;
    } catch {
      return JSON.stringify(masked);
    }
  }
  return null;
}

const TEXT_UNESCAPES: Record<string, string> = { b: '\b', f: '\f', n: '\n', r: '\r', t: '\t', v: '\v' };

function unescapeCopyText(v: string): string {
  if (!v.includes('\\')) return v;
  return v.replace(/\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)/g, (_m, e: string) => {
    if (e[0] === 'x') return String.fromCharCode(parseInt(e.slice(1), 16));
    if (/^[0-7]/.test(e)) return String.fromCharCode(parseInt(e, 8));
    return TEXT_UNESCAPES[e] ?? e;
  });
}

function escapeCopyText(v: string, delimiter: string): string {
  let out = v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/\t/g, '\\t');
  if (delimiter !== '\t') out = out.split(delimiter).join(`\\${delimiter}`);
  return out;
}

interface CsvField {
  value: string;
  quoted: boolean;
}

function parseCsvRow(line: string, delimiter: string, quote: string, escape: string): CsvField[] {
  const fields: CsvField[] = [];
  let i = 0;
  for (;;) {
    let value = '';
    let quoted = false;
    if (line[i] === quote) {
      quoted = true;
      i++;
      for (; i < line.length; i++) {
        const c = line[i]!;
        if (c === escape && line[i + 1] === quote) {
          value += quote;
          i++;
        } else if (c === quote) {
          i++;
          break;
        } else value += c;
      }
    }
    const next = line.indexOf(delimiter, i);
    const rest = next < 0 ? line.slice(i) : line.slice(i, next);
    value += rest;
    fields.push({ value, quoted });
    if (next < 0) return fields;
    i = next + delimiter.length;
  }
}

/**
 * Masks one `COPY … TO` row (text or CSV format, https://www.postgresql.org/docs/current/sql-copy.html)
 * column by column, as DataRow values are: untouched fields keep their bytes, a masked field is
 * re-encoded (escaped or quoted), and a type that cannot carry the masked text gets the NULL marker.
 */
export function maskCopyRow(
  row: string,
  shape: { format: 'text' | 'csv' | 'binary'; delimiter: string; null: string; quote: string; escape: string },
  columns: ResultColumn[],
  masker: RowMasker,
  scope: 'client' | 'log' = 'client',
): { text: string; changed: boolean; counts: Record<string, number>; spans: MaskSpan[] } {
  const eol = row.endsWith('\r\n') ? '\r\n' : row.endsWith('\n') ? '\n' : '';
  const line = row.slice(0, row.length - eol.length);
  let counts: Record<string, number> = {};
  let changed = false;
  const unnamed = (i: number): ResultColumn => ({ ref: { column: `?column${i + 1}?`, typeOid: 25 }, format: 0 });
  if (shape.format === 'csv') {
    const fields = parseCsvRow(line, shape.delimiter, shape.quote, shape.escape);
    const out = fields.map((f, i) => {
      const raw = f.quoted ? `${shape.quote}${f.value.split(shape.quote).join(shape.escape + shape.quote)}${shape.quote}` : f.value;
      if (!f.quoted && f.value === shape.null) return raw;
      const col = columns.length === fields.length ? columns[i] : unnamed(i);
      const r = masker.value(col!.ref, f.value, scope);
      if (!r) return raw;
      changed = true;
      counts = addCounts(counts, r.counts);
      const text = maskedTextFor(col, r.text);
      return text === null ? shape.null : `${shape.quote}${text.split(shape.quote).join(shape.escape + shape.quote)}${shape.quote}`;
    });
    return { text: changed ? out.join(shape.delimiter) + eol : row, changed, counts, spans: [] };
  }
  const fields = splitCopyText(line, shape.delimiter);
  const out = fields.map((f, i) => {
    if (f === shape.null) return f;
    const col = columns.length === fields.length ? columns[i] : unnamed(i);
    const r = masker.value(col!.ref, unescapeCopyText(f), scope);
    if (!r) return f;
    changed = true;
    counts = addCounts(counts, r.counts);
    const text = maskedTextFor(col, r.text);
    return text === null ? shape.null : escapeCopyText(text, shape.delimiter);
  });
  return { text: changed ? out.join(shape.delimiter) + eol : row, changed, counts, spans: [] };
}

/** Splits a text-format COPY row at delimiters that are not backslash-escaped. */
function splitCopyText(line: string, delimiter: string): string[] {
  if (!line.includes('\\')) return line.split(delimiter);
  const out: string[] = [];
  let start = 0;
  for (let i = 0; i < line.length; i++) {
    if (line[i] === '\\') i++;
    else if (line.startsWith(delimiter, i)) {
      out.push(line.slice(start, i));
      start = i + delimiter.length;
      i += delimiter.length - 1;
    }
  }
  out.push(line.slice(start));
  return out;
}
