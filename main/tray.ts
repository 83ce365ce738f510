/**
 * The tray icon: the number of holds waiting for this approver (title on macOS, tooltip
 * everywhere, the dock/launcher badge through `setBadgeCount`), the gateway's state, and a menu:
 * open the console, pause notifications, quit. The menu template is a pure function of the state.
 */

export interface TrayState {
  pending: number;
  paused: boolean;
  /** One line about the gateway or the remote connection, e.g. "Gateway running on 127.0.0.1:7420". */
  status: string;
  /** Set when the gateway gave up restarting: the menu offers to try again. */
  failed?: boolean;
}

export interface TrayActions {
  open(): void;
  openHolds(): void;
  setPaused(paused: boolean): void;
  retryGateway(): void;
  quit(): void;
}

/** Electron `MenuItemConstructorOptions`, the subset used here. */
export interface MenuItemTemplate {
  label?: string;
  type?: 'normal' | 'separator' | 'checkbox';
  checked?: boolean;
  enabled?: boolean;
  click?: () => void;
}

export function pendingLabel(pending: number): string {
  return pending === 0 ? 'No holds waiting' : pending === 1 ? '1 hold waiting for you' : `${pending} holds waiting for you`;
}

export function trayTooltip(s: TrayState): string {
  return `Custody — ${pendingLabel(s.pending)}${s.paused ? ' (notifications paused)' : ''}\n${s.status}`;
}

export function trayMenuTemplate(s: TrayState, a: TrayActions): MenuItemTemplate[] {
  return [
    { label: 'Open Custody', click: a.open },
    { label: pendingLabel(s.pending), enabled: s.pending > 0, click: a.openHolds },
    { type: 'separator' },
    { label: 'Pause notifications', type: 'checkbox', checked: s.paused, click: () => a.setPaused(!s.paused) },
    { label: s.status, enabled: false },
    ...(s.failed ? [{ label: 'Restart the gateway', click: a.retryGateway }] : []),
    { type: 'separator' },
    { label: 'Quit Custody', click: a.quit },
  ];
}

/** The parts of Electron used to present the tray. */
export interface TrayLike {
  setToolTip(text: string): void;
  setTitle?(title: string): void;
  setContextMenu(menu: unknown): void;
  on(event: 'click', fn: () => void): unknown;
}

export class TrayController {
  private state: TrayState;

  constructor(
    private readonly tray: TrayLike,
    private readonly buildMenu: (template: MenuItemTemplate[]) => unknown,
    private readonly actions: TrayActions,
    private readonly setBadgeCount: (n: number) => void,
    initial: TrayState,
  ) {
    this.state = initial;
    tray.on('click', actions.open);
    this.render();
  }

  update(patch: Partial<TrayState>): void {
    this.state = { ...this.state, ...patch };
    this.render();
  }

  get current(): TrayState {
    return this.state;
  }

  private render(): void {
    const s = this.state;
    this.tray.setToolTip(trayTooltip(s));
    this.tray.setTitle?.(s.pending > 0 ? String(s.pending) : '');
    this.tray.setContextMenu(this.buildMenu(trayMenuTemplate(s, this.actions)));
    this.setBadgeCount(s.pending);
  }
}
