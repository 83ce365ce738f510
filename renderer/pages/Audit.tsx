/**
 * Audit: integrity of the log (last signed checkpoint, last verification, the signing key's
 * fingerprint), a verification run on demand, and evidence bundles for a time window — built by
 * the gateway with progress over the WebSocket, then downloaded. `custody verify <bundle>` checks
 * a bundle offline. Witnesses (who cosign the checkpoints elsewhere), SIEM sinks (where every
 * event is streamed) and the archive (sealed segments in object storage) show their state; one that
 * fails raises a banner for admins, since evidence that has stopped leaving the box is a finding in
 * itself. With a shared store, admins see the group's gateways and approve pending ones (Gateways.tsx).
 */
import { useCallback, useEffect, useRef, useState } from 'react';
import { api, toast, useAuth } from '../app/context';
import { onMessage } from '../app/live-socket';
import { Icon } from '../components/Icon';
import { Badge, Button, CodeBlock, ErrorBox, Field, Loading, PageHeader } from '../components/ui';
import type { ArchiveStatus, SinkStatus, WitnessStatus } from '../../shared/evidence';
import type { AuditStatus, VerifyResult } from '../lib/api-types';
import { formatAgo, formatBytes, formatCount, formatDateTime, fromLocalInput, toLocalInput } from '../lib/format';
import { capabilities } from '../lib/roles';
import { GatewaysCard } from './Gateways';

type ExportState = { phase: 'idle' } | { phase: 'running'; id: string; done: number; total: number } | { phase: 'done'; id: string; url: string; bytes?: number } | { phase: 'failed'; error: string };

