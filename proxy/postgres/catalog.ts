/**
 * Table names for RowDescription table OIDs, so masking rules such as `users.ssn` can match. The
 * names come from the upstream's catalog over a side connection the gateway opens with the same
 * credential (one per listener, opened on first need), and are cached.
 */
import { forEachDataRowValue, parseErrorFields } from './backend-messages';
import { buildBind, buildExecute, buildParse, buildSync } from './frontend-messages';
import type { RawMessage } from './message-buffer';
import { BackendCode } from './message-codes';
import { connectUpstream, terminateUpstream, type UpstreamSession, type UpstreamTarget } from './upstream';

export class CatalogError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CatalogError';
  }
}

/** A tiny sequential query runner on one upstream session (extended protocol, text results). */
class SideConnection {
  private session: UpstreamSession | null = null;
  private opening: Promise<UpstreamSession> | null = null;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly target: UpstreamTarget,
    private readonly database: string | undefined,
  ) {}

  private async open(): Promise<UpstreamSession> {
    if (this.session && !this.session.socket.destroyed) return this.session;
    this.opening ??= connectUpstream(this.target, { params: { application_name: 'custody-catalog' }, database: this.database }).then(
      (s) => {
        this.session = s;
        this.opening = null;
        s.socket.on('error', () => s.socket.destroy());
        return s;
      },
      (err: unknown) => {
        this.opening = null;
        throw err;
      },
    );
    return this.opening;
  }

  /** Runs one statement with text parameters; resolves with the rows as text. */
  query(sql: string, params: (string | null)[]): Promise<(string | null)[][]> {
    const run = this.chain.then(async () => {
      const s = await this.open();
      return new Promise<(string | null)[][]>((resolve, reject) => {
        const rows: (string | null)[][] = [];
        let error: Error | null = null;
        const handle = (m: RawMessage) => {
          if (m.code === BackendCode.DataRow) {
            const row: (string | null)[] = [];
            forEachDataRowValue(m.body, (_i, a, b) => row.push(a < 0 ? null : m.body.toString('utf8', a, b)));
            rows.push(row);
          } else if (m.code === BackendCode.ErrorResponse) error = new CatalogError(parseErrorFields(m.body).get('M') ?? 'catalog query failed');
          else if (m.code === BackendCode.ReadyForQuery) {
            done();
            if (error) reject(error);
            else resolve(rows);
          }
        };
        const onData = (chunk: Buffer) => {
          s.buffer.push(chunk);
          try {
            for (let m = s.buffer.next(); m; m = s.buffer.next()) handle(m);
          } catch (err) {
            done();
            s.socket.destroy();
            reject(err as Error);
          }
        };
        const onClose = () => {
          done();
          reject(new CatalogError('the catalog connection closed'));
        };
        const done = () => {
          s.socket.off('data', onData);
          s.socket.off('close', onClose);
        };
        s.socket.on('data', onData);
        s.socket.on('close', onClose);
        s.socket.write(Buffer.concat([buildParse('', sql), buildBind('', '', params), buildExecute(''), buildSync()]));
      });
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  close(): void {
    if (this.session) terminateUpstream(this.session.socket);
    this.session = null;
  }
}

/** A view's definition is looked up again after this long, so a replaced view is followed. */
const VIEW_TTL_MS = 30_000;

export class TableNameResolver {
  private readonly names = new Map<number, string>();
  /** Views and materialized views: their definition (`pg_get_viewdef`) and when it was read, for lineage. */
  private readonly views = new Map<number, { definition: string; at: number }>();
  /** Column names by attribute number, per table OID: what a renamed result column really is. */
  private readonly attributes = new Map<number, Map<number, string>>();
  private readonly side: SideConnection;

  constructor(target: UpstreamTarget, database?: string) {
    this.side = new SideConnection(target, database);
  }

  name(oid: number): string | undefined {
    return this.names.get(oid);
  }

  /**
   * The name of column `attnum` of relation `oid`, as the catalog has it: RowDescription reports a
   * result column's origin (table OID, attribute number) even when the query renamed it
   * (`SELECT ssn AS x`, a cursor's FETCH), so a column rule can match what the value really is.
   */
  columnName(oid: number, attnum: number): string | undefined {
    return this.attributes.get(oid)?.get(attnum);
  }

  /** The definition of view `oid` (a SELECT), when the OID is a view or materialized view. */
  viewDefinition(oid: number): string | undefined {
    return this.views.get(oid)?.definition;
  }

  /** OIDs in `oids` not yet known (or views whose definition is due to be read again). */
  missing(oids: number[]): number[] {
    const now = Date.now();
    return [...new Set(oids.filter((o) => o !== 0 && (!this.names.has(o) || now - (this.views.get(o)?.at ?? now) > VIEW_TTL_MS)))];
  }

  /** Looks up and caches the names of `oids`; rejects with CatalogError when the catalog cannot be read. */
  async resolve(oids: number[]): Promise<void> {
    const want = this.missing(oids);
    if (want.length === 0) return;
    const rows = await this.side.query(
      "SELECT c.oid::text, c.relname::text, CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END FROM pg_catalog.pg_class c WHERE c.oid = ANY($1::oid[])",
      [`{${want.join(',')}}`],
    );
    const now = Date.now();
    for (const [oid, name, definition] of rows) {
      if (!oid || !name) continue;
      this.names.set(Number(oid), name);
      if (definition) this.views.set(Number(oid), { definition, at: now });
      else this.views.delete(Number(oid));
    }
    const attrs = await this.side.query('SELECT a.attrelid::text, a.attnum::text, a.attname::text FROM pg_catalog.pg_attribute a WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped', [`{${want.join(',')}}`]);
    for (const o of want) this.attributes.set(o, new Map());
    for (const [rel, num, name] of attrs) if (rel && num && name) this.attributes.get(Number(rel))?.set(Number(num), name);
    // An OID the catalog does not know (dropped meanwhile) resolves to no name rather than asking again.
    for (const o of want) if (!this.names.has(o)) this.names.set(o, '');
  }

  close(): void {
    this.side.close();
  }
}
