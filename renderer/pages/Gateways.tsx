/**
 * The Audit page's Gateways card (admins, with a shared store): every gateway of the group — its
 * key's fingerprint (its id), host name, enrolled / approved / pending, when it last shipped, its
 * hold lease — and Approve for a pending one. Approving does what `custody gateways approve` does,
 * as the gateway this console talks to: the approval is recorded in its own chain, under a signed
 * checkpoint, and the pending gateway starts serving within a second or so. The dialog shows the
 * whole fingerprint to compare with the one the pending gateway printed.
 */
import { useCallback, useEffect, useState } from 'react';
import type { GatewayList, GatewayView } from '../../shared/api';
import { api, toast } from '../app/context';
import { Badge, Button, ErrorBox, Modal } from '../components/ui';
import { formatAgo, formatCount, formatDateTime, gatewayLabel } from '../lib/format';

function statusBadge(g: GatewayView) {
  if (g.status === 'pending') return <Badge tone="warn">pending</Badge>;
  return <Badge tone="ok">{g.status}</Badge>;
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
              <tr key={g.id} data-testid="gateway-row" data-gateway-id={g.id} data-status={g.status}>
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
                    ))}
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
    </section>
  );
}
