import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { CheckpointSigner, KEY_NAME_META, publicKeyInfo, type PublicKeyInfo } from '../audit/checkpoint-signer';
import { progressReporter } from '../audit/progress';
import { parseVerifierKey } from '../audit/signed-note';
import { loadSinceAnchor, readBundleFiles } from '../audit/verify/bundle';
import { VerifyInputError, type VerifyReport } from '../audit/verify/checks';
import { verifyPathParallel } from '../audit/verify-runner';
import { archiveLocation, normalizePrefix, parseS3Url, S3ObjectStore, type S3Location } from '../audit/archive/object-store';
import { verifyArchive } from '../audit/verify/archive';
import { noStoreMessage, resolveConfig } from '../config';
import { type Io, type ParsedArgs, processIo, rejectUnknown, str, strs, UsageError } from './args';

const n = (v: number) => v.toLocaleString('en-US');

/**
 * `custody verify [PATH] [--since-checkpoint FILE] [--key VKEY|FINGERPRINT] [--json]` — PATH is a data
 * dir, an exported bundle or an archive segment (default: the data dir of --config/--data-dir), or
 * `s3://bucket/prefix`, a whole archive (reached with --endpoint/--region/--force-path-style, the
 * AWS_* environment, or the audit.archive of --config). Exit 0 only when intact; otherwise one line
 * on stderr naming the first bad seq and what is wrong.
 * `custody verify --show-key [PATH]` prints the signing key's verifier key and fingerprint.
 */
export async function verifyCommand(args: ParsedArgs, io: Io): Promise<number> {
  rejectUnknown(args, ['config', 'data-dir', 'since-checkpoint', 'key', 'witness-key', 'json', 'show-key', 'endpoint', 'region', 'force-path-style']);
  if (args.positionals.length > 2) throw new UsageError('usage: custody verify [PATH | s3://BUCKET/PREFIX] [--since-checkpoint FILE] [--key VKEY|FINGERPRINT] [--witness-key VKEY ...] [--json] | custody verify --show-key [PATH]');
  let path = args.positionals[1];
  const archive = path?.startsWith('s3://');
  if (!archive && (args.flags['endpoint'] || args.flags['region'] || args.flags['force-path-style'])) throw new UsageError('--endpoint, --region and --force-path-style go with an s3:// archive address');
  if (archive && args.flags['show-key']) throw new UsageError('--show-key reads a data dir or a bundle, not an archive');
  if (path === undefined) {
    const resolved = resolveConfig({ config: str(args, 'config'), dataDir: str(args, 'data-dir') });
    if (!existsSync(join(resolved.dataDir, 'custody.db'))) throw new VerifyInputError(noStoreMessage(resolved));
    path = resolved.dataDir;
  }
  if (!archive && !existsSync(path)) throw new VerifyInputError(`${path}: no such file or directory`);

  if (args.flags['show-key']) {
    const info = showKey(path);
    if (args.flags['json']) io.out(`${JSON.stringify(info)}\n`);
    else io.out(`verifier key: ${info.verifierKey}\nfingerprint:  ${info.fingerprint}\nkey name:     ${info.name}\nkey id:       ${info.keyId}\n`);
    return 0;
  }

  const sinceFile = str(args, 'since-checkpoint');
  const since = sinceFile ? loadSinceAnchor(sinceFile) : undefined;
  const progress = progressReporter('verifying', { write: io.err, isTTY: io === processIo && !!process.stderr.isTTY });
  const opts = { since, expectedKey: str(args, 'key'), witnessKeys: strs(args, 'witness-key'), onProgress: progress.update };
  let report: VerifyReport;
  if (archive) {
    const objects = new S3ObjectStore(archiveLocationFor(path, args));
    try {
      report = await verifyArchive(objects, path, opts);
    } finally {
      await objects.close();
    }
  } else report = await verifyPathParallel(path, opts);
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

/**
 * Where `s3://bucket/prefix` is and how to reach it: the flags, then the audit.archive of --config
 * when it names the same bucket (its endpoint, region and credentials), then AWS_ENDPOINT_URL_S3 /
 * AWS_ENDPOINT_URL; credentials the config does not give come from the AWS SDK's own chain
 * (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ~/.aws, instance roles).
 */
function archiveLocationFor(url: string, args: ParsedArgs): S3Location {
  let parsed: { bucket: string; prefix: string };
  try {
    parsed = parseS3Url(url);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { bucket, prefix } = parsed;
  const configFile = str(args, 'config');
  const configured = configFile ? resolveConfig({ config: configFile }).config.audit.archive : undefined;
  const base: Partial<S3Location> = configured && configured.s3.bucket === bucket ? archiveLocation(configured) : {};
  const endpoint = str(args, 'endpoint') ?? base.endpoint ?? process.env['AWS_ENDPOINT_URL_S3'] ?? process.env['AWS_ENDPOINT_URL'];
  if (endpoint !== undefined && !/^https?:\/\/[^\s/]+\/?$/.test(endpoint)) throw new UsageError(`--endpoint ${endpoint}: an endpoint URL such as https://s3.eu-central-1.amazonaws.com or http://127.0.0.1:9000`);
  return {
    ...base,
    bucket,
    prefix: normalizePrefix(prefix),
    endpoint,
    region: str(args, 'region') ?? base.region,
    forcePathStyle: args.flags['force-path-style'] ? true : base.forcePathStyle,
  };
}

function summary(r: VerifyReport): string {
  const lines: string[] = [];
  if (r.source === 'store') {
    lines.push(`OK: ${r.path} is intact: ${n(r.events)} events; chain and Merkle tree recomputed; ${r.checkpointsChecked} signed checkpoint${r.checkpointsChecked === 1 ? '' : 's'} verified`);
  } else if (r.source === 'archive') {
    lines.push(`OK: archive ${r.path} is intact: ${n(r.segments ?? 0)} segment${r.segments === 1 ? '' : 's'} holding seq 1–${n(r.treeSize)} with no gap or overlap, each verified on its own and chained to the one before`);
  } else if (r.segment) {
    lines.push(`OK: segment ${r.path} is intact: seq ${n(r.segment.firstSeq)}–${n(r.segment.lastSeq)} (segment ${r.segment.index}), each event proven included in the signed checkpoint of ${n(r.treeSize)} events, which is consistent with the tree of ${n(r.segment.previous.treeSize)} events it continues; manifest and signatures verified`);
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
