/**
 * Policies and masking rules: an ordered rule list with a form for the common rules (RuleList,
 * RuleForm), a YAML view validated as you type with the gateway's own schema (YamlEditor), a review
 * step that shows the diff and a dry-run over recorded traffic before saving (ReviewModal), and the
 * version history with diffs (History). Only admins edit; approvers and reviewers read.
 */
import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import type { DetectorInfo } from '../../../shared/api';
import { api, useAuth } from '../../app/context';
import { onMessage } from '../../app/live-socket';
import { Icon } from '../../components/Icon';
import { Button, ErrorBox, Loading, PageHeader, Tabs } from '../../components/ui';
import { formatDateTime } from '../../lib/format';
import { capabilities } from '../../lib/roles';
import type { SavedRules } from '../../lib/rules-save';
import { type RulesDoc, rulesToYaml, validateRulesYaml } from '../../lib/rules-yaml';
import { History } from './History';
import { ReviewModal } from './ReviewModal';
import type { DetectorChoice } from './RuleForm';
import { RuleList } from './RuleList';
import { YamlEditor } from './YamlEditor';

/** The rules in force as loaded, with what the page shows about them. */
interface LoadedRules extends SavedRules {
  yaml: string;
  author: string | null;
  updatedAt: number | null;
  /** The gateway's built-in detectors (`GET /api/masking/detectors`). */
  builtinDetectors: DetectorInfo[];
}

export function PoliciesPage() {
  const me = useAuth((s) => s.me);
  const canEdit = capabilities(me).editPolicies;
  const [saved, setSaved] = useState<LoadedRules>();
  const [error, setError] = useState<string>();
  const [connections, setConnections] = useState<string[]>([]);
  const [text, setText] = useState('');
  const [tab, setTab] = useState<'rules' | 'yaml' | 'history'>('rules');
  const [review, setReview] = useState(false);
  const [remoteChange, setRemoteChange] = useState<string>();

  const load = useCallback(async () => {
    setError(undefined);
    try {
      const [policies, masking, connectionList, catalog] = await Promise.all([
        api.policies(),
        // 404: a gateway without the masking API; 403: masking needs the reviewer role.
        api.masking().catch((err: { status?: number }) => (err.status === 404 || err.status === 405 || err.status === 403 ? undefined : Promise.reject(err))),
        api.connections().catch(() => ({ connections: [] })),
        api.detectors(),
      ]);
      const doc: RulesDoc = { policies: policies.policies, masking: masking?.masking ?? [], detectors: masking?.detectors ?? [] };
      const yaml = rulesToYaml(doc, { masking: !!masking });
      setSaved({
        maskingEditable: !!masking,
        doc,
        yaml,
        policiesVersion: policies.version,
        maskingVersion: masking?.version ?? null,
        author: policies.author ?? masking?.author ?? null,
        updatedAt: policies.updatedAt ?? masking?.updatedAt ?? null,
        builtinDetectors: catalog.detectors,
      });
      setConnections(connectionList.connections.map((c) => c.name));
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

  const maskingEditable = saved?.maskingEditable ?? true;
  const validation = useMemo(() => validateRulesYaml(text, { connections, maskingEditable }), [text, connections, maskingEditable]);
  // The rule list shows the last valid state of the text.
  const lastValid = useRef<RulesDoc | undefined>(undefined);
  if (validation.ok) lastValid.current = validation.value;
  const doc = lastValid.current ?? saved?.doc;
  const dirty = !!saved && text !== saved.yaml;

  if (error) return <div className="page"><PageHeader title="Policies" /><ErrorBox title="Could not load the rules" message={error} onRetry={() => void load()} /></div>;
  if (!saved || !doc) return <Loading />;

  const edit = (next: RulesDoc) => setText(rulesToYaml(next, { masking: saved.maskingEditable }));
  const subtitle = saved.policiesVersion ? `Version ${saved.policiesVersion}${saved.author ? ` by ${saved.author}` : ''}${saved.updatedAt ? `, ${formatDateTime(saved.updatedAt)}` : ''}` : 'Rules from the config file; no edits saved yet.';
  // Built-in detectors first, then the draft's custom ones.
  const builtinIds = new Set(saved.builtinDetectors.map((d) => d.id));
  const detectors: DetectorChoice[] = [...saved.builtinDetectors, ...doc.detectors.filter((d) => !builtinIds.has(d.id)).map((d) => ({ id: d.id }))];

  return (
    <div className="page">
      <PageHeader
        title="Policies"
        subtitle={subtitle}
        actions={
          canEdit && (
            <>
              {dirty && (
                <Button kind="ghost" onClick={() => setText(saved.yaml)}>
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
      {tab === 'rules' && <RuleList saved={saved.doc} doc={doc} canEdit={canEdit} maskingEditable={saved.maskingEditable} onChange={edit} connections={connections} detectors={detectors} invalid={!validation.ok} />}
      {tab === 'yaml' && <YamlEditor text={text} onChange={setText} readOnly={!canEdit} validation={validation} />}
      {tab === 'history' && <History />}
      {review && validation.ok && (
        <ReviewModal
          before={saved.yaml}
          after={rulesToYaml(validation.value, { masking: saved.maskingEditable })}
          doc={validation.value}
          saved={saved}
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
