import { readFileSync } from 'node:fs';
import { parseDuration } from '../../shared/config';
import type { KeyCreatedPayload, KeyRevokedPayload } from '../../shared/events';
import type { ApiKeyRecord } from '../../shared/identity';
import { AuditStore } from '../audit/store';
import { resolveConfig } from '../config';
import { ApiKeyStore } from '../identity/api-keys';
import { ConsoleSessions } from '../identity/console-sessions';
import { PersonDirectory, PersonError } from '../identity/persons';
import { registerSshKey, removeSshKey, type SshKeyTarget } from '../identity/ssh-key-registry';
import { parseSshPublicKey, SshKeyError, SshKeyStore } from '../identity/ssh-keys';
import { type Io, type ParsedArgs, rejectUnknown, str, UsageError } from './args';

/** `custody keys create|list|revoke|expire` against the store of --config/--data-dir. */
export async function keysCommand(args: ParsedArgs, io: Io): Promise<number> {
  const [, sub, id] = args.positionals;
  const { dataDir } = resolveConfig({ config: str(args, 'config'), dataDir: str(args, 'data-dir') });
  const store = AuditStore.open(dataDir);
  try {
    const keys = new ApiKeyStore(store.db);
    switch (sub) {
      case 'create': {
        rejectUnknown(args, ['config', 'data-dir', 'name', 'owner', 'groups', 'expires', 'json']);
        const name = str(args, 'name');
        if (!name) throw new UsageError('keys create needs --name NAME');
        const { key, record, person } = createOwnedKey(store, keys, args, name, 'custody keys create');
        const { groups, expiresAt } = record;
        if (args.flags['json']) io.out(`${JSON.stringify({ key, ...record, person })}\n`);
        else {
          io.out(`${key}\n`);
          io.err(`Created key ${record.id} "${name}" (groups: ${groups.join(',') || 'none'}${expiresAt ? `, expires ${new Date(expiresAt).toISOString()}` : ''}). It is shown only once.\n`);
        }
        return 0;
      }
      case 'list': {
        rejectUnknown(args, ['config', 'data-dir', 'json']);
        const list = keys.list();
        if (args.flags['json']) io.out(`${JSON.stringify(list, null, 2)}\n`);
        else {
          const now = Date.now();
          for (const k of list) {
            const state = k.revokedAt ? 'revoked' : k.expiresAt && k.expiresAt <= now ? 'expired' : 'active';
            io.out(`${k.id}  ${state.padEnd(7)}  ${k.name}  groups=${k.groups.join(',')}  created=${new Date(k.createdAt).toISOString()}${k.expiresAt ? `  expires=${new Date(k.expiresAt).toISOString()}` : ''}\n`);
          }
          if (!list.length) io.err('no keys\n');
        }
        return 0;
      }
      case 'revoke':
      case 'expire': {
        rejectUnknown(args, ['config', 'data-dir']);
        if (!id) throw new UsageError(`keys ${sub} needs a key id (see custody keys list)`);
        const ok = sub === 'revoke' ? keys.revoke(id) : keys.expire(id);
        if (!ok) {
          io.err(`custody: no ${sub === 'revoke' ? 'active ' : ''}key ${id}\n`);
          return 1;
        }
        const ended = new ConsoleSessions(store.db).deleteForKey(id);
        store.append({ kind: 'key.revoked', actor: 'cli', payload: { id, how: sub, consoleSessionsEnded: ended } satisfies KeyRevokedPayload });
        io.err(`Key ${id} ${sub === 'revoke' ? 'revoked' : 'expired'}.\n`);
        return 0;
      }
      case 'add-ssh': {
        // add-ssh FILE --key ID: log in as an existing API key; add-ssh FILE --owner PERSON: a new key of that person's, used only through SSH.
        rejectUnknown(args, ['config', 'data-dir', 'key', 'owner', 'name', 'groups', 'expires', 'json']);
        const file = id;
        if (!file) throw new UsageError('keys add-ssh needs the public key file (id_ed25519.pub, or - for stdin) and --key KEY_ID or --owner PERSON');
        let text: string;
        try {
          text = readFileSync(file === '-' ? 0 : file, 'utf8');
        } catch (err) {
          throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
        }
        // The key text is checked first: a bad key is the error to report whatever else is wrong.
        sshKeyOrUsage(() => parseSshPublicKey(text));
        const keyArg = str(args, 'key');
        const ownerArg = str(args, 'owner');
        if (!!keyArg === !!ownerArg) throw new UsageError('keys add-ssh needs exactly one of --key KEY_ID (log in as that API key) or --owner PERSON (a new key of theirs)');
        if (keyArg && (str(args, 'groups') !== undefined || str(args, 'name') !== undefined || str(args, 'expires') !== undefined)) throw new UsageError('--groups, --name and --expires go with --owner; with --key the SSH key logs in as that API key, groups and expiry included');
        const persons = new PersonDirectory(store);
        let target: SshKeyTarget;
        if (keyArg) target = { keyId: keyArg };
        else {
          let person: string;
          try {
            person = persons.resolve(ownerArg!).id;
          } catch (err) {
            if (err instanceof PersonError) throw new UsageError(`--owner: ${err.message}`);
            throw err;
          }
          const name = str(args, 'name');
          target = { person, groups: groupsArg(args), expiresAt: expiresArg(args), ...(name ? { name } : {}) };
        }
        const { record: added, createdKey } = sshKeyOrUsage(() => registerSshKey({ store, keys, persons }, text, target, { subject: 'cli' }, 'custody keys add-ssh'));
        if (args.flags['json']) io.out(`${JSON.stringify({ ...added, ...(createdKey ? { createdKey } : {}) })}\n`);
        else {
          io.out(`${added.fingerprint}\n`);
          io.err(`Registered ${added.algo} key ${added.fingerprint}${added.comment ? ` (${added.comment})` : ''}: it logs in to ssh connections as API key ${added.keyId}${createdKey ? ` (new, groups: ${createdKey.groups.join(',') || 'none'}, person ${createdKey.person})` : ''}.\n`);
        }
        return 0;
      }
      case 'list-ssh': {
        rejectUnknown(args, ['config', 'data-dir', 'json']);
        const list = new SshKeyStore(store.db).list(id);
        if (args.flags['json']) io.out(`${JSON.stringify(list, null, 2)}\n`);
        else {
          for (const k of list) io.out(`${k.fingerprint}  ${k.algo}  key=${k.keyId}  ${k.comment ?? ''}  added=${new Date(k.createdAt).toISOString()}\n`);
          if (!list.length) io.err('no SSH keys\n');
        }
        return 0;
      }
      case 'remove-ssh': {
        rejectUnknown(args, ['config', 'data-dir']);
        if (!id) throw new UsageError('keys remove-ssh needs a fingerprint (SHA256:…, see custody keys list-ssh)');
        try {
          removeSshKey({ store, keys, persons: new PersonDirectory(store) }, id, { subject: 'cli' });
        } catch (err) {
          if (!(err instanceof SshKeyError)) throw err;
          io.err(`custody: ${err.message}\n`);
          return 1;
        }
        io.err(`SSH key ${id} removed; it no longer logs in (sessions already open with it go on until they end).\n`);
        return 0;
      }
      default:
        throw new UsageError(
          'usage: custody keys create --name N [--owner PERSON] --groups a,b [--expires 30d] | keys list | keys revoke ID | keys expire ID | keys add-ssh FILE (--key ID | --owner PERSON --groups a,b [--name N] [--expires 30d]) | keys list-ssh [ID] | keys remove-ssh FINGERPRINT',
        );
    }
  } finally {
    store.close();
  }
}

