/**
 * The connections API never shows a credential written into an upstream address
 * (`postgres://app:pw@db/x`, `?password=…`): listings, answers to POST/PUT, `connection.changed`
 * events and reachability messages carry `redactUpstream(upstream)`. Since the console edits what
 * it was shown, an upstream sent back as it was shown (or omitted) keeps the real one; an upstream
 * that still holds the `***` placeholder next to other edits is refused, so the placeholder is
 * never saved as a password.
 */
import { REDACTED, redactUpstream, upstreamCredentials, upstreamCredentialWarning } from '../../../shared/upstream-credentials';
import { HttpError } from '../router';

export { redactUpstream };

/** The view's `upstream` and, when the address carries a credential, a warning to move it into `secret`. */
export function upstreamView(name: string, upstream: string): { upstream: string; warning?: string } {
  const warning = upstreamCredentialWarning(name, upstream);
  return { upstream: redactUpstream(upstream), ...(warning ? { warning } : {}) };
}

/**
 * The upstream to save from a PUT body: omitted, or sent back exactly as the API showed it, keeps
 * `current` (credentials included). Throws 400 when the body still holds the placeholder.
 */
export function incomingUpstream(sent: unknown, current: string): unknown {
  if (sent === undefined || sent === redactUpstream(current)) return current;
  if (typeof sent === 'string' && upstreamCredentials(sent).some((c) => c.includes(REDACTED)))
    throw new HttpError(400, 'invalid_connection', `upstream: it still holds the ${REDACTED} placeholder shown in place of a credential; give the full address, or put the credential in secret`);
  return sent;
}
