/** What every exchange on one HTTP proxy listener shares, built once when the listener starts (proxy.ts). */
import type { SessionAuditWriter } from '../audit/session-writer';
import type { GatewayServices } from '../services';
import type { OffLoopMasking } from './off-loop';
import type { HttpSessionTracker } from './sessions';
import type { SilenceWatch } from './silence-watch';
import type { UpstreamTable } from './upstreams';

export interface ProxyContext {
  s: GatewayServices;
  upstreams: UpstreamTable;
  sessions: HttpSessionTracker;
  writer: SessionAuditWriter;
  /** Inspects large bodies on a worker thread; absent where none can start. */
  offLoop: OffLoopMasking | undefined;
  /** limits.upstreamConnectTimeout, in ms. */
  connectTimeout: number;
  /** Gives up on upstreams silent for limits.upstreamIdleTimeout. */
  silence: SilenceWatch;
  /** True once close() began: answers carry `connection: close`. */
  isClosing(): boolean;
}
