/**
 * Approvals inbox: pending holds live from the WebSocket with a countdown and k-of-N progress;
 * approve or deny with a reason (required when the rule says so), optionally as a time-boxed grant.
 * A decided hold leaves every approver's inbox at once and shows who decided for a few seconds.
 * The history tab lists resolved holds with filters.
 */
import { useEffect, useMemo, useRef, useState } from 'react';
import type { HoldView } from '../../shared/holds';
import { inboxStore, toast, useAuth, useInbox } from '../app/context';
import { askPermission, dismissAsk, notificationState } from '../app/notify';
import { navigate } from '../app/router';
import { Icon } from '../components/Icon';
import { FirstSteps } from '../components/FirstSteps';
import { Badge, Button, Empty, ErrorBox, Loading, MaskedText, PageHeader, Tabs, useNow } from '../components/ui';
import { formatAgo, formatCountdown, formatDateTime, fromLocalInput, gatewayLabel, toLocalInput } from '../lib/format';
import { decidedBy, decisionError, filterHistory, type HistoryFilter, holdReplayHref, paramLines, pendingList, progress, STATE_LABEL, timeLeft, timeLeftFraction } from '../lib/holds';
import { rich, type Rich } from '../lib/rich';
import { visibleText } from '../lib/visible-controls';
import { canDecide, capabilities, mayReplayHold } from '../lib/roles';
import type { Route } from '../lib/route';

/**
 * Redaction tokens such as `[CREDIT_CARD]` in a (masked) summary, highlighted like replay marks.
 * Control and invisible characters are shown, not acted on: a right-to-left override in a comment
 * must not reorder the statement an approver reads.
 */
export function summaryRich(raw: string): Rich {
  const summary = visibleText(raw, true);
  const marks = [...summary.matchAll(/\[([A-Z][A-Z0-9_]{2,})\]/g)].map((m) => ({ start: m.index, end: m.index + m[0].length, type: m[1]!, rule: 'redacted' }));
  return rich(summary, marks);
}

export function InboxPage({ route }: { route: Route }) {
  const tab = route.param === 'history' ? 'history' : 'pending';
  const count = useInbox((s) => Object.keys(s.inbox.pending).length);
  return (
    <div className="page">
      <PageHeader title="Approvals" subtitle="Requests held by policy wait here until enough approvers decide." />
      <Tabs
        tabs={[
          { id: 'pending', label: <>Pending {count > 0 && <span className="tab-count">{count}</span>}</> },
          { id: 'history', label: 'History' },
        ]}
        value={tab}
        onChange={(t) => navigate({ page: 'inbox', param: t === 'history' ? 'history' : undefined, query: {} })}
      />
      {tab === 'pending' ? <Pending focus={route.query['hold']} /> : <History />}
    </div>
  );
}

function NotificationAsk() {
  const [state, setState] = useState(notificationState);
  if (state !== 'ask') return null;
  return (
    <div className="banner banner-info" data-testid="notify-ask">
      <Icon name="bell" /> Get a notification when a request needs your approval.
      <span className="spacer" />
      <Button size="sm" kind="primary" onClick={() => void askPermission().then(() => setState(notificationState()))}>
        Enable notifications
      </Button>
      <Button
        size="sm"
        kind="ghost"
        onClick={() => {
          dismissAsk();
          setState(notificationState());
        }}
      >
        Not now
      </Button>
    </div>
  );
}

function Pending({ focus }: { focus?: string }) {
  const inbox = useInbox((s) => s.inbox);
  const loaded = useInbox((s) => s.loaded);
  const error = useInbox((s) => s.error);
  const me = useAuth((s) => s.me);
  const caps = capabilities(me);
  const now = useNow(1000);
  const pending = pendingList(inbox);
  const settled = Object.values(inbox.settled)
    .map((s) => s.hold)
    .sort((a, b) => (b.resolvedAt ?? 0) - (a.resolvedAt ?? 0));

  if (!loaded) return <Loading />;
  return (
    <div className="inbox">
      {caps.decideHolds && <NotificationAsk />}
      {error && <ErrorBox title="Could not load pending holds" message={error} onRetry={() => void inboxStore.getState().load()} />}
      {!caps.decideHolds && (
        <div className="banner banner-muted">
          <Icon name="shield" /> You can see holds but not decide them: deciding needs the approver role.
        </div>
      )}
      {pending.map((h) => (
        <HoldCard key={h.id} hold={h} now={now} focused={focus === h.id} />
      ))}
      {/* Below the pending cards: a settled card that goes away must not move a card someone is about to decide. */}
      {settled.map((h) => (
        <SettledCard key={h.id} hold={h} />
      ))}
      {!pending.length && !settled.length && !error && (
        <Empty icon="inbox" title="Nothing waiting for approval">
          <FirstSteps what="When a request matches a hold policy it appears here within a second, without reloading." />
        </Empty>
      )}
    </div>
  );
}

