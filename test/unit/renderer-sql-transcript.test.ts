// The psql-like transcript for SQL replay (renderer/lib/sql-transcript.ts) from events as the
// PostgreSQL proxy records them: aligned tables, row counts, errors, masked cells kept marked.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { AuditEvent, MaskSpan } from '../../shared/events';
import { buildTimeline } from '../../renderer/lib/replay';
import { buildTranscript, maskCells, MASK_SGR, rowsOf, toAnsi, type TranscriptLine } from '../../renderer/lib/sql-transcript';
import { rich } from '../../renderer/lib/rich';

const T0 = 1_700_000_000_000;
let seq = 0;
function ev(kind: AuditEvent['kind'], time: number, payload: unknown, spans: MaskSpan[] = []): AuditEvent {
  return { seq: ++seq, time: T0 + time, kind, session: 's', actor: 'key:a', connection: 'warehouse', payload, spans, payloadHash: '', prevHash: '', hash: '' };
}

describe('SQL transcript', () => {
  const events = [
    ev('session.start', 0, { protocol: 'postgres', actorName: 'analyst' }),
    ev('pg.statement', 10, { n: 1, protocol: 'simple', sql: 'SELECT id, email FROM customers', classes: ['select'] }),
    ev('pg.result', 20, { n: 1, rows: 3, columns: ['id', 'email'], sample: [['1', '[EMAIL]'], ['10', 'x@y'], ['7', null]], sampleTruncated: false }, [{ type: 'EMAIL', start: 0, end: 7, rule: 'pii', path: '/sample/0/1' }]),
    ev('pg.statement', 30, { n: 2, sql: 'DELETE FROM customers', classes: ['delete', 'delete_without_where'], refused: { code: '42501', message: 'denied by dba' } }),
    ev('pg.statement', 40, { n: 3, sql: 'select * from nope' }),
    ev('pg.error', 50, { n: 3, code: '42P01', severity: 'ERROR', message: 'relation "nope" does not exist' }),
    ev('pg.statement', 60, { n: 4, sql: 'UPDATE t SET a = 1 WHERE id = $1', params: ['42'] }),
    ev('pg.result', 70, { n: 4, rows: 1, command: 'UPDATE 1' }),
  ];
  const entries = buildTranscript(events, buildTimeline(events), 'warehouse');
  const text = entries.flatMap((e) => e.lines.map((l) => l.text.text));

  it('prints statements at a prompt, aligned tables and row counts', () => {
    assert.deepEqual(text.slice(0, 8), [
      '-- connected as analyst to warehouse',
      'warehouse=> SELECT id, email FROM customers',
      ' id |  email  ',
      '----+---------',
      '  1 | [EMAIL]',
      ' 10 | x@y',
      '  7 | ',
      '(3 rows)',
    ]);
  });

  it('keeps the mask on the cell it belongs to', () => {
    const line = entries[2]!.lines[2]!;
    assert.equal(line.text.text.slice(line.text.marks[0]!.start, line.text.marks[0]!.end), '[EMAIL]');
    assert.equal(line.text.marks[0]!.type, 'EMAIL');
  });

  it('shows refusals, errors, parameters and command tags', () => {
    assert.ok(text.includes('ERROR:  denied by dba'));
    assert.ok(text.includes('ERROR:  relation "nope" does not exist'));
    assert.ok(text.includes('-- SQLSTATE 42P01'));
    assert.ok(text.includes("-- parameters: $1 = '42'"));
    assert.ok(text.includes('UPDATE 1'));
  });
});

describe('SQL transcript of a held statement', () => {
  it('prints the hold, its decision and its outcome under the statement, each fact once', () => {
    seq = 0;
    const held = [
      ev('session.start', 0, { protocol: 'postgres', actorName: 'analyst' }),
      ev('hold.created', 5, { id: 'h1', rule: 'hold-deletes', approvers: ['dba'], min: 1, state: 'pending' }),
      ev('hold.vote', 900, { id: 'h1', decision: 'approve', byName: 'dana', reason: 'ticket 7' }),
      ev('hold.resolved', 900, { id: 'h1', state: 'approved' }),
      ev('pg.statement', 910, { n: 1, sql: 'DELETE FROM t WHERE id = 1', classes: ['delete'] }),
      ev('pg.result', 920, { n: 1, rows: 1, command: 'DELETE 1' }),
      ev('hold.created', 1000, { id: 'h2', rule: 'hold-deletes', approvers: ['dba'], min: 1, state: 'pending' }),
      ev('hold.resolved', 1100, { id: 'h2', state: 'cancelled', reason: 'the client disconnected' }),
      ev('session.end', 1100, {}),
    ];
    const lines = buildTranscript(held, buildTimeline(held), 'db').flatMap((e) => e.lines.map((l) => l.text.text));
    assert.deepEqual(lines, [
      '-- connected as analyst to warehouse',
      'db=> DELETE FROM t WHERE id = 1',
      '-- Held for approval by dba (1 needed) — rule hold-deletes',
      '-- Approved by dana: ticket 7',
      'DELETE 1',
      '',
      '-- Held for approval by dba (1 needed) — rule hold-deletes',
      '-- Hold cancelled: the client disconnected',
      '-- disconnected',
    ]);
  });
});

describe('terminal rendering', () => {
  const line: TranscriptLine = { style: 'plain', text: rich('ab[EMAIL]cd', [{ start: 2, end: 9, type: 'EMAIL', rule: 'r' }]) };

  it('colours masked spans with SGR', () => {
    assert.equal(toAnsi(line), `ab${MASK_SGR}[EMAIL]\x1b[0mcd\x1b[0m`);
  });

  it('finds the cells of a mask, split across wrapped rows', () => {
    assert.deepEqual(maskCells(line, 80), [{ row: 0, x: 2, width: 7, type: 'EMAIL', rule: 'r' }]);
    assert.deepEqual(maskCells(line, 5), [
      { row: 0, x: 2, width: 3, type: 'EMAIL', rule: 'r' },
      { row: 1, x: 0, width: 4, type: 'EMAIL', rule: 'r' },
    ]);
    assert.equal(rowsOf(line, 5), 3);
    assert.equal(rowsOf({ style: 'plain', text: rich('') }, 5), 1);
  });
});
