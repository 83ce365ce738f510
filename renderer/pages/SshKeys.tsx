/**
 * The signed-in person's SSH public keys (every role): paste an OpenSSH public key line to register
 * it, see the ones registered with their fingerprint and expiry, remove one. Admins may show
 * everyone's. The gateway checks the key text and who owns what (`/api/ssh-keys`, docs/SSH.md).
 */
import { type FormEvent, useCallback, useEffect, useState } from 'react';
import { api, toast, useAuth } from '../app/context';
import { Badge, Button, CodeBlock, Empty, ErrorBox, Field, Loading } from '../components/ui';
import type { SshKeyList, SshKeyView } from '../../shared/api';
import { formatDateTime } from '../lib/format';

export function SshKeysSection() {
  const me = useAuth((s) => s.me);
  const isAdmin = !!me?.roles.includes('admin');
  const [all, setAll] = useState(false);
  const [list, setList] = useState<SshKeyList>();
  const [error, setError] = useState<string>();
  const load = useCallback(() => {
    api
      .sshKeys(all)
      .then((l) => {
        setList(l);
        setError(undefined);
      })
      .catch((e: Error) => setError(e.message));
  }, [all]);
  useEffect(load, [load]);
  const remove = async (k: SshKeyView) => {
    if (!confirm(`Remove the SSH key ${k.fingerprint}? It stops logging in at once.`)) return;
    try {
      await api.removeSshKey(k.fingerprint);
      toast('ok', `Removed ${k.comment ?? k.fingerprint}`);
      load();
    } catch (err) {
      toast('error', (err as Error).message);
    }
  };
  const listener = list?.listeners[0];
  return (
    <section className="card" data-testid="ssh-keys">
      <div className="card-head">
        <h2>SSH keys</h2>
        <span className="muted small">Log in to the gateway&apos;s ssh connections with <code>ssh -i</code>: no password, no Custody key typed.</span>
        {isAdmin && (
          <label className="small">
            <input type="checkbox" checked={all} onChange={(e) => setAll(e.target.checked)} data-testid="ssh-keys-all" /> Everyone&apos;s
          </label>
        )}
      </div>
      <AddSshKey onAdded={load} />
      {error && <ErrorBox title="Could not load SSH keys" message={error} onRetry={load} />}
      {!list && !error ? (
        <Loading />
      ) : list && list.keys.length === 0 ? (
        <Empty icon="keys" title="No SSH keys yet">
          Paste the public half of a key (<code>~/.ssh/id_ed25519.pub</code>) above.
        </Empty>
      ) : list ? (
        <table className="table" data-testid="ssh-key-list">
          <thead>
            <tr>
              <th>Key</th>
              <th>Fingerprint</th>
              {all && <th>Person</th>}
              <th>Logs in as</th>
              <th>Added</th>
              <th>Status</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {list.keys.map((k) => (
              <tr key={k.fingerprint} data-fingerprint={k.fingerprint}>
                <td>
                  <strong>{k.comment ?? k.algo}</strong>
                  <div className="muted small">{k.algo}</div>
                </td>
                <td className="mono small">{k.fingerprint}</td>
                {all && <td>{k.personName ?? k.person ?? '—'}</td>}
                <td className="small">
                  {k.keyName ?? k.keyId} <span className="muted mono">cst_{k.keyId}_…</span>
                </td>
                <td className="small">{formatDateTime(k.createdAt)}</td>
                <KeyStateCell state={k.state} expiresAt={k.expiresAt} />
                <ActionCell label="Remove" onClick={() => void remove(k)} testId="ssh-key-remove" />
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      {listener && (
        <CodeBlock code={`ssh -i ~/.ssh/id_ed25519 -p ${listener.address.slice(listener.address.lastIndexOf(':') + 1)} ${me?.name.replace(/[^A-Za-z0-9._-]/g, '') || 'me'}@${listener.address.slice(0, listener.address.lastIndexOf(':'))}`} label={`ssh (${listener.connection})`} />
      )}
    </section>
  );
}

/** The last cell of a key's row: its one action (remove, revoke), or nothing. */
export function ActionCell({ label, onClick, testId }: { label?: string; onClick: () => void; testId?: string }) {
  return (
    <td className="right">
      {label && (
        <Button size="sm" kind="ghost" onClick={onClick} testId={testId}>
          {label}
        </Button>
      )}
    </td>
  );
}

/** A key's state, and its expiry while it is active (API keys and SSH keys). */
export function KeyStateCell({ state, expiresAt }: { state: SshKeyView['state']; expiresAt: number | null }) {
  return (
    <td>
      <Badge tone={state === 'active' ? 'ok' : 'danger'}>{state}</Badge>
      {state === 'active' && expiresAt && <div className="muted small">until {formatDateTime(expiresAt)}</div>}
    </td>
  );
}

function AddSshKey({ onAdded }: { onAdded: () => void }) {
  const [text, setText] = useState('');
  const [expires, setExpires] = useState('');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const submit = async (e?: FormEvent) => {
    e?.preventDefault();
    setBusy(true);
    try {
      const k = await api.addSshKey({ publicKey: text, ...(expires.trim() ? { expires: expires.trim() } : {}) });
      toast('ok', `Registered ${k.fingerprint}`);
      setText('');
      setError(undefined);
      onAdded();
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form className="form" onSubmit={(e) => void submit(e)} data-testid="ssh-key-form">
      <Field label="Public key" hint="One line, as in id_ed25519.pub: ssh-ed25519 AAAA… you@laptop. Never the private key." error={error}>
        <textarea className="input mono" rows={2} value={text} onChange={(e) => setText(e.target.value)} placeholder="ssh-ed25519 AAAA… you@laptop" data-testid="ssh-key-text" spellCheck={false} />
      </Field>
      <Field label="Expires after" hint="e.g. 8h, 30d; empty: 30 days, or with the API key you signed in with.">
        <input className="input" value={expires} onChange={(e) => setExpires(e.target.value)} data-testid="ssh-key-expires" />
      </Field>
      <div>
        <Button kind="primary" icon="plus" onClick={() => void submit()} disabled={busy || !text.trim()} testId="ssh-key-add">
          Add SSH key
        </Button>
      </div>
    </form>
  );
}
