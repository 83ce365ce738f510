/**
 * Policies and masking rules: an ordered rule list with a form for the common rules, a YAML view
 * validated as you type with the gateway's own schema (shared/config.ts), a review step that shows
 * the diff and a dry-run over recorded traffic before saving, and the version history with diffs.
 * Only admins edit; approvers and reviewers read.
 */
import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { stringify } from 'yaml';
import type { MaskingRule, PolicyRule } from '../../shared/config';
import { api, toast, useAuth } from '../app/context';
import { onMessage } from '../app/live-socket';
import { Icon } from '../components/Icon';
import { Badge, Button, Empty, ErrorBox, Field, Loading, Modal, PageHeader, Tabs } from '../components/ui';
import type { DryRunResult, PolicyVersionMeta } from '../lib/api-types';
import { formatCount, formatDateTime } from '../lib/format';
import { capabilities } from '../lib/roles';
import {
  applyTemplate,
  describePolicy,
  diffLines,
  type DiffLine,
  movePolicy,
  removeMasking,
  removePolicy,
  type RulesDoc,
  type RuleTemplate,
  rulesToYaml,
  validateRulesYaml,
} from '../lib/rules-yaml';

interface Current {
  /** false: this gateway has no masking API; masking rules live in the config file only. */
  maskingEditable: boolean;
  doc: RulesDoc;
  yaml: string;
  policiesVersion: number | null;
  maskingVersion: number | null;
  author: string | null;
  updatedAt: number | null;
  builtins: string[];
}

export function PoliciesPage() {
  const me = useAuth((s) => s.me);
  const canEdit = capabilities(me).editPolicies;
  const [current, setCurrent] = useState<Current>();
  const [error, setError] = useState<string>();
  const [connections, setConnections] = useState<string[]>([]);
  const [text, setText] = useState('');
  const [tab, setTab] = useState<'rules' | 'yaml' | 'history'>('rules');
  const [review, setReview] = useState(false);
  const [remoteChange, setRemoteChange] = useState<string>();

  const load = useCallback(async () => {
    setError(undefined);
    try {
      const [p, m, c, catalog] = await Promise.all([
        api.policies(),
        // 404: a gateway without the masking API; 403: masking needs the reviewer role.
        api.masking().catch((err: { status?: number }) => (err.status === 404 || err.status === 405 || err.status === 403 ? undefined : Promise.reject(err))),
        api.connections().catch(() => ({ connections: [] })),
        api.detectors(),
      ]);
      const doc: RulesDoc = { policies: p.policies, masking: m?.masking ?? [], detectors: m?.detectors ?? [] };
      const yaml = rulesToYaml(doc, { masking: !!m });
      setCurrent({ maskingEditable: !!m, doc, yaml, policiesVersion: p.version, maskingVersion: m?.version ?? null, author: p.author ?? m?.author ?? null, updatedAt: p.updatedAt ?? m?.updatedAt ?? null, builtins: catalog.detectors.map((d) => d.id) });
      setConnections(c.connections.map((x) => x.name));
      setText(yaml);
      setRemoteChange(undefined);
    } catch (err) {
      setError((err as Error).message);
    }
  }, []);
  useEffect(() => void load(), [load]);
  useEffect(
    () =>
      onMessage((msg) => {
        if ((msg.type === 'policy.updated' || msg.type === 'masking.updated') && msg.author !== me?.name) setRemoteChange(`${msg.author} saved version ${msg.version}.`);
      }),
    [me?.name],
  );

  const maskingEditable = current?.maskingEditable ?? true;
  const validation = useMemo(() => validateRulesYaml(text, { connections, maskingEditable }), [text, connections, maskingEditable]);
  // The rule list shows the last valid state of the text.
  const lastValid = useRef<RulesDoc | undefined>(undefined);
  if (validation.ok) lastValid.current = validation.value;
  const doc = lastValid.current ?? current?.doc;
  const dirty = !!current && text !== current.yaml;

  if (error) return <div className="page"><PageHeader title="Policies" /><ErrorBox title="Could not load the rules" message={error} onRetry={() => void load()} /></div>;
  if (!current || !doc) return <Loading />;

  const edit = (next: RulesDoc) => setText(rulesToYaml(next, { masking: current.maskingEditable }));
  const subtitle = current.policiesVersion ? `Version ${current.policiesVersion}${current.author ? ` by ${current.author}` : ''}${current.updatedAt ? `, ${formatDateTime(current.updatedAt)}` : ''}` : 'Rules from the config file; no edits saved yet.';

  return (
    <div className="page">
      <PageHeader
        title="Policies"
        subtitle={subtitle}
        actions={
          canEdit && (
            <>
              {dirty && (
                <Button kind="ghost" onClick={() => setText(current.yaml)}>
                  Discard changes
                </Button>
              )}
              <Button kind="primary" icon="check" disabled={!dirty || !validation.ok} onClick={() => setReview(true)} testId="policies-review" title={!validation.ok ? 'Fix the errors first' : !dirty ? 'No changes' : 'Review, dry-run and save'}>
                Review &amp; save
              </Button>
            </>
          )
        }
      />
      {!canEdit && (
        <div className="banner banner-muted">
          <Icon name="shield" /> Read only: editing policies needs the admin role.
        </div>
      )}
      {dirty && canEdit && (
        <div className="banner banner-info" data-testid="draft-banner">
          <Icon name="policies" /> Unsaved draft{validation.ok ? '' : ' with errors'}: nothing changes on the gateway until you review and save it.
        </div>
      )}
      {remoteChange && (
        <div className="banner banner-info">
          {remoteChange}
          <span className="spacer" />
          <Button size="sm" onClick={() => void load()}>
            Reload
          </Button>
        </div>
      )}
      <Tabs
        tabs={[
          { id: 'rules', label: 'Rules' },
          { id: 'yaml', label: <>YAML {!validation.ok && <span className="tab-count danger">{validation.issues.length}</span>}</> },
          { id: 'history', label: 'History' },
        ]}
        value={tab}
        onChange={setTab}
      />
      {tab === 'rules' && <RulesView saved={current.doc} doc={doc} canEdit={canEdit} maskingEditable={current.maskingEditable} onChange={edit} connections={connections} detectors={[...new Set([...current.builtins, ...doc.detectors.map((d) => d.id)])]} invalid={!validation.ok} />}
      {tab === 'yaml' && <YamlView text={text} onChange={setText} readOnly={!canEdit} validation={validation} />}
      {tab === 'history' && <HistoryView />}
      {review && validation.ok && (
        <ReviewModal
          before={current.yaml}
          after={rulesToYaml(validation.value, { masking: current.maskingEditable })}
          doc={validation.value}
          current={current}
          onClose={() => setReview(false)}
          onSaved={() => {
            setReview(false);
            void load();
          }}
        />
      )}
    </div>
  );
}

