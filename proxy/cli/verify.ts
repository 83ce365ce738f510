import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { CheckpointSigner, KEY_NAME_META, publicKeyInfo, type PublicKeyInfo } from '../audit/checkpoint-signer';
import { progressReporter } from '../audit/progress';
import { parseVerifierKey } from '../audit/signed-note';
import { loadSinceAnchor, readBundleFiles } from '../audit/verify/bundle';
import { VerifyInputError, type VerifyReport } from '../audit/verify/checks';
import { verifyPathParallel } from '../audit/verify-runner';
import { noStoreMessage, resolveConfig } from '../config';
import { type Io, type ParsedArgs, processIo, rejectUnknown, str, strs, UsageError } from './args';

const n = (v: number) => v.toLocaleString('en-US');

/**
 * `custody verify [PATH] [--since-checkpoint FILE] [--key VKEY|FINGERPRINT] [--json]` — PATH is a data
 * dir or an exported bundle (default: the data dir of --config/--data-dir). Exit 0 only when intact;
 * otherwise one line on stderr naming the first bad seq and what is wrong.
 * `custody verify --show-key [PATH]` prints the signing key's verifier key and fingerprint.
 */
export async function verifyCommand(args: ParsedArgs, io: Io): Promise<number> {
  rejectUnknown(args, ['config', 'data-dir', 'since-checkpoint', 'key', 'witness-key', 'json', 'show-key']);
  if (args.positionals.length > 2) throw new UsageError('usage: custody verify [PATH] [--since-checkpoint FILE] [--key VKEY|FINGERPRINT] [--witness-key VKEY ...] [--json] | custody verify --show-key [PATH]');
  let path = args.positionals[1];
  if (path === undefined) {
    const resolved = resolveConfig({ config: str(args, 'config'), dataDir: str(args, 'data-dir') });
    if (!existsSync(join(resolved.dataDir, 'custody.db'))) throw new VerifyInputError(noStoreMessage(resolved));
    path = resolved.dataDir;
  }
  if (!existsSync(path)) throw new VerifyInputError(`${path}: no such file or directory`);

  if (args.flags['show-key']) {
    const info = showKey(path);
    if (args.flags['json']) io.out(`${JSON.stringify(info)}\n`);
    else io.out(`verifier key: ${info.verifierKey}\nfingerprint:  ${info.fingerprint}\nkey name:     ${info.name}\nkey id:       ${info.keyId}\n`);
    return 0;
  }

  const sinceFile = str(args, 'since-checkpoint');
  const since = sinceFile ? loadSinceAnchor(sinceFile) : undefined;
  const progress = progressReporter('verifying', { write: io.err, isTTY: io === processIo && !!process.stderr.isTTY });
  const report = await verifyPathParallel(path, { since, expectedKey: str(args, 'key'), witnessKeys: strs(args, 'witness-key'), onProgress: progress.update });
  progress.end();
  if (args.flags['json']) io.out(`${JSON.stringify(report, null, 2)}\n`);
  if (!report.ok) {
    const f = report.failure!;
    io.err(`custody verify: FAILED${f.seq !== undefined ? ` at seq ${f.seq}` : ''}: ${f.problem} — ${f.message}\n`);
    return 1;
  }
  if (!args.flags['json']) io.out(summary(report));
  return 0;
}

function summary(r: VerifyReport): string {
  const lines: string[] = [];
  if (r.source === 'store') {
    lines.push(`OK: ${r.path} is intact: ${n(r.events)} events; chain and Merkle tree recomputed; ${r.checkpointsChecked} signed checkpoint${r.checkpointsChecked === 1 ? '' : 's'} verified`);
  } else {
    lines.push(`OK: bundle ${r.path} is intact: ${n(r.events)} events${r.filtered ? ' (filtered export)' : ''}, each proven included in the signed checkpoint of ${n(r.treeSize)} events; manifest and signatures verified`);
  }
  lines.push(`tree: ${n(r.treeSize)} events, root ${r.rootHash}`);
  if (r.latestCheckpoint) lines.push(`latest checkpoint: ${n(r.latestCheckpoint.treeSize)} events${r.latestCheckpoint.time !== undefined ? `, signed ${new Date(r.latestCheckpoint.time).toISOString()}` : ''}`);
  lines.push(`payloads: ${n(r.payloadsChecked)} checked against their hashes, ${n(r.payloadsPurged)} purged by retention (hashes kept)`);
  if (r.since) lines.push(`consistent with the checkpoint of ${n(r.since.treeSize)} events in ${r.since.source}`);
  for (const w of r.witnessed ?? []) lines.push(`witness ${w.witness}: cosigned the tree of ${n(w.treeSize)} events (${new Date(w.cosignedAt).toISOString()}); the log still matches it`);
  if (r.key) lines.push(`signing key: ${r.key.verifierKey}`, `fingerprint: ${r.key.fingerprint}`);
  for (const k of r.keyRotations) lines.push(`note: the signing key was replaced by ${k.fingerprint} at seq ${k.seq} (recorded in the log)`);
  lines.push(`verified in ${(r.durationMs / 1000).toFixed(2)} s`);
  return `${lines.join('\n')}\n`;
}

function showKey(path: string): PublicKeyInfo {
  if (statSync(path).isDirectory() && !existsSync(join(path, 'manifest.json'))) {
    const dbFile = join(path, 'custody.db');
    let name: string | undefined;
    if (existsSync(dbFile)) {
      const db = new Database(dbFile, { readonly: true, fileMustExist: true });
      try {
        name = (db.prepare('SELECT value FROM meta WHERE key = ?').get(KEY_NAME_META) as { value: string } | undefined)?.value;
      } finally {
        db.close();
      }
    }
    const signer = name ? CheckpointSigner.load(path, name) : undefined;
    if (!signer) throw new VerifyInputError(`${path}: no checkpoint signing key yet (the gateway creates it on first start)`);
    return signer.info();
  }
  const files = readBundleFiles(path);
  const line = files.get('public-key.txt')?.toString('utf8').split('\n')[0];
  if (!line) throw new VerifyInputError(`${path}: the bundle has no public-key.txt`);
  return publicKeyInfo(parseVerifierKey(line));
}
