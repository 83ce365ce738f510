/**
 * Connections: list, add, edit and test upstreams; ready-to-copy client snippets per connection.
 * Secrets are write-only: the gateway stores them sealed and never sends them back, so the form
 * only ever offers to replace one. Changes reach the proxies when the gateway restarts.
 */
import { type FormEvent, useCallback, useEffect, useState } from 'react';
import { api, toast, useAuth } from '../app/context';
import { onMessage } from '../app/live-socket';
import { Icon } from '../components/Icon';
import { Badge, Button, CodeBlock, Empty, ErrorBox, Field, Loading, Modal, PageHeader, Tabs } from '../components/ui';
import type { ConnectionInput, ConnectionList, ConnectionTestResult, ConnectionView } from '../../shared/api';
import { formatDateTime } from '../lib/format';
import { capabilities } from '../lib/roles';
import { snippetsFor } from '../lib/snippets';

export function ConnectionsPage() {
  const me = useAuth((s) => s.me);
  const canManage = capabilities(me).manageConnections;
  const [data, setData] = useState<ConnectionList>();
  const [error, setError] = useState<string>();
  const [selected, setSelected] = useState<string>();
  const [editing, setEditing] = useState<ConnectionView | 'new'>();
  const [tests, setTests] = useState<Record<string, ConnectionTestResult | 'running'>>({});

  const load = useCallback(async () => {
    try {
      const d = await api.connections();
      setData(d);
      setError(undefined);
      setSelected((s) => s ?? d.connections[0]?.name);
    } catch (err) {
      setError((err as Error).message);
    }
  }, []);
  useEffect(() => void load(), [load]);
  useEffect(() => onMessage((m) => m.type === 'connections.updated' && void load()), [load]);

  const test = async (name: string) => {
    setTests((t) => ({ ...t, [name]: 'running' }));
    try {
      const r = await api.testConnection(name);
      setTests((t) => ({ ...t, [name]: r }));
    } catch (err) {
      setTests((t) => ({ ...t, [name]: { ok: false, latencyMs: 0, message: (err as Error).message } }));
    }
  };

  if (error)
    return (
      <div className="page">
        <PageHeader title="Connections" />
        <ErrorBox title="Could not load connections" message={error} onRetry={() => void load()} />
      </div>
    );
  if (!data) return <Loading />;
  const sel = data.connections.find((c) => c.name === selected);
  const pending = data.connections.some((c) => c.pendingRestart);
  return (
    <div className="page">
      <PageHeader
        title="Connections"
        subtitle="Upstreams the gateway fronts. Clients change only an address and a key."
        actions={
          canManage && (
            <Button kind="primary" icon="plus" onClick={() => setEditing('new')} testId="add-connection">
              Add connection
            </Button>
          )
        }
      />
      {pending && (
        <div className="banner banner-info" data-testid="restart-banner">
          <Icon name="refresh" /> Saved changes take effect when the gateway restarts{data.liveReload ? '' : ' (the proxies read connections at start)'}.
        </div>
      )}
      {data.connections.length === 0 ? (
        <Empty icon="connections" title="No connections yet">
          {canManage ? 'Add an OpenAI, Anthropic, HTTP or PostgreSQL upstream; the gateway holds its credential so clients never see it.' : 'An admin adds connections here or in the config file.'}
        </Empty>
      ) : (
        <div className="split">
          <table className="table fixed" data-testid="connections-table">
            <colgroup>
              <col style={{ width: '23%' }} />
              <col style={{ width: '13%' }} />
              <col />
              <col style={{ width: '15%' }} />
              <col style={{ width: '17%' }} />
              {canManage && <col style={{ width: 96 }} />}
            </colgroup>
            <thead>
              <tr>
                <th>Name</th>
                <th>Kind</th>
                <th>Upstream</th>
                <th>Credential</th>
                <th>Reachability</th>
                {canManage && <th />}
              </tr>
            </thead>
            <tbody>
              {data.connections.map((c) => {
                const t = tests[c.name];
                return (
                  <tr key={c.name} className={c.name === selected ? 'selected clickable' : 'clickable'} onClick={() => setSelected(c.name)} data-testid="connection-row" data-name={c.name}>
                    <td>
                      <strong>{c.name}</strong>
                      <div className="muted small">
                        {c.source === 'config' ? 'config file' : `console${c.updatedBy ? ` · ${c.updatedBy}` : ''}`}
                        {c.pendingRestart && (
                          <>
                            {' '}
                            · <span className="warn-text">restart to apply</span>
                          </>
                        )}
                      </div>
                    </td>
                    <td>
                      <Badge tone="accent">{c.kind}</Badge>
                    </td>
                    <td className="mono small" title={c.upstream}>
                      <div className="truncate">{c.upstream}</div>
                      {c.listen && <div className="muted truncate">listens on {c.listen}</div>}
                      {c.warning && (
                        <div className="warn-text" title={c.warning} data-testid="upstream-warning">
                          credential in the address: move it into the secret
                        </div>
                      )}
                    </td>
                    <td className="small nowrap">
                      {c.secretMissing ? (
                        // From another gateway of the group: a secret value never travels, so this gateway does not serve it yet.
                        <span className="danger-text" title="This connection came from another gateway of the group; its secret value stays on that gateway. Edit it here and enter the secret." data-testid="secret-missing">
                          set the secret on this gateway
                        </span>
                      ) : c.secret ? (
                        c.secret.kind === 'env' ? (
                          <>
                            env <code>{c.secret.env}</code>
                          </>
                        ) : c.secret.kind === 'file' ? (
                          <>
                            file <code>{c.secret.file}</code>
                          </>
                        ) : (
                          <span title="Stored sealed; never shown again">•••••• stored</span>
                        )
                      ) : (
                        <span className="muted">none</span>
                      )}
                    </td>
                    <td className="small" data-testid="test-result">
                      {t === 'running' ? (
                        <span className="muted">testing…</span>
                      ) : t ? (
                        <span className={t.ok ? 'ok-text' : 'danger-text'} title={t.message}>
                          <Icon name={t.ok ? 'check' : 'x'} size={13} /> {t.ok ? `reachable · ${t.latencyMs} ms` : t.message}
                        </span>
                      ) : (
                        <span className="muted">not tested</span>
                      )}
                    </td>
                    {canManage && (
                      <td className="right" onClick={(e) => e.stopPropagation()}>
                        <div className="row-actions">
                          <Button size="sm" kind="ghost" onClick={() => void test(c.name)} testId="test-connection">
                            Test
                          </Button>
                          <Button size="sm" kind="ghost" onClick={() => setEditing(c)}>
                            Edit
                          </Button>
                        </div>
                      </td>
                    )}
                  </tr>
                );
              })}
            </tbody>
          </table>
          {sel && <Snippets c={sel} httpListen={data.httpListen} />}
        </div>
      )}
      {editing && (
        <ConnectionForm
          initial={editing === 'new' ? undefined : editing}
          onClose={() => setEditing(undefined)}
          onSaved={(c) => {
            setEditing(undefined);
            setSelected(c.name);
            void load();
          }}
        />
      )}
    </div>
  );
}

