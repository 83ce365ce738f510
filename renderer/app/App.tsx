/**
 * The console shell: sign-in gate, sidebar navigation (only what the role may use), the live-feed
 * status, and the page for the current hash route.
 */
import { useEffect } from 'react';
import { hooks } from '../api';
import { Icon, type IconName, Logo } from '../components/Icon';
import { Button, Empty, Loading } from '../components/ui';
import { pendingList } from '../lib/holds';
import { capabilities, type Capabilities } from '../lib/roles';
import type { Page } from '../lib/route';
import { AuditPage } from '../pages/Audit';
import { ConnectionsPage } from '../pages/Connections';
import { DashboardPage } from '../pages/Dashboard';
import { InboxPage } from '../pages/Inbox';
import { KeysPage } from '../pages/Keys';
import { LoginPage } from '../pages/Login';
import { PoliciesPage } from '../pages/policies/PoliciesPage';
import { ReplayPage } from '../pages/Replay';
import { SessionsPage } from '../pages/Sessions';
import { authStore, inboxStore, toast, uiStore, useAuth, useInbox, useUi } from './context';
import { onMessage, startLive, stopLive } from './live-socket';
import { notifyHold, setBadge } from './notify';
import { navigate, useRoute } from './router';

hooks.onUnauthenticated = () => authStore.getState().expired();
hooks.onUnreachable = () => authStore.getState().setOffline(true);
hooks.onReachable = () => authStore.getState().setOffline(false);

const NAV: { page: Page; label: string; icon: IconName; allowed: (c: Capabilities) => boolean }[] = [
  { page: 'inbox', label: 'Approvals', icon: 'inbox', allowed: () => true },
  { page: 'sessions', label: 'Sessions', icon: 'sessions', allowed: (c) => c.viewSessions },
  { page: 'dashboard', label: 'Dashboard', icon: 'dashboard', allowed: (c) => c.viewDashboard },
  { page: 'policies', label: 'Policies', icon: 'policies', allowed: (c) => c.viewPolicies },
  { page: 'connections', label: 'Connections', icon: 'connections', allowed: (c) => c.viewPolicies },
  { page: 'audit', label: 'Audit', icon: 'audit', allowed: (c) => c.viewAudit },
  { page: 'keys', label: 'Keys', icon: 'keys', allowed: () => true },
];

export function App() {
  const status = useAuth((s) => s.status);
  useEffect(() => {
    void authStore.getState().init();
  }, []);
  if (status === 'loading') return <Loading label="Connecting to the gateway…" />;
  if (status === 'unreachable') return <Unreachable />;
  if (status === 'signed-out') return <LoginPage />;
  return <Shell />;
}

function Unreachable() {
  return (
    <div className="center-screen">
      <div className="card narrow">
        <Empty icon="wifi" title="The gateway is not reachable">
          The console talks only to the Custody gateway at <code>{location.host}</code>. Start it with <code>custody serve</code> (or open the desktop app), then retry.
        </Empty>
        <div className="center">
          <Button kind="primary" icon="refresh" onClick={() => void authStore.getState().init()}>
            Retry
          </Button>
        </div>
      </div>
    </div>
  );
}

