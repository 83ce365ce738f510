/**
 * The Electron main process: glue between Electron's APIs and the plain modules beside this file
 * (each tested under Node). Local mode runs the gateway (dist/proxy/entry.mjs) in a utilityProcess;
 * team mode (`--remote URL --issuer URL --client-id ID`, or `remote` in settings.json) connects to a
 * headless `custody serve` elsewhere after an RFC 8252 browser sign-in.
 */
import { app, BrowserWindow, clipboard, dialog, ipcMain, Menu, nativeImage, Notification, safeStorage, screen, session, shell, Tray, utilityProcess } from 'electron';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { ControlPlaneInfo } from '../shared/bridge';
import { bridgeHandlers, registerBridge } from './bridge-handlers';
import { consoleSessionCredentials, type HoldWatch, watchHolds } from './control-events';
import { forkGatewayProcess, GatewaySupervisor, type ReadyReport, utilityGatewayProcess, type UtilityProcessLike } from './gateway-supervisor';
import { hardenSession, hardenWebContents, isSafeExternalUrl, secureWebPreferences, type SessionLike, type WebContentsLike } from './navigation-policy';
import { HoldNotifier, nativeHoldNotifications } from './notifications';
import { refreshTokens, signInWithBrowser } from '../proxy/identity/native-login';
import { loadOrCreateVaultKey, safeStorageKeychain, TokenVault } from './secret-wrap';
import { TrayController } from './tray';
import { placeWindow, readWindowState, trackWindowState } from './window-state';

interface RemoteSettings {
  gateway: string;
  issuer: string;
  clientId: string;
  resource?: string;
}

const { values: argv } = parseArgs({
  args: process.argv.slice(app.isPackaged ? 1 : 2),
  options: {
    config: { type: 'string' },
    'data-dir': { type: 'string' },
    remote: { type: 'string' },
    issuer: { type: 'string' },
    'client-id': { type: 'string' },
    resource: { type: 'string' },
    hidden: { type: 'boolean' },
  },
  strict: false,
  allowPositionals: true,
});
const str = (v: unknown) => (typeof v === 'string' ? v : undefined);

const ENTRY = join(__dirname, '..', 'proxy', 'entry.mjs');
const PRELOAD = join(__dirname, 'preload.cjs');
const DEV_NODE = !app.isPackaged ? process.env['CUSTODY_GATEWAY_NODE'] : undefined;
const RESOURCES = app.isPackaged ? process.resourcesPath : join(__dirname, '..', '..', 'build');

let win: BrowserWindow | undefined;
let tray: TrayController | undefined;
let origin = 'http://127.0.0.1:7420';
let ready: ReadyReport | undefined;
let remote: RemoteSettings | undefined;
let accessToken: string | undefined;
let watch: HoldWatch | undefined;
let supervisor: GatewaySupervisor | undefined;
let quitting = false;
const log = (msg: string) => process.stderr.write(`${new Date().toISOString()} desktop ${msg}\n`);

function readRemoteSettings(): RemoteSettings | undefined {
  const gateway = str(argv.remote);
  if (gateway) {
    const issuer = str(argv.issuer);
    const clientId = str(argv['client-id']);
    if (!issuer || !clientId) throw new Error('--remote needs --issuer URL and --client-id ID (the IdP client registered for the desktop app)');
    return { gateway, issuer, clientId, resource: str(argv.resource) };
  }
  try {
    const s = JSON.parse(readFileSync(join(app.getPath('userData'), 'settings.json'), 'utf8')) as { remote?: RemoteSettings };
    return s.remote?.gateway ? s.remote : undefined;
  } catch {
    return undefined;
  }
}

function consoleUrl(hash = ''): string {
  return `${origin}/${hash}`;
}

function showWindow(hash?: string): void {
  if (!win || win.isDestroyed()) {
    const stateFile = join(app.getPath('userData'), 'window-state.json');
    const placed = placeWindow(readWindowState(stateFile), screen.getAllDisplays().map((d) => d.workArea));
    win = new BrowserWindow({
      ...placed.bounds,
      minWidth: 720,
      minHeight: 480,
      show: false,
      title: 'Custody',
      icon: join(RESOURCES, 'icons', '512x512.png'),
      backgroundColor: '#101418',
      webPreferences: secureWebPreferences(PRELOAD),
    });
    if (placed.maximized) win.maximize();
    trackWindowState(win, stateFile);
    win.on('close', (e) => {
      if (!quitting) {
        e.preventDefault(); // keep running in the tray so holds still notify
        win?.hide();
      }
    });
    win.once('ready-to-show', () => win?.show());
    // Login links work once: a window opened later than the first gets a fresh one.
    const link = ready?.loginUrl && !hash ? (supervisor?.loginLink() ?? Promise.reject(new Error('no gateway'))) : Promise.reject(new Error('no link'));
    const target = win;
    void link
      .catch(() => consoleUrl(hash))
      .then((first) => target.loadURL(first))
      .catch((err: unknown) => log(`cannot load the console: ${String(err)}`));
    return;
  }
  if (hash !== undefined) void win.loadURL(consoleUrl(hash)).catch(() => {});
  if (win.isMinimized()) win.restore();
  win.show();
  win.focus();
}

