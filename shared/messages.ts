/**
 * Messages on the control-plane WebSocket (`/api/events`). The gateway, the console and the desktop
 * main process all use this union; handlers end with `satisfies never` so a new kind must be handled.
 *
 * Every server message carries `seq`, a monotonic number per gateway run plus its `epoch`; a client
 * that reconnects sends `{type: "resume", epoch, after: seq}` and receives what it missed.
 */
import type { AuditEvent, SessionSummary } from './events';
import type { HoldView } from './holds';

export type ServerMessageBody =
  | { type: 'hello'; user: { subject: string; name: string; roles: string[] }; gatewayVersion: string }
  | { type: 'hold.created'; hold: HoldView }
  | { type: 'hold.updated'; hold: HoldView }
  | { type: 'hold.resolved'; hold: HoldView }
  | { type: 'session.started'; session: SessionSummary }
  /** `gateway`: with a shared store, another gateway's event (its `seq` is in that gateway's chain); absent for this gateway's. */
  | { type: 'session.event'; event: AuditEvent; gateway?: string }
  | { type: 'session.ended'; session: SessionSummary }
  | { type: 'policy.updated'; version: number; author: string }
  | { type: 'masking.updated'; version: number; author: string }
  | { type: 'connections.updated' }
  | { type: 'export.progress'; id: string; done: number; total: number }
  | { type: 'export.done'; id: string; url: string; bytes: number }
  | { type: 'export.failed'; id: string; error: string }
  | { type: 'resync'; reason: string };

export type ServerMessage = ServerMessageBody & { seq: number; epoch: string; at: number };

export type ClientMessage =
  | { type: 'resume'; epoch: string; after: number }
  | { type: 'ping' };

export type ServerMessageType = ServerMessageBody['type'];
