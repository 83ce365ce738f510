/**
 * The Audit page's Gateways card (admins, with a shared store): every gateway of the group — its
 * key's fingerprint (its id), host name, enrolled / approved / pending, when it last shipped, its
 * hold lease — Approve for a pending one, and Remove (with a reason) for any other but itself. Approving does what `custody gateways approve` does,
 * as the gateway this console talks to: the approval is recorded in its own chain, under a signed
 * checkpoint, and the pending gateway starts serving within a second or so. The dialog shows the
 * whole fingerprint to compare with the one the pending gateway printed.
 *
 * Each state is the store's table's, which anyone who can write to the store can write: the row
 * says whether the gateway answering proves it (an approval or removal in a proven member's chain
 * under its signed checkpoint, or its own records), and a state it cannot prove is marked "not
 * proven" with the reason.
 */
import { useCallback, useEffect, useState } from 'react';
import type { GatewayList, GatewayView } from '../../shared/api';
import { api, toast } from '../app/context';
import { Badge, Button, ErrorBox, Modal } from '../components/ui';
import { formatAgo, formatCount, formatDateTime, gatewayLabel } from '../lib/format';

function statusBadge(g: GatewayView) {
  if (g.status === 'pending') return <Badge tone="warn">pending</Badge>;
  if (!g.proven) return <Badge tone="neutral">{g.status}</Badge>;
  if (g.status === 'removed') return <Badge tone="danger">removed</Badge>;
  return <Badge tone="ok">{g.status}</Badge>;
}

/** Whether the table's state is proven, and how or why not (a pending row's problem shows beside Approve). */
function proofNote(g: GatewayView) {
  if (g.status === 'pending') return null;
  if (!g.proven)
    return (
      <div data-testid="gateway-unproven">
        <Badge tone="danger" title="The store's table says so, but this gateway cannot prove it from signed chains">
          not proven
        </Badge>
        <div className="danger-text small gateway-proof">in the table only: {g.problem}</div>
      </div>
    );
  return (
    <div className="muted small gateway-proof" data-testid="gateway-proven" title={g.provenBy}>
      proven: {g.provenBy}
    </div>
  );
}

function leaseText(g: GatewayView, now: number): string {
  if (!g.lease) return '—';
  return g.lease.expiresAt > now ? `held, renewed ${formatAgo(g.lease.renewedAt, now)}` : `expired ${formatAgo(g.lease.expiresAt, now)}`;
}