function openHold(holdId: string): void {
  showWindow(`#/holds/${encodeURIComponent(holdId)}`);
}

const notifier = new HoldNotifier({
  show: nativeHoldNotifications(Notification, openHold),
  onPendingCount: (pending) => tray?.update({ pending }),
});

function startWatching(headers: () => Record<string, string> | Promise<Record<string, string>>, onRefused?: () => void): void {
  watch?.stop();
  watch = watchHolds({
    origin,
    headers,
    notifier,
    log,
    onRefused,
    onStatus: (s) => {
      if (s.status === 'closed') log(`event stream: ${s.detail}; retrying in ${s.retryInMs}ms`);
    },
  });
}

function startLocal(): void {
  const keychain = safeStorageKeychain(safeStorage);
  let vaultKey: Buffer | null;
  try {
    vaultKey = loadOrCreateVaultKey(app.getPath('userData'), keychain);
  } catch (err) {
    dialog.showErrorBox('Custody cannot open its secrets', `${(err as Error).message}\n\nThe gateway was not started, so nothing is forwarded without its keys.`);
    app.exit(1);
    return;
  }
  if (!vaultKey) log(`secrets at rest: ${keychain.detail}`);
  const args = [
    ...(str(argv.config) ? ['--config', str(argv.config)!] : []),
    ...(str(argv['data-dir']) ? ['--data-dir', str(argv['data-dir'])!] : []),
    ...(vaultKey ? ['--sealed-secrets'] : []),
  ];
  supervisor = new GatewaySupervisor({
    // Development (`npm start` from a checkout): node_modules' native modules are built for Node,
    // not Electron, so the gateway runs under the Node that started the app. Installed builds
    // (native modules rebuilt for Electron) use a utilityProcess.
    spawn: () =>
      DEV_NODE
        ? forkGatewayProcess(ENTRY, args, { execPath: DEV_NODE, env: { ...process.env, ELECTRON_RUN_AS_NODE: undefined } })
        : utilityGatewayProcess(utilityProcess.fork(ENTRY, args, { stdio: 'pipe', serviceName: 'Custody gateway' }) as unknown as UtilityProcessLike),
    firstCommands: () => (vaultKey ? [{ type: 'vault-key', key: vaultKey.toString('base64') }] : []),
  });
  supervisor.on('ready', (r) => {
    const restarted = ready !== undefined;
    ready = r;
    origin = r.controlUrl;
    tray?.update({ status: `Gateway running on ${r.controlUrl.replace('http://', '')}`, failed: false });
    if (r.firstKey) void showFirstKey(r.firstKey);
    if (r.loginUrl) {
      // The window uses the link in the ready report; the watcher asks for its own each time.
      const credentials = consoleSessionCredentials(new URL(r.loginUrl).origin, () => supervisor!.loginLink());
      startWatching(credentials.headers, credentials.invalidate);
    } else log('the gateway issued no console login link: native hold notifications are off for this run');
    if (restarted && win && !win.isDestroyed()) void win.loadURL(r.loginUrl ?? consoleUrl()).catch(() => {});
    else if (!argv.hidden) showWindow();
  });
  supervisor.on('crash', (c) => {
    watch?.stop();
    const tail = c.lastLines.slice(-8).join('\n');
    if (c.restartInMs !== null) {
      tray?.update({ status: `Gateway restarting (${c.reason})` });
      new Notification({ title: 'Custody gateway restarted', body: `${c.reason}\n${c.lastLines.at(-1) ?? ''}`.slice(0, 300) }).show();
      return;
    }
    tray?.update({ status: `Gateway stopped: ${c.reason.split('\n')[0]}`, failed: true });
    void dialog
      .showMessageBox({ type: 'error', title: 'Custody gateway stopped', message: 'The gateway stopped and was not restarted.', detail: `${c.reason}\n\nLast output:\n${tail}`, buttons: ['Restart', 'Quit', 'Close'], defaultId: 0, cancelId: 2 })
      .then(({ response }) => (response === 0 ? supervisor?.retry() : response === 1 ? app.quit() : undefined));
  });
  supervisor.start();
}

async function showFirstKey(key: string): Promise<void> {
  const { response } = await dialog.showMessageBox({
    type: 'info',
    title: 'Custody: your admin API key',
    message: 'First start: an admin API key was created. It is shown only once.',
    detail: `${key}\n\nUse it as the API key of your OpenAI or Anthropic client (baseURL http://${ready?.listeners.find((l) => l.name === 'http')?.address ?? '127.0.0.1:7421'}/<connection>), or to sign in to the console from a browser.`,
    buttons: ['Copy key', 'Close'],
  });
  if (response === 0) clipboard.writeText(key);
}

