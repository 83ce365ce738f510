import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { describe, it } from 'node:test';
import {
  contentSecurityPolicy,
  decideNavigation,
  decidePermission,
  decideWindowOpen,
  hardenSession,
  hardenWebContents,
  isSafeExternalUrl,
  secureWebPreferences,
  withCsp,
} from '../../main/navigation-policy';

const APP = 'http://127.0.0.1:7420';

describe('navigation policy', () => {
  it('allows only the control plane origin inside the window', () => {
    assert.deepEqual(decideNavigation('http://127.0.0.1:7420/#/holds/h1', APP), { action: 'allow' });
    assert.deepEqual(decideNavigation('http://127.0.0.1:7420/login?token=x', APP), { action: 'allow' });
    // same host, other port or scheme: another origin
    assert.equal(decideNavigation('http://127.0.0.1:7421/openai', APP).action, 'open-external');
    assert.equal(decideNavigation('http://localhost:7420/', APP).action, 'open-external');
  });

  it('sends http(s) links to the system browser and refuses other schemes', () => {
    assert.deepEqual(decideNavigation('https://docs.example.com/a?b=1', APP), { action: 'open-external', url: 'https://docs.example.com/a?b=1' });
    for (const bad of ['file:///etc/passwd', 'javascript:alert(1)', 'data:text/html,<script>1</script>', 'custom-scheme://x', 'mailto:a@b.c', 'not a url', 'https://user:pw@evil.example/']) {
      assert.equal(decideNavigation(bad, APP).action, 'deny', bad);
      assert.equal(isSafeExternalUrl(bad), false, bad);
    }
    assert.equal(isSafeExternalUrl(`https://a.example/${'x'.repeat(5000)}`), false);
    assert.equal(isSafeExternalUrl(42), false);
  });

  it('never opens new windows: app links navigate the window, others go outside or nowhere', () => {
    assert.deepEqual(decideWindowOpen(`${APP}/#/sessions/s1`, APP), { action: 'navigate', url: `${APP}/#/sessions/s1` });
    assert.equal(decideWindowOpen('https://example.com/', APP).action, 'open-external');
    assert.equal(decideWindowOpen('file:///tmp/x', APP).action, 'deny');
  });

  it('grants notifications to the console only, and nothing else to anyone', () => {
    assert.equal(decidePermission('notifications', `${APP}/`, APP), true);
    assert.equal(decidePermission('notifications', 'https://evil.example/', APP), false);
    assert.equal(decidePermission('notifications', undefined, APP), false);
    for (const p of ['media', 'geolocation', 'clipboard-read', 'openExternal', 'fullscreen', 'midi', 'hid', 'serial', 'pointerLock']) {
      assert.equal(decidePermission(p, `${APP}/`, APP), false, p);
    }
  });

  it('uses isolated, sandboxed renderers without Node', () => {
    const prefs = secureWebPreferences('/app/preload.cjs');
    assert.equal(prefs.contextIsolation, true);
    assert.equal(prefs.sandbox, true);
    assert.equal(prefs.nodeIntegration, false);
    assert.equal(prefs.nodeIntegrationInSubFrames, false);
    assert.equal(prefs.webSecurity, true);
    assert.equal(prefs.webviewTag, false);
    assert.equal(prefs.allowRunningInsecureContent, false);
  });

  it('puts a strict CSP on the console documents only', () => {
    const csp = contentSecurityPolicy(APP);
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.doesNotMatch(csp, /unsafe-eval/);
    assert.match(csp, /connect-src 'self' ws:\/\/127\.0\.0\.1:7420/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.match(contentSecurityPolicy('https://gw.example.com'), /wss:\/\/gw\.example\.com/);

    const doc = withCsp({ url: `${APP}/`, resourceType: 'mainFrame', responseHeaders: { 'content-security-policy': ["default-src *"], 'X-Other': ['1'] } }, APP)!;
    assert.deepEqual(doc['Content-Security-Policy'], [csp]);
    assert.equal(doc['content-security-policy'], undefined, 'the looser header is replaced, not merged');
    assert.deepEqual(doc['X-Other'], ['1']);
    const img = { url: `${APP}/logo.png`, resourceType: 'image', responseHeaders: { a: ['b'] } };
    assert.equal(withCsp(img, APP), img.responseHeaders);
    const other = { url: 'https://elsewhere.example/', resourceType: 'mainFrame', responseHeaders: { a: ['b'] } };
    assert.equal(withCsp(other, APP), other.responseHeaders);
  });
});

class FakeWebContents extends EventEmitter {
  openHandler?: (d: { url: string }) => { action: 'deny' };
  loaded: string[] = [];
  setWindowOpenHandler(fn: (d: { url: string }) => { action: 'deny' }) {
    this.openHandler = fn;
  }
  async loadURL(url: string) {
    this.loaded.push(url);
  }
  /** Emits like Electron does and says whether the navigation went ahead. */
  attempt(event: 'will-navigate' | 'will-redirect' | 'will-attach-webview', url?: string): boolean {
    let prevented = false;
    this.emit(event, { preventDefault: () => (prevented = true) }, url);
    return !prevented;
  }
}

describe('window hardening wired to WebContents and Session', () => {
  it('blocks navigation away from the app and routes external links to the browser', async () => {
    const wc = new FakeWebContents();
    const opened: string[] = [];
    let origin = APP;
    hardenWebContents(wc, { appOrigin: () => origin, openExternal: (u) => void opened.push(u) });
    assert.equal(wc.attempt('will-navigate', `${APP}/#/holds`), true);
    assert.equal(wc.attempt('will-navigate', 'https://example.com/help'), false);
    assert.equal(wc.attempt('will-redirect', 'file:///etc/passwd'), false);
    assert.equal(wc.attempt('will-attach-webview'), false);
    assert.deepEqual(wc.openHandler!({ url: 'https://example.com/x' }), { action: 'deny' });
    assert.deepEqual(wc.openHandler!({ url: `${APP}/#/audit` }), { action: 'deny' });
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(opened, ['https://example.com/help', 'https://example.com/x']);
    assert.deepEqual(wc.loaded, [`${APP}/#/audit`]);
    // after a gateway restart on another port, the old origin is foreign
    origin = 'http://127.0.0.1:7500';
    assert.equal(wc.attempt('will-navigate', `${APP}/`), false);
  });

  it('answers permission requests and checks, and rewrites document headers', () => {
    let request!: Parameters<Parameters<typeof hardenSession>[0]['setPermissionRequestHandler']>[0];
    let check!: Parameters<Parameters<typeof hardenSession>[0]['setPermissionCheckHandler']>[0];
    let headers!: Parameters<Parameters<typeof hardenSession>[0]['webRequest']['onHeadersReceived']>[0];
    const denied: string[] = [];
    hardenSession(
      { setPermissionRequestHandler: (f) => (request = f), setPermissionCheckHandler: (f) => (check = f), webRequest: { onHeadersReceived: (f) => (headers = f) } },
      { appOrigin: () => APP, log: (m) => denied.push(m) },
    );
    const answers: boolean[] = [];
    request(null, 'notifications', (g) => answers.push(g), { requestingUrl: `${APP}/` });
    request(null, 'media', (g) => answers.push(g), { requestingUrl: `${APP}/` });
    request(null, 'notifications', (g) => answers.push(g), { requestingUrl: 'https://evil.example/' });
    assert.deepEqual(answers, [true, false, false]);
    assert.equal(denied.length, 2);
    assert.equal(check(null, 'notifications', APP), true);
    assert.equal(check(null, 'clipboard-read', APP), false);
    let out: Record<string, string[]> | undefined;
    headers({ url: `${APP}/`, resourceType: 'mainFrame', responseHeaders: {} }, (r) => (out = r.responseHeaders));
    assert.ok(out?.['Content-Security-Policy']?.[0]?.includes("default-src 'none'"));
  });
});