// ---- rule list + form ------------------------------------------------------------------------

function ActionBadge({ action }: { action: PolicyRule['action'] }) {
  const tone = action === 'deny' ? 'danger' : action === 'hold' ? 'warn' : action === 'mask' ? 'accent' : 'ok';
  return <Badge tone={tone}>{action}</Badge>;
}

function RulesView({ saved, doc, canEdit, maskingEditable, onChange, connections, detectors, invalid }: { saved: RulesDoc; doc: RulesDoc; canEdit: boolean; maskingEditable: boolean; onChange: (d: RulesDoc) => void; connections: string[]; detectors: string[]; invalid: boolean }) {
  return (
    <div className="rules-layout">
      <div className="rules-main">
        {invalid && <div className="banner banner-error">The YAML has errors; the list shows the last valid version. Fix them in the YAML tab.</div>}
        <section className="card">
          <div className="card-head">
            <h2>Policy rules</h2>
            <span className="muted small">First match wins; no match allows.</span>
          </div>
          {doc.policies.length === 0 ? (
            <Empty icon="policies" title="No policy rules">
              Every request is allowed (and recorded). Add a rule with the form.
            </Empty>
          ) : (
            <ol className="rule-list" data-testid="policy-list">
              {doc.policies.map((p, i) => (
                <li key={`${p.name}-${i}`} className="rule" data-testid="policy-rule">
                  <span className="rule-n">{i + 1}</span>
                  <div className="rule-text">
                    <div>
                      <strong>{p.name}</strong> <ActionBadge action={p.action} />
                      {!saved.policies.some((x) => x.name === p.name) && <span className="draft-tag">unsaved</span>}
                    </div>
                    <div className="muted small">{describePolicy(p)}</div>
                  </div>
                  {canEdit && (
                    <div className="rule-actions">
                      <button className="icon-btn" title="Move up" disabled={i === 0} onClick={() => onChange(movePolicy(doc, i, -1))}>
                        <Icon name="up" size={14} />
                      </button>
                      <button className="icon-btn" title="Move down" disabled={i === doc.policies.length - 1} onClick={() => onChange(movePolicy(doc, i, 1))}>
                        <Icon name="down" size={14} />
                      </button>
                      <button className="icon-btn" title="Remove" onClick={() => onChange(removePolicy(doc, i))}>
                        <Icon name="trash" size={14} />
                      </button>
                    </div>
                  )}
                </li>
              ))}
            </ol>
          )}
        </section>
        {maskingEditable && (
        <section className="card">
          <div className="card-head">
            <h2>Masking rules</h2>
            <span className="muted small">Applied to the connections they name (all when none); the log is always masked.</span>
          </div>
          {doc.masking.length === 0 ? (
            <Empty icon="shield" title="No masking rules">
              Nothing is masked. Add detectors for a connection with the form.
            </Empty>
          ) : (
            <ol className="rule-list">
              {doc.masking.map((m: MaskingRule, i) => (
                <li key={m.id} className="rule">
                  <span className="rule-n">M{i + 1}</span>
                  <div className="rule-text">
                    <div>
                      <strong>{m.id}</strong> <Badge tone="accent">{m.strategy}</Badge>
                      {!saved.masking.some((x) => x.id === m.id) && <span className="draft-tag">unsaved</span>}
                    </div>
                    <div className="muted small">
                      {m.detectors.join(', ') || 'no detectors'}
                      {m.columns?.length ? ` · columns ${m.columns.join(', ')}` : ''} · on {m.connections?.join(', ') ?? 'every connection'} · to {m.scope.join(', ')}
                    </div>
                  </div>
                  {canEdit && (
                    <div className="rule-actions">
                      <button className="icon-btn" title="Remove" onClick={() => onChange(removeMasking(doc, i))}>
                        <Icon name="trash" size={14} />
                      </button>
                    </div>
                  )}
                </li>
              ))}
            </ol>
          )}
        </section>
        )}
        {!maskingEditable && (
          <div className="banner banner-muted">
            <Icon name="shield" /> Masking rules are not shown here: they need the reviewer or admin role, or this gateway keeps them in its config file only.
          </div>
        )}
      </div>
      {canEdit && <RuleForm doc={doc} onChange={onChange} connections={connections} detectors={detectors} maskingEditable={maskingEditable} />}
    </div>
  );
}