async function startRemote(r: RemoteSettings): Promise<void> {
  origin = new URL(r.gateway).origin;
  tray?.update({ status: `Team gateway ${new URL(r.gateway).host}: signing in…` });
  const vault = new TokenVault(join(app.getPath('userData'), 'remote-tokens.safe'), safeStorageKeychain(safeStorage));
  const login = { issuer: r.issuer, clientId: r.clientId, resource: r.resource };
  let saved = vault.load();
  if (saved && (saved.gateway !== r.gateway || saved.issuer !== r.issuer)) saved = null;
  try {
    if (saved?.expiresAt && saved.expiresAt < Date.now() + 60_000 && saved.refreshToken) {
      const t = await refreshTokens(login, saved.refreshToken);
      saved = { ...saved, ...t };
    } else if (saved?.expiresAt && saved.expiresAt < Date.now() + 60_000) saved = null;
    if (!saved) {
      const t = await signInWithBrowser({ ...login, openBrowser: (url) => shell.openExternal(url) });
      saved = { issuer: r.issuer, clientId: r.clientId, gateway: r.gateway, ...t };
    }
    try {
      vault.save(saved);
    } catch (err) {
      log(`sign-in tokens not kept: ${(err as Error).message}`);
    }
  } catch (err) {
    tray?.update({ status: `Team gateway: not signed in (${(err as Error).message})` });
    dialog.showErrorBox('Custody sign-in failed', (err as Error).message);
    return;
  }
  accessToken = saved.accessToken;
  tray?.update({ status: `Team gateway ${new URL(r.gateway).host}` });
  startWatching(() => ({ authorization: `Bearer ${accessToken}` }));
  if (!argv.hidden) showWindow();
}

function controlPlaneInfo(): ControlPlaneInfo {
  // The renderer never holds a reusable credential: the window is signed in by a single-use login
  // link the main process opened, and the session lives in an HttpOnly cookie.
  return { url: origin, token: null, mode: remote ? 'remote' : 'local' };
}

async function main(): Promise<void> {
  await app.whenReady();
  hardenSession(session.defaultSession as unknown as SessionLike, { appOrigin: () => origin, log });
  app.on('web-contents-created', (_e, contents) => hardenWebContents(contents as unknown as WebContentsLike, { appOrigin: () => origin, openExternal: (url) => shell.openExternal(url), log }));
  registerBridge(
    ipcMain,
    bridgeHandlers({
      appVersion: () => app.getVersion(),
      controlPlane: controlPlaneInfo,
      notify: (n) => {
        const native = new Notification({ title: n.title, body: n.body });
        native.on('click', () => (n.holdId ? openHold(n.holdId) : showWindow()));
        native.show();
      },
      setBadgeCount: (count) => tray?.update({ pending: count }),
      openExternal: async (url) => {
        if (isSafeExternalUrl(url)) await shell.openExternal(url);
      },
    }),
    () => origin,
  );
  Menu.setApplicationMenu(process.platform === 'darwin' ? Menu.buildFromTemplate([{ role: 'appMenu' }, { role: 'editMenu' }, { role: 'viewMenu' }, { role: 'windowMenu' }]) : null);

  const trayIcon = nativeImage.createFromPath(join(RESOURCES, 'icons', process.platform === 'darwin' ? 'trayTemplate.png' : 'tray.png'));
  tray = new TrayController(
    new Tray(trayIcon),
    (template) => Menu.buildFromTemplate(template),
    {
      open: () => showWindow(),
      openHolds: () => showWindow('#/holds'),
      setPaused: (paused) => {
        notifier.setPaused(paused);
        tray?.update({ paused });
      },
      retryGateway: () => supervisor?.retry(),
      quit: () => app.quit(),
    },
    (n) => void app.setBadgeCount(n),
    { pending: 0, paused: false, status: 'Starting…' },
  );

  try {
    remote = readRemoteSettings();
  } catch (err) {
    dialog.showErrorBox('Custody', (err as Error).message);
    app.exit(2);
    return;
  }
  if (remote) await startRemote(remote);
  else startLocal();
}

if (!app.requestSingleInstanceLock()) {
  app.quit();
} else {
  app.on('second-instance', () => showWindow());
  app.on('activate', () => showWindow());
  app.on('window-all-closed', () => {
    // stay in the tray: approvers are notified with the window closed
  });
  app.on('before-quit', (e) => {
    if (quitting) return;
    quitting = true;
    e.preventDefault();
    watch?.stop();
    notifier.clear();
    void (supervisor?.stop() ?? Promise.resolve()).finally(() => app.exit(0));
  });
  main().catch((err: unknown) => {
    dialog.showErrorBox('Custody could not start', err instanceof Error ? (err.stack ?? err.message) : String(err));
    app.exit(1);
  });
}