function SettledCard({ hold }: { hold: HoldView }) {
  const tone = hold.state === 'approved' ? 'ok' : 'danger';
  const lastVote = [...hold.votes].reverse().find((v) => (hold.state === 'approved' ? v.decision === 'approve' : v.decision === 'deny'));
  return (
    <div className={`hold-card settled settled-${tone}`} data-testid="hold-settled" data-hold-id={hold.id} data-state={hold.state}>
      <Icon name={hold.state === 'approved' ? 'check' : 'x'} />
      <div className="settled-text">
        <strong>{STATE_LABEL[hold.state]}</strong>
        {hold.state === 'approved' || hold.state === 'denied' ? <> by {decidedBy(hold)}</> : <> — {decidedBy(hold)}</>}
        {lastVote?.reason && <span className="muted"> — “{lastVote.reason}”</span>}
        <div className="muted small">
          {hold.requesterName} on {hold.connection} · rule {hold.rule}
        </div>
      </div>
    </div>
  );
}

const GRANTS = [
  { value: '', label: 'This request only' },
  { value: '15m', label: 'Also for 15 minutes' },
  { value: '30m', label: 'Also for 30 minutes' },
  { value: '1h', label: 'Also for 1 hour' },
  { value: '4h', label: 'Also for 4 hours' },
];

