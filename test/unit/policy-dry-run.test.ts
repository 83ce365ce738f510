// Dry-run replay over a store with recorded HTTP and PostgreSQL traffic: how a request's identity,
// text, detector hits and SQL classes are rebuilt from the log, and how outcomes are compared.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MaskingRule as MaskingRuleSchema, type PolicyRule, PolicyRule as PolicyRuleSchema } from '../../shared/config';
import { AuditStore } from '../../proxy/audit/store';
import { ApiKeyStore } from '../../proxy/identity/api-keys';
import { candidateMasking, dryRun } from '../../proxy/policy/dry-run';
import { tempDir } from '../support/tmp';

const rule = (r: Record<string, unknown>): PolicyRule => PolicyRuleSchema.parse(r);
const connections = [
  { name: 'openai', kind: 'openai' as const },
  { name: 'warehouse', kind: 'postgres' as const },
];

function recordedStore(unknownDenied = false): AuditStore {
  const store = AuditStore.open(tempDir());
  const t0 = Date.parse('2025-03-01T10:00:00Z');
  // An HTTP session: groups in session.start, a masked prompt with spans, decided by a mask rule.
  store.appendMany([
    { kind: 'session.start', session: 's-http', actor: 'key:dev', connection: 'openai', time: t0, payload: { protocol: 'http', actorName: 'dev', via: 'api-key', groups: ['engineering'] } },
    {
      kind: 'http.request',
      session: 's-http',
      actor: 'key:dev',
      connection: 'openai',
      time: t0 + 1,
      payload: { method: 'POST', path: '/chat/completions', actorName: 'dev', model: 'gpt-4o', body: { model: 'gpt-4o', messages: [{ role: 'user', content: 'card [CREDIT_CARD] please' }] }, bodyEncoding: 'json' },
      spans: [{ type: 'CREDIT_CARD', start: 5, end: 18, rule: 'pii', path: '/messages/0/content' }],
    },
    { kind: 'policy.decision', session: 's-http', actor: 'key:dev', connection: 'openai', time: t0 + 2, payload: { protocol: 'http', action: 'mask', rule: 'mask-cards', mask: ['pii'] } },
    {
      kind: 'http.request',
      session: 's-http',
      actor: 'key:dev',
      connection: 'openai',
      time: t0 + 3,
      payload: { method: 'POST', path: '/chat/completions', actorName: 'dev', body: { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], tools: [{ type: 'function', function: { name: 'f' } }] }, bodyEncoding: 'json' },
    },
  ]);
  // A PostgreSQL session as the PostgreSQL proxy records it: identity nested, decision inside the statement.
  store.appendMany([
    { kind: 'session.start', session: 's-pg2', actor: 'key:bo', connection: 'warehouse', time: t0 + 20, payload: { protocol: 'postgres', actorName: 'bo', identity: { subject: 'key:bo', name: 'bo', groups: ['analyst'], via: 'api-key' } } },
    { kind: 'pg.statement', session: 's-pg2', actor: 'key:bo', connection: 'warehouse', time: t0 + 21, payload: { sql: 'TRUNCATE t', classes: ['truncate'], tables: ['t'], decision: { action: 'hold', rule: 'hold-truncate', reason: null } } },
    { kind: 'policy.decision', session: 's-pg2', actor: 'key:bo', connection: 'warehouse', time: t0 + 22, payload: { protocol: 'postgres', action: 'deny', rule: 'hold-truncate' } },
  ]);
  // A PostgreSQL session started before the window: groups come from the API key.
  store.appendMany([
    { kind: 'session.start', session: 's-pg', actor: 'key:ana', connection: 'warehouse', time: t0 - 86_400_000, payload: { protocol: 'postgres' } },
    { kind: 'pg.statement', session: 's-pg', actor: 'key:ana', connection: 'warehouse', time: t0 + 10, payload: { sql: 'DROP TABLE customers', classes: ['ddl', 'drop'], tables: ['customers'] } },
    { kind: 'policy.decision', session: 's-pg', actor: 'key:ana', connection: 'warehouse', time: t0 + 11, payload: { protocol: 'postgres', action: 'deny', rule: 'no-drops' } },
    { kind: 'pg.statement', session: 's-pg', actor: 'key:ana', connection: 'warehouse', time: t0 + 12, payload: { sql: 'SELEC oops' } },
  ]);
  // What the proxy does with SQL it cannot parse under a deny rule: refuses it (fail closed).
  if (unknownDenied) store.append({ kind: 'policy.decision', session: 's-pg', actor: 'key:ana', connection: 'warehouse', time: t0 + 13, payload: { protocol: 'postgres', action: 'deny', rule: 'no-drops' } });
  return store;
}

