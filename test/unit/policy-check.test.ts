// `custody policy check` logic: errors that stop rules loading, warnings for rules that can never
// fire (unknown connection, protocol mismatch, shadowing) and the superset test behind shadowing.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { type PolicyRule, PolicyRule as PolicyRuleSchema } from '../../shared/config';
import { checkPolicies, covers, parsePolicies, type PolicyContext } from '../../proxy/policy/check';

const rule = (r: Record<string, unknown>): PolicyRule => PolicyRuleSchema.parse(r);

const ctx: PolicyContext = {
  connections: [
    { name: 'openai', kind: 'openai' },
    { name: 'vectors', kind: 'http' },
    { name: 'warehouse', kind: 'postgres' },
  ],
  masking: [{ id: 'pii-out', connections: ['openai'] }],
};

function messages(rules: PolicyRule[], c = ctx) {
  return checkPolicies(rules, c).map((i) => `${i.level} #${(i.rule ?? -1) + 1}: ${i.message}`);
}

describe('policy check', () => {
  it('accepts the design examples without remarks', () => {
    const rules = [
      rule({ name: 'hold-destructive-sql', match: { connections: ['warehouse'], sql: ['drop', 'truncate', 'delete_without_where'] }, action: 'hold', hold: { approvers: ['dba'], reason: 'required' } }),
      rule({ name: 'hold-bulk-export-prompts', match: { connections: ['openai'], content: '(?i)(export|dump) (all|every)' }, action: 'hold', hold: { approvers: ['security'] } }),
      rule({ name: 'unapproved-model', match: { model: ['gpt-3.5-turbo'] }, action: 'deny', reason: 'model not approved' }),
    ];
    assert.deepEqual(messages(rules), []);
  });

  it('reports schema errors with the path', () => {
    const r = parsePolicies([{ name: 'x', action: 'hold' }, { name: 'y', action: 'explode' }]);
    assert.equal(r.ok, false);
    if (!r.ok) {
      assert.deepEqual(r.issues[0]!.path, [0, 'hold']);
      assert.match(r.issues[0]!.message, /needs hold/);
      assert.deepEqual(r.issues[1]!.path, [1, 'action']);
    }
  });

  it('errors on a regex that does not compile and on an unknown masking rule', () => {
    const out = messages([
      rule({ name: 'bad-regex', match: { content: '(unclosed' }, action: 'deny' }),
      rule({ name: 'bad-mask', match: { connections: ['openai'] }, action: 'mask', mask: ['nope'] }),
    ]);
    assert.equal(out.length, 2);
    assert.match(out[0]!, /^error #1: policy rule "bad-regex": invalid regular expression/);
    assert.match(out[1]!, /^error #2: unknown masking rule "nope"/);
  });

  it('warns about users values that look like display names, not verified identities', () => {
    const out = messages([rule({ name: 'allow-bot', match: { users: ['ci-bot', 'Ann Smith', 'ann@example.com', 'https://idp.example.com#00u1', 'key:abc123def456', 'local:root'] }, action: 'allow' })]);
    assert.equal(out.length, 3);
    for (const [i, u] of ['ci-bot', 'Ann Smith', 'ann@example.com'].entries()) assert.match(out[i]!, new RegExp(`^warning #1: "${u}" looks like a display name`));
    assert.match(out[2]!, /https:\/\/idp\.example\.com#ann@example\.com/);
  });

  it('warns about unknown connections', () => {
    assert.deepEqual(messages([rule({ name: 'typo', match: { connections: ['opneai'] }, action: 'deny' })]), ['warning #1: never fires: no connection named "opneai"']);
    const partly = messages([rule({ name: 'partly', match: { connections: ['openai', 'ghost'] }, action: 'deny' })]);
    assert.deepEqual(partly, ['warning #1: connection "ghost" does not exist; that part of the rule never matches']);
  });

  it('warns when the protocol can never match', () => {
    const out = messages([
      rule({ name: 'sql-on-http', match: { connections: ['openai', 'vectors'], sql: ['drop'] }, action: 'deny' }),
      rule({ name: 'model-on-pg', match: { connections: ['warehouse'], model: ['gpt-4o'] }, action: 'deny' }),
      rule({ name: 'both', match: { sql: ['drop'], methods: ['POST'] }, action: 'deny' }),
    ]);
    assert.match(out[0]!, /#1: never fires: sql matches only PostgreSQL statements, and openai \(openai\), vectors \(http\) are HTTP/);
    assert.match(out[1]!, /#2: never fires: model match HTTP\/LLM requests, and warehouse is a PostgreSQL connection/);
    assert.match(out[2]!, /#3: never fires: .*either SQL or HTTP/);
    assert.match(messages([rule({ name: 'sql', match: { sql: ['drop'] }, action: 'deny' })], { connections: [{ name: 'openai', kind: 'openai' }] })[0]!, /never fires: sql/);
  });

  it('warns about detectors that do not exist; built-ins, groups and custom ones are known', () => {
    const out = messages([rule({ name: 'typo', match: { connections: ['vectors'], detectors: ['aws_acess_key'] }, action: 'deny' })]);
    assert.deepEqual(out, ['warning #1: never fires: no detector named "aws_acess_key"']);
    assert.deepEqual(messages([rule({ name: 'ok', match: { connections: ['openai'], detectors: ['aws_access_key', 'pii', 'employee_id'] }, action: 'deny' })], { ...ctx, detectors: ['employee_id'] }), []);
  });

  it('warns about a rule shadowed by an earlier rule with a superset match', () => {
    const out = messages([
      rule({ name: 'deny-openai', match: { connections: ['openai'] }, action: 'deny' }),
      rule({ name: 'hold-openai-exports', match: { connections: ['openai'], content: 'export' }, action: 'hold', hold: { approvers: ['sec'] } }),
    ]);
    assert.deepEqual(out, ['warning #2: never fires: rule #1 "deny-openai" (deny) comes first and matches everything this rule matches']);
    // narrower first, broader second: fine
    assert.deepEqual(
      messages([
        rule({ name: 'hold-openai-exports', match: { connections: ['openai'], content: 'export' }, action: 'hold', hold: { approvers: ['sec'] } }),
        rule({ name: 'deny-openai', match: { connections: ['openai'] }, action: 'deny' }),
      ]),
      [],
    );
  });

  it('sees shadowing through class implication and detector groups', () => {
    const out = messages([
      rule({ name: 'hold-deletes', match: { connections: ['warehouse'], sql: ['delete'] }, action: 'hold', hold: { approvers: ['dba'] } }),
      rule({ name: 'deny-unbounded-deletes', match: { connections: ['warehouse'], sql: ['delete_without_where'] }, action: 'deny' }),
      rule({ name: 'deny-pii', match: { connections: ['openai'], detectors: ['pii'] }, action: 'deny' }),
      rule({ name: 'hold-cards', match: { connections: ['openai'], detectors: ['credit_card', 'email'] }, action: 'hold', hold: { approvers: ['sec'] } }),
    ]);
    assert.deepEqual(out, [
      'warning #2: never fires: rule #1 "hold-deletes" (hold) comes first and matches everything this rule matches',
      'warning #4: never fires: rule #3 "deny-pii" (deny) comes first and matches everything this rule matches',
    ]);
    const r = (match: Record<string, unknown>) => rule({ name: 'r', match, action: 'deny' });
    assert.ok(covers(r({ sql: ['update'] }), r({ sql: ['update_without_where'] })));
    assert.ok(!covers(r({ sql: ['update_without_where'] }), r({ sql: ['update'] })));
    assert.ok(!covers(r({ sql: ['delete'] }), r({ sql: ['update_without_where'] })));
    assert.ok(covers(r({ detectors: ['secrets'] }), r({ detectors: ['aws_access_key'] })));
    assert.ok(!covers(r({ detectors: ['credit_card'] }), r({ detectors: ['pii'] })));
  });

  it('warns about duplicate rule names', () => {
    const out = messages([
      rule({ name: 'same', match: { connections: ['openai'], model: ['a'] }, action: 'deny' }),
      rule({ name: 'same', match: { connections: ['openai'], model: ['b'] }, action: 'deny' }),
    ]);
    assert.deepEqual(out, ['warning #2: rule name "same" is also used by rule #1; holds and grants refer to rules by name']);
  });

  it('decides superset matches conservatively', () => {
    const r = (match: Record<string, unknown>, action = 'deny') => rule({ name: 'r', match, action, ...(action === 'hold' ? { hold: { approvers: ['x'] } } : {}) });
    assert.ok(covers(r({}), r({ connections: ['a'], sql: ['drop'] })));
    assert.ok(covers(r({ groups: ['a', 'b'] }), r({ groups: ['a'] })));
    assert.ok(!covers(r({ groups: ['a'] }), r({ groups: ['a', 'b'] })));
    assert.ok(covers(r({ paths: ['/v1/*'] }), r({ paths: ['/v1/chat/completions', '/v1/responses'] })));
    assert.ok(!covers(r({ paths: ['/v1/chat/*'] }), r({ paths: ['/v1/*'] })));
    assert.ok(covers(r({ methods: ['post'] }), r({ methods: ['POST'] })));
    assert.ok(!covers(r({ tools: true }), r({})));
    assert.ok(!covers(r({ content: 'a' }), r({ content: 'b' })));
    assert.ok(!covers(r({ sql: ['drop'] }), r({ model: ['x'] })));
    // an allow rule on SQL classes does not cover a hold rule, which also catches unparseable SQL
    assert.ok(!covers(r({ sql: ['drop'] }, 'allow'), r({ sql: ['drop'] }, 'hold')));
    assert.ok(covers(r({ sql: ['drop', 'unknown'] }, 'allow'), r({ sql: ['drop'] }, 'hold')));
  });

  it('warns that allowing select lets writes through, and accepts the read_only allow-list', () => {
    const allowSelect = [rule({ name: 'reads', match: { connections: ['warehouse'], sql: ['select'] }, action: 'allow' })];
    assert.deepEqual(messages(allowSelect), ['warning #1: allowing select also allows statements that write while they read (WITH … DELETE, SELECT f() where f writes, SELECT … FOR UPDATE); allow read_only instead']);
    const allowList = [
      rule({ name: 'reads', match: { connections: ['warehouse'], sql: ['read_only'] }, action: 'allow' }),
      rule({ name: 'no-destructive-sql', match: { connections: ['warehouse'], sql: ['drop', 'truncate', 'delete_without_where', 'update_without_where'] }, action: 'deny' }),
      rule({ name: 'review-the-rest', match: { connections: ['warehouse'] }, action: 'hold', hold: { approvers: ['dba'] } }),
    ];
    assert.deepEqual(messages(allowList), []);
  });

  it('knows that a read_only statement is a select: an earlier hold on select shadows an allow of read_only', () => {
    const rules = [
      rule({ name: 'hold-reads', match: { connections: ['warehouse'], sql: ['select'] }, action: 'hold', hold: { approvers: ['dba'] } }),
      rule({ name: 'reads-run', match: { connections: ['warehouse'], sql: ['read_only'] }, action: 'allow' }),
      rule({ name: 'deny-deletes', match: { connections: ['warehouse'], sql: ['delete'] }, action: 'deny' }),
      rule({ name: 'deny-wipes', match: { connections: ['warehouse'], sql: ['delete_without_where'] }, action: 'deny' }),
    ];
    assert.deepEqual(messages(rules), [
      'warning #2: never fires: rule #1 "hold-reads" (hold) comes first and matches everything this rule matches',
      'warning #4: never fires: rule #3 "deny-deletes" (deny) comes first and matches everything this rule matches',
    ]);
  });

  it('skips connection checks when the gateway connections are not known', () => {
    assert.deepEqual(messages([rule({ name: 'x', match: { connections: ['anything'], sql: ['drop'] }, action: 'deny' })], {}), []);
  });
});
