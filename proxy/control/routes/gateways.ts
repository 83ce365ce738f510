/**
 * The gateways of the shared store's group over REST (admin only; docs/SCALE-OUT.md, "Who may
 * sign: enrolment"):
 *
 *   GET  /api/gateways               every gateway of the group: id (its key's fingerprint), host
 *                                    name, enrolled / pending / approved, last seen, hold lease
 *   POST /api/gateways/:id/approve   what `custody gateways approve ID` does, as this gateway:
 *                                    records `gateway.approved` in this gateway's own chain, signs a
 *                                    checkpoint covering it, ships both, marks the row approved
 *   POST /api/gateways/:id/remove    what `custody gateways remove ID` does: `{reason}` required;
 *                                    records `gateway.removed` the same way and marks the row removed
 *
 * Without a shared store there is no group: the list is empty and approving answers 409. The
 * store is read on the console worker (proxy/audit/shared-store/team.ts), never on this thread.
 */
import type { GatewayList, GatewayView, RemoveGatewayRequest } from '../../../shared/api';
import type { GatewayApprovedPayload, GatewayRemovedPayload } from '../../../shared/events';
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

  /**
   * Records `event` (an approval or a removal) in this gateway's own chain, waits for it to be in the
   * database, signs a checkpoint over it (verify trusts such an event only under one), then lets the
   * console worker ship both and mark the row (`done`).
   */
  const recordUnderCheckpoint = async (what: string, event: { seq: number }, done: () => Promise<GatewayView>): Promise<GatewayView> => {
    const folded = (await s.store.readAsync<{ n: number | null }>('SELECT max(seq) AS n FROM events'))[0]?.n ?? 0;
    if (folded < event.seq) throw new HttpError(503, 'store_unavailable', `the ${what} is recorded at seq ${event.seq} of this gateway's log but not yet in its database; try again once the audit store is healthy`);
    await s.audit!.trail.checkpoints.write().catch((err: Error) => {
      throw new HttpError(503, 'signer_unavailable', `the ${what} is recorded at seq ${event.seq} of this gateway's chain, but no checkpoint could be signed over it (${err.message}); try again once the signer answers`);
    });
    return done().catch((err: Error) => {
      throw new HttpError(503, 'store_unavailable', `the ${what} is recorded at seq ${event.seq} of this gateway's chain, but the shared store did not take it yet (${err.message}); it ships with this gateway's chain`);
    });
  };
  const team = () => {
    if (!s.team || !s.audit) throw new HttpError(409, 'no_store', 'this gateway has no shared store (store.url): there is no group');
    return s.team;
  };

  router.post(
    '/api/gateways/:id/approve',
    async ({ params, identity }): Promise<GatewayView> => {
      const t = team();
      // The same checks as the CLI, against the store: this gateway is a member, the other is pending and its request is signed by its key.
      const target = await t.ask('approvable', { id: params['id']! }).catch((err: Error) => {
        throw new HttpError(/did not answer|cannot be reached|ECONNREFUSED/.test(err.message) ? 503 : 409, 'not_approvable', err.message);
      });
      const event = s.store.append({
        kind: 'gateway.approved',
        actor: identity!.subject,
        payload: { id: target.id, fingerprint: target.id, publicKey: target.publicKey, keyName: target.keyName, name: target.name, requestedAt: target.requestedAt, by: t.identity.id, actorName: identity!.name } satisfies GatewayApprovedPayload,
      });
      const view = await recordUnderCheckpoint('approval', event, () => t.ask('approved', { id: target.id, seq: event.seq }));
      s.log.info(`shared store: ${identity!.name} approved gateway ${target.id} (${target.name}), recorded at seq ${event.seq}`);
      return view;
    },
    { role: 'admin' },
  );

  router.post(
    '/api/gateways/:id/remove',
    async ({ params, identity, json }): Promise<GatewayView> => {
      const t = team();
      const body = await json<RemoveGatewayRequest>();
      const reason = body && typeof body === 'object' && typeof body.reason === 'string' ? body.reason.trim() : '';
      if (!reason) throw new HttpError(400, 'reason_required', 'say why the gateway is removed (reason): the removal is recorded with it');
      const target = await t.ask('removable', { id: params['id']! }).catch((err: Error) => {
        throw new HttpError(/did not answer|cannot be reached|ECONNREFUSED/.test(err.message) ? 503 : 409, 'not_removable', err.message);
      });
      const event = s.store.append({
        kind: 'gateway.removed',
        actor: identity!.subject,
        payload: { id: target.id, fingerprint: target.id, name: target.name, reason: reason.slice(0, 500), by: t.identity.id, actorName: identity!.name } satisfies GatewayRemovedPayload,
      });
      const view = await recordUnderCheckpoint('removal', event, () => t.ask('removed', { id: target.id, seq: event.seq }));
      s.log.warn(`shared store: ${identity!.name} removed gateway ${target.id} (${target.name}) from the group: ${reason}; recorded at seq ${event.seq}`);
      return view;
    },
    { role: 'admin' },
  );
}