describe('policy dry-run', () => {
  it('rebuilds requests from the log and reports what would change', () => {
    const store = recordedStore();
    const keys = new ApiKeyStore(store.db);
    const k = keys.create({ name: 'ana', groups: ['analyst'] });
    store.db.prepare("UPDATE api_keys SET id = 'ana' WHERE id = ?").run(k.record.id);
    const rules = [
      rule({ name: 'hold-card-prompts', match: { connections: ['openai'], detectors: ['credit_card'] }, action: 'hold', hold: { approvers: ['sec'] } }),
      rule({ name: 'deny-tools-for-engineering', match: { groups: ['engineering'], tools: true }, action: 'deny' }),
      rule({ name: 'hold-analyst-ddl', match: { groups: ['analyst'], sql: ['drop'] }, action: 'hold', hold: { approvers: ['dba'] } }),
    ];
    const r = dryRun(store, rules, { connections });
    assert.equal(r.requests, 5);
    assert.equal(r.sessions, 3);
    // the held TRUNCATE counts as held (the decision inside the statement), not as the deny that followed
    assert.deepEqual(r.recorded, { allowed: 2, held: 1, denied: 1, masked: 1 });
    // the unparseable statement matches the non-allow SQL rule (fail closed), and is marked partial
    assert.deepEqual(r.candidate, { allowed: 1, held: 3, denied: 1, masked: 0 });
    assert.deepEqual(r.byRule, { 'hold-card-prompts': 1, 'deny-tools-for-engineering': 1, 'hold-analyst-ddl': 2 });
    assert.deepEqual(r.transitions, { 'masked→held': 1, 'allowed→denied': 1, 'held→allowed': 1, 'denied→held': 1, 'allowed→held': 1 });
    assert.equal(r.changed.find((x) => x.session === 's-pg2')!.actorName, 'bo');
    assert.equal(r.partial, 1);
    const pg = r.changed.find((s) => s.session === 's-pg')!;
    assert.equal(pg.actorName, 'ana');
    assert.deepEqual(pg.examples.map((e) => [e.recorded, e.recordedRule ?? null, e.candidate, e.summary]), [
      ['denied', 'no-drops', 'held', 'DROP TABLE customers'],
      ['allowed', null, 'held', 'SELEC oops'],
    ]);
    store.close();
  });

  it('finds nothing to change when the candidate is what was enforced, and honours the window', () => {
    const store = recordedStore(true);
    const same = [
      rule({ name: 'mask-cards', match: { connections: ['openai'], detectors: ['credit_card'] }, action: 'mask', mask: ['pii'] }),
      rule({ name: 'no-drops', match: { connections: ['warehouse'], sql: ['drop'] }, action: 'deny' }),
      rule({ name: 'hold-truncate', match: { connections: ['warehouse'], sql: ['truncate'] }, action: 'hold', hold: { approvers: ['dba'] } }),
    ];
    const r = dryRun(store, same, { connections });
    assert.equal(r.changedRequests, 0);
    assert.deepEqual(r.recorded, r.candidate);
    const windowed = dryRun(store, same, { connections, from: Date.parse('2025-03-01T10:00:00.005Z') });
    assert.equal(windowed.requests, 3, 'only the PostgreSQL statements fall in the window');
    store.close();
  });
});

describe('policy dry-run with masking rules', () => {
  function rawStore(): AuditStore {
    const store = AuditStore.open(tempDir());
    const t0 = Date.parse('2025-03-02T10:00:00Z');
    // Recorded before any masking rule existed: the card number and the e-mail sit raw in the log.
    store.appendMany([
      { kind: 'session.start', session: 's1', actor: 'key:dev', connection: 'warehouse', time: t0, payload: { protocol: 'postgres', identity: { subject: 'key:dev', name: 'dev', groups: ['dev'], via: 'api-key' } } },
      { kind: 'pg.statement', session: 's1', actor: 'key:dev', connection: 'warehouse', time: t0 + 1, payload: { sql: 'SELECT card, contact FROM payments', classes: ['select'], tables: ['payments'], decision: { action: 'allow' } } },
      { kind: 'pg.result', session: 's1', actor: 'key:dev', connection: 'warehouse', time: t0 + 2, payload: { rows: 1, columns: ['card', 'contact'], sample: [['4111 1111 1111 1111', 'ana@example.com']] } },
      { kind: 'pg.statement', session: 's1', actor: 'key:dev', connection: 'warehouse', time: t0 + 3, payload: { sql: 'SELECT 1', classes: ['select'], tables: [], decision: { action: 'allow' } } },
    ]);
    return store;
  }

  it('counts what the candidate masking rules would mask in recorded requests and responses', () => {
    const store = rawStore();
    const without = dryRun(store, [], { connections });
    assert.deepEqual(without.maskedValues, { recorded: 0, candidate: 0 });
    const masking = candidateMasking({ detectors: [], masking: [MaskingRuleSchema.parse({ id: 'cards', detectors: ['credit_card', 'email'] })] });
    const r = dryRun(store, [], { connections, masking });
    assert.deepEqual(r.maskedValues, { recorded: 0, candidate: 2 }, 'the card number and the e-mail in the result');
    // The statement itself carries nothing to mask: its outcome stays allowed.
    assert.equal(r.candidate.masked, 0);
    const inSql = candidateMasking({ detectors: [], masking: [MaskingRuleSchema.parse({ id: 'tables', detectors: ['email'], connections: ['warehouse'] })] });
    store.appendMany([{ kind: 'pg.statement', session: 's1', actor: 'key:dev', connection: 'warehouse', time: Date.parse('2025-03-02T10:00:01Z'), payload: { sql: "SELECT * FROM t WHERE contact = 'bo@example.com'", classes: ['select'], tables: ['t'], decision: { action: 'allow' } } }]);
    const r2 = dryRun(store, [], { connections, masking: inSql });
    assert.equal(r2.candidate.masked, 1);
    assert.equal(r2.transitions['allowed→masked'], 1);
    // A rule for another connection masks nothing here.
    const elsewhere = candidateMasking({ detectors: [], masking: [MaskingRuleSchema.parse({ id: 'x', detectors: ['email'], connections: ['openai'] })] });
    assert.deepEqual(dryRun(store, [], { connections, masking: elsewhere }).maskedValues, { recorded: 0, candidate: 0 });
  });
});
