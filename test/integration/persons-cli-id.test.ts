/**
 * `custody persons create NAME --id person_…`: one person id for the same human on every gateway of
 * a shared store (holds compare persons by id across gateways; docs/SCALE-OUT.md). A malformed or
 * taken id is refused with the reason, and nothing is created.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { custody } from '../support/custody-process';
import { tempDir } from '../support/tmp';

describe('custody persons create --id', () => {
  const dir = tempDir('custody-persons-id-');
  const list = () => JSON.parse(custody('persons', 'list', '--json', '--data-dir', dir).stdout) as { id: string; name: string }[];

  it('creates the person under the id given; a key can then name it as its owner', () => {
    const r = custody('persons', 'create', 'Alice', '--id', 'person_alice', '--data-dir', dir);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /Created person person_alice "Alice"/);
    const k = custody('keys', 'create', '--name', 'alice-key', '--owner', 'person_alice', '--groups', 'ops', '--data-dir', dir);
    assert.equal(k.status, 0, k.stderr);
    assert.deepEqual(
      list().map((p) => [p.id, p.name]),
      [['person_alice', 'Alice']],
    );
  });

  it('refuses a malformed id, the local person and an id already taken, creating nothing', () => {
    for (const bad of ['alice', 'person_', 'person_a b', `person_${'x'.repeat(65)}`, 'person_local']) {
      const r = custody('persons', 'create', 'Mallory', '--id', bad, '--data-dir', dir);
      assert.notEqual(r.status, 0, `${bad} was accepted`);
      assert.match(r.stderr, /--id must be person_ followed by 1 to 64 letters/);
    }
    const taken = custody('persons', 'create', 'Other', '--id', 'person_alice', '--data-dir', dir);
    assert.equal(taken.status, 1);
    assert.match(taken.stderr, /a person person_alice already exists/);
    assert.equal(list().length, 1);
  });
});
