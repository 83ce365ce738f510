/**
 * Masking of PostgreSQL result values (DataRow fields in text format). Column rules (`users.ssn`,
 * `*.email`, `ssn`) mask the whole value; detectors run over every value whose type can hold text,
 * with the column name as context (so a bare 9-digit value in a column named `ssn` is recognised).
 */
import type { MaskSpan } from '../../shared/events';
import { type ColumnPattern, type CompiledRule, type MaskPlan, replacement, wholeValueDetector } from './rules';
import type { ColumnRef, RowMasker } from './types';

/** Type OIDs whose text form cannot carry a detector's value (pg_type.h). */
const NO_TEXT_OIDS = new Set([16 /* bool */, 17 /* bytea */, 21 /* int2 */, 26 /* oid */, 700, 701 /* float */, 1083, 1114, 1184, 1186, 1266 /* time types */, 2950 /* uuid */]);

function columnMatches(p: ColumnPattern, col: ColumnRef): boolean {
  if (p.column !== '*' && p.column !== col.column.toLowerCase()) return false;
  // An unknown table (computed column, function result) matches: masking errs on the safe side.
  return p.table === undefined || col.table === undefined || p.table === col.table.toLowerCase();
}

type Result = { text: string; spans: MaskSpan[]; counts: Record<string, number> };

export class DataRowMasker implements RowMasker {
  readonly active: boolean;
  private readonly columnRules: CompiledRule[];

  constructor(
    rules: CompiledRule[],
    private readonly clientPlan: MaskPlan,
    private readonly upstreamPlan: MaskPlan,
  ) {
    this.active = rules.length > 0;
    this.columnRules = rules.filter((r) => r.columns?.length);
  }

  value(col: ColumnRef, text: string, scope: 'client' | 'log'): Result | null {
    // The column itself, or (lineage) a masked column it is computed from: `reverse(ssn)` is masked as `ssn`.
    let named = col.column;
    const whole = this.columnRules.find((r) => {
      if (scope !== 'log' && !r.scope.has(scope)) return false;
      if (r.columns!.some((p) => columnMatches(p, col))) return true;
      const src = col.sources?.find((s) => r.columns!.some((p) => columnMatches(p, { ...s, typeOid: col.typeOid }) || (s.column === '*' && columnMatches(p, { ...s, column: p.column, typeOid: col.typeOid }))));
      if (src) named = src.column;
      return src !== undefined;
    });
    if (whole) {
      const type = whole.detectors.length === 1 ? whole.detectors[0]!.type : named.replace(/[^A-Za-z0-9]+/g, '_').toUpperCase();
      const rep = replacement(whole.rule, wholeValueDetector(type), text, this.clientPlan.env.hmacKey);
      return { text: rep, spans: [{ type, start: 0, end: rep.length, rule: whole.id }], counts: { [type]: 1 } };
    }
    if (NO_TEXT_OIDS.has(col.typeOid) || !text) return null;
    const plan = this.clientPlan;
    const prefix = `${col.column}: `;
    const matches = plan.scan(prefix + text, plan.deadline(), prefix.length).map((m) => ({ ...m, start: m.start - prefix.length, end: m.end - prefix.length }));
    if (!matches.length) return null;
    const r = plan.render(text, matches, scope, undefined);
    return r.changed ? { text: r.text, spans: r.spans, counts: r.counts } : null;
  }

  maskedColumns(): readonly { table?: string; column: string }[] {
    return this.columnRules.flatMap((r) => r.columns!);
  }

  detectorHits(sql: string, params: readonly (string | null)[] = []): string[] {
    const plan = this.upstreamPlan;
    if (!plan.watching) return [];
    const hits = new Set<string>();
    const deadline = plan.deadline();
    plan.scan(sql, deadline, 0, hits);
    for (const p of params) if (p) plan.scan(p, deadline, 0, hits);
    return [...hits];
  }

  text(text: string, scope: 'client' | 'log' | 'upstream'): Result {
    const plan = scope === 'upstream' ? this.upstreamPlan : this.clientPlan;
    const matches = plan.scan(text, plan.deadline());
    const r = plan.render(text, matches, scope, undefined);
    return { text: r.text, spans: r.spans, counts: r.counts };
  }
}
