import { CheckpointLog } from '../audit/checkpoints';
import { CheckpointSigner, KEY_NAME_META, keyFingerprint } from '../audit/checkpoint-signer';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { approvalProblem, gatewayRow, type GatewayRow, listGateways, markGateway, notInStore, pickGateway, removalProblem } from '../audit/shared-store/enrolment';
import { MemberStatuses, provenStatuses, type RowProof } from '../audit/shared-store/member-status';
import { connectStore, migrateSharedStore, storeConnection, storeLabel } from '../audit/shared-store/schema';
import { shipAll } from '../audit/shared-store/shipping';
import { AuditStore } from '../audit/store';
import type { Config } from '../../shared/config';
import { resolveConfig } from '../config';
import { type Io, type ParsedArgs, rejectUnknown, str, UsageError } from './args';

/**
 * `custody gateways list | approve ID | remove ID --reason TEXT` against the shared store of --config
 * (docs/SCALE-OUT.md). `remove` records `gateway.removed` the same way `approve` records an approval:
 * the removed gateway serves nothing from its next round, and no gateway trusts what it signs.
 * `approve` acts as the gateway whose data dir the config names: it records `gateway.approved` in
 * that gateway's own chain, signs a checkpoint covering it, ships both to the store, and marks the
 * pending row approved; the pending gateway then starts serving within a second or so.
 */
