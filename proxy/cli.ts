/**
 * `custody` — the command line. Each subcommand lives in proxy/cli/<name>.ts. Every failure prints
 * one clear line on stderr and exits non-zero (2 for usage errors).
 */
import { ConfigError } from './config';
import { type Io, type ParsedArgs, parseArgs, processIo, UsageError } from './cli/args';
import { exportCommand } from './cli/export';
import { gatewaysCommand } from './cli/gateways';
import { journalCommand } from './cli/journal';
import { keysCommand } from './cli/keys';
import { loginLinkCommand, personsCommand } from './cli/persons';
import { policyCommand } from './cli/policy';
import { serveCommand } from './cli/serve';
import { sshLoginCommand } from './cli/ssh-login';
import { verifyCommand } from './cli/verify';
import { witnessCommand } from './cli/witness';

type Command = (args: ParsedArgs, io: Io) => Promise<number>;

/** name → [handler, switches (flags without a value), one-line help] */
const COMMANDS: Record<string, [Command, string[], string]> = {
  serve: [serveCommand, [], 'serve [--config FILE] [--data-dir DIR]            run the gateway and the console'],
  keys: [keysCommand, ['json'], 'keys create --name N [--owner PERSON] --groups a,b [--expires 30d] | list | revoke ID | expire ID | add-ssh FILE (--key ID | --owner PERSON --groups a,b) | list-ssh | remove-ssh FP'],
  persons: [personsCommand, ['json'], 'persons list | create NAME | link PERSON CREDENTIAL | lock PERSON   who holds which credentials'],
  'ssh-login': [sshLoginCommand, ['json'], 'ssh-login (--token-file FILE | --issuer URL --client-id ID) [--gateway URL] [--ttl 8h] [--out FILE | --key FILE] [--connection C]   a short-lived SSH key for your OIDC identity'],
  'login-link': [loginLinkCommand, [], 'login-link                                   a fresh console login link (single use, 10 minutes)'],
  verify: [verifyCommand, ['json', 'show-key', 'show-keys', 'force-path-style'], 'verify [PATH | s3://BUCKET/PREFIX] [--since-checkpoint FILE] [--key FINGERPRINT] [--witness-key VKEY ...] [--endpoint URL --region R] | --show-key | --store postgres://… [--keys FILE] [--show-keys] [--witness-key VKEY [--ask-witness URL]]   check a data dir, bundle, segment, archive or shared store'],
  gateways: [gatewaysCommand, ['json'], 'gateways list | approve ID | remove ID --reason TEXT   gateways sharing the store of --config; approve a pending one, remove one from the group'],
  export: [exportCommand, [], 'export --out FILE [--from T] [--to T] [--user U] [--connection C]   evidence bundle'],
  journal: [journalCommand, ['json'], 'journal salvage                              fold a damaged journal\'s readable lines, keep the damaged ones aside'],
  witness: [witnessCommand, [], 'witness serve --key FILE --listen HOST:PORT --log-key VKEY [--log-key ...]   cosign another gateway\'s checkpoints'],
  policy: [policyCommand, ['json', 'strict'], 'policy check FILE [--strict] | dry-run FILE [--from T] [--to T]   validate / replay recorded traffic'],
};

export const USAGE = `usage: custody <command> [options]\n\n${Object.values(COMMANDS)
  .map(([, , help]) => `  custody ${help}`)
  .join('\n')}\n\nEvery command takes --config FILE or --data-dir DIR to find the store.\n`;

export async function main(argv: string[], io: Io = processIo): Promise<number> {
  const name = argv[0];
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    io.out(USAGE);
    return name ? 0 : 2;
  }
  if (name === '--version') {
    const { VERSION } = await import('./gateway');
    io.out(`${VERSION}\n`);
    return 0;
  }
  const entry = COMMANDS[name];
  if (!entry) {
    io.err(`custody: unknown command "${name}" (try custody --help)\n`);
    return 2;
  }
  if (argv.includes('--help') || argv.includes('-h')) {
    io.out(`usage: custody ${entry[2]}\n`);
    return 0;
  }
  try {
    return await entry[0](parseArgs(argv, entry[1]), io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`custody ${name}: ${err.message}\n`);
      return 2;
    }
    if (err instanceof ConfigError) {
      io.err(`custody: invalid config: ${err.message}\n`);
      return 1;
    }
    io.err(`custody ${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    if (process.env['CUSTODY_DEBUG'] && err instanceof Error) io.err(`${err.stack}\n`);
    return 1;
  }
}