function Shell() {
  const me = useAuth((s) => s.me);
  const offline = useAuth((s) => s.offline);
  const version = useAuth((s) => s.version);
  const live = useUi((s) => s.live);
  const pendingCount = useInbox((s) => Object.keys(s.inbox.pending).length);
  const route = useRoute();
  const caps = capabilities(me);

  useEffect(() => {
    void inboxStore.getState().load();
    startLive();
    const off = onMessage((msg) => {
      if (msg.type === 'hold.created' && msg.hold.requester !== authStore.getState().me?.subject) notifyHold(msg.hold);
    });
    const prune = setInterval(() => inboxStore.getState().prune(), 1000);
    return () => {
      off();
      stopLive();
      clearInterval(prune);
    };
  }, []);
  useEffect(() => setBadge(pendingList(inboxStore.getState().inbox).length), [pendingCount]);

  const allowed = NAV.filter((n) => n.allowed(caps));
  const current = route.page === 'replay' ? 'sessions' : route.page;
  const page = (() => {
    const nav = NAV.find((n) => n.page === current);
    // A hold's replay link (`?hold=`) is for its approvers too: the gateway shows them the session up to the hold.
    const holdReplay = route.page === 'replay' && !!route.query['hold'] && caps.decideHolds;
    if (nav && !nav.allowed(caps) && !holdReplay)
      return (
        <div className="page">
          <Empty icon="shield" title="Not available to your role">
            Your roles ({me?.roles.join(', ') || 'none'}) do not include this page.
          </Empty>
        </div>
      );
    switch (route.page) {
      case 'inbox':
        return <InboxPage route={route} />;
      case 'sessions':
        return <SessionsPage />;
      case 'replay':
        return <ReplayPage id={route.param ?? ''} eventSeq={route.query['event'] ? Number(route.query['event']) : undefined} holdId={route.query['hold']} />;
      case 'policies':
        return <PoliciesPage />;
      case 'connections':
        return <ConnectionsPage />;
      case 'audit':
        return <AuditPage />;
      case 'dashboard':
        return <DashboardPage />;
      case 'keys':
        return <KeysPage />;
      case 'login':
        navigate({ page: 'inbox', query: {} }, true);
        return null;
    }
  })();

  return (
    <div className="shell">
      <nav className="sidebar" aria-label="Main">
        <div className="brand">
          <Logo />
          <span>Custody</span>
        </div>
        <ul className="nav">
          {allowed.map((n) => (
            <li key={n.page}>
              <a href={`#/${n.page}`} className={current === n.page ? 'nav-item active' : 'nav-item'} data-testid={`nav-${n.page}`}>
                <Icon name={n.icon} />
                <span>{n.label}</span>
                {n.page === 'inbox' && pendingCount > 0 && (
                  <span className="nav-count" data-testid="pending-count">
                    {pendingCount}
                  </span>
                )}
              </a>
            </li>
          ))}
        </ul>
        <div className="sidebar-foot">
          <div className={`live live-${live}`} title={live === 'live' ? 'Live updates connected' : live === 'connecting' ? 'Connecting to live updates…' : 'Live updates disconnected; retrying'}>
            <span className="dot" /> {live === 'live' ? 'Live' : live === 'connecting' ? 'Connecting…' : 'Reconnecting…'}
          </div>
          <div className="user">
            <div className="avatar">{(me?.name ?? '?').slice(0, 1).toUpperCase()}</div>
            <div className="user-text">
              <div className="user-name" title={me?.subject}>
                {me?.name}
              </div>
              <div className="user-roles">{me?.roles.filter((r) => r !== 'user').join(' · ') || 'no console role'}</div>
            </div>
            <button
              className="icon-btn"
              title="Sign out"
              data-testid="sign-out"
              onClick={() => {
                stopLive();
                void authStore.getState().logout();
              }}
            >
              <Icon name="logout" />
            </button>
          </div>
          {version && <div className="version">Custody {version}</div>}
        </div>
      </nav>
      <main className="main">
        {offline && (
          <div className="banner banner-error" role="alert">
            <Icon name="wifi" /> The gateway is not answering. Showing what was loaded; retrying…
          </div>
        )}
        {page}
      </main>
      <Toasts />
    </div>
  );
}

function Toasts() {
  const toasts = useUi((s) => s.toasts);
  return (
    <div className="toasts" aria-live="polite">
      {toasts.map((t) => (
        <div key={t.id} className={`toast toast-${t.tone}`} onClick={() => uiStore.getState().dismiss(t.id)}>
          <Icon name={t.tone === 'error' ? 'alert' : 'check'} /> {t.text}
        </div>
      ))}
    </div>
  );
}

export { toast };
