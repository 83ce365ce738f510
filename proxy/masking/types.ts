/**
 * The masking engine's contract with the proxies. The HTTP proxy and the PostgreSQL proxy call only
 * these; the implementation lives beside this file. Every method throws MaskingError when it cannot
 * mask (detector error, timeout, unparseable body under a rule that needs structure): the caller
 * refuses the request and says why — it never forwards unmasked data.
 */
import type { Connection } from '../../shared/config';
import type { MaskSpan } from '../../shared/events';

export class MaskingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MaskingError';
  }
}

/** One Server-Sent Event as parsed from the wire (data lines joined with "\n"). */
export interface SseEvent {
  event?: string;
  data: string;
  id?: string;
  retry?: number;
}

export interface MaskedBody {
  /** Bytes to send on (to the upstream for requests, to the client for responses). */
  forward: Buffer;
  /** What to record: parsed JSON when the body is JSON, else the text; masked for every rule. */
  log: unknown;
  /** Spans inside `log` (path = JSON pointer of the string). */
  spans: MaskSpan[];
  /** Masked values by detector type. */
  counts: Record<string, number>;
  /** Detector ids that found something (policy `match.detectors`), whether or not a rule masked it. */
  detectorHits: string[];
}

export interface StreamChunkResult {
  /** Events to write to the client now (masked for `client` rules); may be fewer than pushed (holdback). */
  forward: SseEvent[];
  /** The same events as they are recorded (masked for every rule). */
  log: SseEvent[];
  spans: MaskSpan[];
  counts: Record<string, number>;
}

/** Masks one streamed response event by event, holding back at most the longest possible match. */
export interface StreamMasker {
  push(event: SseEvent): StreamChunkResult;
  /** The stream ended: flush what was held back. */
  end(): StreamChunkResult;
}

/** A parsed request value, masked: what to forward (the gateway's own serialisation) and what to record. */
export interface MaskedValue {
  /** JSON text of the masked value (for text, the masked text itself). */
  forward: string;
  /** The value as recorded: masked for every rule. */
  log: unknown;
  spans: MaskSpan[];
  counts: Record<string, number>;
  detectorHits: string[];
}

/** Masking for one connection. */
export interface ConnectionMasker {
  /**
   * A request value the gateway parsed itself (proxy/http/request-body.ts): every string, number and
   * key that can reach the upstream is scanned; only the API's structural fields are left as they
   * are (and refused when a masked detector hits one). `everything`: no structural fields (query
   * strings, headers, form fields). `bytes` sizes the time budget. Throws MaskingError.
   */
  requestValue(value: unknown, opts: { bytes: number; extraRules?: string[]; everything?: boolean }): MaskedValue;
  /** Request text (a text body): scanned and masked as text. Throws MaskingError. */
  requestText(text: string, extraRules?: string[]): MaskedValue;
  /** A request body on its way upstream. `extraRules`: rule ids a policy `mask` action added. */
  request(path: string, contentType: string | undefined, body: Buffer, extraRules?: string[]): MaskedBody;
  /** A complete (non-streamed) response body on its way to the client. */
  response(path: string, contentType: string | undefined, body: Buffer, extraRules?: string[]): MaskedBody;
  /** A streamed (text/event-stream) response. */
  stream(path: string, extraRules?: string[]): StreamMasker;
  /**
   * A plain text stream toward the client (terminal output, command output): each `push` returns
   * what can be written now, holding back at most the trailing characters that could still become
   * part of a match; `end` flushes the rest. Values are looked for in the text as printed, escape
   * sequences aside, and the sequences a value held are kept. `screen`: the text goes to a terminal
   * (a pty), so each masked value is replaced by a placeholder as wide as it on screen
   * (terminal-width.ts). Throws MaskingError.
   */
  textStream(extraRules?: string[], opts?: { screen?: boolean }): TextStreamMasker;
}

/** One masked text piece of a plain text stream: `fwd` for the client, `log` (with `spans`) for the record. */
export interface TextStreamPiece {
  fwd: string;
  log: string;
  spans: MaskSpan[];
  counts: Record<string, number>;
}

export interface TextStreamMasker {
  push(text: string): TextStreamPiece;
  end(): TextStreamPiece;
  /** Characters held back now. */
  readonly held: number;
}

/** Per PostgreSQL DataRow value; see proxy/postgres. */
export interface ColumnRef {
  /** Table name when known (from RowDescription's table OID), else undefined. */
  table?: string;
  column: string;
  /** PostgreSQL type OID. */
  typeOid: number;
  /**
   * The base columns the value is computed from (proxy/postgres/lineage.ts), when the statement was
   * analysed: a column rule that matches any of them masks the value whole.
   */
  sources?: readonly { table?: string; column: string }[];
}

export interface RowMasker {
  /** true when some rule could touch this result; false lets the proxy pass rows through untouched. */
  readonly active: boolean;
  /** Masks one text value; returns null when unchanged (the proxy then copies the raw bytes). */
  value(col: ColumnRef, text: string, scope: 'client' | 'log'): { text: string; spans: MaskSpan[]; counts: Record<string, number> } | null;
  /** Masks free text (NoticeResponse / ErrorResponse details, statements for the log). */
  text(text: string, scope: 'client' | 'log' | 'upstream'): { text: string; spans: MaskSpan[]; counts: Record<string, number> };
  /**
   * The detectors that find something in a statement or its parameters (text form), for policies
   * that match on detectors; empty without looking when no policy does. Throws MaskingError when
   * the scan cannot finish (the statement is then refused).
   */
  detectorHits(sql: string, params?: readonly (string | null)[]): string[];
  /** The columns column rules mask (`users.ssn` → {table, column}), for lineage; none when absent. */
  maskedColumns?(): readonly { table?: string; column: string }[];
}

export interface MaskingEngine {
  /**
   * null when no rule applies to the connection (and no policy watches a detector): the proxy
   * skips masking work entirely. `extraRules` (a policy decision's `mask`) count as applying, so
   * pass them when a policy asks for masking on a connection no configured rule covers.
   */
  forConnection(connection: Connection, extraRules?: readonly string[]): ConnectionMasker | null;
  rows(connection: Connection, extraRules?: string[]): RowMasker;
  /** Replaces the rules (control plane `PUT /api/masking`); validated by the caller. */
  reload(config: { detectors: unknown[]; masking: unknown[] }): void;
  /** Detector ids the policies match on (`match.detectors`): scanned for `detectorHits` even where no rule masks them. */
  watchDetectors?(ids: string[]): void;
  /** Changes whenever the rules do: maskers made under one generation stay current within it. */
  generation?(): number;
}
