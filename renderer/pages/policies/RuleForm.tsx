/**
 * "Add a common rule": a form for the rules people add most (hold destructive SQL, allow read-only
 * SQL, hold prompts matching a pattern, deny models, mask detected values), each added to the draft
 * as a template (renderer/lib/rules-yaml.ts applyTemplate). The detectors offered are the gateway's
 * built-in ones (`GET /api/masking/detectors`) and the draft's custom ones.
 */
import { useState } from 'react';
import { toast } from '../../app/context';
import { Button, Field } from '../../components/ui';
import { applyTemplate, type RulesDoc, type RuleTemplate } from '../../lib/rules-yaml';

type TemplateKind = RuleTemplate['kind'];

/** A detector the form offers: its id, and what it finds (shown on hover). */
export interface DetectorChoice {
  id: string;
  description?: string;
}

export function RuleForm({ doc, onChange, connections, detectors, maskingEditable }: { doc: RulesDoc; onChange: (next: RulesDoc) => void; connections: string[]; detectors: DetectorChoice[]; maskingEditable: boolean }) {
  const [kind, setKind] = useState<TemplateKind>('hold-destructive-sql');
  const [connection, setConnection] = useState('');
  const [group, setGroup] = useState('approver');
  const [min, setMin] = useState(1);
  const [timeout, setHoldTimeout] = useState('5m');
  const [reasonRequired, setReasonRequired] = useState(true);
  const [pattern, setPattern] = useState('(?i)(export|dump) (all|every)');
  const [models, setModels] = useState('gpt-3.5-turbo');
  const [reason, setReason] = useState('model not approved for production data');
  const [picked, setPicked] = useState<string[]>(['credit_card', 'email']);
  const [scope, setScope] = useState<('client' | 'upstream' | 'log')[]>(['client', 'upstream', 'log']);
  const [strategy, setStrategy] = useState<'redact' | 'mask' | 'hash'>('redact');

  const add = () => {
    let template: RuleTemplate;
    if (kind === 'hold-destructive-sql' || kind === 'read-only-sql') template = { kind, connection, group, min, timeout, reasonRequired };
    else if (kind === 'hold-prompt') template = { kind, connection, pattern, group, min, timeout, reasonRequired };
    else if (kind === 'deny-model') template = { kind, connection, models, reason };
    else template = { kind, connection, detectors: picked, scope, strategy };
    onChange(applyTemplate(doc, template));
    toast('info', 'Rule added to the draft. Review & save to apply it.');
  };
  const toggle = <T,>(list: T[], value: T) => (list.includes(value) ? list.filter((item) => item !== value) : [...list, value]);
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
          <input className="input" value={timeout} onChange={(e) => setHoldTimeout(e.target.value)} placeholder="5m" />
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
          {connections.map((name) => (
            <option key={name}>{name}</option>
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
              {detectors.map((detector) => (
                <button key={detector.id} type="button" className={picked.includes(detector.id) ? 'chip on' : 'chip'} title={detector.description} onClick={() => setPicked(toggle(picked, detector.id))}>
                  {detector.id}
                </button>
              ))}
            </div>
          </Field>
          <Field label="Mask what goes to">
            <div className="chips">
              {(['client', 'upstream', 'log'] as const).map((target) => (
                <button key={target} type="button" className={scope.includes(target) ? 'chip on' : 'chip'} onClick={() => setScope(toggle(scope, target))}>
                  {target}
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