type TemplateKind = RuleTemplate['kind'];

function RuleForm({ doc, onChange, connections, detectors, maskingEditable }: { doc: RulesDoc; onChange: (d: RulesDoc) => void; connections: string[]; detectors: string[]; maskingEditable: boolean }) {
  const [kind, setKind] = useState<TemplateKind>('hold-destructive-sql');
  const [connection, setConnection] = useState('');
  const [group, setGroup] = useState('approver');
  const [min, setMin] = useState(1);
  const [timeout, setTimeout_] = useState('5m');
  const [reasonRequired, setReasonRequired] = useState(true);
  const [pattern, setPattern] = useState('(?i)(export|dump) (all|every)');
  const [models, setModels] = useState('gpt-3.5-turbo');
  const [reason, setReason] = useState('model not approved for production data');
  const [picked, setPicked] = useState<string[]>(['credit_card', 'email']);
  const [scope, setScope] = useState<('client' | 'upstream' | 'log')[]>(['client', 'upstream', 'log']);
  const [strategy, setStrategy] = useState<'redact' | 'mask' | 'hash'>('redact');

  const add = () => {
    let t: RuleTemplate;
    if (kind === 'hold-destructive-sql' || kind === 'read-only-sql') t = { kind, connection, group, min, timeout, reasonRequired };
    else if (kind === 'hold-prompt') t = { kind, connection, pattern, group, min, timeout, reasonRequired };
    else if (kind === 'deny-model') t = { kind, connection, models, reason };
    else t = { kind, connection, detectors: picked, scope, strategy };
    onChange(applyTemplate(doc, t));
    toast('info', 'Rule added to the draft. Review & save to apply it.');
  };
  const toggle = <T,>(list: T[], v: T) => (list.includes(v) ? list.filter((x) => x !== v) : [...list, v]);
  const holdFields = (
    <>
      <Field label="Approver groups" hint="Comma-separated groups whose members may decide.">
        <input className="input" value={group} onChange={(e) => setGroup(e.target.value)} />
      </Field>
      <div className="row">
        <Field label="Approvals needed">
          <input className="input" type="number" min={1} value={min} onChange={(e) => setMin(Math.max(1, Number(e.target.value) || 1))} />
        </Field>
        <Field label="Timeout">
          <input className="input" value={timeout} onChange={(e) => setTimeout_(e.target.value)} placeholder="5m" />
        </Field>
      </div>
      <label className="check">
        <input type="checkbox" checked={reasonRequired} onChange={(e) => setReasonRequired(e.target.checked)} /> Approvers must give a reason
      </label>
    </>
  );
  return (
    <aside className="card rule-form" data-testid="rule-form">
      <div className="card-head">
        <h2>Add a common rule</h2>
      </div>
      <Field label="Rule">
        <select className="input" value={kind} onChange={(e) => setKind(e.target.value as TemplateKind)} data-testid="template">
          <option value="hold-destructive-sql">Hold destructive SQL for approval</option>
          <option value="read-only-sql">Allow read-only SQL, hold the rest</option>
          <option value="hold-prompt">Hold prompts matching a pattern</option>
          <option value="deny-model">Deny models</option>
          {maskingEditable && <option value="mask-detectors">Mask detected values</option>}
        </select>
      </Field>
      <Field label="Connection">
        <select className="input" value={connection} onChange={(e) => setConnection(e.target.value)}>
          <option value="">Every connection</option>
          {connections.map((c) => (
            <option key={c}>{c}</option>
          ))}
        </select>
      </Field>
      {kind === 'hold-destructive-sql' && (
        <>
          <div className="muted small">Holds DROP, TRUNCATE, and DELETE/UPDATE without WHERE.</div>
          {holdFields}
        </>
      )}
      {kind === 'read-only-sql' && (
        <>
          <div className="muted small">Statements proven read-only run; every other statement waits for approval.</div>
          {holdFields}
        </>
      )}
      {kind === 'hold-prompt' && (
        <>
          <Field label="Pattern" hint="Regular expression over the prompt text; (?i) for case-insensitive.">
            <input className="input mono" value={pattern} onChange={(e) => setPattern(e.target.value)} />
          </Field>
          {holdFields}
        </>
      )}
      {kind === 'deny-model' && (
        <>
          <Field label="Models" hint="Comma-separated model names.">
            <input className="input mono" value={models} onChange={(e) => setModels(e.target.value)} />
          </Field>
          <Field label="Reason shown to the client">
            <input className="input" value={reason} onChange={(e) => setReason(e.target.value)} />
          </Field>
        </>
      )}
      {kind === 'mask-detectors' && (
        <>
          <Field label="Detectors">
            <div className="chips">
              {detectors.map((d) => (
                <button key={d} type="button" className={picked.includes(d) ? 'chip on' : 'chip'} onClick={() => setPicked(toggle(picked, d))}>
                  {d}
                </button>
              ))}
            </div>
          </Field>
          <Field label="Mask what goes to">
            <div className="chips">
              {(['client', 'upstream', 'log'] as const).map((s) => (
                <button key={s} type="button" className={scope.includes(s) ? 'chip on' : 'chip'} onClick={() => setScope(toggle(scope, s))}>
                  {s}
                </button>
              ))}
            </div>
          </Field>
          <Field label="Strategy">
            <select className="input" value={strategy} onChange={(e) => setStrategy(e.target.value as typeof strategy)}>
              <option value="redact">Redact — [CREDIT_CARD]</option>
              <option value="mask">Mask — ••••1111</option>
              <option value="hash">Hash — a keyed digest</option>
            </select>
          </Field>
        </>
      )}
      <Button kind="primary" icon="plus" onClick={add} testId="add-rule">
        Add to draft
      </Button>
    </aside>
  );
}

