/**
 * The gateways of the shared store's group over REST (admin only; docs/SCALE-OUT.md, "Who may
 * sign: enrolment"):
 *
 *   GET  /api/gateways               every gateway of the group: id (its key's fingerprint), host
 *                                    name, enrolled / pending / approved, last seen, hold lease
 *   POST /api/gateways/:id/approve   what `custody gateways approve ID` does, as this gateway:
 *                                    records `gateway.approved` in this gateway's own chain, signs a
 *                                    checkpoint covering it, ships both, marks the row approved
 *
 * Without a shared store there is no group: the list is empty and approving answers 409. The
 * store is read on the console worker (proxy/audit/shared-store/team.ts), never on this thread.
 */
import type { GatewayList, GatewayView } from '../../../shared/api';
import type { GatewayApprovedPayload } from '../../../shared/events';
import type { GatewayServices } from '../../services';
import { HttpError, type Router } from '../router';

export function registerGatewayRoutes(router: Router, s: GatewayServices): void {
  router.get(
    '/api/gateways',
    async (): Promise<GatewayList> => {
      if (!s.team) return { self: null, gateways: [] };
      const gateways = await s.team.ask('gateways', {}).catch((err: Error) => {
        throw new HttpError(503, 'store_unavailable', `the shared store did not answer: ${err.message}`);
      });
      return { self: s.team.identity.id, gateways };
    },
    { role: 'admin' },
  );

  router.post(
    '/api/gateways/:id/approve',
    async ({ params, identity }): Promise<GatewayView> => {
      const team = s.team;
      const trail = s.audit?.trail;
      if (!team || !trail) throw new HttpError(409, 'no_store', 'this gateway has no shared store (store.url): there is no group to approve a gateway into');
      // The same checks as the CLI, against the store: this gateway is a member, the other is pending and its request is signed by its key.
      const target = await team.ask('approvable', { id: params['id']! }).catch((err: Error) => {
        throw new HttpError(/did not answer|cannot be reached|ECONNREFUSED/.test(err.message) ? 503 : 409, 'not_approvable', err.message);
      });
      const event = s.store.append({
        kind: 'gateway.approved',
        actor: identity!.subject,
        payload: { id: target.id, fingerprint: target.id, publicKey: target.publicKey, keyName: target.keyName, name: target.name, requestedAt: target.requestedAt, by: team.identity.id, actorName: identity!.name } satisfies GatewayApprovedPayload,
      });
      // Folded into SQLite first (asked on the commit thread, after the journaled approval; this thread
      // does not wait on it), then a signed checkpoint over it: verify trusts an approval only under one.
      const folded = (await s.store.readAsync<{ n: number | null }>('SELECT max(seq) AS n FROM events'))[0]?.n ?? 0;
      if (folded < event.seq) throw new HttpError(503, 'store_unavailable', `the approval is recorded at seq ${event.seq} of this gateway's log but not yet in its database; approve again once the audit store is healthy`);
      await trail.checkpoints.write().catch((err: Error) => {
        throw new HttpError(503, 'signer_unavailable', `the approval is recorded at seq ${event.seq} of this gateway's chain, but no checkpoint could be signed over it (${err.message}); approve again once the signer answers`);
      });
      s.log.info(`shared store: ${identity!.name} approved gateway ${target.id} (${target.name}), recorded at seq ${event.seq}`);
      return team.ask('approved', { id: target.id, seq: event.seq }).catch((err: Error) => {
        throw new HttpError(503, 'store_unavailable', `the approval is recorded at seq ${event.seq} of this gateway's chain, but the shared store did not take it yet (${err.message}); it ships with this gateway's chain, and the pending gateway is admitted once the store has it`);
      });
    },
    { role: 'admin' },
  );
}
