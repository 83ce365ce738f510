/**
 * Hold notifications. In the desktop app the main process raises them itself (it has its own
 * WebSocket, so they arrive with the window closed); the console only sets the badge. In a browser
 * the console uses the Web Notification API, asking for permission once.
 */
import { desktopBridge } from '../../shared/bridge';
import type { HoldView } from '../../shared/holds';
import { formatCountdown } from '../lib/format';

const ASKED_KEY = 'custody.notifications.asked';

export const bridge = () => desktopBridge(window);

export function notificationState(): 'desktop' | 'unsupported' | 'granted' | 'denied' | 'ask' | 'dismissed' {
  if (bridge()) return 'desktop';
  if (typeof Notification === 'undefined') return 'unsupported';
  if (Notification.permission === 'granted') return 'granted';
  if (Notification.permission === 'denied') return 'denied';
  return localStorage.getItem(ASKED_KEY) ? 'dismissed' : 'ask';
}

/** Asks for permission (once: the answer, or a dismissal, is remembered). */
export async function askPermission(): Promise<void> {
  localStorage.setItem(ASKED_KEY, String(Date.now()));
  if (typeof Notification !== 'undefined' && Notification.permission === 'default') await Notification.requestPermission();
}

export function dismissAsk(): void {
  localStorage.setItem(ASKED_KEY, String(Date.now()));
}

export function notifyHold(hold: HoldView): void {
  if (bridge()) return; // the main process notifies
  if (typeof Notification === 'undefined' || Notification.permission !== 'granted') return;
  const n = new Notification(`Approval needed: ${hold.requesterName} on ${hold.connection}`, {
    body: `${hold.summary}\nRule ${hold.rule} · ${formatCountdown(hold.expiresAt - Date.now())} left`,
    tag: hold.id,
  });
  n.onclick = () => {
    window.focus();
    location.hash = `#/inbox?hold=${encodeURIComponent(hold.id)}`;
    n.close();
  };
}

export function setBadge(count: number): void {
  void bridge()?.setBadgeCount(count);
  document.title = count ? `(${count}) Custody` : 'Custody';
}

export function openExternal(url: string): void {
  const b = bridge();
  if (b) void b.openExternal(url);
  else window.open(url, '_blank', 'noopener');
}
