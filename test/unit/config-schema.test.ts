import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { configJsonSchema } from '../../scripts/config-schema';
import { parseConfig } from '../../proxy/config';

const DESIGN_EXAMPLE = `
connections:
  - { name: openai, kind: openai, upstream: https://api.openai.com/v1, secret: { env: OPENAI_API_KEY } }
  - { name: warehouse, kind: postgres, upstream: postgres://app@db:5432/app, listen: 127.0.0.1:6432, secret: { file: /run/secrets/pg } }
masking:
  - id: pii-out
    detectors: [credit_card, us_ssn, email, aws_access_key]
    scope: [client, upstream]
    strategy: redact
    connections: [openai]
policies:
  - name: hold-destructive-sql
    match: { connections: [warehouse], sql: [drop, truncate, delete_without_where, update_without_where] }
    action: hold
    hold: { approvers: [dba], min: 1, timeout: 5m, reason: required }
  - name: hold-bulk-export-prompts
    match: { connections: [openai], content: "(?i)(export|dump) (all|every)" }
    action: hold
    hold: { approvers: [security] }
  - name: unapproved-model
    match: { model: [gpt-3.5-turbo] }
    action: deny
    reason: model not approved for production data
`;

describe('config schema', () => {
  it('schemas/config.schema.json is generated from the schema the gateway validates with', () => {
    assert.equal(readFileSync('schemas/config.schema.json', 'utf8'), configJsonSchema(), 'stale: run `npm run schema`');
  });

  it("accepts DESIGN.md's example config", () => {
    const c = parseConfig(DESIGN_EXAMPLE, 'design.yaml');
    assert.equal(c.policies[0]!.hold!.timeout, '5m');
    assert.equal(c.policies[1]!.hold!.min, 1, 'defaults filled in');
  });

  it('rejects a policy naming an unknown connection, with its line', () => {
    const bad = DESIGN_EXAMPLE.replace('connections: [warehouse], sql', 'connections: [wherehouse], sql');
    assert.throws(() => parseConfig(bad, 'c.yaml'), /c\.yaml:1[34]: policies\[0\]\.match\.connections\[0\]: unknown connection "wherehouse"/);
  });

  it('rejects a hold rule without approvers', () => {
    assert.throws(() => parseConfig('policies:\n  - name: x\n    action: hold\n', 'c.yaml'), /c\.yaml:2: policies\[0\]\.hold: action hold needs hold/);
  });

  it('passthroughTypes: media types on HTTP connections only', () => {
    const c = parseConfig('connections:\n  - { name: o, kind: openai, upstream: http://x, passthroughTypes: [image/*, audio/wav] }\n', 'c.yaml');
    assert.deepEqual(c.connections[0]!.passthroughTypes, ['image/*', 'audio/wav']);
    assert.throws(() => parseConfig('connections:\n  - { name: o, kind: openai, upstream: http://x, passthroughTypes: [png] }\n', 'c.yaml'), /passthroughTypes\[0\]: a media type such as image\/png/);
    assert.throws(
      () => parseConfig('connections:\n  - { name: p, kind: postgres, upstream: postgres://a@b/c, listen: 127.0.0.1:6432, passthroughTypes: [image/png] }\n', 'c.yaml'),
      /passthroughTypes: passthroughTypes applies to HTTP connections only/,
    );
  });
});
