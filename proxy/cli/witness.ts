import { generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { formatCosignerKey } from '../audit/cosignature';
import { ed25519RawPublicKey, isValidKeyName, loadEd25519PrivateKey, type NoteVerifier, parseVerifierKey } from '../audit/signed-note';
import { Witness } from '../audit/witness';
import { type Io, type ParsedArgs, rejectUnknown, str, strs, UsageError } from './args';

const USAGE = 'usage: custody witness serve --key FILE --listen HOST:PORT --log-key VKEY [--log-key VKEY ...] [--name NAME] [--state FILE]';

/**
 * `custody witness serve` — a tlog-witness for other hosts' gateways. The key file (PKCS#8 PEM
 * Ed25519) is created, mode 0600, when it does not exist; the witness's verifier key is printed on
 * start, for the gateways' `audit.witnesses[].key` and for `custody verify --witness-key`. State
 * (the latest checkpoint cosigned per log) lives in `<key file>.state.json` unless --state says.
 */
export async function witnessCommand(args: ParsedArgs, io: Io): Promise<number> {
  rejectUnknown(args, ['key', 'listen', 'log-key', 'name', 'state']);
  if (args.positionals[1] !== 'serve' || args.positionals.length > 2) throw new UsageError(USAGE);
  const keyFile = str(args, 'key');
  const listen = str(args, 'listen');
  if (!keyFile || !listen) throw new UsageError(`${USAGE} (--key and --listen are required)`);
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(listen);
  if (!m || Number(m[2]) > 65535) throw new UsageError(`--listen: an address such as 127.0.0.1:7430, not "${listen}"`);
  const name = str(args, 'name') ?? `witness/${hostname().replace(/[\s+]/gu, '-') || 'localhost'}`;
  if (!isValidKeyName(name)) throw new UsageError(`--name "${name}" cannot be a key name (no spaces or "+")`);
  const logKeys = strs(args, 'log-key');
  if (!logKeys.length) throw new UsageError(`${USAGE} (at least one --log-key: the verifier key of a gateway this witness accepts)`);
  const logs = new Map<string, NoteVerifier[]>();
  for (const k of logKeys) {
    let v: NoteVerifier;
    try {
      v = parseVerifierKey(k);
    } catch (err) {
      throw new UsageError(`--log-key ${k}: ${(err as Error).message}`);
    }
    logs.set(v.name, [...(logs.get(v.name) ?? []), v]);
  }
  if (!existsSync(keyFile)) {
    const { privateKey } = generateKeyPairSync('ed25519');
    writeFileSync(keyFile, privateKey.export({ format: 'pem', type: 'pkcs8' }) as string, { mode: 0o600, flag: 'wx' });
  }
  let privateKey;
  try {
    privateKey = loadEd25519PrivateKey(readFileSync(keyFile));
  } catch (err) {
    throw new Error(`${keyFile}: not a usable Ed25519 key (${(err as Error).message})`);
  }
  const witness = new Witness({ name, privateKey, stateFile: str(args, 'state') ?? `${keyFile}.state.json`, logs, onRefusal: (line) => io.err(`${line}\n`) });
  const server = witness.server();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(m[2]), m[1]!.replace(/^\[|\]$/g, ''), () => resolve());
  });
  const addr = server.address() as { address: string; port: number };
  const host = addr.address.includes(':') ? `[${addr.address}]` : addr.address;
  io.out(`witness ${name} listening on http://${host}:${addr.port}\nwitness key: ${formatCosignerKey(name, ed25519RawPublicKey(privateKey))}\nlogs: ${[...logs.keys()].join(', ')}\n`);
  await new Promise<void>((resolve) => {
    const stop = () => server.close(() => resolve());
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  return 0;
}
