/**
 * Hash routes of the console: `#/inbox`, `#/inbox/history`, `#/sessions`, `#/sessions/<id>?event=<seq>`,
 * `#/policies`, `#/connections`, `#/audit`, `#/dashboard`, `#/keys`, `#/login`. Hash routing keeps every
 * screen linkable ("copy link") and works from a file server, the control plane and the desktop window.
 */

export type Page = 'inbox' | 'sessions' | 'replay' | 'policies' | 'connections' | 'audit' | 'dashboard' | 'keys' | 'login';

export interface Route {
  page: Page;
  /** `history` for the inbox's history tab; the session id for replay. */
  param?: string;
  query: Record<string, string>;
}

const SIMPLE: Page[] = ['inbox', 'sessions', 'policies', 'connections', 'audit', 'dashboard', 'keys', 'login'];

export function parseRoute(hash: string): Route {
  const raw = hash.replace(/^#/, '').replace(/^\/+/, '');
  const qi = raw.indexOf('?');
  const pathPart = qi >= 0 ? raw.slice(0, qi) : raw;
  const query: Record<string, string> = {};
  if (qi >= 0) for (const [k, v] of new URLSearchParams(raw.slice(qi + 1))) query[k] = v;
  const parts = pathPart.split('/').filter(Boolean).map(safeDecode);
  const [head, second] = parts;
  if (head === 'sessions' && second) return { page: 'replay', param: second, query };
  if (head === 'inbox' && second === 'history') return { page: 'inbox', param: 'history', query };
  // Desktop notifications open `#/holds/<id>` (shared/bridge.ts).
  if (head === 'holds') return { page: 'inbox', query: second ? { ...query, hold: second } : query };
  if (head && (SIMPLE as string[]).includes(head)) return { page: head as Page, query };
  return { page: 'inbox', query };
}

export function formatRoute(route: Route): string {
  let path: string;
  if (route.page === 'replay') path = `/sessions/${encodeURIComponent(route.param ?? '')}`;
  else if (route.page === 'inbox' && route.param === 'history') path = '/inbox/history';
  else path = `/${route.page}`;
  const q = new URLSearchParams(Object.entries(route.query).filter(([, v]) => v !== '' && v !== undefined)).toString();
  return `#${path}${q ? `?${q}` : ''}`;
}

/** A link to a session, optionally at one event (its seq). */
export function sessionLink(origin: string, session: string, eventSeq?: number): string {
  return `${origin}/${formatRoute({ page: 'replay', param: session, query: eventSeq !== undefined ? { event: String(eventSeq) } : {} })}`;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * Where the address bar goes once signed in: the page the sign-in redirect came from (`?next=`, a
 * same-origin path only), else `/`. This also drops a stale `?error=` from a failed link sign-in, so
 * it does not greet the next sign-out.
 */
export function afterSignIn(search: string): string {
  const next = new URLSearchParams(search).get('next');
  return next && next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/\\') && !next.startsWith('/login') ? next : '/';
}
