/**
 * Recorded sessions: filters (user, connection, protocol, time, had holds, had masking) and a
 * windowed list — fixed-height rows, only those in view exist in the DOM, pages fetched as they
 * scroll into view — so 100,000 sessions scroll smoothly. Live sessions update as events arrive.
 * With a shared store the list holds every gateway's sessions, each marked with the gateway that
 * recorded it.
 */
import { useEffect, useLayoutEffect, useRef, useState } from 'react';
import type { SessionFilter, SessionSummary } from '../../shared/events';
import { api, sessionsStore, useSessions } from '../app/context';
import { Icon } from '../components/Icon';
import { FirstSteps } from '../components/FirstSteps';
import { Badge, Empty, ErrorBox, PageHeader, useNow } from '../components/ui';
import { formatCount, formatDateTime, formatDuration, fromLocalInput, gatewayLabel, toLocalInput } from '../lib/format';
import { formatRoute } from '../lib/route';
import { rowAt, visibleWindow } from '../lib/sessions';

export const ROW_HEIGHT = 36;

export function SessionsPage() {
  const filter = useSessions((s) => s.filter);
  const list = useSessions((s) => s.list);
  const loaded = useSessions((s) => s.loaded);
  const error = useSessions((s) => s.error);
  const incomplete = useSessions((s) => s.incomplete);
  const [connections, setConnections] = useState<string[]>([]);
  const [draft, setDraft] = useState<SessionFilter>(filter);

  useEffect(() => {
    sessionsStore.getState().reload();
    api
      .connections()
      .then((c) => setConnections(c.connections.map((x) => x.name)))
      .catch(() => {});
  }, []);
  // Text filters apply after a short pause; the rest at once.
  useEffect(() => {
    const t = setTimeout(() => {
      if (JSON.stringify(draft) !== JSON.stringify(sessionsStore.getState().filter)) sessionsStore.getState().setFilter(draft);
    }, 250);
    return () => clearTimeout(t);
  }, [draft]);

  const set = (patch: Partial<SessionFilter>) => setDraft({ ...draft, ...patch });
  return (
    <div className="page page-fill">
      <PageHeader title="Sessions" subtitle={loaded ? `${formatCount(list.total)} session${list.total === 1 ? '' : 's'}` : 'Loading…'} />
      <div className="filters">
        <div className="search">
          <Icon name="search" size={14} />
          <input className="input" placeholder="User" value={draft.user ?? ''} onChange={(e) => set({ user: e.target.value || undefined })} data-testid="filter-user" />
        </div>
        <select className="input" value={draft.connection ?? ''} onChange={(e) => set({ connection: e.target.value || undefined })} data-testid="filter-connection" aria-label="Connection">
          <option value="">All connections</option>
          {connections.map((c) => (
            <option key={c}>{c}</option>
          ))}
        </select>
        <select className="input" value={draft.protocol ?? ''} onChange={(e) => set({ protocol: e.target.value || undefined })} data-testid="filter-protocol" aria-label="Protocol">
          <option value="">Any protocol</option>
          <option value="http">HTTP / LLM</option>
          <option value="postgres">PostgreSQL</option>
          <option value="ssh">SSH</option>
        </select>
        <input className="input" type="datetime-local" title="From" aria-label="From" value={draft.from ? toLocalInput(draft.from) : ''} onChange={(e) => set({ from: fromLocalInput(e.target.value) })} />
        <input className="input" type="datetime-local" title="To" aria-label="To" value={draft.to ? toLocalInput(draft.to) : ''} onChange={(e) => set({ to: fromLocalInput(e.target.value) })} />
        <label className="check">
          <input type="checkbox" checked={!!draft.hadHolds} onChange={(e) => set({ hadHolds: e.target.checked || undefined })} data-testid="filter-holds" /> Had holds
        </label>
        <label className="check">
          <input type="checkbox" checked={!!draft.hadMasking} onChange={(e) => set({ hadMasking: e.target.checked || undefined })} data-testid="filter-masking" /> Had masking
        </label>
      </div>
      {error && <ErrorBox title="Could not load sessions" message={error} onRetry={() => sessionsStore.getState().reload()} />}
      {incomplete && (
        <div className="banner banner-muted" role="status" data-testid="sessions-incomplete">
          Only this gateway&apos;s sessions are shown: {incomplete}
        </div>
      )}
      {loaded && list.total === 0 && !error ? (
        Object.values(filter).some((v) => v !== undefined && v !== '') ? (
          <Empty icon="sessions" title="No sessions match these filters" />
        ) : (
          <Empty icon="sessions" title="No sessions recorded yet">
            <FirstSteps what="Sessions appear as soon as a client sends traffic through the gateway." />
          </Empty>
        )
      ) : (
        <VirtualSessionList />
      )}
    </div>
  );
}

