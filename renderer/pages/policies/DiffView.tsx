/** A line diff of two YAML texts, with three lines of context around each change. */
import type { DiffLine } from '../../lib/rules-yaml';

export function DiffView({ lines, testId }: { lines: DiffLine[]; testId?: string }) {
  const changed = lines.some((l) => l.op !== ' ');
  if (!changed) return <div className="muted small">No differences.</div>;
  const shown = new Set<number>();
  lines.forEach((line, i) => {
    if (line.op !== ' ') for (let k = i - 3; k <= i + 3; k++) shown.add(k);
  });
  return (
    <pre className="diff" data-testid={testId}>
      {lines.map((line, i) =>
        shown.has(i) ? (
          <div key={i} className={line.op === '+' ? 'add' : line.op === '-' ? 'del' : ''}>
            {line.op} {line.text}
          </div>
        ) : shown.has(i - 1) ? (
          <div key={i} className="skip">
            ⋯
          </div>
        ) : null,
      )}
    </pre>
  );
}
