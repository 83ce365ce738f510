/**
 * The next step for an empty page: a console with no connection points at the Connections page, one
 * with connections points at their ready-to-copy snippets. Empty pages use it so a first run leads
 * to a first recorded request without reading anything else.
 */
import { useEffect, useState } from 'react';
import { api } from '../app/context';
import { formatRoute } from '../lib/route';

type Known = { state: 'loading' } | { state: 'none' } | { state: 'some'; names: string[] } | { state: 'unknown' };

export function FirstSteps({ what }: { what: string }) {
  const [known, setKnown] = useState<Known>({ state: 'loading' });
  useEffect(() => {
    let live = true;
    api.connections().then(
      (r) => live && setKnown(r.connections.length ? { state: 'some', names: r.connections.map((c) => c.name) } : { state: 'none' }),
      () => live && setKnown({ state: 'unknown' }),
    );
    return () => {
      live = false;
    };
  }, []);
  const href = formatRoute({ page: 'connections', query: {} });
  if (known.state === 'loading') return null;
  if (known.state === 'none')
    return (
      <div className="first-steps" data-testid="first-steps" data-step="add-connection">
        {what} There is no connection yet: <a href={href}>add one on the Connections page</a> (an LLM API, an HTTP service or a PostgreSQL database).
      </div>
    );
  if (known.state === 'some')
    return (
      <div className="first-steps" data-testid="first-steps" data-step="first-request">
        {what} Send a first request through {known.names.length === 1 ? <code>{known.names[0]}</code> : 'a connection'}: <a href={href}>copy a ready-made snippet from the Connections page</a>.
      </div>
    );
  return <div className="first-steps">{what}</div>;
}
