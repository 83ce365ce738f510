import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { CheckpointSigner, KEY_NAME_META, publicKeyInfo, type PublicKeyInfo } from '../audit/checkpoint-signer';
import { progressReporter } from '../audit/progress';
import { formatVerifierKey, parseVerifierKey } from '../audit/signed-note';
import { listGateways, rowVerifier } from '../audit/shared-store/enrolment';
import { connectStore, storeLabel } from '../audit/shared-store/schema';
import { parsePinnedKeys, type SharedStoreReport, verifySharedStore } from '../audit/verify/shared-store';
import { groupSectionOf, verifyGroupBundle } from '../audit/verify/group-bundle';
import { type DerivedReport, verifyDerived } from '../audit/verify/derived';
import { storeUrlProblem } from '../../shared/config';
import { loadSinceAnchor, readBundleFiles, verifyBundleFiles } from '../audit/verify/bundle';
import { checkExpectedKeyFormat, parseWitnessKeys, VerifyInputError, type VerifyReport } from '../audit/verify/checks';
import { groupId } from '../audit/shared-store/enrolment';
import { groupLogVerifier } from '../audit/shared-store/group-log';
import { askWitness } from '../audit/verify/combined';
import { verifyPathParallel } from '../audit/verify-runner';
import { archiveLocation, normalizePrefix, parseS3Url, S3ObjectStore, type S3Location } from '../audit/archive/object-store';
import { verifyArchive } from '../audit/verify/archive';
import { noStoreMessage, resolveConfig } from '../config';
import { type Io, type ParsedArgs, processIo, rejectUnknown, str, strs, UsageError } from './args';

const n = (v: number) => v.toLocaleString('en-US');

/**
 * `custody verify [PATH] [--since-checkpoint FILE] [--key VKEY|FINGERPRINT] [--keys FILE] [--json]` —
 * PATH is a data dir, an exported bundle or an archive segment (default: the data dir of
 * --config/--data-dir), or `s3://bucket/prefix`, a whole archive (reached with
 * --endpoint/--region/--force-path-style, the AWS_* environment, or the audit.archive of --config).
 * A bundle exported in a group is also checked chain by chain as `--store` checks the store, with
 * the group's keys pinned by `--keys FILE`. Exit 0 only when intact; otherwise one line on stderr
 * naming the first bad seq and what is wrong (a line per problem found in the group's chains).
 * `custody verify --show-key [PATH]` prints the signing key's verifier key and fingerprint.
 */
