// SSH public keys over the control plane (`/api/ssh-keys`, what the console's key page and
// `custody ssh-login` use), with real HTTP calls and OpenSSH's own client through the gateway to a
// real sshd: a person registers their key and logs in with `ssh -i`; bad key text is a 400 and
// nothing is stored; one person cannot see, add for or remove another's keys, an admin can; a key
// with an expiry is refused once it has passed; removing a key refuses it at once.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SshKeyList, SshKeyView } from '../../shared/api';
import type { Gateway } from '../../proxy/gateway';
import { type SshBox, sshKeygen, startSshBox } from '../support/ssh-box';

let box: SshBox;
let gw: Gateway;
let work: string;
let control: string;
let alice: string;
let aliceKeyId: string;
let bob: string;

const ssh = (identity: string, command: string) => box.ssh(identity, command);

const keygen = (name: string) => sshKeygen(work, name);

async function call(key: string, method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${control}${path}`, { method, headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

const list = async (key: string, all = false) => ((await call(key, 'GET', `/api/ssh-keys${all ? '?all=1' : ''}`)).json as unknown as SshKeyList).keys;
const storedRows = () => (gw.services.store.db.prepare('SELECT count(*) AS n FROM ssh_keys').get() as { n: number }).n;
const del = (key: string, fingerprint: string) => call(key, 'DELETE', `/api/ssh-keys/${encodeURIComponent(fingerprint)}`);

const events = (kind: string) => box.events(kind);

describe('SSH keys over the control plane', () => {
  before(async () => {
    box = await startSshBox();
    gw = box.gw;
    control = box.control;
    work = mkdtempSync(join(tmpdir(), 'custody-ssh-keys-api-'));
    const a = gw.services.keys.create({ name: 'alice', groups: ['dev'] });
    alice = a.key;
    aliceKeyId = a.record.id;
    bob = gw.services.keys.create({ name: 'bob', groups: ['dev'] }).key;
  });

  after(async () => {
    await box?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('a person registers their own key; ssh -i logs in as them; removing it refuses it at once', async () => {
    const k = keygen('alice');
    const added = await call(alice, 'POST', '/api/ssh-keys', { publicKey: k.pub });
    assert.equal(added.status, 200, JSON.stringify(added.json));
    const view = added.json as unknown as SshKeyView;
    assert.equal(view.fingerprint, k.fingerprint, 'the fingerprint ssh-keygen -l shows');
    assert.equal(view.keyId, aliceKeyId, 'signed in with an API key and no expiry: the SSH key logs in as that key');
    assert.equal(view.comment, 'alice@laptop');
    assert.equal(view.state, 'active');
    const mine = await call(alice, 'GET', '/api/ssh-keys');
    assert.deepEqual((mine.json as unknown as SshKeyList).keys.map((x) => x.fingerprint), [k.fingerprint]);
    assert.deepEqual((mine.json as unknown as SshKeyList).listeners, [{ connection: 'box', address: gw.address('ssh:box') }]);

    const r = await ssh(k.file, 'echo hello from $USER');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `hello from ${box.sshd.user}\n`);
    const created = events('key.created').find((e) => e.payload['fingerprint'] === k.fingerprint)!;
    assert.equal(created.actor, `key:${aliceKeyId}`);
    assert.equal(created.payload['actorName'], 'alice');

    const removed = await del(alice, k.fingerprint);
    assert.equal(removed.status, 200, JSON.stringify(removed.json));
    const refused = await ssh(k.file, 'echo hello');
    assert.equal(refused.code, 255, 'a removed key no longer logs in');
    assert.match(refused.stderr, /Permission denied \(publickey/);
    assert.equal(refused.stdout, '');
    assert.deepEqual(await list(alice), []);
    assert.equal((await del(alice, k.fingerprint)).status, 404);
    assert.ok(events('key.revoked').some((e) => e.payload['fingerprint'] === k.fingerprint && e.payload['how'] === 'remove' && e.actor === `key:${aliceKeyId}`));
  });

  it('refuses bad key text with a clear 400 and stores nothing', async () => {
    const k = keygen('oops');
    const priv = readFileSync(k.file, 'utf8');
    const before = storedRows();
    const cases: [unknown, RegExp][] = [
      [{ publicKey: priv }, /this is a private key; register the public half/],
      [{ publicKey: `${k.pub}${keygen('two').pub}` }, /give one public key \(one line\)/],
      [{ publicKey: 'ssh-ed25519 bm90IGEga2V5 me@laptop' }, /not an OpenSSH public key/],
      [{ publicKey: 'hello world' }, /not an OpenSSH public key/],
      [{ publicKey: '   ' }, /no public key given/],
      [{}, /publicKey is required/],
      [{ publicKey: 42 }, /publicKey is required/],
      [{ publicKey: k.pub, expires: 'soon' }, /expires: invalid duration "soon"/],
    ];
    for (const [body, re] of cases) {
      const r = await call(alice, 'POST', '/api/ssh-keys', body);
      assert.equal(r.status, 400, `${JSON.stringify(body).slice(0, 60)}: ${JSON.stringify(r.json)}`);
      assert.match(String((r.json['error'] as { message?: string } | undefined)?.message ?? r.json['message']), re);
    }
    assert.equal(storedRows(), before, 'nothing was stored');
    // The same key twice: 409, naming where it is.
    assert.equal((await call(alice, 'POST', '/api/ssh-keys', { publicKey: k.pub })).status, 200);
    const dup = await call(bob, 'POST', '/api/ssh-keys', { publicKey: k.pub });
    assert.equal(dup.status, 409);
    assert.match(JSON.stringify(dup.json), /is already registered/);
    assert.equal((await del(alice, k.fingerprint)).status, 200);
  });

  it('a person sees and manages only their own keys; an admin anyone\'s', async () => {
    const a = keygen('alice2');
    assert.equal((await call(alice, 'POST', '/api/ssh-keys', { publicKey: a.pub })).status, 200);
    // Bob sees none of alice's, cannot list everyone's, cannot remove hers or add for her.
    assert.deepEqual(await list(bob), []);
    assert.equal((await call(bob, 'GET', '/api/ssh-keys?all=1')).status, 403);
    const theft = await del(bob, a.fingerprint);
    assert.equal(theft.status, 403);
    assert.match(JSON.stringify(theft.json), /not yours/);
    const alicePerson = gw.services.persons.personOf(`key:${aliceKeyId}`)!;
    const b = keygen('bob');
    const forAlice = await call(bob, 'POST', '/api/ssh-keys', { publicKey: b.pub, person: alicePerson });
    assert.equal(forAlice.status, 403);
    assert.match(JSON.stringify(forAlice.json), /only for yourself/);
    const escalate = await call(bob, 'POST', '/api/ssh-keys', { publicKey: b.pub, groups: ['admin'] });
    assert.equal(escalate.status, 403, 'a person cannot choose the groups their key logs in with');
    assert.equal((await ssh(a.file, 'echo still alice')).stdout, 'still alice\n', 'alice\'s key still logs in');

    // The admin lists everyone's, registers one for bob's person with groups, and removes alice's.
    const admin = gw.firstKey!;
    assert.ok((await list(admin, true)).some((k) => k.fingerprint === a.fingerprint));
    await call(bob, 'GET', '/api/me');
    const bobPerson = (await call(bob, 'GET', '/api/me')).json['person'] as string;
    const forBob = await call(admin, 'POST', '/api/ssh-keys', { publicKey: b.pub, person: bobPerson, groups: ['dev'] });
    assert.equal(forBob.status, 200, JSON.stringify(forBob.json));
    assert.equal((forBob.json as unknown as SshKeyView).person, bobPerson);
    assert.deepEqual((await list(bob)).map((k) => k.fingerprint), [b.fingerprint], 'bob sees the key registered for him');
    assert.equal((await ssh(b.file, 'echo as bob')).stdout, 'as bob\n');
    assert.equal((await del(admin, a.fingerprint)).status, 200);
    assert.equal((await ssh(a.file, 'echo gone')).code, 255);
    assert.equal((await del(bob, b.fingerprint)).status, 200, 'bob removes his own key');
  });

  it('a key registered with an expiry logs in until then, and is refused after', async () => {
    const k = keygen('short');
    const added = await call(alice, 'POST', '/api/ssh-keys', { publicKey: k.pub, expires: '8s' });
    assert.equal(added.status, 200, JSON.stringify(added.json));
    const view = added.json as unknown as SshKeyView;
    assert.notEqual(view.keyId, aliceKeyId, 'an expiry makes a key of its own');
    assert.ok(view.expiresAt! > Date.now() && view.expiresAt! <= Date.now() + 8000);
    // It carries alice's groups as they are: dev may echo, nothing else.
    assert.equal((await ssh(k.file, 'echo until then')).stdout, 'until then\n');
    assert.equal((await ssh(k.file, 'id')).code, 126);
    await new Promise((r) => setTimeout(r, Math.max(0, view.expiresAt! - Date.now()) + 200));
    const r = await ssh(k.file, 'echo too late');
    assert.equal(r.code, 255, 'refused after its expiry');
    assert.equal(r.stdout, '');
    assert.equal((await list(alice)).find((x) => x.fingerprint === k.fingerprint)?.state, 'expired');
  });
});