/**
 * Creates an API key owned by a person: --owner names one (id or unique name), else a person named
 * like the key is created (recorded), so each key created without an owner is its own person.
 */
function createOwnedKey(store: AuditStore, keys: ApiKeyStore, args: ParsedArgs, name: string, how: string): { key: string; record: ApiKeyRecord; person: string } {
  const groups = groupsArg(args);
  const expiresAt = expiresArg(args);
  const persons = new PersonDirectory(store);
  const ownerArg = str(args, 'owner');
  let person: string;
  try {
    person = ownerArg ? persons.resolve(ownerArg).id : persons.create(name, 'cli', `owner of a new API key (${how})`).id;
  } catch (err) {
    if (err instanceof PersonError) throw new UsageError(`--owner: ${err.message}`);
    throw err;
  }
  const { key, record } = keys.create({ name, groups, expiresAt, createdBy: 'cli' });
  persons.attach(`key:${record.id}`, 'api-key', person, 'cli');
  store.append({ kind: 'key.created', actor: 'cli', payload: { id: record.id, name, groups, expiresAt, person } satisfies KeyCreatedPayload });
  return { key, record, person };
}

function groupsArg(args: ParsedArgs): string[] {
  return (str(args, 'groups') ?? '').split(',').map((g) => g.trim()).filter(Boolean);
}

function expiresArg(args: ParsedArgs): number | null {
  const expires = str(args, 'expires');
  if (!expires) return null;
  try {
    return Date.now() + parseDuration(expires);
  } catch (err) {
    throw new UsageError(`--expires: ${(err as Error).message}`);
  }
}

function sshKeyOrUsage<T>(f: () => T): T {
  try {
    return f();
  } catch (err) {
    if (err instanceof SshKeyError) throw new UsageError(err.message);
    throw err;
  }
}