function VirtualSessionList() {
  const list = useSessions((s) => s.list);
  const ref = useRef<HTMLDivElement>(null);
  const [scrollTop, setScrollTop] = useState(0);
  const [height, setHeight] = useState(600);
  const now = useNow(5000);

  useLayoutEffect(() => {
    const el = ref.current;
    if (!el) return;
    const ro = new ResizeObserver(() => setHeight(el.clientHeight));
    ro.observe(el);
    setHeight(el.clientHeight);
    return () => ro.disconnect();
  }, []);

  const win = visibleWindow(scrollTop, height, ROW_HEIGHT, list.total);
  useEffect(() => {
    sessionsStore.getState().ensureRows(win.start, win.end);
  }, [win.start, win.end, list.version]);

  const rows: { i: number; s: SessionSummary | undefined }[] = [];
  for (let i = win.start; i < win.end; i++) rows.push({ i, s: rowAt(list, i) });
  // With a shared store every session the gateway lists names its gateway: show that column.
  const team = rows.some((r) => r.s?.gateway !== undefined);
  const grid = `session-grid${team ? ' team' : ''}`;

  return (
    <div className="vlist">
      <div className={`vlist-head ${grid}`}>
        <span>Started</span>
        <span>User</span>
        <span>Connection</span>
        {team && <span>Gateway</span>}
        <span>Protocol</span>
        <span className="num">Duration</span>
        <span className="num">Requests</span>
        <span className="num">Events</span>
        <span className="num">Holds</span>
        <span className="num">Masked</span>
        <span className="num">Denied</span>
        <span>Status</span>
      </div>
      <div className="vlist-body" ref={ref} onScroll={(e) => setScrollTop(e.currentTarget.scrollTop)} data-testid="session-list" tabIndex={0}>
        <div style={{ height: win.totalHeight, position: 'relative' }}>
          {rows.map(({ i, s }) => (
            // A real link: focusable, Enter opens it, middle-click opens a tab, its address can be copied.
            s ? (
              <a key={s.id} href={formatRoute({ page: 'replay', param: s.id, query: {} })} className={`vrow ${grid}${i % 2 ? ' odd' : ''}`} style={{ top: i * ROW_HEIGHT, height: ROW_HEIGHT }} data-testid="session-row" data-session-id={s.id}>
                <SessionCells s={s} now={now} team={team} />
              </a>
            ) : (
              <div key={`pending-${i}`} className={`vrow ${grid}${i % 2 ? ' odd' : ''}`} style={{ top: i * ROW_HEIGHT, height: ROW_HEIGHT }} data-testid="session-row-loading">
                <span className="skeleton" />
              </div>
            )
          ))}
        </div>
      </div>
    </div>
  );
}

function SessionCells({ s, now, team }: { s: SessionSummary; now: number; team: boolean }) {
  const live = s.endedAt === null && now - s.lastEventAt < 15 * 60_000;
  return (
    <>
      <span className="nowrap">{formatDateTime(s.startedAt)}</span>
      <span className="truncate" title={s.actor ?? ''}>
        {s.actorName ?? s.actor ?? '—'}
      </span>
      <span className="truncate">{s.connection ?? '—'}</span>
      {team && (
        <span className="truncate muted" title={s.gateway ? `recorded by gateway ${s.gatewayName ?? ''} ${s.gateway}` : undefined} data-testid="session-gateway">
          {s.gateway ? gatewayLabel(s.gateway, s.gatewayName) : 'this gateway'}
        </span>
      )}
      <span>
        <Icon name={s.protocol === 'postgres' || s.protocol === 'ssh' ? 'terminal' : 'chat'} size={14} className="muted" /> {s.protocol === 'postgres' ? 'SQL' : s.protocol === 'http' ? 'HTTP' : s.protocol === 'ssh' ? 'SSH' : s.protocol}
      </span>
      <span className="num">{formatDuration((s.endedAt ?? s.lastEventAt) - s.startedAt)}</span>
      <span className="num" data-testid="session-requests">{formatCount(s.requests)}</span>
      <span className="num muted">{formatCount(s.events)}</span>
      <span className="num">{s.holds ? <Badge tone="warn">{s.holds}</Badge> : <span className="muted">0</span>}</span>
      <span className="num">{s.masked ? <Badge tone="accent">{s.masked}</Badge> : <span className="muted">0</span>}</span>
      <span className="num">{s.denied ? <Badge tone="danger">{s.denied}</Badge> : <span className="muted">0</span>}</span>
      <span>{live ? <Badge tone="ok">live</Badge> : <span className="muted">ended</span>}</span>
    </>
  );
}
