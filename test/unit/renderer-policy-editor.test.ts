// The policy editor's logic (renderer/lib/rules-yaml.ts): YAML validated with the gateway's own
// schema and reported on the right line, the form's templates, and version diffs.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { PolicyRule } from '../../shared/config';
import { applyTemplate, describePolicy, diffLines, movePolicy, removePolicy, rulesToYaml, validateRulesYaml } from '../../renderer/lib/rules-yaml';

const ctx = { connections: ['openai', 'warehouse'] };

describe('YAML validation', () => {
  it('accepts valid rules and returns them with defaults', () => {
    const r = validateRulesYaml('policies:\n  - name: hold-drops\n    match: { connections: [warehouse], sql: [drop] }\n    action: hold\n    hold: { approvers: [dba] }\n', ctx);
    assert.equal(r.ok, true);
    if (!r.ok) return;
    assert.equal(r.value.policies[0]!.hold!.timeout, '5m');
    assert.equal(r.value.policies[0]!.hold!.min, 1);
  });

  it('rejects a hold rule without approvers with the schema message, on its line', () => {
    const text = 'masking: []\npolicies:\n  - name: ok\n    action: allow\n  - name: broken\n    action: hold\n';
    const r = validateRulesYaml(text, ctx);
    assert.equal(r.ok, false);
    if (r.ok) return;
    assert.deepEqual(r.issues, [{ line: 5, field: 'policies[1].hold', message: 'action hold needs hold: { approvers: [...] }' }]);
  });

  it('names bad enum values and durations, then unknown connections, as the gateway does', () => {
    const r = validateRulesYaml('policies:\n  - name: x\n    match: { connections: [nope], sql: [dropp] }\n    action: hold\n    hold: { approvers: [a], timeout: soon }\n', ctx);
    assert.equal(r.ok, false);
    if (r.ok) return;
    assert.deepEqual(r.issues.map((i) => [i.line, i.field]).sort(), [
      [3, 'policies[0].match.sql[0]'],
      [5, 'policies[0].hold.timeout'],
    ]);
    assert.ok(r.issues.some((i) => i.message === 'a duration such as 30s, 5m, 1h or 400d'));
    // Cross-references are checked once the rules are well-formed.
    const u = validateRulesYaml('policies:\n  - name: x\n    match: { connections: [nope] }\n    action: allow\n', ctx);
    assert.equal(u.ok, false);
    if (!u.ok) assert.deepEqual(u.issues, [{ line: 3, field: 'policies[0].match.connections[0]', message: 'unknown connection "nope"' }]);
  });

  it('reports YAML syntax errors with their line', () => {
    const r = validateRulesYaml('policies:\n  - name: x\n    action: [allow\n', ctx);
    assert.equal(r.ok, false);
    if (r.ok) return;
    assert.match(r.issues[0]!.message, /^invalid YAML/);
    assert.ok(r.issues[0]!.line >= 3, `line ${r.issues[0]!.line}`);
  });

  it('refuses keys the editor does not hold, and masking where the gateway does not allow editing it', () => {
    const r = validateRulesYaml('policies: []\nlisten: {}\n', ctx);
    assert.equal(r.ok, false);
    if (!r.ok) assert.deepEqual([r.issues[0]!.line, r.issues[0]!.field], [2, 'listen']);
    const m = validateRulesYaml('masking: []\npolicies: []\n', { ...ctx, maskingEditable: false });
    assert.equal(m.ok, false);
    if (!m.ok) assert.match(m.issues[0]!.message, /config file/);
  });

  it('leaves mask-rule ids to the gateway when masking is not editable here', () => {
    const text = 'policies:\n  - name: m\n    action: mask\n    mask: [pii]\n';
    assert.equal(validateRulesYaml(text, ctx).ok, false, 'with masking editable, an unknown masking rule is an error');
    const r = validateRulesYaml(text, { ...ctx, maskingEditable: false });
    assert.equal(r.ok, true);
  });
});

