/**
 * The history tab: every saved version of the policies and the masking rules (their numbers are
 * shared), newest first, each shown as a diff against the previous version of the same kind.
 */
import { useEffect, useState } from 'react';
import { stringify } from 'yaml';
import type { PolicyRule } from '../../../shared/config';
import { api } from '../../app/context';
import { Badge, Empty, ErrorBox, Loading } from '../../components/ui';
import type { PolicyVersionMeta } from '../../lib/api-types';
import { formatDateTime } from '../../lib/format';
import { diffLines, rulesToYaml } from '../../lib/rules-yaml';
import { DiffView } from './DiffView';

/** A version's rules as YAML, for the diff. */
function versionYaml(version: PolicyVersionMeta): string {
  const body = version.body;
  if (Array.isArray(body)) return version.kind === 'masking' ? stringify({ masking: body }, { lineWidth: 0 }) : rulesToYaml({ policies: body as PolicyRule[], masking: [] }, { masking: false });
  return stringify(body ?? {}, { lineWidth: 0 });
}

export function History() {
  const [versions, setVersions] = useState<PolicyVersionMeta[]>();
  const [error, setError] = useState<string>();
  const [selected, setSelected] = useState<number>();
  /** Versions loaded in full (listings may leave the rules out), by kind and number. */
  const [loaded, setLoaded] = useState<Record<string, PolicyVersionMeta>>({});
  useEffect(() => {
    api
      .policyVersions()
      .then((list) => {
        const sorted = [...list].sort((a, b) => b.version - a.version);
        setVersions(sorted);
        if (sorted[0]) setSelected(sorted[0].version);
      })
      .catch((err: Error) => setError(err.message));
  }, []);
  const shown = versions?.find((v) => v.version === selected);
  const previous = shown && versions?.find((v) => v.kind === shown.kind && v.version < shown.version);
  const key = (v: PolicyVersionMeta) => `${v.kind}:${v.version}`;
  useEffect(() => {
    for (const v of [shown, previous]) {
      if (v && !loaded[key(v)] && v.body === undefined)
        api
          .policyVersion(v.version, v.kind)
          .then((full) => setLoaded((known) => ({ ...known, [key(v)]: full })))
          .catch(() => {});
    }
  }, [shown, previous, loaded]);
  if (error) return <ErrorBox title="Could not load the version history" message={error} />;
  if (!versions) return <Loading />;
  if (!versions.length)
    return (
      <Empty icon="clock" title="No saved versions yet">
        Every save from this page (or <code>PUT /api/policies</code>) records a new version with its author.
      </Empty>
    );
  const full = (v?: PolicyVersionMeta) => (v ? (v.body !== undefined ? v : loaded[key(v)]) : undefined);
  const older = full(previous);
  const newer = full(shown);
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
        {shown && (
          <div className="card-head">
            <h2>
              v{shown.version} {previous ? `compared with v${previous.version}` : '(first version)'}
            </h2>
            <span className="muted small">
              by {shown.author}, {formatDateTime(shown.createdAt)}
            </span>
          </div>
        )}
        {newer ? <DiffView lines={diffLines(older ? versionYaml(older) : '', versionYaml(newer))} testId="version-diff" /> : <Loading />}
        {shown?.note && <div className="muted small">Note: {shown.note}</div>}
      </div>
    </div>
  );
}
