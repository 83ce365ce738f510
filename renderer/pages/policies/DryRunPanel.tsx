/**
 * What a dry-run of the draft found (`POST /api/policies/dry-run`): outcomes under the rules in
 * force and under the draft, masked values, and examples of requests that would be treated
 * differently, each opening its session.
 */
import { formatCount, formatDateTime } from '../../lib/format';
import type { DryRunResult } from '../../lib/api-types';

const OUTCOMES = ['allowed', 'held', 'denied', 'masked'];

export function DryRunPanel({ result }: { result: DryRunResult }) {
  const outcomes = [...new Set([...OUTCOMES.filter((outcome) => outcome in result.current || outcome in result.candidate), ...Object.keys(result.current), ...Object.keys(result.candidate)])];
  const transitions = Object.entries(result.transitions).filter(([, count]) => count > 0);
  return (
    <div data-testid="dry-run">
      <p className="muted small">
        {formatCount(result.total)} recorded request{result.total === 1 ? '' : 's'} replayed against the draft
        {result.partial ? ` (${formatCount(result.partial)} with less than the proxy saw, e.g. bodies not recorded)` : ''}.
      </p>
      {outcomes.length > 0 && (
        <table className="table compact">
          <thead>
            <tr>
              <th>Outcome</th>
              <th className="num">Rules in force</th>
              <th className="num">Draft</th>
            </tr>
          </thead>
          <tbody>
            {outcomes.map((outcome) => {
              const before = result.current[outcome] ?? 0;
              const after = result.candidate[outcome] ?? 0;
              return (
                <tr key={outcome}>
                  <td>{outcome}</td>
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
            {transitions.length > 0 && <span className="muted"> — {transitions.map(([transition, count]) => `${transition.replace('→', ' → ')}: ${count}`).join(', ')}</span>}
          </h4>
          <table className="table compact">
            <tbody>
              {result.changes.slice(0, 50).map((change, i) => (
                <tr key={i} className={change.session ? 'clickable' : ''} onClick={() => change.session && window.open(`#/sessions/${encodeURIComponent(change.session)}${change.seq ? `?event=${change.seq}` : ''}`, '_blank', 'noopener')}>
                  <td className="nowrap">{change.time ? formatDateTime(change.time) : ''}</td>
                  <td className="mono truncate">{change.summary}</td>
                  <td className="nowrap">
                    {change.from} → <strong>{change.to}</strong>
                  </td>
                  <td>{change.rule && <code>{change.rule}</code>}</td>
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
