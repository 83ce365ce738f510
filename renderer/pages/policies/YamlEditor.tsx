/**
 * The YAML tab: the draft as text with line numbers, validated as you type with the gateway's own
 * schema (renderer/lib/rules-yaml.ts); bad lines are marked in the gutter and listed below.
 */
import { useRef } from 'react';
import { Icon } from '../../components/Icon';
import type { validateRulesYaml } from '../../lib/rules-yaml';

export function YamlEditor({ text, onChange, readOnly, validation }: { text: string; onChange: (text: string) => void; readOnly: boolean; validation: ReturnType<typeof validateRulesYaml> }) {
  const gutter = useRef<HTMLDivElement>(null);
  const lines = text.split('\n').length;
  const badLines = new Set(validation.ok ? [] : validation.issues.map((issue) => issue.line));
  return (
    <div className="yaml-view">
      <div className="editor">
        <div className="gutter" ref={gutter} aria-hidden="true">
          {Array.from({ length: lines }, (_, i) => (
            <div key={i} className={badLines.has(i + 1) ? 'bad' : ''}>
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
            {validation.issues.map((issue, k) => (
              <li key={k} data-testid="yaml-issue">
                <span className="mono">line {issue.line}</span>
                {issue.field && <code>{issue.field}</code>}
                <span>{issue.message}</span>
              </li>
            ))}
          </ul>
        )}
      </div>
    </div>
  );
}
