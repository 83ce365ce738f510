/**
 * Review and save: the diff of the draft against the rules in force, a dry-run of the draft over
 * recorded traffic (a chosen window), and the save (renderer/lib/rules-save.ts decides the order).
 */
import { useCallback, useEffect, useMemo, useState } from 'react';
import { api, toast } from '../../app/context';
import { Button, ErrorBox, Loading, Modal } from '../../components/ui';
import type { DryRunResult } from '../../lib/api-types';
import { type SavedRules, saveRules } from '../../lib/rules-save';
import { diffLines, type RulesDoc } from '../../lib/rules-yaml';
import { DiffView } from './DiffView';
import { DryRunPanel } from './DryRunPanel';

const WINDOWS = [
  { days: 1, label: 'last 24 hours' },
  { days: 7, label: 'last 7 days' },
  { days: 30, label: 'last 30 days' },
];

/** `before`/`after`: the saved and the draft rules as YAML; `doc`: the draft; `saved`: what it is saved over. */
export function ReviewModal({ before, after, doc, saved, onClose, onSaved }: { before: string; after: string; doc: RulesDoc; saved: SavedRules; onClose: () => void; onSaved: () => void }) {
  const [days, setDays] = useState(7);
  const [dryRun, setDryRun] = useState<DryRunResult>();
  const [dryRunError, setDryRunError] = useState<string>();
  const [running, setRunning] = useState(false);
  const [saving, setSaving] = useState(false);
  const [saveError, setSaveError] = useState<string>();
  const diff = useMemo(() => diffLines(before, after), [before, after]);

  const run = useCallback(async () => {
    setRunning(true);
    setDryRunError(undefined);
    try {
      const to = Date.now();
      setDryRun(await api.dryRun(doc.policies, to - days * 86_400_000, to, { masking: doc.masking, detectors: doc.detectors }));
    } catch (err) {
      setDryRunError((err as Error).message);
    } finally {
      setRunning(false);
    }
  }, [doc, days]);
  useEffect(() => void run(), [run]);

  const save = async () => {
    setSaving(true);
    setSaveError(undefined);
    try {
      await saveRules(api, doc, saved);
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
          {WINDOWS.map((choice) => (
            <option key={choice.days} value={choice.days}>
              {choice.label}
            </option>
          ))}
        </select>
      </h3>
      {running ? <Loading label="Replaying recorded requests against the draft…" /> : dryRunError ? <ErrorBox title="The dry run failed" message={dryRunError} onRetry={() => void run()} /> : dryRun ? <DryRunPanel result={dryRun} /> : null}
    </Modal>
  );
}
