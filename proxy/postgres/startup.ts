/**
 * The startup phase of a client connection, before any credential is looked at
 * (https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP): what the
 * gateway answers to each startup packet, and the cancel keys it hands to clients and routes.
 *
 *   SSLRequest          `S`, then TLS on the same socket
 *   GSSENCRequest       `N`: no GSSAPI encryption; the client goes on with SSL or plain
 *   CancelRequest       routed to the session whose key it carries; no reply, as in PostgreSQL
 *   StartupMessage      NegotiateProtocolVersion for 3.x minors and `_pq_.` options, then a
 *                       cleartext password request (the password is a Custody API key or an OIDC
 *                       token), accepted only over TLS or from this machine
 */
import { randomInt, timingSafeEqual } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { buildNegotiateProtocolVersion, type ErrorInit } from './backend-messages';
import type { StartupPacket } from './frontend-messages';
import { ProtocolError } from './message-buffer';
import { SqlState } from './message-codes';
import type { PgListenerContext, ListenedSession } from './session-context';

/** What to do with one startup packet. */
export type StartupStep =
  /** SSLRequest: answer `S` and start TLS. */
  | { kind: 'start-tls' }
  /** GSSENCRequest: answer `N`; another startup packet follows. */
  | { kind: 'decline-gssenc' }
  /** CancelRequest: route it, then close this connection without a reply. */
  | { kind: 'cancel'; pid: number; secret: Buffer }
  /**
   * StartupMessage: typed messages follow. `negotiate` goes to the client first; then either
   * `refusal` ends the connection, or the password is asked for.
   */
  | { kind: 'login'; params: Map<string, string>; negotiate: Buffer | null; refusal: ErrorInit | null };

/** The client connection as the startup phase needs to know it. */
export interface StartupConnection {
  tls: boolean;
  remoteAddress: string | undefined;
  /** Bytes the client sent after the packet. */
  buffered: number;
}

function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  if (address === '::1') return true;
  const v4 = address.startsWith('::ffff:') ? address.slice(7) : address;
  return isIPv4(v4) && v4.startsWith('127.');
}

/** Decides the answer to a startup packet; throws ProtocolError where PostgreSQL ends the connection. */
export function startupStep(packet: StartupPacket, connection: StartupConnection): StartupStep {
  if (packet.kind === 'ssl' || packet.kind === 'gssenc') {
    // Bytes sent in the clear after the request could be injected by a man in the middle (CVE-2021-23214).
    if (connection.buffered > 0) throw new ProtocolError(`received unencrypted data after ${packet.kind === 'ssl' ? 'SSL' : 'GSSAPI encryption'} request`);
    if (packet.kind === 'gssenc') return { kind: 'decline-gssenc' };
    if (connection.tls) throw new ProtocolError('SSLRequest on a connection that is already encrypted');
    return { kind: 'start-tls' };
  }
  if (packet.kind === 'cancel') return packet;
  const params = packet.params;
  const refuse = (refusal: ErrorInit): StartupStep => ({ kind: 'login', params, negotiate: null, refusal });
  if (!params.get('user')) return refuse({ severity: 'FATAL', code: SqlState.InvalidAuthorization, message: 'no PostgreSQL user name specified in startup packet' });
  const replication = params.get('replication');
  if (replication && !['false', 'off', 'no', '0'].includes(replication.toLowerCase())) {
    return refuse({ severity: 'FATAL', code: SqlState.FeatureNotSupported, message: 'replication connections are not supported through the Custody gateway' });
  }
  const unrecognized = [...params.keys()].filter((k) => k.startsWith('_pq_.'));
  const negotiate = packet.minor > 0 || unrecognized.length > 0 ? buildNegotiateProtocolVersion(0, unrecognized) : null;
  // The password is a credential in the clear: only inside TLS, or without leaving this machine.
  const refusal: ErrorInit | null =
    !connection.tls && !isLoopback(connection.remoteAddress)
      ? { severity: 'FATAL', code: SqlState.InvalidAuthorization, message: 'the Custody gateway accepts passwords only over TLS or from this machine', hint: 'connect with sslmode=require' }
      : null;
  return { kind: 'login', params, negotiate, refusal };
}

/** The BackendKeyData a client receives: the gateway's own pid and secret, never the upstream's. */
export interface CancelKey {
  pid: number;
  secret: Buffer;
}

/** Hands out a fresh cancel key: a CancelRequest that carries it is routed to `session`. */
export function issueCancelKey(keys: PgListenerContext['cancelKeys'], session: ListenedSession): CancelKey {
  let pid = 0;
  do pid = randomInt(1, 2 ** 31 - 1);
  while (keys.has(pid));
  const secret = Buffer.alloc(4);
  secret.writeInt32BE(randomInt(-(2 ** 31), 2 ** 31 - 1));
  keys.set(pid, { secret, session });
  return { pid, secret };
}

/** Cancels what the session holding this key runs (or waits for); a wrong key is ignored. */
export function routeCancelRequest(keys: PgListenerContext['cancelKeys'], pid: number, secret: Buffer): void {
  const entry = keys.get(pid);
  if (entry && entry.secret.length === secret.length && timingSafeEqual(entry.secret, secret)) entry.session.cancel();
}
