/**
 * Registering and removing SSH public keys, one code path for every road in: `custody keys
 * add-ssh`/`remove-ssh`, the console's key page (`POST /api/ssh-keys`, `DELETE
 * /api/ssh-keys/:fingerprint`) and `custody ssh-login`. Who may do what is the caller's business
 * (the CLI is the host's operator; the REST routes check ownership); this module checks the key
 * itself and where it goes, and writes nothing when either is wrong.
 *
 * An SSH key logs in as an API key. It is registered either for an existing key (it then has that
 * key's groups, person and expiry) or for a person, which mints a new API key of theirs whose
 * secret is never shown: the SSH key is its only use. Both are recorded (`key.created`).
 */
import type { SshKeyView } from '../../shared/api';
import type { KeyCreatedPayload, KeyRevokedPayload } from '../../shared/events';
import type { ApiKeyRecord } from '../../shared/identity';
import type { AuditStore } from '../audit/store';
import type { ApiKeyStore } from './api-keys';
import type { PersonDirectory } from './persons';
import { parseSshPublicKey, SshKeyError, type SshKeyRecord, SshKeyStore } from './ssh-keys';

export interface SshKeyDeps {
  store: AuditStore;
  keys: ApiKeyStore;
  persons: PersonDirectory;
}

/** Where a new SSH key logs in: as an existing API key, or as a new key of a person's. */
export type SshKeyTarget = { keyId: string } | { person: string; groups: string[]; expiresAt: number | null; name?: string };

export interface SshKeyActor {
  /** The subject recorded as the event's actor (`cli`, `key:…`, `<issuer>#<sub>`). */
  subject: string;
  name?: string;
}

export interface RegisteredSshKey {
  record: SshKeyRecord;
  /** The API key minted for it, when the target was a person. */
  createdKey?: { id: string; groups: string[]; person: string; expiresAt: number | null };
}

function keyState(k: ApiKeyRecord | undefined, now: number): SshKeyView['state'] {
  if (!k || k.revokedAt !== null) return 'revoked';
  return k.expiresAt !== null && k.expiresAt <= now ? 'expired' : 'active';
}

/**
 * Registers one OpenSSH public key line. Throws SshKeyError (400 bad key text, 404 no such API
 * key or person, 409 already registered, key revoked or expired, person locked) before writing
 * anything.
 */
export function registerSshKey(deps: SshKeyDeps, publicKey: string, target: SshKeyTarget, actor: SshKeyActor, how: string): RegisteredSshKey {
  const parsed = parseSshPublicKey(publicKey);
  const ssh = new SshKeyStore(deps.store.db);
  const registered = ssh.get(parsed.fingerprint);
  if (registered && registered.removedAt === null) throw new SshKeyError(409, `the SSH key ${parsed.fingerprint} is already registered (for API key ${registered.keyId}); remove it there first`);
  const now = Date.now();
  let keyId: string;
  let createdKey: RegisteredSshKey['createdKey'];
  if ('keyId' in target) {
    const record = deps.keys.get(target.keyId);
    if (!record) throw new SshKeyError(404, `no API key ${target.keyId}`);
    if (record.revokedAt !== null) throw new SshKeyError(409, `the API key ${target.keyId} is revoked`);
    if (record.expiresAt !== null && record.expiresAt <= now) throw new SshKeyError(409, `the API key ${target.keyId} has expired`);
    keyId = target.keyId;
  } else {
    if (!deps.persons.get(target.person)) throw new SshKeyError(404, `no person ${target.person}`);
    if (deps.persons.isLocked(target.person)) throw new SshKeyError(409, `the person ${target.person} is locked`);
    if (target.expiresAt !== null && target.expiresAt <= now) throw new SshKeyError(400, 'the key would expire before it is used');
    const name = target.name ?? `ssh ${parsed.comment ?? parsed.fingerprint}`;
    const { record } = deps.keys.create({ name, groups: target.groups, expiresAt: target.expiresAt, createdBy: actor.subject });
    deps.persons.attach(`key:${record.id}`, 'api-key', target.person, actor.subject);
    deps.store.append({
      kind: 'key.created',
      actor: actor.subject,
      payload: { id: record.id, name, groups: target.groups, expiresAt: target.expiresAt, person: target.person, reason: how, ...(actor.name ? { actorName: actor.name } : {}) } satisfies KeyCreatedPayload,
    });
    keyId = record.id;
    createdKey = { id: record.id, groups: target.groups, person: target.person, expiresAt: target.expiresAt };
  }
  const added = ssh.add(keyId, publicKey, actor.subject, now);
  const person = deps.persons.personOf(`key:${keyId}`);
  deps.store.append({
    kind: 'key.created',
    actor: actor.subject,
    payload: {
      credential: 'ssh-key',
      fingerprint: added.fingerprint,
      algo: added.algo,
      comment: added.comment,
      keyId,
      ...(person ? { person } : {}),
      expiresAt: deps.keys.get(keyId)?.expiresAt ?? null,
      ...(actor.name ? { actorName: actor.name } : {}),
    } satisfies KeyCreatedPayload,
  });
  return { record: added, ...(createdKey ? { createdKey } : {}) };
}

/** Stops a registered key from logging in (recorded); throws SshKeyError 404 when none is active. */
export function removeSshKey(deps: SshKeyDeps, fingerprint: string, actor: SshKeyActor): SshKeyRecord {
  const removed = new SshKeyStore(deps.store.db).remove(fingerprint);
  if (!removed) throw new SshKeyError(404, `no registered SSH key ${fingerprint}`);
  deps.store.append({
    kind: 'key.revoked',
    actor: actor.subject,
    payload: { credential: 'ssh-key', fingerprint, keyId: removed.keyId, how: 'remove', ...(actor.name ? { actorName: actor.name } : {}) } satisfies KeyRevokedPayload,
  });
  return removed;
}

/** The person an active SSH key belongs to (its API key's owner). */
export function sshKeyOwner(deps: SshKeyDeps, fingerprint: string): { record: SshKeyRecord; person: string | undefined } | undefined {
  const record = new SshKeyStore(deps.store.db).get(fingerprint);
  if (!record || record.removedAt !== null) return undefined;
  return { record, person: deps.persons.personOf(`key:${record.keyId}`) };
}

/** Active SSH keys as the console shows them: one person's, or everyone's. */
export function listSshKeys(deps: SshKeyDeps, person?: string, now = Date.now()): SshKeyView[] {
  return new SshKeyStore(deps.store.db)
    .list()
    .map((r) => sshKeyView(deps, r, now))
    .filter((v) => person === undefined || v.person === person);
}

export function sshKeyView(deps: SshKeyDeps, r: SshKeyRecord, now = Date.now()): SshKeyView {
  const key = deps.keys.get(r.keyId);
  const person = deps.persons.personOf(`key:${r.keyId}`) ?? null;
  return {
    fingerprint: r.fingerprint,
    algo: r.algo,
    comment: r.comment,
    keyId: r.keyId,
    keyName: key?.name ?? null,
    person,
    personName: person ? (deps.persons.get(person)?.name ?? null) : null,
    createdAt: r.createdAt,
    createdBy: r.createdBy,
    expiresAt: key?.expiresAt ?? null,
    state: keyState(key, now),
  };
}
