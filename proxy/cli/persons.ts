import { AuditStore } from '../audit/store';
import { resolveConfig } from '../config';
import { ApiKeyStore } from '../identity/api-keys';
import { mintLoginLink } from '../identity/console-login';
import { ConsoleSessions } from '../identity/console-sessions';
import { LOCAL_PERSON, lockPerson, PersonDirectory, PersonError } from '../identity/persons';
import { type Io, type ParsedArgs, rejectUnknown, str, UsageError } from './args';

const PERSONS_USAGE = 'usage: custody persons list | create NAME [--id person_ID] | link PERSON CREDENTIAL | lock PERSON';

/**
 * `custody persons list|create|link|lock` against the store of --config/--data-dir. The host's
 * operator is trusted like an admin; every change is recorded with actor `cli`. A running gateway
 * sees a lock within a second and ends the person's live sessions.
 */
export async function personsCommand(args: ParsedArgs, io: Io): Promise<number> {
  const [, sub, a, b] = args.positionals;
  rejectUnknown(args, ['config', 'data-dir', 'json', 'id']);
  const { dataDir } = resolveConfig({ config: str(args, 'config'), dataDir: str(args, 'data-dir') });
  const store = AuditStore.open(dataDir);
  try {
    const persons = new PersonDirectory(store);
    const show = (value: unknown, line: string) => io.out(args.flags['json'] ? `${JSON.stringify(value, null, 2)}\n` : `${line}\n`);
    try {
      switch (sub) {
        case 'list': {
          const list = persons.list();
          if (args.flags['json']) io.out(`${JSON.stringify(list, null, 2)}\n`);
          for (const p of args.flags['json'] ? [] : list) {
            io.out(`${p.id}  ${p.lockedAt ? 'locked ' : 'active '}  ${p.name}  ${p.credentials.map((c) => c.credential).join(' ') || '(no credentials)'}\n`);
          }
          return 0;
        }
        case 'create': {
          if (!a) throw new UsageError(PERSONS_USAGE);
          // A chosen id (gateways of a shared store share persons whatever their ids; an id chosen
          // alike on gateways set up before they joined one store makes the same person of them).
          const id = str(args, 'id');
          if (id !== undefined && (!/^person_[A-Za-z0-9_-]{1,64}$/.test(id) || id === LOCAL_PERSON)) throw new UsageError(`--id must be person_ followed by 1 to 64 letters, digits, '_' or '-' (and not ${LOCAL_PERSON})`);
          if (id !== undefined && persons.get(id)) throw new PersonError(409, 'exists', `a person ${id} already exists`);
          const p = persons.create(a, 'cli', 'created from the command line', id);
          show(p, `Created person ${p.id} "${p.name}".`);
          return 0;
        }
        case 'link': {
          if (!a || !b) throw new UsageError(PERSONS_USAGE);
          const person = persons.resolve(a);
          const keys = new ApiKeyStore(store.db);
          const kind = b.startsWith('key:') ? (keys.get(b.slice(4)) ? 'api-key' : undefined) : b.includes('#') ? 'oidc' : undefined;
          if (!kind) throw new UsageError('CREDENTIAL is key:<key id> (see custody keys list) or <issuer>#<user claim>');
          persons.link(b, kind, person.id, 'cli');
          show(persons.get(person.id), `${b} now belongs to ${person.id} "${person.name}".`);
          return 0;
        }
        case 'lock': {
          if (!a) throw new UsageError(PERSONS_USAGE);
          const person = persons.resolve(a);
          const done = lockPerson({ persons, keys: new ApiKeyStore(store.db), consoleSessions: new ConsoleSessions(store.db) }, person.id, 'cli');
          show(done, `Locked ${person.id} "${person.name}": ${done.keysRevoked.length} key(s) revoked, ${done.consoleSessionsEnded} console session(s) ended; a running gateway ends their other sessions within a second.`);
          return 0;
        }
        default:
          throw new UsageError(PERSONS_USAGE);
      }
    } catch (err) {
      if (err instanceof PersonError) {
        io.err(`custody persons: ${err.message}\n`);
        return 1;
      }
      throw err;
    }
  } finally {
    store.close();
  }
}

/** `custody login-link`: a fresh single-use link for the local user, valid 10 minutes. */
export async function loginLinkCommand(args: ParsedArgs, io: Io): Promise<number> {
  rejectUnknown(args, ['config', 'data-dir']);
  const { config, dataDir } = resolveConfig({ config: str(args, 'config'), dataDir: str(args, 'data-dir') });
  const store = AuditStore.open(dataDir);
  try {
    const { token, expiresAt } = mintLoginLink(store.db, 'cli');
    const address = config.listen.control.replace(/^0\.0\.0\.0:/, '127.0.0.1:').replace(/^\[::\]:/, '[::1]:');
    io.out(`http://${address}/login?token=${token}\n`);
    io.err(`Signs in once, until ${new Date(expiresAt).toISOString()}.\n`);
    return 0;
  } finally {
    store.close();
  }
}