export function AuditPage() {
  const me = useAuth((s) => s.me);
  const caps = capabilities(me);
  const isAdmin = !!me?.roles.includes('admin');
  const [status, setStatus] = useState<AuditStatus>();
  const [error, setError] = useState<string>();
  const [verify, setVerify] = useState<VerifyResult | 'running'>();
  const load = useCallback(() => {
    api
      .auditStatus()
      .then((s) => {
        setStatus(s);
        setError(undefined);
      })
      .catch((e: Error) => setError(e.message));
  }, []);
  useEffect(load, [load]);

  const runVerify = async () => {
    setVerify('running');
    try {
      const r = await api.verify();
      setVerify(r);
      load();
    } catch (err) {
      setVerify({ ok: false, message: (err as Error).message });
    }
  };

  // Witness and sink states change without a page action: refresh while the page is open.
  useEffect(() => {
    const t = setInterval(load, 5000);
    return () => clearInterval(t);
  }, [load]);
  const failing = status
    ? [
        ...status.witnesses.filter((w) => w.state === 'failing').map((w) => `witness ${w.name}`),
        ...(status.combinedCheckpoint?.witnesses ?? []).filter((w) => w.state === 'failing').map((w) => `witness ${w.name} (group log)`),
        ...status.sinks.filter((s) => s.state === 'failing').map((s) => `sink ${s.name}`),
        ...(status.archive?.state === 'failing' ? ['the archive'] : []),
      ]
    : [];

  return (
    <div className="page">
      <PageHeader title="Audit" subtitle="A hash-chained, Merkle-tree log with signed checkpoints. Anyone can verify it offline." />
      {error && <ErrorBox title="Could not load the integrity status" message={error} onRetry={load} />}
      {isAdmin && failing.length > 0 && (
        <div className="banner banner-error" role="alert" data-testid="evidence-banner">
          <Icon name="alert" /> Evidence is not leaving this gateway: {failing.join(', ')} {failing.length === 1 ? 'is' : 'are'} failing. Traffic is not affected; events wait in the store and are sent when it is back.
        </div>
      )}
      {isAdmin && status?.combinedCheckpoint?.state === 'refused' && (
        <div className="banner banner-error" role="alert" data-testid="combined-banner">
          <Icon name="alert" /> The shared store does not hold what the group's combined checkpoint committed to: {status.combinedCheckpoint.cause}
        </div>
      )}
      {!status && !error ? (
        <Loading />
      ) : status ? (
        <div className="stat-grid" data-testid="audit-status">
          <div className="stat">
            <div className="stat-label">Events in the log</div>
            <div className="stat-value">{status.treeSize !== null ? formatCount(status.treeSize) : '—'}</div>
            {status.rootHash && (
              <div className="muted small mono" title={status.rootHash}>
                root {status.rootHash.slice(0, 16)}…
              </div>
            )}
          </div>
          <div className="stat">
            <div className="stat-label">Last signed checkpoint</div>
            <div className="stat-value">{status.lastCheckpoint ? formatAgo(status.lastCheckpoint.time, Date.now()) : 'none yet'}</div>
            {status.lastCheckpoint && (
              <div className="muted small">
                {formatDateTime(status.lastCheckpoint.time)} · {formatCount(status.lastCheckpoint.treeSize)} events
              </div>
            )}
            {status.signer?.state === 'failing' && (
              <div className="small" data-testid="signer-failing" title={status.signer.lastError ?? undefined}>
                <Badge tone="danger">signer failing</Badge> {status.signer.lastError}
              </div>
            )}
          </div>
          <div className="stat">
            <div className="stat-label">Last verification</div>
            <div className="stat-value">{status.lastVerification ? <Badge tone={status.lastVerification.ok ? 'ok' : 'danger'}>{status.lastVerification.ok ? 'intact' : 'FAILED'}</Badge> : 'never'}</div>
            {status.lastVerification && (
              <div className="muted small">
                {formatDateTime(status.lastVerification.time)}
                {status.lastVerification.message ? ` · ${status.lastVerification.message}` : ''}
              </div>
            )}
          </div>
          <div className="stat">
            <div className="stat-label">Signing key fingerprint</div>
            <div className="stat-value mono small-value" data-testid="fingerprint">
              {status.fingerprint ?? '—'}
            </div>
            {status.origin && <div className="muted small">origin {status.origin}</div>}
            {status.signer?.kind === 'command' && <div className="muted small">held by audit.signer ({status.signer.program})</div>}
          </div>
        </div>
      ) : null}
      <section className="card">
        <div className="card-head">
          <h2>Verify the log</h2>
          <span className="muted small">Recomputes every hash, the Merkle tree and the checkpoint signatures.</span>
        </div>
        <div className="row-start">
          <Button kind="primary" icon="audit" onClick={() => void runVerify()} disabled={verify === 'running' || !caps.viewAudit} testId="run-verify">
            {verify === 'running' ? 'Verifying…' : 'Run verification'}
          </Button>
          {verify && verify !== 'running' && (
            <div className={verify.ok ? 'verify ok' : 'verify bad'} data-testid="verify-result">
              <Icon name={verify.ok ? 'check' : 'alert'} /> {verify.ok ? 'Intact' : 'Problem found'}: {verify.message}
              {verify.events !== undefined && !verify.message.includes(String(verify.events)) && <span className="muted"> · {formatCount(verify.events)} events</span>}
              {verify.firstBad ? <span> · first bad event #{verify.firstBad}</span> : null}
            </div>
          )}
        </div>
        {status?.publicKey && (
          <details className="key-details">
            <summary>Public key (give it to your auditor with the fingerprint)</summary>
            <CodeBlock code={status.publicKey} label="verifier key" />
          </details>
        )}
      </section>
      {isAdmin && <GatewaysCard />}
      {status && (status.witnesses.length > 0 || status.sinks.length > 0 || status.archive) && <EvidenceOutCard witnesses={status.witnesses} groupWitnesses={status.combinedCheckpoint?.witnesses} sinks={status.sinks} archive={status.archive} />}
      {caps.exportEvidence && <ExportCard />}
    </div>
  );
}

function GroupWitnessCell({ w }: { w: GroupWitness | undefined }) {
  if (!w) return <td>—</td>;
  return (
    <td data-testid={`group-witness-${w.name}`}>
      {stateBadge(w.state)}
      <div className="muted small">
        {w.cosignedTreeSize === null ? 'none cosigned yet' : `${formatCount(w.cosignedTreeSize)} combined checkpoint${w.cosignedTreeSize === 1 ? '' : 's'} cosigned`}
        {w.behind ? ` · ${formatCount(w.behind)} behind` : ''}
      </div>
    </td>
  );
}

function stateBadge(state: string) {
  return <Badge tone={state === 'failing' ? 'danger' : state === 'ok' || state === 'idle' ? 'ok' : 'neutral'}>{state === 'idle' ? 'up to date' : state}</Badge>;
}

/** The last error of something retried with backoff, and when the next try is. */
function FailureNote({ error, nextRetryAt, now }: { error: string | null; nextRetryAt: number | null; now: number }) {
  if (!error) return null;
  return (
    <div className="danger-text small">
      {error}
      {nextRetryAt ? ` · retrying in ${Math.max(1, Math.round((nextRetryAt - now) / 1000))} s` : ''}
    </div>
  );
}

/** A witness's standing on the group's log of combined checkpoints (shared store only). */
type GroupWitness = NonNullable<NonNullable<AuditStatus['combinedCheckpoint']>['witnesses']>[number];

function EvidenceOutCard({ witnesses, groupWitnesses, sinks, archive }: { witnesses: WitnessStatus[]; groupWitnesses: GroupWitness[] | undefined; sinks: SinkStatus[]; archive: ArchiveStatus | null }) {
  const now = Date.now();
  return (
    <section className="card" data-testid="evidence-out">
      <div className="card-head">
        <h2>Evidence leaving the box</h2>
        <span className="muted small">
          Witnesses cosign each checkpoint elsewhere, so a rewritten history cannot be re-signed here unnoticed. Sinks stream every event to your SIEM. The archive keeps sealed, verifiable segments in object storage.
        </span>
      </div>
      {witnesses.length > 0 && (
        <table className="table" data-testid="witnesses">
          <thead>
            <tr>
              <th>Witness</th>
              <th>State</th>
              <th>Last cosigned checkpoint</th>
              <th>Behind</th>
              {groupWitnesses && <th title="The group's log of combined checkpoints, one leaf per combined checkpoint of every gateway's chain">Group log</th>}
            </tr>
          </thead>
          <tbody>
            {witnesses.map((w) => (
              <tr key={w.name} data-testid={`witness-${w.name}`}>
                <td>
                  <div>{w.name}</div>
                  <div className="muted small mono">{w.url}</div>
                </td>
                <td>
                  {stateBadge(w.state)}
                  <FailureNote error={w.lastError} nextRetryAt={w.nextRetryAt} now={now} />
                </td>
                <td>
                  {w.lastCosigned ? (
                    <>
                      {formatCount(w.lastCosigned.treeSize)} events · {formatAgo(w.lastCosigned.cosignedAt, now)}
                      <div className="muted small mono" title={w.lastCosigned.rootHash}>root {w.lastCosigned.rootHash.slice(0, 16)}…</div>
                    </>
                  ) : (
                    'none yet'
                  )}
                </td>
                <td>{w.behind ? `${formatCount(w.behind)} checkpoint${w.behind === 1 ? '' : 's'}` : '—'}</td>
                {groupWitnesses && <GroupWitnessCell w={groupWitnesses.find((g) => g.name === w.name)} />}
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {sinks.length > 0 && (
        <table className="table" data-testid="sinks">
          <thead>
            <tr>
              <th>Sink</th>
              <th>State</th>
              <th>Backlog</th>
              <th>Last delivery</th>
            </tr>
          </thead>
          <tbody>
            {sinks.map((s) => (
              <tr key={s.name} data-testid={`sink-${s.name}`}>
                <td>
                  {s.name} <span className="muted small">{s.kind}</span>
                </td>
                <td>
                  {stateBadge(s.state)}
                  {s.lastError && <div className="danger-text small">{s.lastError}</div>}
                </td>
                <td>{s.backlog ? `${formatCount(s.backlog)} events${s.backlogAgeMs !== null ? `, oldest ${formatAgo(now - s.backlogAgeMs, now)}` : ''}` : 'none'}</td>
                <td>{s.lastDeliveryAt ? formatAgo(s.lastDeliveryAt, now) : 'never'}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {archive && <ArchiveTable archive={archive} now={now} />}
    </section>
  );
}

function ArchiveTable({ archive: a, now }: { archive: ArchiveStatus; now: number }) {
  const last = a.lastSegment;
  return (
    <table className="table" data-testid="archive">
      <thead>
        <tr>
          <th>Archive</th>
          <th>State</th>
          <th>Last sealed segment</th>
          <th>Not yet archived</th>
          <th>Object Lock</th>
        </tr>
      </thead>
      <tbody>
        <tr>
          <td>
            <div className="mono small">{a.location}</div>
            <div className="muted small">sealed every {a.every}</div>
          </td>
          <td>
            {stateBadge(a.state)}
            <FailureNote error={a.lastError} nextRetryAt={a.nextRetryAt} now={now} />
          </td>
          <td data-testid="archive-last-segment">
            {last ? (
              <>
                #{last.index}: seq {formatCount(last.firstSeq)}–{formatCount(last.lastSeq)} · verified {formatAgo(last.verifiedAt, now)}
                <div className="muted small mono" title={last.key}>
                  {last.key} · {formatBytes(last.bytes)}
                </div>
              </>
            ) : (
              'none yet'
            )}
          </td>
          <td>{a.behind ? `${formatCount(a.behind)} events` : 'none'}</td>
          <td data-testid="archive-object-lock">
            {a.objectLock.state === 'enabled' ? (
              <>
                <Badge tone="ok">{a.objectLock.mode}</Badge>
                {last?.retainUntil ? <div className="muted small">last segment locked until {formatDateTime(last.retainUntil)}</div> : null}
              </>
            ) : (
              <Badge tone={a.objectLock.state === 'absent' ? 'warn' : 'neutral'}>{a.objectLock.state === 'absent' ? 'absent' : 'unknown'}</Badge>
            )}
            {a.objectLock.detail && <div className="muted small">{a.objectLock.detail}</div>}
          </td>
        </tr>
      </tbody>
    </table>
  );
}

function ExportCard() {
  const [from, setFrom] = useState(() => Date.now() - 7 * 86_400_000);
  const [to, setTo] = useState(() => Date.now());
  const [user, setUser] = useState('');
  const [connection, setConnection] = useState('');
  const [connections, setConnections] = useState<string[]>([]);
  const [state, setState] = useState<ExportState>({ phase: 'idle' });
  const idRef = useRef<string>(undefined);
  useEffect(() => {
    api
      .connections()
      .then((c) => setConnections(c.connections.map((x) => x.name)))
      .catch(() => {});
  }, []);
  useEffect(
    () =>
      onMessage((msg) => {
        if (!('id' in msg) || msg.id !== idRef.current) return;
        if (msg.type === 'export.progress') setState({ phase: 'running', id: msg.id, done: msg.done, total: msg.total });
        else if (msg.type === 'export.done') {
          setState({ phase: 'done', id: msg.id, url: msg.url, bytes: msg.bytes });
          toast('ok', 'The evidence bundle is ready.');
        } else if (msg.type === 'export.failed') setState({ phase: 'failed', error: msg.error });
      }),
    [],
  );
  const start = async () => {
    setState({ phase: 'running', id: '', done: 0, total: 0 });
    try {
      const r = await api.createExport({ from, to, ...(user ? { user } : {}), ...(connection ? { connection } : {}) });
      idRef.current = r.id;
      setState((s) => (s.phase === 'running' && !s.id ? { ...s, id: r.id } : s));
      if (r.url) setState({ phase: 'done', id: r.id, url: r.url });
    } catch (err) {
      setState({ phase: 'failed', error: (err as Error).message });
    }
  };
  const pct = state.phase === 'running' && state.total > 0 ? Math.round((state.done / state.total) * 100) : undefined;
  return (
    <section className="card">
      <div className="card-head">
        <h2>Evidence bundle</h2>
        <span className="muted small">Events (JSONL and OCSF), approvals, policy versions, checkpoints, inclusion proofs, the public key and a report mapped to SOC 2 and ISO 27001.</span>
      </div>
      <div className="row">
        <Field label="From">
          <input className="input" type="datetime-local" value={toLocalInput(from)} onChange={(e) => setFrom(fromLocalInput(e.target.value) ?? from)} data-testid="export-from" />
        </Field>
        <Field label="To">
          <input className="input" type="datetime-local" value={toLocalInput(to)} onChange={(e) => setTo(fromLocalInput(e.target.value) ?? to)} data-testid="export-to" />
        </Field>
        <Field label="User (optional)">
          <input className="input" value={user} onChange={(e) => setUser(e.target.value)} placeholder="any user" />
        </Field>
        <Field label="Connection (optional)">
          <select className="input" value={connection} onChange={(e) => setConnection(e.target.value)}>
            <option value="">All connections</option>
            {connections.map((c) => (
              <option key={c}>{c}</option>
            ))}
          </select>
        </Field>
      </div>
      <div className="row-start">
        <Button kind="primary" icon="download" onClick={() => void start()} disabled={state.phase === 'running'} testId="export-start">
          {state.phase === 'running' ? 'Building…' : 'Build bundle'}
        </Button>
        {state.phase === 'running' && (
          <div className="progress" data-testid="export-progress">
            <div className="progress-bar">
              <div style={{ width: `${pct ?? 5}%` }} className={pct === undefined ? 'indeterminate' : ''} />
            </div>
            <span className="muted small">{pct !== undefined ? `${formatCount(state.done)} of ${formatCount(state.total)} events · ${pct}%` : 'starting…'}</span>
          </div>
        )}
        {state.phase === 'done' && (
          <a className="btn btn-approve btn-md" href={state.url} download data-testid="export-download">
            <Icon name="download" /> Download{state.bytes ? ` (${formatBytes(state.bytes)})` : ''}
          </a>
        )}
        {state.phase === 'failed' && <span className="danger-text" data-testid="export-error">{state.error}</span>}
      </div>
      {state.phase === 'done' && (
        <p className="muted small">
          Check it anywhere with <code>custody verify &lt;bundle&gt;</code> — it needs nothing but the file.
        </p>
      )}
    </section>
  );
}
