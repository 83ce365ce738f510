/**
 * What the console window may do, following Electron's security checklist
 * (https://www.electronjs.org/docs/latest/tutorial/security): the renderer is sandboxed and
 * isolated, navigates only within the control plane's origin, opens no windows of its own (http(s)
 * links go to the system browser), gets no permission but notifications, and runs under a strict
 * Content-Security-Policy. The decisions are pure functions; `hardenWebContents` and
 * `hardenSession` wire them to Electron objects passed in.
 */

export type NavigationDecision = { action: 'allow' } | { action: 'open-external'; url: string } | { action: 'deny'; reason: string };

/** The origin of an http(s) URL (`http://127.0.0.1:7420`), or null for anything else. */
export function httpOrigin(url: string): string | null {
  try {
    const u = new URL(url);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.origin : null;
  } catch {
    return null;
  }
}

/** Links the system browser may open: http(s), no embedded credentials, bounded length. */
export function isSafeExternalUrl(url: unknown): url is string {
  if (typeof url !== 'string' || url.length > 4096) return false;
  try {
    const u = new URL(url);
    return (u.protocol === 'http:' || u.protocol === 'https:') && !u.username && !u.password && Boolean(u.hostname);
  } catch {
    return false;
  }
}

/** A navigation of the console window (link click, location change, redirect). */
export function decideNavigation(target: string, appOrigin: string): NavigationDecision {
  const origin = httpOrigin(target);
  if (origin !== null && origin === appOrigin) return { action: 'allow' };
  if (isSafeExternalUrl(target)) return { action: 'open-external', url: target };
  return { action: 'deny', reason: `navigation to ${safeForLog(target)} is not allowed` };
}

/**
 * `window.open` and `target=_blank`: never a new Electron window. App links load in the console
 * window; http(s) links open in the system browser.
 */
export function decideWindowOpen(target: string, appOrigin: string): Exclude<NavigationDecision, { action: 'allow' }> | { action: 'navigate'; url: string } {
  const d = decideNavigation(target, appOrigin);
  return d.action === 'allow' ? { action: 'navigate', url: target } : d;
}

/** Only the console, on the app's origin, may show notifications; everything else is refused. */
export function decidePermission(permission: string, requestingUrl: string | undefined, appOrigin: string): boolean {
  return permission === 'notifications' && requestingUrl !== undefined && httpOrigin(requestingUrl) === appOrigin;
}

/** The CSP the desktop enforces on the console's documents (stricter than a browser needs). */
export function contentSecurityPolicy(appOrigin: string): string {
  const u = new URL(appOrigin);
  const ws = `${u.protocol === 'https:' ? 'wss' : 'ws'}://${u.host}`;
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    `connect-src 'self' ${ws}`,
    "worker-src 'self'",
    "manifest-src 'self'",
    "media-src 'none'",
    "object-src 'none'",
    "frame-src 'none'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
    "form-action 'self'",
  ].join('; ');
}

/** webPreferences for the console window: isolated, sandboxed, no Node, no webview. */
export function secureWebPreferences(preload: string) {
  return {
    preload,
    contextIsolation: true,
    sandbox: true,
    nodeIntegration: false,
    nodeIntegrationInWorker: false,
    nodeIntegrationInSubFrames: false,
    webSecurity: true,
    allowRunningInsecureContent: false,
    webviewTag: false,
    experimentalFeatures: false,
    navigateOnDragDrop: false,
    spellcheck: false,
  } as const;
}

function safeForLog(url: string): string {
  return url.length > 200 ? `${url.slice(0, 200)}…` : url;
}

interface PreventableEvent {
  preventDefault(): void;
}

/** The parts of Electron's WebContents the hardening uses. */
export interface WebContentsLike {
  on(event: 'will-navigate' | 'will-redirect', fn: (event: PreventableEvent, url: string) => void): unknown;
  on(event: 'will-attach-webview', fn: (event: PreventableEvent) => void): unknown;
  setWindowOpenHandler(fn: (details: { url: string }) => { action: 'deny' }): void;
  loadURL(url: string): Promise<void>;
}

export interface HardeningDeps {
  /** The control plane's origin right now (it changes if the gateway restarts on another port). */
  appOrigin: () => string;
  openExternal: (url: string) => void | Promise<void>;
  log?: (msg: string) => void;
}

/** Restricts navigation, redirects, new windows and webviews of one WebContents. */
export function hardenWebContents(contents: WebContentsLike, deps: HardeningDeps): void {
  const guard = (event: PreventableEvent, url: string) => {
    const d = decideNavigation(url, deps.appOrigin());
    if (d.action === 'allow') return;
    event.preventDefault();
    if (d.action === 'open-external') void Promise.resolve(deps.openExternal(d.url)).catch(() => {});
    else deps.log?.(d.reason);
  };
  contents.on('will-navigate', guard);
  contents.on('will-redirect', guard);
  contents.on('will-attach-webview', (event) => event.preventDefault());
  contents.setWindowOpenHandler(({ url }) => {
    const d = decideWindowOpen(url, deps.appOrigin());
    if (d.action === 'navigate') void contents.loadURL(d.url).catch(() => {});
    else if (d.action === 'open-external') void Promise.resolve(deps.openExternal(d.url)).catch(() => {});
    else deps.log?.(d.reason);
    return { action: 'deny' };
  });
}

/** The parts of Electron's Session the hardening uses. */
export interface SessionLike {
  setPermissionRequestHandler(fn: (wc: unknown, permission: string, callback: (granted: boolean) => void, details: { requestingUrl?: string }) => void): void;
  setPermissionCheckHandler(fn: (wc: unknown, permission: string, requestingOrigin: string) => boolean): void;
  webRequest: {
    onHeadersReceived(fn: (details: { url: string; resourceType?: string; responseHeaders?: Record<string, string[]> }, callback: (response: { responseHeaders?: Record<string, string[]> }) => void) => void): void;
  };
}

/** Denies every permission but notifications, and puts the strict CSP on the console's documents. */
export function hardenSession(session: SessionLike, deps: Pick<HardeningDeps, 'appOrigin' | 'log'>): void {
  session.setPermissionRequestHandler((_wc, permission, callback, details) => {
    const ok = decidePermission(permission, details.requestingUrl, deps.appOrigin());
    if (!ok) deps.log?.(`permission ${permission} denied for ${details.requestingUrl ?? 'unknown origin'}`);
    callback(ok);
  });
  session.setPermissionCheckHandler((_wc, permission, requestingOrigin) => decidePermission(permission, requestingOrigin, deps.appOrigin()));
  session.webRequest.onHeadersReceived((details, callback) => {
    callback({ responseHeaders: withCsp(details, deps.appOrigin()) });
  });
}

/** Response headers with the desktop CSP on documents from the app's origin. */
export function withCsp(details: { url: string; resourceType?: string; responseHeaders?: Record<string, string[]> }, appOrigin: string): Record<string, string[]> | undefined {
  const headers = details.responseHeaders;
  if (httpOrigin(details.url) !== appOrigin) return headers;
  if (details.resourceType !== undefined && details.resourceType !== 'mainFrame' && details.resourceType !== 'subFrame') return headers;
  const out: Record<string, string[]> = {};
  for (const [k, v] of Object.entries(headers ?? {})) if (k.toLowerCase() !== 'content-security-policy') out[k] = v;
  out['Content-Security-Policy'] = [contentSecurityPolicy(appOrigin)];
  return out;
}
