/**
 * Gives up on upstreams that go silent (limits.upstreamIdleTimeout), with one coarse timer for the
 * whole proxy and nothing done per request: a few times per timeout it reads the byte count of
 * every upstream socket that carries a request, and a socket whose count has not moved for the
 * limit while the same request was on it has that request destroyed, marked with `SILENT` (the
 * exchange reads the mark to answer 504 `upstream_timeout`). A timer per request — Node's
 * `request.setTimeout`, re-armed on every read and write — and even a set entry per exchange cost
 * the proxy's event loop measurably (docs/BENCHMARKS.md).
 *
 * A silence is noticed after at least the limit and at most the limit plus two sweep intervals
 * (the sweep runs every quarter of the limit, at most once a second): never early.
 */
import type { Agent, ClientRequest } from 'node:http';
import type { Socket } from 'node:net';

/** Set on a request the watch destroyed: why, in words. */
export const SILENT = Symbol('custody.upstreamSilent');

type WatchedRequest = ClientRequest & { [SILENT]?: string };

interface Seen {
  req: WatchedRequest;
  bytes: number;
  since: number;
}

export class SilenceWatch {
  private readonly seen = new WeakMap<Socket, Seen>();
  private timer: NodeJS.Timeout | undefined;

  /**
   * @param limitMs how long an upstream may stay silent
   * @param agents the keep-alive agents whose sockets carry upstream requests (read at every sweep)
   * @param reason what the destroyed request's error says
   */
  constructor(
    readonly limitMs: number,
    private readonly agents: () => Iterable<Agent>,
    private readonly reason: string,
  ) {
    this.timer = setInterval(() => this.sweep(), Math.min(1000, Math.max(10, limitMs / 4)));
    this.timer.unref();
  }

  sweep(now = performance.now()): void {
    for (const agent of this.agents()) {
      for (const sockets of Object.values(agent.sockets)) {
        for (const socket of sockets ?? []) {
          // The request a busy agent socket carries (Node's own field; undocumented, long stable).
          const req = (socket as Socket & { _httpMessage?: WatchedRequest | null })._httpMessage;
          if (!req) {
            this.seen.delete(socket);
            continue;
          }
          const bytes = socket.bytesRead;
          const s = this.seen.get(socket);
          if (!s || s.req !== req || s.bytes !== bytes) this.seen.set(socket, { req, bytes, since: now });
          else if (now - s.since >= this.limitMs && req[SILENT] === undefined) {
            req[SILENT] = this.reason;
            req.destroy(Object.assign(new Error(this.reason), { code: 'ETIMEDOUT' }));
          }
        }
      }
      // An idle keep-alive socket outlives its last request: what was noted of that request (and,
      // through its listeners, the whole exchange) must not live on with it.
      for (const sockets of Object.values(agent.freeSockets)) for (const socket of sockets ?? []) this.seen.delete(socket);
    }
  }

  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