function HoldCard({ hold, now, focused }: { hold: HoldView; now: number; focused: boolean }) {
  const me = useAuth((s) => s.me);
  const deciding = useInbox((s) => !!s.deciding[hold.id]);
  const serverError = useInbox((s) => s.decisionErrors[hold.id]);
  const [reason, setReason] = useState('');
  const [grant, setGrant] = useState('');
  const [localError, setLocalError] = useState<string>();
  const ref = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (focused) ref.current?.scrollIntoView({ block: 'center' });
  }, [focused]);
  const left = timeLeft(hold, now);
  const frac = timeLeftFraction(hold, now);
  const p = progress(hold);
  const decidable = canDecide(me, hold);

  const decide = async (decision: 'approve' | 'deny') => {
    const err = decisionError(hold, reason);
    if (err) return setLocalError(err);
    setLocalError(undefined);
    const ok = await inboxStore.getState().decide(hold.id, { decision, reason: reason.trim() || undefined, ...(decision === 'approve' && grant ? { grant } : {}) });
    if (ok) toast('ok', `${decision === 'approve' ? 'Approved' : 'Denied'}: ${hold.requesterName} on ${hold.connection}`);
  };

  return (
    <div ref={ref} className={`hold-card${focused ? ' focused' : ''}${left < 30_000 ? ' urgent' : ''}`} data-testid="hold-card" data-hold-id={hold.id}>
      <div className="hold-head">
        <div className="avatar sm">{hold.requesterName.slice(0, 1).toUpperCase()}</div>
        <div className="hold-who">
          <div>
            <strong>{hold.requesterName}</strong> <span className="muted">on</span> <Badge tone="accent">{hold.connection}</Badge> <Badge>{hold.protocol === 'postgres' ? 'SQL' : hold.protocol === 'ssh' ? 'SSH' : 'HTTP'}</Badge>
          </div>
          <div className="muted small">
            rule <code>{hold.rule}</code> · {formatAgo(hold.createdAt, now)}
            {hold.gateway && (
              <span data-testid="hold-gateway" title={`The request waits on gateway ${hold.gatewayName ?? ''} ${hold.gateway}; your decision is recorded here and counted there`}>
                {' '}
                · held on <strong>{gatewayLabel(hold.gateway, hold.gatewayName)}</strong>
              </span>
            )}
          </div>
        </div>
        <div className="countdown" title={`Expires at ${formatDateTime(hold.expiresAt)}; then it is denied`}>
          <Icon name="clock" size={14} />
          <span data-testid="countdown">{formatCountdown(left)}</span>
          <div className="countdown-bar">
            <div style={{ width: `${frac * 100}%` }} />
          </div>
        </div>
      </div>
      {hold.statement !== undefined ? (
        <HeldStatement hold={hold} />
      ) : (
        <pre className="hold-summary" data-testid="hold-summary">
          <MaskedText value={summaryRich(hold.summary)} />
        </pre>
      )}
      {hold.inTransaction && (
        <div className="warn-text small" data-testid="hold-in-transaction">
          This statement waits inside an open transaction: the rows and tables it has locked stay locked until you decide, and other sessions may wait on them.
        </div>
      )}
      {hold.ruleReason && <div className="muted small">Why this rule exists: {hold.ruleReason}</div>}
      <div className="hold-progress">
        <span className="pips" title={`${p.approvals} of ${p.min} approvals`}>
          {Array.from({ length: p.min }, (_, i) => (
            <span key={i} className={i < p.approvals ? 'pip on' : 'pip'} />
          ))}
        </span>
        <span data-testid="hold-progress">
          {p.approvals} of {p.min} approval{p.min === 1 ? '' : 's'}
        </span>
        <span className="muted">· approvers: {hold.approvers.join(', ')}</span>
        {hold.denyMin > 1 && (
          <span className="muted">
            · {p.denials} of {hold.denyMin} denials
          </span>
        )}
      </div>
      {hold.votes.length > 0 && (
        <ul className="votes">
          {hold.votes.map((v) => (
            <li key={`${v.by}-${v.at}`}>
              <Icon name={v.decision === 'approve' ? 'check' : 'x'} size={14} className={v.decision === 'approve' ? 'ok' : 'danger'} /> {v.byName || v.by}
              {v.reason && <span className="muted"> — “{v.reason}”</span>}
            </li>
          ))}
        </ul>
      )}
      {decidable.ok ? (
        <div className="hold-actions">
          <textarea
            className="input"
            rows={1}
            placeholder={hold.reasonRequired ? 'Reason (required by this rule)' : 'Reason (optional)'}
            value={reason}
            onChange={(e) => setReason(e.target.value)}
            data-testid="hold-reason"
          />
          <select className="input grant" value={grant} onChange={(e) => setGrant(e.target.value)} aria-label="Grant with the approval" title="An approval can also let this identity through on this connection for a while">
            {GRANTS.map((g) => (
              <option key={g.value} value={g.value}>
                {g.label}
              </option>
            ))}
          </select>
          <Button kind="approve" icon="check" disabled={deciding} onClick={() => void decide('approve')} testId="hold-approve">
            Approve
          </Button>
          <Button kind="danger" icon="x" disabled={deciding} onClick={() => void decide('deny')} testId="hold-deny">
            Deny
          </Button>
        </div>
      ) : (
        <div className="muted small hold-why" data-testid="hold-why">
          {decidable.why}
          {hold.state === 'pending' && hold.approversWhoCan && hold.approversWhoCan.length > 0 && <div data-testid="hold-who-can">Can approve: {hold.approversWhoCan.join(', ')}</div>}
        </div>
      )}
      {(localError || serverError) && <div className="field-error">{localError || serverError}</div>}
      {hold.session && (capabilities(me).viewSessions || mayReplayHold(me, hold)) && (
        <a className="small link" href={holdReplayHref(hold)} data-testid="hold-replay">
          Replay the session up to this hold →
        </a>
      )}
    </div>
  );
}

/**
 * A held SQL statement as it will run: the whole text (the box scrolls, nothing is cut unless it is
 * over the gateway's limit, and then a marker says so), and its bound parameters. Both are masked
 * for the log, as the recorded statement is.
 */
