/**
 * The rules tab: the ordered policy rules and the masking rules of the draft (marking those not
 * saved yet), with move and remove buttons for admins, and the form that adds common rules.
 */
import type { MaskingRule, PolicyRule } from '../../../shared/config';
import { Icon } from '../../components/Icon';
import { Badge, Empty } from '../../components/ui';
import { describePolicy, movePolicy, removeMasking, removePolicy, type RulesDoc } from '../../lib/rules-yaml';
import { type DetectorChoice, RuleForm } from './RuleForm';

function ActionBadge({ action }: { action: PolicyRule['action'] }) {
  const tone = action === 'deny' ? 'danger' : action === 'hold' ? 'warn' : action === 'mask' ? 'accent' : 'ok';
  return <Badge tone={tone}>{action}</Badge>;
}

function RuleButton({ title, icon, disabled, onClick }: { title: string; icon: 'up' | 'down' | 'trash'; disabled?: boolean; onClick: () => void }) {
  return (
    <button className="icon-btn" title={title} disabled={disabled} onClick={onClick}>
      <Icon name={icon} size={14} />
    </button>
  );
}

/** `saved`: the rules in force; `doc`: the draft shown (the last valid state of the YAML); `invalid`: the YAML has errors now. */
export function RuleList({ saved, doc, canEdit, maskingEditable, onChange, connections, detectors, invalid }: { saved: RulesDoc; doc: RulesDoc; canEdit: boolean; maskingEditable: boolean; onChange: (next: RulesDoc) => void; connections: string[]; detectors: DetectorChoice[]; invalid: boolean }) {
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
              {doc.policies.map((rule, i) => (
                <li key={`${rule.name}-${i}`} className="rule" data-testid="policy-rule">
                  <span className="rule-n">{i + 1}</span>
                  <div className="rule-text">
                    <div>
                      <strong>{rule.name}</strong> <ActionBadge action={rule.action} />
                      {!saved.policies.some((savedRule) => savedRule.name === rule.name) && <span className="draft-tag">unsaved</span>}
                    </div>
                    <div className="muted small">{describePolicy(rule)}</div>
                  </div>
                  {canEdit && (
                    <div className="rule-actions">
                      <RuleButton title="Move up" icon="up" disabled={i === 0} onClick={() => onChange(movePolicy(doc, i, -1))} />
                      <RuleButton title="Move down" icon="down" disabled={i === doc.policies.length - 1} onClick={() => onChange(movePolicy(doc, i, 1))} />
                      <RuleButton title="Remove" icon="trash" onClick={() => onChange(removePolicy(doc, i))} />
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
              {doc.masking.map((maskingRule: MaskingRule, i) => (
                <li key={maskingRule.id} className="rule">
                  <span className="rule-n">M{i + 1}</span>
                  <div className="rule-text">
                    <div>
                      <strong>{maskingRule.id}</strong> <Badge tone="accent">{maskingRule.strategy}</Badge>
                      {!saved.masking.some((savedRule) => savedRule.id === maskingRule.id) && <span className="draft-tag">unsaved</span>}
                    </div>
                    <div className="muted small">
                      {maskingRule.detectors.join(', ') || 'no detectors'}
                      {maskingRule.columns?.length ? ` · columns ${maskingRule.columns.join(', ')}` : ''} · on {maskingRule.connections?.join(', ') ?? 'every connection'} · to {maskingRule.scope.join(', ')}
                    </div>
                  </div>
                  {canEdit && (
                    <div className="rule-actions">
                      <RuleButton title="Remove" icon="trash" onClick={() => onChange(removeMasking(doc, i))} />
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