function Snippets({ c, httpListen }: { c: ConnectionView; httpListen: string }) {
  const snippets = snippetsFor(c, { httpListen });
  const [tab, setTab] = useState(snippets[0]!.id);
  const current = snippets.find((s) => s.id === tab) ?? snippets[0]!;
  return (
    <section className="card snippets" data-testid="snippets">
      <div className="card-head">
        <h2>Use {c.name}</h2>
        {c.description && <span className="muted small">{c.description}</span>}
      </div>
      <Tabs tabs={snippets.map((s) => ({ id: s.id, label: s.label }))} value={current.id} onChange={setTab} />
      <CodeBlock code={current.code} label={current.language} />
      <p className="muted small">Use your own Custody API key; the gateway swaps in the upstream credential.</p>
    </section>
  );
}

function ConnectionForm({ initial, onClose, onSaved }: { initial?: ConnectionView; onClose: () => void; onSaved: (c: ConnectionView) => void }) {
  const [name, setName] = useState(initial?.name ?? '');
  const [kind, setKind] = useState<ConnectionView['kind']>(initial?.kind ?? 'openai');
  const [upstream, setUpstream] = useState(initial?.upstream ?? 'https://api.openai.com/v1');
  const [listen, setListen] = useState(initial?.listen ?? '');
  const [description, setDescription] = useState(initial?.description ?? '');
  const [secretMode, setSecretMode] = useState<'keep' | 'value' | 'env'>(initial?.secret && !initial.secretMissing ? 'keep' : 'value');
  const [secret, setSecret] = useState('');
  const [env, setEnv] = useState(initial?.secret?.kind === 'env' ? (initial.secret.env ?? '') : '');
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);
  const [test, setTest] = useState<ConnectionTestResult | 'running'>();

  const defaults: Record<ConnectionView['kind'], string> = { openai: 'https://api.openai.com/v1', anthropic: 'https://api.anthropic.com', http: 'https://', postgres: 'postgres://app@127.0.0.1:5432/app', ssh: 'ssh://deploy@127.0.0.1:22' };
  const body = (): ConnectionInput => ({
    ...(initial ? {} : { name }),
    kind,
    upstream,
    listen: kind === 'postgres' || kind === 'ssh' ? listen : '',
    description,
    ...(secretMode === 'value' && secret ? { secret } : secretMode === 'env' && env ? { secret: { env } } : {}),
  });
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      const saved = initial ? await api.editConnection(initial.name, body()) : await api.addConnection(body());
      toast('ok', `${initial ? 'Saved' : 'Added'} ${saved.name}. It takes effect when the gateway restarts.`);
      onSaved(saved);
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };
  const runTest = async () => {
    setTest('running');
    try {
      setTest(await api.testDraft({ kind, upstream }));
    } catch (err) {
      setTest({ ok: false, latencyMs: 0, message: (err as Error).message });
    }
  };
  return (
    <Modal
      title={initial ? `Edit ${initial.name}` : 'Add a connection'}
      onClose={onClose}
      footer={
        <>
          <Button kind="ghost" onClick={() => void runTest()} icon="wifi">
            Test reachability
          </Button>
          {test && (
            <span className={test === 'running' ? 'muted small' : test.ok ? 'ok-text small' : 'danger-text small'} data-testid="draft-test">
              {test === 'running' ? 'testing…' : test.ok ? `reachable · ${test.latencyMs} ms` : test.message}
            </span>
          )}
          <span className="spacer" />
          <Button kind="ghost" onClick={onClose}>
            Cancel
          </Button>
          <Button kind="primary" type="submit" disabled={busy} onClick={() => void submit({ preventDefault() {} } as FormEvent)} testId="connection-save">
            {busy ? 'Saving…' : initial ? 'Save' : 'Add connection'}
          </Button>
        </>
      }
    >
      <form className="form" onSubmit={(e) => void submit(e)} data-testid="connection-form">
        <div className="row">
          <Field label="Name" hint="Part of the client's URL: lower-case letters, digits, - and _.">
            <input className="input mono" value={name} disabled={!!initial} onChange={(e) => setName(e.target.value)} placeholder="openai" data-testid="connection-name" />
          </Field>
          <Field label="Kind">
            <select
              className="input"
              value={kind}
              onChange={(e) => {
                const k = e.target.value as ConnectionView['kind'];
                setKind(k);
                if (!initial) setUpstream(defaults[k]);
              }}
            >
              <option value="openai">OpenAI</option>
              <option value="anthropic">Anthropic</option>
              <option value="http">HTTP (vector store, other API)</option>
              <option value="postgres">PostgreSQL</option>
            </select>
          </Field>
        </div>
        <Field label="Upstream" hint={kind === 'postgres' ? 'postgres://user@host:port/database — the gateway logs in with the credential below.' : 'Base URL the gateway forwards to.'}>
          <input className="input mono" value={upstream} onChange={(e) => setUpstream(e.target.value)} data-testid="connection-upstream" />
        </Field>
        {(kind === 'postgres' || kind === 'ssh') && (
          <Field label="Listen on" hint={kind === 'ssh' ? 'Where ssh, scp and sftp connect to this connection, e.g. 127.0.0.1:2222.' : 'Where psql and drivers connect to this connection, e.g. 127.0.0.1:6432.'}>
            <input className="input mono" value={listen} onChange={(e) => setListen(e.target.value)} placeholder="127.0.0.1:6432" />
          </Field>
        )}
        <Field label="Description">
          <input className="input" value={description} onChange={(e) => setDescription(e.target.value)} placeholder="Production OpenAI account" />
        </Field>
        <Field label={kind === 'postgres' ? 'Upstream password' : 'Upstream API key'} hint="Write-only: stored sealed and never shown again.">
          <div className="seg">
            {initial?.secret && (
              <button type="button" className={secretMode === 'keep' ? 'on' : ''} onClick={() => setSecretMode('keep')}>
                Keep current
              </button>
            )}
            <button type="button" className={secretMode === 'value' ? 'on' : ''} onClick={() => setSecretMode('value')}>
              {initial?.secret ? 'Replace' : 'Value'}
            </button>
            <button type="button" className={secretMode === 'env' ? 'on' : ''} onClick={() => setSecretMode('env')}>
              Environment variable
            </button>
          </div>
          {secretMode === 'value' && <input className="input mono" type="password" autoComplete="new-password" value={secret} onChange={(e) => setSecret(e.target.value)} placeholder={kind === 'postgres' ? 'password' : 'sk-…'} data-testid="connection-secret" />}
          {secretMode === 'env' && <input className="input mono" value={env} onChange={(e) => setEnv(e.target.value)} placeholder="CUSTODY_SECRET_OPENAI" />}
        </Field>
        {initial?.updatedAt && (
          <div className="muted small">
            Last changed {formatDateTime(initial.updatedAt)}
            {initial.updatedBy ? ` by ${initial.updatedBy}` : ''}.
          </div>
        )}
        {error && (
          <div className="field-error" data-testid="connection-error">
            {error}
          </div>
        )}
      </form>
    </Modal>
  );
}
