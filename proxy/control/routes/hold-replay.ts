/**
 * How much of a session's recording a user may replay. Reviewers and admins see every session. An
 * approver who may decide a hold in a session sees that session up to the hold (its `hold.created`
 * event): what led to the statement they are asked to let through, and nothing after it. Everyone
 * else: nothing.
 */
import type { HoldView } from '../../../shared/holds';
import { hasRole, type Identity } from '../../../shared/identity';
import { canDecideHold } from '../../approvals/hold-queue';
import type { GatewayServices } from '../../services';

/** `all`, the last event seq this identity may see in the session, or null (no access). */
export function replayLimit(s: Pick<GatewayServices, 'store'>, identity: Identity, session: string): 'all' | number | null {
  if (hasRole(identity, 'reviewer')) return 'all';
  const rows = s.store.db.prepare('SELECT view FROM holds WHERE session = ?').all(session) as { view: string }[];
  const ids = new Set(rows.map((r) => JSON.parse(r.view) as HoldView).filter((v) => canDecideHold(identity, v)).map((v) => v.id));
  if (!ids.size) return null;
  let limit: number | null = null;
  for (let after = 0; ; ) {
    const page = s.store.sessionEvents(session, after, 10_000);
    for (const e of page) if (e.kind === 'hold.created' && ids.has((e.payload as { id?: string }).id ?? '')) limit = Math.max(limit ?? 0, e.seq);
    if (page.length < 10_000) break;
    after = page[page.length - 1]!.seq;
  }
  return limit;
}
