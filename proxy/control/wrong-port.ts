/**
 * Requests that were meant for the HTTP proxy but reached the control plane. The console's port
 * serves a single-page app, so without this an SDK pointed at it (`baseURL:
 * 'http://127.0.0.1:7420/openai'`) would get `200 text/html` and fail with a confusing parse error.
 * A request is API-shaped when it is not a GET/HEAD, asks for JSON, or names a connection in its
 * first path segment; such a request gets a 404 in the provider's error shape that names the HTTP
 * proxy's address, so the SDK raises an error a person understands.
 */
import type { IncomingMessage } from 'node:http';
import type { Config } from '../../shared/config';
import { errorBody } from '../../shared/provider-errors';

export interface WrongPortAnswer {
  status: number;
  body: Record<string, unknown>;
}

export function wrongPortAnswer(req: IncomingMessage, pathname: string, config: Pick<Config, 'connections'>, httpAddress: string | undefined): WrongPortAnswer | null {
  const method = req.method ?? 'GET';
  const accept = req.headers.accept ?? '';
  const first = decodeURIComponent(pathname.split('/')[1] ?? '');
  const connection = config.connections.find((c) => c.name === first);
  const apiShaped = (method !== 'GET' && method !== 'HEAD') || (/application\/json/.test(accept) && !/text\/html/.test(accept)) || connection !== undefined;
  if (!apiShaped) return null;
  const proxy = httpAddress ? `http://${httpAddress.replace(/^0\.0\.0\.0:/, '127.0.0.1:')}` : 'the HTTP proxy (listen.http)';
  const target = connection ? `${proxy}/${connection.name}` : `${proxy}/<connection>`;
  const message = `This is Custody's control plane (the console and /api/), not the HTTP proxy. Send ${connection ? `${connection.kind} ` : ''}API traffic to ${target}${connection ? ` (baseURL: '${target}')` : ''}.`;
  return { status: 404, body: errorBody(connection?.kind === 'anthropic' ? 'anthropic' : 'openai', 404, 'wrong_port', message) };
}