describe('form templates', () => {
  const empty = { policies: [], masking: [], detectors: [] };

  it('puts a new hold rule first, with a unique name, and it validates', () => {
    let doc = applyTemplate(empty, { kind: 'hold-destructive-sql', connection: 'warehouse', group: 'dba, sre', min: 2, timeout: '10m', reasonRequired: true });
    doc = applyTemplate(doc, { kind: 'hold-destructive-sql', connection: 'warehouse', group: 'dba', min: 1, timeout: '5m', reasonRequired: false });
    assert.deepEqual(doc.policies.map((p) => p.name), ['hold-destructive-sql-warehouse-2', 'hold-destructive-sql-warehouse']);
    assert.deepEqual(doc.policies[1]!.hold, { approvers: ['dba', 'sre'], min: 2, denyMin: 1, timeout: '10m', reason: 'required' });
    const yaml = rulesToYaml(doc);
    const v = validateRulesYaml(yaml, ctx);
    assert.equal(v.ok, true);
    if (v.ok) assert.deepEqual(v.value.policies, doc.policies.map((p) => PolicyRule.parse(p)));
  });

  it('builds a read_only allow-list: the allow first, the hold for every other statement last', () => {
    let doc = applyTemplate(empty, { kind: 'hold-destructive-sql', connection: 'warehouse', group: 'dba', min: 1, timeout: '5m', reasonRequired: false });
    doc = applyTemplate(doc, { kind: 'read-only-sql', connection: 'warehouse', group: 'dba', min: 1, timeout: '5m', reasonRequired: true });
    assert.deepEqual(doc.policies.map((p) => p.name), ['read-only-sql-warehouse', 'hold-destructive-sql-warehouse', 'hold-other-sql-warehouse']);
    assert.deepEqual(doc.policies[0]!.match, { connections: ['warehouse'], sql: ['read_only'] });
    assert.equal(doc.policies[0]!.action, 'allow');
    const rest = doc.policies[2]!;
    assert.equal(rest.action, 'hold');
    for (const c of ['select', 'insert', 'unknown', 'side_effect', 'routine_ddl'] as const) assert.ok(rest.match.sql?.includes(c), `catch-all misses ${c}`);
    assert.ok(!rest.match.sql?.includes('read_only'));
    assert.equal(validateRulesYaml(rulesToYaml(doc), ctx).ok, true);
  });

  it('adds masking rules, deny rules and prompt holds', () => {
    let doc = applyTemplate(empty, { kind: 'mask-detectors', connection: 'openai', detectors: ['credit_card'], scope: ['client', 'log'], strategy: 'mask' });
    doc = applyTemplate(doc, { kind: 'deny-model', connection: '', models: 'gpt-3.5-turbo, davinci', reason: 'not approved' });
    doc = applyTemplate(doc, { kind: 'hold-prompt', connection: 'openai', pattern: '(?i)dump all', group: 'security', min: 1, timeout: '5m', reasonRequired: true });
    assert.equal(doc.masking[0]!.id, 'mask-openai');
    assert.deepEqual(doc.policies[1]!.match, { model: ['gpt-3.5-turbo', 'davinci'] });
    assert.match(describePolicy(doc.policies[0]!), /content \/\(\?i\)dump all\/ → hold for security/);
    assert.equal(validateRulesYaml(rulesToYaml(doc), ctx).ok, true);
    const yaml = parse(rulesToYaml(doc)) as { masking: { scope: string[]; strategy: string }[] };
    assert.deepEqual(yaml.masking[0]!.scope, ['client', 'log']);
  });

  it('reorders and removes rules', () => {
    const doc = { ...empty, policies: ['a', 'b', 'c'].map((name) => ({ name, match: {}, action: 'allow' as const })) };
    assert.deepEqual(movePolicy(doc, 2, -1).policies.map((p) => p.name), ['a', 'c', 'b']);
    assert.equal(movePolicy(doc, 0, -1), doc);
    assert.deepEqual(removePolicy(doc, 1).policies.map((p) => p.name), ['a', 'c']);
  });
});

describe('version diffs', () => {
  it('marks added and removed lines around unchanged ones', () => {
    assert.deepEqual(diffLines('a\nb\nc', 'a\nc\nd'), [
      { op: ' ', text: 'a' },
      { op: '-', text: 'b' },
      { op: ' ', text: 'c' },
      { op: '+', text: 'd' },
    ]);
    assert.ok(diffLines('x', 'x').every((l) => l.op === ' '));
  });
});