// ---- YAML ------------------------------------------------------------------------------------

function YamlView({ text, onChange, readOnly, validation }: { text: string; onChange: (t: string) => void; readOnly: boolean; validation: ReturnType<typeof validateRulesYaml> }) {
  const gutter = useRef<HTMLDivElement>(null);
  const lines = text.split('\n').length;
  const bad = new Set(validation.ok ? [] : validation.issues.map((i) => i.line));
  return (
    <div className="yaml-view">
      <div className="editor">
        <div className="gutter" ref={gutter} aria-hidden="true">
          {Array.from({ length: lines }, (_, i) => (
            <div key={i} className={bad.has(i + 1) ? 'bad' : ''}>
              {i + 1}
            </div>
          ))}
        </div>
        <textarea
          className="code"
          spellCheck={false}
          value={text}
          readOnly={readOnly}
          onChange={(e) => onChange(e.target.value)}
          onScroll={(e) => gutter.current && (gutter.current.scrollTop = e.currentTarget.scrollTop)}
          data-testid="yaml-editor"
          aria-label="Policies and masking rules as YAML"
        />
      </div>
      <div className={validation.ok ? 'validation ok' : 'validation bad'} data-testid="yaml-validation" aria-live="polite">
        {validation.ok ? (
          <>
            <Icon name="check" size={14} /> Valid — {validation.value.policies.length} policy rule{validation.value.policies.length === 1 ? '' : 's'}, {validation.value.masking.length} masking rule
            {validation.value.masking.length === 1 ? '' : 's'}. Checked with the gateway's schema.
          </>
        ) : (
          <ul>
            {validation.issues.map((i, k) => (
              <li key={k} data-testid="yaml-issue">
                <span className="mono">line {i.line}</span>
                {i.field && <code>{i.field}</code>}
                <span>{i.message}</span>
              </li>
            ))}
          </ul>
        )}
      </div>
    </div>
  );
}