export function GatewaysCard() {
  const [list, setList] = useState<GatewayList>();
  const [error, setError] = useState<string>();
  const [confirm, setConfirm] = useState<GatewayView>();
  const [busy, setBusy] = useState(false);
  const [removing, setRemoving] = useState<GatewayView>();
  const [reason, setReason] = useState('');
  const load = useCallback(() => {
    api
      .gateways()
      .then((l) => {
        setList(l);
        setError(undefined);
      })
      .catch((e: Error) => setError(e.message));
  }, []);
  useEffect(() => {
    load();
    const t = setInterval(load, 5000);
    return () => clearInterval(t);
  }, [load]);

  // Without a shared store there is no group to show.
  if (!error && (!list || list.self === null)) return null;
  const now = Date.now();
  const approve = async (g: GatewayView) => {
    setBusy(true);
    try {
      await api.approveGateway(g.id);
      toast('ok', `Approved ${g.name}: recorded in this gateway's chain; it serves within a second or so.`);
      setConfirm(undefined);
      load();
    } catch (err) {
      toast('error', (err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  const remove = async (g: GatewayView) => {
    if (!reason.trim()) return toast('error', 'Say why: the removal is recorded with the reason.');
    setBusy(true);
    try {
      await api.removeGateway(g.id, reason.trim());
      toast('ok', `Removed ${g.name}: recorded in this gateway's chain; it serves nothing from its next round, and nothing it signs is trusted.`);
      setRemoving(undefined);
      setReason('');
      load();
    } catch (err) {
      toast('error', (err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <section className="card" data-testid="gateways">
      <div className="card-head">
        <h2>Gateways</h2>
        <span className="muted small">The gateways sharing this store. Each signs its own chain with its own key; a new one serves nothing until an admin approves it here or with custody gateways approve.</span>
      </div>
      {error && <ErrorBox title="Could not load the gateways" message={error} onRetry={load} />}
      {list && (
        <table className="table" data-testid="gateway-list">
          <thead>
            <tr>
              <th>Gateway</th>
              <th>State</th>
              <th>Last seen</th>
              <th>Hold lease</th>
              <th className="num">Shipped</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {list.gateways.map((g) => (
              <tr key={g.id} data-testid="gateway-row" data-gateway-id={g.id} data-status={g.status} data-proven={String(g.proven)}>
                <td>
                  <div>
                    {g.name} {g.self && <Badge tone="accent">this gateway</Badge>}
                  </div>
                  <div className="muted small mono" title={g.id}>
                    {g.id}
                  </div>
                </td>
                <td>
                  {statusBadge(g)}
                  {g.status === 'approved' && g.approvedBy && (
                    <div className="muted small" title={g.approvedBy}>
                      by {gatewayLabel(g.approvedBy, list.gateways.find((x) => x.id === g.approvedBy)?.name)} (its seq {g.approvalSeq})
                    </div>
                  )}
                  {g.status === 'pending' && <div className="muted small">asked {formatDateTime(g.requestedAt)}</div>}
                  {g.status === 'removed' && g.removedBy && (
                    <div className="muted small" title={g.removedBy}>
                      by {gatewayLabel(g.removedBy, list.gateways.find((x) => x.id === g.removedBy)?.name)} (its seq {g.removalSeq})
                    </div>
                  )}
                  {proofNote(g)}
                </td>
                <td>{formatAgo(g.lastSeen, now)}</td>
                <td>{leaseText(g, now)}</td>
                <td className="num">{formatCount(g.shippedSeq)}</td>
                <td>
                  {g.status === 'pending' &&
                    (g.problem ? (
                      <span className="danger-text small">cannot be approved: {g.problem}</span>
                    ) : (
                      <Button kind="approve" size="sm" onClick={() => setConfirm(g)} testId="approve-gateway">
                        Approve
                      </Button>
                    ))}{' '}
                  {(g.status !== 'removed' || !g.proven) && !g.self && (
                    <Button kind="danger" size="sm" onClick={() => setRemoving(g)} testId="remove-gateway">
                      Remove
                    </Button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {confirm && (
        <Modal
          title={`Approve ${confirm.name}?`}
          onClose={() => setConfirm(undefined)}
          footer={
            <>
              <Button onClick={() => setConfirm(undefined)}>Cancel</Button>
              <Button kind="approve" onClick={() => void approve(confirm)} disabled={busy} testId="confirm-approve-gateway">
                {busy ? 'Approving…' : 'Approve'}
              </Button>
            </>
          }
        >
          <p>It will serve traffic for the group, and its chain will be trusted. Compare its fingerprint with the one it printed when it started:</p>
          <p className="mono" data-testid="approve-fingerprint">
            {confirm.id}
          </p>
          <p className="muted small">The approval is recorded in this gateway&apos;s audit chain with your name, under a signed checkpoint.</p>
        </Modal>
      )}
      {removing && (
        <Modal
          title={`Remove ${removing.name} from the group?`}
          onClose={() => setRemoving(undefined)}
          footer={
            <>
              <Button onClick={() => setRemoving(undefined)}>Cancel</Button>
              <Button kind="danger" onClick={() => void remove(removing)} disabled={busy || !reason.trim()} testId="confirm-remove-gateway">
                {busy ? 'Removing…' : 'Remove'}
              </Button>
            </>
          }
        >
          <p>It stops serving at its next round, and no gateway trusts its key for anything it signs from then on. Its chain so far stays in the store and verifies. To bring the host back, start it on an empty data dir and approve its new key.</p>
          <p className="mono small">{removing.id}</p>
          <textarea className="input" rows={2} placeholder="Reason (required)" value={reason} onChange={(e) => setReason(e.target.value)} data-testid="remove-gateway-reason" aria-label="Reason" />
        </Modal>
      )}
    </section>
  );
}
