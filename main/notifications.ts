/**
 * Native hold notifications. `HoldNotifier` reads the control-plane message stream
 * (shared/messages.ts) and decides: a `hold.created` this approver may decide raises one OS
 * notification (requester, connection, rule, expiry); once the hold is resolved, expires, or this
 * approver has voted, the notification is withdrawn. It also keeps the count of holds waiting for
 * this approver (the tray badge). Showing notifications is injected (Electron `Notification` in the
 * app, a recorder in tests).
 */
import type { HoldView } from '../shared/holds';
import type { ServerMessage } from '../shared/messages';

/** Who the desktop app is signed in as (from `/api/me` or the `hello` message). */
export interface Approver {
  subject: string;
  name?: string;
  roles: string[];
  /** Unknown when only `hello` was seen; then the approver role stands in for group membership. */
  groups?: string[];
}

export interface HoldNotification {
  holdId: string;
  title: string;
  body: string;
}

export interface ShownNotification {
  close(): void;
}

export interface HoldNotifierDeps {
  show(n: HoldNotification): ShownNotification;
  /** Called whenever the number of holds waiting for this approver changes. */
  onPendingCount?(count: number): void;
  now?: () => number;
}

/** Same rule as the gateway's `canDecideHold`, plus: nobody decides their own request, nor twice. */
export function mayDecide(hold: HoldView, who: Approver): boolean {
  if (hold.requester === who.subject) return false;
  if (hold.votes.some((v) => v.by === who.subject)) return false;
  if (who.roles.includes('admin')) return true;
  if (who.groups) return who.groups.some((g) => hold.approvers.includes(g));
  return who.roles.includes('approver');
}

/** "in 4 min", "in 45 s", "in 2 h" — how long until `at`. */
export function relativeExpiry(at: number, now: number): string {
  const s = Math.max(0, Math.round((at - now) / 1000));
  if (s < 60) return `in ${s} s`;
  if (s < 3600) return `in ${Math.round(s / 60)} min`;
  return `in ${Math.round(s / 360) / 10} h`;
}

export function holdNotification(hold: HoldView, now: number): HoldNotification {
  const clock = new Date(hold.expiresAt).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const summary = hold.summary.length > 160 ? `${hold.summary.slice(0, 159)}…` : hold.summary;
  return {
    holdId: hold.id,
    title: `Approval needed: ${hold.rule}`,
    body: `${hold.requesterName || hold.requester} on ${hold.connection}: ${summary}\nRule ${hold.rule}${hold.ruleReason ? ` (${hold.ruleReason})` : ''} · expires ${relativeExpiry(hold.expiresAt, now)} (${clock})`,
  };
}

interface Tracked {
  hold: HoldView;
  /** `mark()` value when tracking began. */
  stamp: number;
  shown?: ShownNotification;
  expiry?: NodeJS.Timeout;
}

export class HoldNotifier {
  private who: Approver | undefined;
  private readonly waiting = new Map<string, Tracked>();
  private paused = false;
  private lastCount = -1;
  private stamp = 0;
  /** Holds withdrawn, with when: a state read that started earlier must not bring them back. */
  private readonly gone = new Map<string, number>();
  private readonly now: () => number;

  constructor(private readonly deps: HoldNotifierDeps) {
    this.now = deps.now ?? Date.now;
  }

  /** Sets who is signed in (from `/api/me`, which carries groups). */
  setApprover(who: Approver): void {
    this.who = who;
    for (const [id, t] of this.waiting) if (!mayDecide(t.hold, who)) this.withdraw(id);
    this.countChanged();
  }

  get approver(): Approver | undefined {
    return this.who;
  }

