/**
 * SSH public keys over REST, for every signed-in person (the console's key page, `custody
 * ssh-login`); the same code path as `custody keys add-ssh`/`remove-ssh`
 * (proxy/identity/ssh-key-registry.ts):
 *
 *   GET    /api/ssh-keys[?all=1]              the caller's own keys (admins: everyone's with all=1),
 *                                             and where the ssh connections listen
 *   POST   /api/ssh-keys                      {publicKey, expires?, person?, groups?} → the key
 *   DELETE /api/ssh-keys/:fingerprint         stops it logging in
 *
 * A person manages only their own keys; an admin anyone's. A key registered while signed in with
 * an API key and no `expires` logs in as that API key. Otherwise it gets a new API key of the
 * person's, with the caller's groups as they are now, expiring after `expires` (default 30d, and
 * never after the API key the caller signed in with); only an admin registering for someone else
 * names groups. Bad key text is a 400 and nothing is stored.
 */
import type { AddSshKeyRequest, Untrusted } from '../../../shared/api';
import { parseDuration } from '../../../shared/config';
import { hasRole, type Identity } from '../../../shared/identity';
import { PersonError } from '../../identity/persons';
import { listSshKeys, registerSshKey, removeSshKey, type SshKeyDeps, sshKeyOwner, type SshKeyTarget, sshKeyView } from '../../identity/ssh-key-registry';
import { SshKeyError } from '../../identity/ssh-keys';
import type { GatewayServices } from '../../services';
import { HttpError, type Router } from '../router';

/** How long a key registered without `expires` logs in. */
export const SSH_KEY_DEFAULT_EXPIRY = '30d';

const GROUP_RE = /^[A-Za-z0-9_.:@/-]{1,128}$/;

function asHttp<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof SshKeyError) throw new HttpError(err.status, err.status === 400 ? 'bad_ssh_key' : err.status === 404 ? 'not_found' : 'conflict', err.message);
    if (err instanceof PersonError) throw new HttpError(err.status, err.code, err.message);
    throw err;
  }
}

function ownPerson(identity: Identity): string {
  if (!identity.person) throw new HttpError(409, 'no_person', 'your credential has no person, so it cannot own an SSH key');
  return identity.person;
}

/** Where the key logs in, from the body and who is asking; 400/403 when the body asks for what the caller may not. */
function targetFor(s: GatewayServices, identity: Identity, body: Untrusted<AddSshKeyRequest>): SshKeyTarget {
  const admin = hasRole(identity, 'admin');
  let person: string | undefined;
  if (body.person !== undefined) {
    if (typeof body.person !== 'string' || !body.person.trim()) throw new HttpError(400, 'bad_request', 'person is a person id or name');
    person = asHttp(() => s.persons.resolve((body.person as string).trim())).id;
    if (person !== identity.person && !admin) throw new HttpError(403, 'forbidden', 'you may register SSH keys only for yourself');
  }
  const forOther = person !== undefined && person !== identity.person;
  let groups: string[] | undefined;
  if (body.groups !== undefined) {
    if (!forOther) throw new HttpError(403, 'forbidden', 'your SSH key logs in with your own groups; only an admin registering a key for someone else names groups');
    if (!Array.isArray(body.groups) || !body.groups.every((g) => typeof g === 'string' && GROUP_RE.test(g))) throw new HttpError(400, 'bad_request', 'groups must be a list of group names (letters, digits, _ . : @ / -)');
    groups = body.groups as string[];
  }
  if (body.expires !== undefined && typeof body.expires !== 'string') throw new HttpError(400, 'bad_request', 'expires is a duration such as 8h or 30d');
  const expires = typeof body.expires === 'string' && body.expires.trim() ? body.expires.trim() : undefined;
  if (!forOther && identity.keyId && expires === undefined) return { keyId: identity.keyId };
  let expiresAt: number;
  try {
    expiresAt = Date.now() + parseDuration(expires ?? SSH_KEY_DEFAULT_EXPIRY);
  } catch (err) {
    throw new HttpError(400, 'bad_request', `expires: ${(err as Error).message}`);
  }
  // A key minted from an API key does not outlive it.
  if (!forOther && identity.keyId && identity.credentialExpiresAt !== undefined) expiresAt = Math.min(expiresAt, identity.credentialExpiresAt);
  return { person: person ?? ownPerson(identity), groups: groups ?? (forOther ? [] : identity.groups), expiresAt };
}

export function registerSshKeyRoutes(router: Router, s: GatewayServices, listeners: () => { connection: string; address: string }[] = () => []): void {
  const deps: SshKeyDeps = { store: s.store, keys: s.keys, persons: s.persons };

  router.get('/api/ssh-keys', ({ identity, query }) => {
    const all = query.get('all') === '1';
    if (all && !hasRole(identity, 'admin')) throw new HttpError(403, 'forbidden', 'only an admin lists everyone\'s SSH keys');
    return { keys: listSshKeys(deps, all ? undefined : ownPerson(identity!)), listeners: listeners() };
  });

  router.post('/api/ssh-keys', async ({ identity, json }) => {
    const body = (await json()) ?? {};
    if (typeof body.publicKey !== 'string') throw new HttpError(400, 'bad_ssh_key', 'publicKey is required: one OpenSSH public key line such as "ssh-ed25519 AAAA… me@laptop"');
    const target = targetFor(s, identity!, body);
    const publicKey = body.publicKey;
    const { record } = asHttp(() => registerSshKey(deps, publicKey, target, { subject: identity!.subject, name: identity!.name }, 'registered from the console API'));
    return sshKeyView(deps, record);
  });

  router.delete('/api/ssh-keys/:fingerprint', ({ identity, params }) => {
    const fingerprint = params['fingerprint']!;
    const owned = sshKeyOwner(deps, fingerprint);
    if (!owned) throw new HttpError(404, 'not_found', `no registered SSH key ${fingerprint}`);
    if (owned.person !== identity!.person && !hasRole(identity, 'admin')) throw new HttpError(403, 'forbidden', 'this SSH key is not yours; only its owner or an admin removes it');
    const view = sshKeyView(deps, owned.record);
    asHttp(() => removeSshKey(deps, fingerprint, { subject: identity!.subject, name: identity!.name }));
    return view;
  });
}