// ---- review: diff + dry-run + save ------------------------------------------------------------

export function DiffView({ lines, testId }: { lines: DiffLine[]; testId?: string }) {
  const changed = lines.some((l) => l.op !== ' ');
  if (!changed) return <div className="muted small">No differences.</div>;
  // Show changes with three lines of context.
  const keep = new Set<number>();
  lines.forEach((l, i) => {
    if (l.op !== ' ') for (let k = i - 3; k <= i + 3; k++) keep.add(k);
  });
  return (
    <pre className="diff" data-testid={testId}>
      {lines.map((l, i) =>
        keep.has(i) ? (
          <div key={i} className={l.op === '+' ? 'add' : l.op === '-' ? 'del' : ''}>
            {l.op} {l.text}
          </div>
        ) : keep.has(i - 1) ? (
          <div key={i} className="skip">
            ⋯
          </div>
        ) : null,
      )}
    </pre>
  );
}

const WINDOWS = [
  { days: 1, label: 'last 24 hours' },
  { days: 7, label: 'last 7 days' },
  { days: 30, label: 'last 30 days' },
];

function ReviewModal({ before, after, doc, current, onClose, onSaved }: { before: string; after: string; doc: RulesDoc; current: Current; onClose: () => void; onSaved: () => void }) {
  const [days, setDays] = useState(7);
  const [dry, setDry] = useState<DryRunResult>();
  const [dryError, setDryError] = useState<string>();
  const [running, setRunning] = useState(false);
  const [saving, setSaving] = useState(false);
  const [saveError, setSaveError] = useState<string>();
  const diff = useMemo(() => diffLines(before, after), [before, after]);
  const policiesChanged = JSON.stringify(doc.policies) !== JSON.stringify(current.doc.policies);
  const maskingChanged = JSON.stringify({ m: doc.masking, d: doc.detectors }) !== JSON.stringify({ m: current.doc.masking, d: current.doc.detectors });

  const run = useCallback(async () => {
    setRunning(true);
    setDryError(undefined);
    try {
      const to = Date.now();
      setDry(await api.dryRun(doc.policies, to - days * 86_400_000, to, { masking: doc.masking, detectors: doc.detectors }));
    } catch (err) {
      setDryError((err as Error).message);
    } finally {
      setRunning(false);
    }
  }, [doc, days]);
  useEffect(() => void run(), [run]);

  const save = async () => {
    setSaving(true);
    setSaveError(undefined);
    try {
      const saveMasking = async () => {
        if (maskingChanged && current.maskingEditable) await api.putMasking(doc.masking, doc.detectors, current.maskingVersion);
      };
      const savePolicies = async () => {
        if (policiesChanged) await api.putPolicies(doc.policies, current.policiesVersion);
      };
      // The gateway refuses masking that rules in force still reference, and rules that reference
      // masking it lacks: when the draft drops a referenced masking rule, save the policies first.
      const ids = new Set(doc.masking.map((m) => m.id));
      const dropsReferenced = current.doc.policies.some((p) => (p.mask ?? []).some((id) => !ids.has(id)));
      if (dropsReferenced) {
        await savePolicies();
        await saveMasking();
      } else {
        await saveMasking();
        await savePolicies();
      }
      toast('ok', 'Saved a new version of the rules.');
      onSaved();
    } catch (err) {
      setSaveError((err as Error).message);
    } finally {
      setSaving(false);
    }
  };

  return (
    <Modal
      title="Review and save"
      wide
      onClose={onClose}
      footer={
        <>
          {saveError && <span className="field-error" data-testid="save-error">{saveError}</span>}
          <span className="spacer" />
          <Button kind="ghost" onClick={onClose}>
            Keep editing
          </Button>
          <Button kind="primary" icon="check" disabled={saving} onClick={() => void save()} testId="policies-save">
            {saving ? 'Saving…' : 'Save a new version'}
          </Button>
        </>
      }
    >
      <h3>Changes</h3>
      <DiffView lines={diff} testId="review-diff" />
      <h3 className="row-between">
        <span>Dry run against recorded traffic</span>
        <select className="input inline" value={days} onChange={(e) => setDays(Number(e.target.value))}>
          {WINDOWS.map((w) => (
            <option key={w.days} value={w.days}>
              {w.label}
            </option>
          ))}
        </select>
      </h3>
      {running ? <Loading label="Replaying recorded requests against the draft…" /> : dryError ? <ErrorBox title="The dry run failed" message={dryError} onRetry={() => void run()} /> : dry ? <DryRunView result={dry} /> : null}
    </Modal>
  );
}