  /** While paused no notification is shown; the count keeps updating. */
  setPaused(paused: boolean): void {
    this.paused = paused;
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** Holds waiting for this approver, oldest first. */
  pending(): HoldView[] {
    return [...this.waiting.values()].map((t) => t.hold).sort((a, b) => a.createdAt - b.createdAt);
  }

  /** A point in the message stream; pass it to `reset` with a list read after this point. */
  mark(): number {
    return ++this.stamp;
  }

  /**
   * Replaces what is known with the gateway's current pending holds (after connecting or a
   * `resync`). Holds already waiting are not announced again, so a reconnect is quiet. Messages
   * that arrived after `since` (while the list was being read) win over the list.
   */
  reset(pendingHolds: HoldView[], since = this.mark()): void {
    const keep = new Set<string>();
    for (const hold of pendingHolds) {
      if ((this.gone.get(hold.id) ?? 0) > since) continue;
      if (!this.who || hold.state !== 'pending' || !mayDecide(hold, this.who) || hold.expiresAt <= this.now()) continue;
      keep.add(hold.id);
      const t = this.waiting.get(hold.id);
      if (t) t.hold = hold;
      else this.track(hold, false);
    }
    for (const [id, t] of [...this.waiting]) if (!keep.has(id) && t.stamp <= since) this.withdraw(id);
    this.gone.clear();
    this.countChanged();
  }

  /** Feeds one control-plane message. */
  handle(msg: ServerMessage): void {
    switch (msg.type) {
      case 'hello':
        if (!this.who || this.who.subject !== msg.user.subject) this.setApprover({ subject: msg.user.subject, name: msg.user.name, roles: msg.user.roles });
        else this.who = { ...this.who, roles: msg.user.roles };
        return;
      case 'hold.created':
      case 'hold.updated':
        this.onHold(msg.hold, msg.type === 'hold.created');
        return;
      case 'hold.resolved':
        this.withdraw(msg.hold.id);
        this.countChanged();
        return;
      case 'resync':
      case 'session.started':
      case 'session.event':
      case 'session.ended':
      case 'policy.updated':
      case 'masking.updated':
      case 'connections.updated':
      case 'export.progress':
      case 'export.done':
      case 'export.failed':
        return;
      default:
        msg satisfies never;
    }
  }

  /** Withdraws every notification (quit, sign-out). */
  clear(): void {
    for (const id of [...this.waiting.keys()]) this.withdraw(id);
    this.countChanged();
  }

  private onHold(hold: HoldView, created: boolean): void {
    const t = this.waiting.get(hold.id);
    const eligible = this.who !== undefined && hold.state === 'pending' && mayDecide(hold, this.who) && hold.expiresAt > this.now();
    if (!eligible) {
      if (t) this.withdraw(hold.id);
    } else if (t) {
      t.hold = hold;
    } else {
      // An update for a hold we never saw created (we connected in between): count it, stay quiet.
      this.track(hold, created);
    }
    this.countChanged();
  }

  private track(hold: HoldView, announce: boolean): void {
    const t: Tracked = { hold, stamp: ++this.stamp };
    if (announce && !this.paused) t.shown = this.deps.show(holdNotification(hold, this.now()));
    t.expiry = setTimeout(() => {
      this.withdraw(hold.id);
      this.countChanged();
    }, Math.min(hold.expiresAt - this.now(), 2 ** 31 - 1));
    t.expiry.unref?.();
    this.waiting.set(hold.id, t);
  }

  private withdraw(id: string): void {
    this.gone.set(id, ++this.stamp);
    if (this.gone.size > 10_000) this.gone.delete(this.gone.keys().next().value!);
    const t = this.waiting.get(id);
    if (!t) return;
    this.waiting.delete(id);
    clearTimeout(t.expiry);
    try {
      t.shown?.close();
    } catch {
      // already dismissed by the user
    }
  }

  private countChanged(): void {
    if (this.waiting.size === this.lastCount) return;
    this.lastCount = this.waiting.size;
    this.deps.onPendingCount?.(this.waiting.size);
  }
}

/** The part of Electron's `Notification` class used here. */
export interface NotificationLike {
  on(event: 'click', fn: () => void): unknown;
  show(): void;
  close(): void;
}
export type NotificationCtor = new (options: { title: string; body: string; silent?: boolean; urgency?: 'normal' | 'critical' | 'low'; timeoutType?: 'default' | 'never' }) => NotificationLike;

/**
 * `HoldNotifierDeps.show` backed by Electron notifications: clicking one calls `openHold` with the
 * hold's id (the app then shows the window on `#/holds/<id>`).
 */
export function nativeHoldNotifications(Notification: NotificationCtor, openHold: (holdId: string) => void): HoldNotifierDeps['show'] {
  return (n) => {
    const native = new Notification({ title: n.title, body: n.body, urgency: 'critical', timeoutType: 'never' });
    native.on('click', () => openHold(n.holdId));
    native.show();
    return { close: () => native.close() };
  };
}