export async function gatewaysCommand(args: ParsedArgs, io: Io): Promise<number> {
  rejectUnknown(args, ['config', 'data-dir', 'json', 'reason']);
  const [, sub, id] = args.positionals;
  if (sub !== 'list' && sub !== 'approve' && sub !== 'remove') throw new UsageError('usage: custody gateways list | approve ID | remove ID --reason TEXT [--config FILE]');
  if (sub === 'approve' && !id) throw new UsageError('gateways approve needs the ID of a pending gateway (custody gateways list shows them)');
  if (sub === 'remove' && !id) throw new UsageError('gateways remove needs the ID of a gateway of the group (custody gateways list shows them)');
  const reason = str(args, 'reason')?.trim();
  if (sub === 'remove' && !reason) throw new UsageError('gateways remove needs --reason TEXT: the removal is recorded with it');
  const resolved = resolveConfig({ config: str(args, 'config'), dataDir: str(args, 'data-dir') });
  const storeConfig = resolved.config.store;
  if (!storeConfig) throw new UsageError(`${resolved.file ?? 'the embedded default config'} has no store.url: gateways enrol in a shared PostgreSQL store`);
  const client = await connectStore(storeConnection(storeConfig));
  try {
    await migrateSharedStore(client);
    if (sub === 'list') {
      const rows = await listGateways(client);
      const proofs = await rowProofs(client, resolved.dataDir, rows);
      if (args.flags['json']) {
        io.out(`${JSON.stringify(rows.map(({ request: _r, ...r }) => ({ ...r, ...proofs.get(r.id)! })))}\n`);
        return 0;
      }
      if (!rows.length) {
        io.out(`no gateways in ${storeLabel(storeConfig.url)} yet\n`);
        return 0;
      }
      for (const r of rows) {
        const p = proofs.get(r.id)!;
        const claim =
          r.status === 'removed'
            ? `removed by ${r.removedBy} (its seq ${r.removalSeq})`
            : r.status === 'approved'
              ? `approved by ${r.approvedBy} (its seq ${r.approvalSeq})`
              : r.status === 'pending'
                ? `requested ${new Date(r.requestedAt).toISOString()}`
                : 'first gateway of the group';
        const detail =
          r.status === 'pending'
            ? `${claim}${p.proven ? '' : ` — cannot be approved: ${p.problem}`}`
            : p.proven
              ? `${claim} (proven: ${p.provenBy})`
              : `${claim}: ${r.status} in the table only — not proven: ${p.problem}`;
        io.out(`${r.id}  ${r.status.padEnd(8)}  ${r.name}  shipped ${r.shippedSeq}  ${detail}\n`);
      }
      return 0;
    }
    return await recordAsMember(client, resolved.dataDir, resolved.config.audit, id!, io, sub === 'remove' ? { remove: reason! } : 'approve');
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * Whether each row's status is proven, as the gateway of `dataDir` proves its members
 * (member-status.ts): from its own key, its own approvals and the keys it pinned at admission,
 * read from its SQLite file (read-only, beside a running gateway). Without that data dir nothing
 * is proven but a pending row's request.
 */
async function rowProofs(client: Awaited<ReturnType<typeof connectStore>>, dataDir: string, rows: GatewayRow[]): Promise<Map<string, RowProof>> {
  const none = (why: string) => new Map(rows.map((r): [string, RowProof] => [r.id, { proven: false, problem: `${why}: nothing is proven from it (run with the --config of a gateway of the group)` }]));
  if (!existsSync(join(dataDir, 'custody.db'))) return none(`${dataDir} holds no gateway's data`);
  const store = AuditStore.open(dataDir, { readonly: true });
  try {
    const keyName = store.meta(KEY_NAME_META);
    const verifier = keyName ? CheckpointSigner.loadVerifier(dataDir, keyName) : undefined;
    if (!verifier) return none(`${dataDir} has no checkpoint-signing key`);
    const self = { id: keyFingerprint(verifier.publicKey), publicKey: verifier.publicKey.toString('base64') };
    return await provenStatuses(client, store.db, self, rows);
  } finally {
    store.close();
  }
}

/**
 * Approves or removes gateway `id` as the gateway of `dataDir`: the event in its own chain, a signed
 * checkpoint over it, both shipped, then the row marked.
 */
async function recordAsMember(client: Awaited<ReturnType<typeof connectStore>>, dataDir: string, audit: Config['audit'], id: string, io: Io, action: 'approve' | { remove: string }): Promise<number> {
  const store = AuditStore.open(dataDir);
  try {
    const keyName = store.meta(KEY_NAME_META);
    // The key the gateway signs with: its key file, or the audit.signer program.
    const signer = keyName ? CheckpointSigner.forDataDir(dataDir, keyName, audit) : undefined;
    if (!signer) throw new Error(`${dataDir} has no checkpoint-signing key: approve from the data dir (--config) of a gateway that has joined the store`);
    const self = { id: keyFingerprint(signer.publicKey), publicKey: signer.publicKey.toString('base64') };
    const me = self.id;
    // Whether this gateway may act is read from its own records, never from its row's status.
    const statuses = new MemberStatuses(store.db, self);
    const standing = (await gatewayRow(client, me)) ? await statuses.standing(client) : notInStore(me);
    const target = pickGateway(await listGateways(client), id);
    const proof = (await statuses.of(client, [target])).get(target.id)!;
    if (action !== 'approve') {
      const problem = removalProblem(me, standing, target, proof);
      if (problem) throw new Error(problem);
      const event = store.append({ kind: 'gateway.removed', actor: 'cli', payload: { id: target.id, fingerprint: target.id, name: target.name, reason: action.remove.slice(0, 500), by: me } });
      await new CheckpointLog(store, signer).write();
      await shipAll(client, store.db, me);
      await markGateway(client, 'removed', target.id, me, event.seq, target.status === 'removed');
      io.out(`removed ${target.id} (${target.name}) from the group: recorded as gateway.removed at seq ${event.seq} of ${me}; it serves nothing from its next round\n`);
      return 0;
    }
    const problem = approvalProblem(me, standing, target, proof);
    if (problem) throw new Error(problem);
    const event = store.append({
      kind: 'gateway.approved',
      actor: 'cli',
      payload: { id: target.id, fingerprint: target.id, publicKey: target.publicKey, keyName: target.keyName, name: target.name, requestedAt: target.requestedAt, by: me },
    });
    // A signed checkpoint over the approval: verify trusts an approval only under one.
    await new CheckpointLog(store, signer).write();
    await shipAll(client, store.db, me);
    await markGateway(client, 'approved', target.id, me, event.seq);
    io.out(`approved ${target.id} (${target.name}): recorded as gateway.approved at seq ${event.seq} of ${me}\n`);
    return 0;
  } finally {
    store.close();
  }
}