const OUTCOMES = ['allowed', 'held', 'denied', 'masked'];

function DryRunView({ result }: { result: DryRunResult }) {
  const actions = [...new Set([...OUTCOMES.filter((a) => a in result.current || a in result.candidate), ...Object.keys(result.current), ...Object.keys(result.candidate)])];
  const transitions = Object.entries(result.transitions).filter(([, n]) => n > 0);
  return (
    <div data-testid="dry-run">
      <p className="muted small">
        {formatCount(result.total)} recorded request{result.total === 1 ? '' : 's'} replayed against the draft
        {result.partial ? ` (${formatCount(result.partial)} with less than the proxy saw, e.g. bodies not recorded)` : ''}.
      </p>
      {actions.length > 0 && (
        <table className="table compact">
          <thead>
            <tr>
              <th>Outcome</th>
              <th className="num">Rules in force</th>
              <th className="num">Draft</th>
            </tr>
          </thead>
          <tbody>
            {actions.map((a) => {
              const before = result.current[a] ?? 0;
              const after = result.candidate[a] ?? 0;
              return (
                <tr key={a}>
                  <td>{a}</td>
                  <td className="num">{formatCount(before)}</td>
                  <td className="num">
                    <strong className={after > before ? 'warn-text' : undefined}>{formatCount(after)}</strong>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      <p className="small" data-testid="dry-run-masked">
        Values masked in these requests and their responses: {formatCount(result.maskedValues.current)} as recorded → <strong className={result.maskedValues.candidate > result.maskedValues.current ? 'warn-text' : undefined}>{formatCount(result.maskedValues.candidate)}</strong> with the draft.
      </p>
      {result.changedRequests > 0 ? (
        <>
          <h4 data-testid="dry-run-changed">
            {formatCount(result.changedRequests)} request{result.changedRequests === 1 ? '' : 's'} in {formatCount(result.changedSessions)} session{result.changedSessions === 1 ? '' : 's'} would be treated differently
            {transitions.length > 0 && <span className="muted"> — {transitions.map(([t, n]) => `${t.replace('→', ' → ')}: ${n}`).join(', ')}</span>}
          </h4>
          <table className="table compact">
            <tbody>
              {result.changes.slice(0, 50).map((c, i) => (
                <tr key={i} className={c.session ? 'clickable' : ''} onClick={() => c.session && window.open(`#/sessions/${encodeURIComponent(c.session)}${c.seq ? `?event=${c.seq}` : ''}`, '_blank', 'noopener')}>
                  <td className="nowrap">{c.time ? formatDateTime(c.time) : ''}</td>
                  <td className="mono truncate">{c.summary}</td>
                  <td className="nowrap">
                    {c.from} → <strong>{c.to}</strong>
                  </td>
                  <td>{c.rule && <code>{c.rule}</code>}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      ) : (
        <p className="muted small" data-testid="dry-run-unchanged">No recorded request would be treated differently.</p>
      )}
    </div>
  );
}

// ---- history ---------------------------------------------------------------------------------

function versionYaml(v: PolicyVersionMeta): string {
  const body = v.body;
  if (Array.isArray(body)) return v.kind === 'masking' ? stringify({ masking: body }, { lineWidth: 0 }) : rulesToYaml({ policies: body as PolicyRule[], masking: [] }, { masking: false });
  return stringify(body ?? {}, { lineWidth: 0 });
}

function HistoryView() {
  const [versions, setVersions] = useState<PolicyVersionMeta[]>();
  const [error, setError] = useState<string>();
  const [selected, setSelected] = useState<number>();
  const [bodies, setBodies] = useState<Record<string, PolicyVersionMeta>>({});
  useEffect(() => {
    api
      .policyVersions()
      .then((v) => {
        const sorted = [...v].sort((a, b) => b.version - a.version);
        setVersions(sorted);
        if (sorted[0]) setSelected(sorted[0].version);
      })
      .catch((e: Error) => setError(e.message));
  }, []);
  const sel = versions?.find((v) => v.version === selected);
  const prev = sel && versions?.find((v) => v.kind === sel.kind && v.version < sel.version);
  const key = (v: PolicyVersionMeta) => `${v.kind}:${v.version}`;
  useEffect(() => {
    for (const v of [sel, prev]) {
      if (v && !bodies[key(v)] && v.body === undefined)
        api
          .policyVersion(v.version, v.kind)
          .then((full) => setBodies((b) => ({ ...b, [key(v)]: full })))
          .catch(() => {});
    }
  }, [sel, prev, bodies]);
  if (error) return <ErrorBox title="Could not load the version history" message={error} />;
  if (!versions) return <Loading />;
  if (!versions.length)
    return (
      <Empty icon="clock" title="No saved versions yet">
        Every save from this page (or <code>PUT /api/policies</code>) records a new version with its author.
      </Empty>
    );
  const full = (v?: PolicyVersionMeta) => (v ? (v.body !== undefined ? v : bodies[key(v)]) : undefined);
  const a = full(prev);
  const b = full(sel);
  return (
    <div className="history-layout">
      <ol className="version-list" data-testid="version-list">
        {versions.map((v) => (
          <li key={v.version} className={v.version === selected ? 'selected' : ''} onClick={() => setSelected(v.version)}>
            <div>
              <strong>v{v.version}</strong> <Badge>{v.kind}</Badge> {v.count !== undefined && <span className="muted small">{v.count} rules</span>}
            </div>
            <div className="muted small">
              {v.author} · {formatDateTime(v.createdAt)}
            </div>
          </li>
        ))}
      </ol>
      <div className="card version-diff">
        {sel && (
          <div className="card-head">
            <h2>
              v{sel.version} {prev ? `compared with v${prev.version}` : '(first version)'}
            </h2>
            <span className="muted small">
              by {sel.author}, {formatDateTime(sel.createdAt)}
            </span>
          </div>
        )}
        {b ? <DiffView lines={diffLines(a ? versionYaml(a) : '', versionYaml(b))} testId="version-diff" /> : <Loading />}
        {sel?.note && <div className="muted small">Note: {sel.note}</div>}
      </div>
    </div>
  );
}
