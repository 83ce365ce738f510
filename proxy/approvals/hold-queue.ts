/**
 * Interim hold gate until the approval queue lands: it cannot reach an approver, so it denies every
 * hold at once and says so (fail closed) rather than letting a held request through.
 */
import type { HoldView } from '../../shared/holds';
import type { HoldGate, HoldOutcome, HoldRequest } from './types';

export class HoldQueue implements HoldGate {
  async request(req: HoldRequest): Promise<HoldOutcome> {
    const now = Date.now();
    const hold: HoldView = {
      id: 'unavailable',
      state: 'denied',
      session: req.session,
      connection: req.connection,
      protocol: req.protocol,
      requester: req.identity.subject,
      requesterName: req.identity.name,
      rule: req.rule,
      summary: req.summary,
      approvers: req.spec.approvers,
      min: req.spec.min,
      denyMin: req.spec.denyMin,
      reasonRequired: req.spec.reason === 'required',
      createdAt: now,
      expiresAt: now,
      resolvedAt: now,
      votes: [],
      resolution: 'approvals are not available on this gateway',
    };
    return { state: 'denied', hold, reason: hold.resolution!, decidedBy: [] };
  }
}
