/**
 * Sign in: "Sign in with <IdP>" for each configured OIDC issuer (authorization code + PKCE, run by
 * the gateway), or paste a Custody API key. In local mode `custody serve` prints a one-time login
 * link that signs the browser in directly.
 */
import { type FormEvent, useState } from 'react';
import { authStore, useAuth } from '../app/context';
import { Logo } from '../components/Icon';
import { Button, Field } from '../components/ui';
import { afterSignIn } from '../lib/route';

export function LoginPage() {
  const providers = useAuth((s) => s.providers);
  const stateNotice = useAuth((s) => s.notice);
  // The gateway sends failed sign-ins (an expired login link, an IdP error) back as /login?error=…
  const linkError = new URLSearchParams(location.search).get('error');
  const notice = linkError ?? stateNotice;
  const version = useAuth((s) => s.version);
  const [key, setKey] = useState('');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (!key.trim()) return setError('Paste an API key (it starts with cst_).');
    setBusy(true);
    setError(undefined);
    try {
      await authStore.getState().loginWithKey(key);
      history.replaceState(null, '', `${afterSignIn(location.search)}${location.hash}`);
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="login">
      <div className="login-card">
        <div className="login-brand">
          <Logo size={28} />
          <div>
            <div className="login-title">Sign in to Custody</div>
            <div className="login-sub">Approvals, session replay and audit evidence</div>
          </div>
        </div>
        {notice && (
          <div className="banner banner-info" data-testid="login-notice">
            {notice}
          </div>
        )}
        {providers.length > 0 && (
          <div className="login-providers">
            {providers.map((p) => (
              <a key={p.issuer} className="btn btn-secondary btn-md btn-block" href={p.startUrl} data-testid="oidc-login">
                Sign in with {p.name}
              </a>
            ))}
            <div className="or">
              <span>or</span>
            </div>
          </div>
        )}
        <form onSubmit={(e) => void submit(e)}>
          <Field label="API key" error={error} hint="A Custody key (cst_…). An admin creates one with custody keys create, or under API keys.">
            <input
              type="password"
              autoComplete="off"
              spellCheck={false}
              className="input mono"
              placeholder="cst_…"
              value={key}
              onChange={(e) => setKey(e.target.value)}
              data-testid="login-key"
              autoFocus={providers.length === 0}
            />
          </Field>
          <Button type="submit" kind="primary" disabled={busy} testId="login-submit">
            {busy ? 'Signing in…' : 'Sign in with API key'}
          </Button>
        </form>
        <p className="login-foot">
          Running locally? <code>custody serve</code> prints a one-time login link that signs this browser in.
        </p>
      </div>
      {version && <div className="login-version">Custody {version}</div>}
    </div>
  );
}