function HeldStatement({ hold }: { hold: HoldView }) {
  return (
    <div className="hold-statement-wrap">
      <pre className="hold-summary hold-statement" data-testid="hold-statement" tabIndex={0} aria-label="Statement that will run">
        <MaskedText value={summaryRich(hold.statement ?? '')} />
      </pre>
      {hold.statementLength !== undefined && (
        <div className="warn-text small" data-testid="hold-statement-cut">
          Shown: the first {hold.statement!.length.toLocaleString()} of {hold.statementLength.toLocaleString()} characters — the session replay has the whole statement.
        </div>
      )}
      {hold.params && hold.params.length > 0 && (
        <pre className="hold-summary hold-params" data-testid="hold-params" aria-label="Bound parameters">
          <MaskedText value={summaryRich(paramLines(hold.params).join('\n'))} />
        </pre>
      )}
    </div>
  );
}

function History() {
  const history = useInbox((s) => s.history);
  const loaded = useInbox((s) => s.historyLoaded);
  const error = useInbox((s) => s.historyError);
  const [filter, setFilter] = useState<HistoryFilter>({});
  useEffect(() => {
    void inboxStore.getState().loadHistory();
  }, []);
  const connections = useMemo(() => [...new Set(history.map((h) => h.connection))].sort(), [history]);
  const rows = filterHistory(history, filter);
  return (
    <div className="history">
      <div className="filters">
        <div className="search">
          <Icon name="search" size={14} />
          <input className="input" placeholder="Search requester, approver, rule, reason…" value={filter.text ?? ''} onChange={(e) => setFilter({ ...filter, text: e.target.value })} data-testid="history-search" />
        </div>
        <select className="input" value={filter.state ?? ''} onChange={(e) => setFilter({ ...filter, state: e.target.value as HistoryFilter['state'] })} data-testid="history-state" aria-label="Outcome">
          <option value="">Any outcome</option>
          {(['approved', 'denied', 'expired', 'abandoned', 'cancelled'] as const).map((s) => (
            <option key={s} value={s}>
              {STATE_LABEL[s]}
            </option>
          ))}
        </select>
        <select className="input" value={filter.connection ?? ''} onChange={(e) => setFilter({ ...filter, connection: e.target.value })} aria-label="Connection">
          <option value="">All connections</option>
          {connections.map((c) => (
            <option key={c}>{c}</option>
          ))}
        </select>
        <input className="input" type="datetime-local" value={filter.from ? toLocalInput(filter.from) : ''} onChange={(e) => setFilter({ ...filter, from: fromLocalInput(e.target.value) })} title="From" aria-label="From" />
        <input className="input" type="datetime-local" value={filter.to ? toLocalInput(filter.to) : ''} onChange={(e) => setFilter({ ...filter, to: fromLocalInput(e.target.value) })} title="To" aria-label="To" />
      </div>
      {error && <ErrorBox title="Could not load the history" message={error} onRetry={() => void inboxStore.getState().loadHistory()} />}
      {!loaded ? (
        <Loading />
      ) : rows.length === 0 ? (
        <Empty icon="clock" title={history.length ? 'No holds match these filters' : 'No decisions yet'}>
          {history.length ? 'Clear a filter to see more.' : 'Approved, denied and timed-out holds are listed here with who decided and why.'}
        </Empty>
      ) : (
        <table className="table" data-testid="history-table">
          <thead>
            <tr>
              <th>Decided</th>
              <th>Outcome</th>
              <th>Requester</th>
              <th>Connection</th>
              <th>Rule</th>
              <th>Request</th>
              <th>By</th>
              <th>Reason</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((h) => (
              <tr key={h.id} data-testid="history-row" data-state={h.state} className={h.session ? 'clickable' : ''} onClick={() => h.session && navigate({ page: 'replay', param: h.session, query: {} })}>
                <td className="nowrap">{formatDateTime(h.resolvedAt ?? h.createdAt)}</td>
                <td>
                  <Badge tone={h.state === 'approved' ? 'ok' : h.state === 'denied' ? 'danger' : 'warn'}>{STATE_LABEL[h.state]}</Badge>
                </td>
                <td>{h.requesterName}</td>
                <td>{h.connection}</td>
                <td>
                  <code>{h.rule}</code>
                </td>
                <td className="mono truncate" title={h.summary}>
                  <MaskedText value={summaryRich(h.summary)} />
                </td>
                <td>{decidedBy(h)}</td>
                <td className="truncate" title={h.resolution}>
                  {h.votes.filter((v) => v.reason).map((v) => v.reason).join('; ') || h.resolution || ''}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </div>
  );
}
