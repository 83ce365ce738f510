/** Keys: everyone's own SSH keys (SshKeys.tsx); for admins, API keys: list, create (the key is shown once), revoke. */
import { type FormEvent, useCallback, useEffect, useState } from 'react';
import { api, toast, useAuth } from '../app/context';
import { Badge, Button, CodeBlock, Empty, ErrorBox, Field, Loading, Modal, PageHeader } from '../components/ui';
import type { KeyView } from '../../shared/api';
import { formatAgo, formatDateTime } from '../lib/format';
import { capabilities } from '../lib/roles';
import { ActionCell, KeyStateCell, SshKeysSection } from './SshKeys';

export function KeysPage() {
  const manageKeys = capabilities(useAuth((s) => s.me)).manageKeys;
  return (
    <div className="page">
      <PageHeader title="Keys" subtitle="Your SSH keys log you in to ssh connections; API keys identify people and agents to the gateway." />
      <SshKeysSection />
      {manageKeys && <ApiKeysSection />}
    </div>
  );
}

function ApiKeysSection() {
  const [keys, setKeys] = useState<KeyView[]>();
  const [error, setError] = useState<string>();
  const [creating, setCreating] = useState(false);
  const [created, setCreated] = useState<{ key: string; name: string }>();
  const load = useCallback(() => {
    api
      .keys()
      .then((k) => {
        setKeys(k);
        setError(undefined);
      })
      .catch((e: Error) => setError(e.message));
  }, []);
  useEffect(load, [load]);
  const revoke = async (k: KeyView) => {
    if (!confirm(`Revoke ${k.name}? Clients using it are refused from now on.`)) return;
    try {
      await api.revokeKey(k.id);
      toast('ok', `Revoked ${k.name}`);
      load();
    } catch (err) {
      toast('error', (err as Error).message);
    }
  };
  const now = Date.now();
  return (
    <section className="card" data-testid="api-keys">
      <div className="card-head">
        <h2>API keys</h2>
        <span className="muted small">Their groups give roles and match policies.</span>
        <Button kind="primary" icon="plus" onClick={() => setCreating(true)}>
          Create key
        </Button>
      </div>
      {error && <ErrorBox title="Could not load keys" message={error} onRetry={load} />}
      {!keys && !error ? (
        <Loading />
      ) : keys && keys.length === 0 ? (
        <Empty icon="keys" title="No keys" />
      ) : keys ? (
        <table className="table">
          <thead>
            <tr>
              <th>Name</th>
              <th>ID</th>
              <th>Groups</th>
              <th>Created</th>
              <th>Last used</th>
              <th>Status</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {keys.map((k) => {
              const state = k.revokedAt ? 'revoked' : k.expiresAt && k.expiresAt <= now ? 'expired' : 'active';
              return (
                <tr key={k.id}>
                  <td>
                    <strong>{k.name}</strong>
                  </td>
                  <td className="mono small">cst_{k.id}_…</td>
                  <td>{k.groups.map((g) => <Badge key={g}>{g}</Badge>)}</td>
                  <td className="small">
                    {formatDateTime(k.createdAt)}
                    {k.createdBy ? <div className="muted">by {k.createdBy}</div> : null}
                  </td>
                  <td className="small">{k.lastUsedAt ? formatAgo(k.lastUsedAt, now) : <span className="muted">never</span>}</td>
                  <KeyStateCell state={state} expiresAt={k.expiresAt} />
                  <ActionCell label={state === 'active' ? 'Revoke' : undefined} onClick={() => void revoke(k)} />
                </tr>
              );
            })}
          </tbody>
        </table>
      ) : null}
      {creating && (
        <CreateKey
          onClose={() => setCreating(false)}
          onCreated={(key, name) => {
            setCreating(false);
            setCreated({ key, name });
            load();
          }}
        />
      )}
      {created && (
        <Modal title={`Key for ${created.name}`} onClose={() => setCreated(undefined)} footer={<Button kind="primary" onClick={() => setCreated(undefined)}>Done</Button>}>
          <p>Copy it now: it is shown only once, and only its hash is stored.</p>
          <CodeBlock code={created.key} label="API key" />
        </Modal>
      )}
    </section>
  );
}

function CreateKey({ onClose, onCreated }: { onClose: () => void; onCreated: (key: string, name: string) => void }) {
  const [name, setName] = useState('');
  const [groups, setGroups] = useState('');
  const [expires, setExpires] = useState('90d');
  const [owner, setOwner] = useState<'me' | 'existing' | 'new'>('me');
  const [ownerName, setOwnerName] = useState('');
  const [error, setError] = useState<string>();
  const submit = async (e?: FormEvent) => {
    e?.preventDefault();
    try {
      const who = owner === 'existing' ? { owner: ownerName.trim() } : owner === 'new' ? { newOwner: ownerName.trim() } : {};
      const r = await api.createKey({ name, groups: groups.split(',').map((g) => g.trim()).filter(Boolean), ...(expires ? { expires } : {}), ...who });
      onCreated(r.key, name);
    } catch (err) {
      setError((err as Error).message);
    }
  };
  return (
    <Modal
      title="Create an API key"
      onClose={onClose}
      footer={
        <>
          <span className="spacer" />
          <Button kind="ghost" onClick={onClose}>
            Cancel
          </Button>
          <Button kind="primary" onClick={() => void submit()}>
            Create
          </Button>
        </>
      }
    >
      <form className="form" onSubmit={(e) => void submit(e)}>
        <Field label="Name" hint="Who or what uses it, e.g. alice or billing-agent.">
          <input className="input" value={name} onChange={(e) => setName(e.target.value)} autoFocus />
        </Field>
        <Field label="Owner" hint="The person who holds this key. Approvals count persons: a key you keep is still your one vote; a new person is recorded in the log.">
          <select className="input" value={owner} onChange={(e) => setOwner(e.target.value as 'me' | 'existing' | 'new')} data-testid="key-owner">
            <option value="me">Me</option>
            <option value="existing">An existing person…</option>
            <option value="new">A new person…</option>
          </select>
          {owner !== 'me' && <input className="input" value={ownerName} onChange={(e) => setOwnerName(e.target.value)} placeholder={owner === 'new' ? 'Their name' : 'Person id or name'} data-testid="key-owner-name" />}
        </Field>
        <Field label="Groups" hint="Comma-separated. admin, approver and reviewer give console roles; others match policies.">
          <input className="input" value={groups} onChange={(e) => setGroups(e.target.value)} placeholder="approver, dba" />
        </Field>
        <Field label="Expires after" hint="e.g. 30d, 12h; empty for never.">
          <input className="input" value={expires} onChange={(e) => setExpires(e.target.value)} />
        </Field>
        {error && <div className="field-error">{error}</div>}
      </form>
    </Modal>
  );
}