export async function verifyCommand(args: ParsedArgs, io: Io): Promise<number> {
  if (args.flags['store'] !== undefined) return verifyStoreCommand(args, io);
  if (args.flags['show-keys']) throw new UsageError('--show-keys goes with --store postgres://…');
  rejectUnknown(args, ['config', 'data-dir', 'since-checkpoint', 'key', 'keys', 'witness-key', 'json', 'show-key', 'endpoint', 'region', 'force-path-style']);
  if (args.positionals.length > 2) throw new UsageError('usage: custody verify [PATH | s3://BUCKET/PREFIX] [--since-checkpoint FILE] [--key VKEY|FINGERPRINT] [--keys FILE] [--witness-key VKEY ...] [--json] | custody verify --show-key [PATH]');
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
  const bundle = !archive && (!statSync(path).isDirectory() || existsSync(join(path, 'manifest.json')));
  if (args.flags['keys'] !== undefined && !bundle) throw new UsageError('--keys goes with --store postgres://… or a bundle exported in a group');
  const pinned = pinnedKeys(args);

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
  let group: SharedStoreReport | undefined;
  let derived: DerivedReport | undefined;
  if (archive) {
    const objects = new S3ObjectStore(archiveLocationFor(path, args));
    try {
      report = await verifyArchive(objects, path, opts);
    } finally {
      await objects.close();
    }
  } else if (bundle) {
    // The exporting gateway's own part as always; a group's chains beside it, from the same files.
    checkExpectedKeyFormat(opts.expectedKey);
    const files = readBundleFiles(path);
    report = verifyBundleFiles(files, path, opts);
    const section = groupSectionOf(files);
    if (section) group = await verifyGroupBundle(files, path, section, { pinned, witnesses: parseWitnessKeys(opts.witnessKeys) });
    else if (pinned) throw new VerifyInputError(`${path} was not exported in a group (it carries one chain): --keys does not apply; pin its key with --key`);
    // ocsf.jsonl and holds.json against the events just verified (an archive segment has neither to hold).
    if (report.key && !report.segment) derived = verifyDerived(files, report.key.fingerprint);
  } else report = await verifyPathParallel(path, opts);
  progress.end();
  if (args.flags['json']) io.out(`${JSON.stringify({ ...report, ...(group ? { group } : {}), ...(derived ? { derived } : {}) }, null, 2)}\n`);
  if (!report.ok) {
    const f = report.failure!;
    io.err(`custody verify: FAILED${f.seq !== undefined ? ` at seq ${f.seq}` : ''}: ${f.problem} — ${f.message}\n`);
  }
  if (group && !group.ok) for (const f of group.failures) io.err(`custody verify: FAILED: ${f.problem} — ${f.message}\n`);
  for (const f of derived?.failures ?? []) io.err(`custody verify: FAILED: ${f.problem} — ${f.message}\n`);
  if (!report.ok || (group && !group.ok) || derived?.failures.length) return 1;
  if (!args.flags['json']) io.out(summary(report) + (group ? `${chainsSummary(group, `the group's chains in ${path} are`, 'the bundle').join('\n')}\n` : '') + (derived ? `${derivedSummary(derived)}\n` : ''));
  return 0;
}

/** `--keys FILE`: the pinned keys (verifier keys or fingerprints, one a line), or undefined without the flag. */
function pinnedKeys(args: ParsedArgs): Set<string> | undefined {
  const keysFile = str(args, 'keys');
  if (args.flags['keys'] !== undefined && !keysFile) throw new UsageError('--keys needs a FILE');
  if (!keysFile) return undefined;
  let text: string;
  try {
    text = readFileSync(keysFile, 'utf8');
  } catch (err) {
    throw new VerifyInputError(`${keysFile}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  try {
    return parsePinnedKeys(text);
  } catch (err) {
    throw new VerifyInputError(`${keysFile}: ${(err as Error).message}`);
  }
}

/** What verify says of a bundle's ocsf.jsonl and holds.json, held to its events. */
function derivedSummary(d: DerivedReport): string {
  if (!d.checked) return 'ocsf.jsonl and holds.json: held to the manifest only (the bundle was exported before they were derived from its events alone)';
  return `ocsf.jsonl: ${n(d.ocsfRecords)} record${d.ocsfRecords === 1 ? '' : 's'}, each mapped again from its event; every exported event mapped has its record\nholds.json: ${n(d.holds)} hold${d.holds === 1 ? '' : 's'}, each as its hold.created, hold.vote and hold.resolved events in the bundle say`;
}

/** What `verify --store` says of a store's chains, and `verify BUNDLE` of a group bundle's. */
function chainsSummary(report: SharedStoreReport, subject: string, where: string): string[] {
  const lines = [`OK: ${subject} intact: ${n(report.chains.length)} chain${report.chains.length === 1 ? '' : 's'}, ${n(report.events)} events; hash links, payloads and signed checkpoints verified`];
  for (const c of report.chains) {
    const trust = c.trust?.by === 'approval' ? `approved at seq ${c.trust.seq} of ${c.trust.approver}` : c.trust?.by === 'pinned' ? 'pinned key' : 'first enrolled gateway';
    const removed = c.removed ? `; removed from the group at seq ${c.removed.seq} of ${c.removed.by}${c.removed.reason ? ` (${c.removed.reason})` : ''}` : '';
    const purged = c.payloadsPurged ? ` (${n(c.payloadsPurged)} payloads purged by retention)` : '';
    lines.push(`  ${c.gateway} (${c.name}): ${n(c.events)} events${purged}, ${c.checkpointsChecked} checkpoint${c.checkpointsChecked === 1 ? '' : 's'}, signed through seq ${n(c.signedThrough)}; ${trust}${removed}`);
  }
  const cc = report.combined;
  if (cc.latest) lines.push(`combined checkpoints: ${n(cc.checked)} verified with ${n(cc.cosignatures)} cosignatures; each chain still reaches what they committed to; the latest (${new Date(cc.latest.time).toISOString()}) covers ${cc.latest.chains} chain${cc.latest.chains === 1 ? '' : 's'}, made by ${cc.latest.maker}, cosigned by ${cc.latest.cosigners.length}`);
  else lines.push(`combined checkpoints: none in ${where}`);
  for (const w of report.witnessed ?? []) {
    const behind = w.of - w.treeSize;
    lines.push(`witness ${w.witness}: cosigned the group log of combined checkpoints at ${n(w.treeSize)} of ${n(w.of)} (${new Date(w.cosignedAt).toISOString()})${behind ? `; the ${n(behind)} made since are not cosigned yet` : ''}; ${where} still gives every head it cosigned`);
  }
  if (!report.pinned) lines.push('note: no --keys given: the first enrolled gateway was trusted on first use; pin keys with --keys FILE (custody verify --store URL --show-keys lists them)');
  lines.push(`verified in ${(report.durationMs / 1000).toFixed(2)} s`);
  return lines;
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

/**
 * `custody verify --store postgres://… [--keys FILE] [--json]`: every chain in a shared store
 * (verify/shared-store.ts). `--show-keys` lists the gateways' keys to pin. The password, if the
 * server asks for one, comes from PGPASSWORD (never from the URL on a command line).
 */
async function verifyStoreCommand(args: ParsedArgs, io: Io): Promise<number> {
  rejectUnknown(args, ['store', 'keys', 'show-keys', 'json', 'witness-key', 'ask-witness']);
  const url = str(args, 'store');
  if (!url) throw new UsageError('--store needs a URL: custody verify --store postgres://HOST/DB [--keys FILE] [--witness-key VKEY|FILE ...] [--ask-witness URL ...]');
  const witnesses = parseWitnessKeys(strs(args, 'witness-key'));
  const ask = strs(args, 'ask-witness');
  if (ask.length && !witnesses.length) throw new UsageError('--ask-witness needs the witness key too (--witness-key VKEY|FILE): its answer is checked against it');
  const problem = storeUrlProblem(url);
  if (problem) throw new UsageError(`--store: ${problem}`);
  const pinned = pinnedKeys(args);
  const client = await connectStore({ connectionString: url });
  try {
    const tables = await client.query<{ t: string | null }>("SELECT to_regclass('custody_gateways')::text AS t");
    if (!tables.rows[0]?.t) throw new VerifyInputError(`${storeLabel(url)} is not a Custody shared store (no custody_gateways table)`);
    if (args.flags['show-keys']) {
      const rows = await listGateways(client);
      const group = await groupId(client);
      // The group log key: the same key under the name of the group's log of combined checkpoints (custody witness serve --log-key).
      const groupKey = (r: (typeof rows)[number]) => (group ? formatVerifierKey(groupLogVerifier(group, rowVerifier(r).publicKey)) : undefined);
      if (args.flags['json']) io.out(`${JSON.stringify(rows.map((r) => ({ id: r.id, name: r.name, status: r.status, verifierKey: formatVerifierKey(rowVerifier(r)), ...(group ? { groupLogKey: groupKey(r) } : {}) })))}\n`);
      else for (const r of rows) io.out(`${r.id}  ${r.status.padEnd(8)}  ${r.name}\n  verifier key: ${formatVerifierKey(rowVerifier(r))}\n${group ? `  group log key: ${groupKey(r)}\n` : ''}`);
      return 0;
    }
    // --ask-witness: what each witness itself last cosigned of the group log, beside the rows the store keeps.
    const group = ask.length ? await groupId(client) : undefined;
    if (ask.length && !group) throw new VerifyInputError(`${storeLabel(url)} has no group yet: nothing for a witness to have cosigned`);
    const askedWitnessRows = await Promise.all(ask.map((u) => askWitness(u, group!, witnesses)));
    const report = await verifySharedStore(client, { store: storeLabel(url), pinned, witnesses, askedWitnessRows });
    if (args.flags['json']) io.out(`${JSON.stringify(report, null, 2)}\n`);
    if (!report.ok) {
      for (const f of report.failures) io.err(`custody verify: FAILED: ${f.problem} — ${f.message}\n`);
      return 1;
    }
    if (!args.flags['json']) io.out(`${chainsSummary(report, `${report.store} is`, 'the store').join('\n')}\n`);
    return 0;
  } finally {
    await client.end().catch(() => {});
  }
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
  for (const w of r.witnessed ?? []) {
    if (r.source === 'archive') lines.push(`witness ${w.witness}: cosigned the checkpoint of every segment, the newest of ${n(w.treeSize)} events (${new Date(w.cosignedAt).toISOString()})`);
    else if (r.segment) lines.push(`witness ${w.witness}: cosigned the segment's checkpoint of ${n(w.treeSize)} events (${new Date(w.cosignedAt).toISOString()})`);
    else lines.push(`witness ${w.witness}: cosigned the tree of ${n(w.treeSize)} events (${new Date(w.cosignedAt).toISOString()}); the log still matches it`);
  }
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
    const verifier = name ? CheckpointSigner.loadVerifier(path, name) : undefined;
    if (!verifier) throw new VerifyInputError(`${path}: no checkpoint signing key yet (the gateway creates it on first start)`);
    return publicKeyInfo(verifier);
  }
  const files = readBundleFiles(path);
  const line = files.get('public-key.txt')?.toString('utf8').split('\n')[0];
  if (!line) throw new VerifyInputError(`${path}: the bundle has no public-key.txt`);
  return publicKeyInfo(parseVerifierKey(line));
}
