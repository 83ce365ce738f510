/**
 * The gateway's side of a connection to the upstream PostgreSQL server: TCP, optional TLS
 * (SSLRequest, https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-SSL),
 * StartupMessage and password authentication with the connection's stored credential (SCRAM-SHA-256,
 * MD5 or cleartext). The client never sees any of it: it gets the gateway's own AuthenticationOk.
 */
import { readFileSync } from 'node:fs';
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { type ConnectionOptions, connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { Connection } from '../../shared/config';
import { readSecret } from '../config';
import { type ErrorFields, parseAuthentication, parseBackendKeyData, parseErrorFields, parseParameterStatus } from './backend-messages';
import {
  buildCancelRequest,
  buildPasswordMessage,
  buildQuery,
  buildSASLInitialResponse,
  buildSASLResponse,
  buildSSLRequest,
  buildStartupMessage,
  buildTerminate,
} from './frontend-messages';
import { md5PasswordResponse } from './md5-password';
import { MessageBuffer, type RawMessage } from './message-buffer';
import { BackendCode } from './message-codes';
import { SCRAM_MECHANISM, ScramClient } from './scram-sha-256';
import { redactUpstream } from '../../shared/upstream-credentials';

export type UpstreamTlsMode = 'disable' | 'prefer' | 'require' | 'verify-full';

/** Where and as whom the gateway logs in upstream, from a `postgres` connection's config. */
export interface UpstreamTarget {
  host: string;
  port: number;
  user: string;
  /** undefined: use the database the client asked for. */
  database?: string;
  password?: string;
  tls: { mode: UpstreamTlsMode; ca?: string };
  /** Extra startup parameters from the URL query (e.g. `?options=-c%20search_path%3Dapp`). */
  params: Record<string, string>;
  /** How long connecting (TCP, TLS, login) may take (config limits.upstreamConnectTimeout). */
  connectTimeoutMs: number;
}

/** `postgres://user[:password]@host:port/db?sslmode=…` plus the connection's `secret` and `tls`. */
export function upstreamTarget(connection: Connection, connectTimeoutMs = 10_000): UpstreamTarget {
  let url: URL;
  try {
    url = new URL(connection.upstream);
  } catch {
    throw new Error(`connection ${connection.name}: upstream is not a URL: ${redactUpstream(connection.upstream)}`);
  }
  const params: Record<string, string> = {};
  let mode: UpstreamTlsMode = connection.tls?.mode ?? 'prefer';
  let queryPassword: string | undefined;
  for (const [k, v] of url.searchParams) {
    // libpq reads `?password=` as the password; as a startup parameter the server would refuse it.
    if (k === 'password') queryPassword = v;
    else if (k === 'sslmode') {
      if (!['disable', 'prefer', 'require', 'verify-full'].includes(v)) throw new Error(`connection ${connection.name}: unsupported sslmode ${v}`);
      mode = v as UpstreamTlsMode;
    } else params[k] = v;
  }
  const secret = readSecret(connection.secret, `connection ${connection.name}`);
  const urlPassword = url.password ? decodeURIComponent(url.password) : undefined;
  const database = decodeURIComponent(url.pathname.replace(/^\//, ''));
  return {
    host: url.hostname.replace(/^\[|\]$/g, '') || '127.0.0.1',
    port: url.port ? Number(url.port) : 5432,
    user: decodeURIComponent(url.username) || 'postgres',
    database: database || undefined,
    password: secret ?? urlPassword ?? queryPassword,
    tls: { mode, ca: connection.tls?.ca },
    params,
    connectTimeoutMs,
  };
}

/** The upstream said no (bad password, unknown database, too many connections…). */
export class UpstreamError extends Error {
  constructor(
    message: string,
    /** The server's ErrorResponse, when it sent one. */
    readonly fields?: ErrorFields,
  ) {
    super(message);
    this.name = 'UpstreamError';
  }
}

export interface UpstreamSession {
  socket: Socket | TLSSocket;
  /** Holds any bytes the server sent after ReadyForQuery. */
  buffer: MessageBuffer;
  /** ParameterStatus values, in the order the server sent them. */
  parameters: [string, string][];
  /** NoticeResponse messages received during startup, to relay. */
  notices: RawMessage[];
  pid: number;
  secret: Buffer;
  status: 'I' | 'T' | 'E';
  /** The server's idle_in_transaction_session_timeout in ms (0: none), read after login: a hold inside a transaction must end before it. */
  idleInTransactionMs: number;
  tls: boolean;
  auth: 'trust' | 'cleartext' | 'md5' | 'scram-sha-256';
}

/** Pulls whole messages from a socket with a promise per message (handshakes only). */
class HandshakeReader {
  private waiting: { resolve: (m: RawMessage) => void; reject: (e: Error) => void } | null = null;
  private failure: Error | null = null;
  private readonly onData = (chunk: Buffer) => {
    this.buffer.push(chunk);
    this.deliver();
  };
  private readonly onEnd = () => this.fail(new UpstreamError('the upstream server closed the connection during startup'));
  private readonly onError = (err: Error) => this.fail(new UpstreamError(`upstream connection failed: ${err.message}`));

  constructor(
    private socket: Socket | TLSSocket,
    readonly buffer: MessageBuffer,
  ) {
    this.attach();
  }

  private attach(): void {
    this.socket.on('data', this.onData);
    this.socket.on('end', this.onEnd);
    this.socket.on('close', this.onEnd);
    this.socket.on('error', this.onError);
  }

  detach(): void {
    this.socket.off('data', this.onData);
    this.socket.off('end', this.onEnd);
    this.socket.off('close', this.onEnd);
    this.socket.off('error', this.onError);
  }

  replaceSocket(socket: Socket | TLSSocket): void {
    this.detach();
    this.socket = socket;
    this.attach();
  }

  fail(err: Error): void {
    this.failure ??= err;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = null;
      w.reject(err);
    }
  }

  private deliver(): void {
    if (!this.waiting) return;
    let m: RawMessage | null;
    try {
      m = this.buffer.next();
    } catch (err) {
      this.fail(err as Error);
      return;
    }
    if (m) {
      const w = this.waiting;
      this.waiting = null;
      w.resolve(m);
    }
  }

  next(): Promise<RawMessage> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.deliver();
    });
  }
}

function openTcp(target: UpstreamTarget, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: target.host, port: target.port });
    socket.setNoDelay(true);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new UpstreamError(`cannot reach the upstream server ${target.host}:${target.port}: no connection within ${timeoutMs} ms (limits.upstreamConnectTimeout)`));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(new UpstreamError(`cannot reach the upstream server ${target.host}:${target.port}: ${err.message}`));
    });
  });
}

/** SSLRequest and, when the server agrees, the TLS handshake. Returns the socket to use. */
async function negotiateTls(socket: Socket, target: UpstreamTarget): Promise<Socket | TLSSocket> {
  if (target.tls.mode === 'disable') return socket;
  socket.write(buildSSLRequest());
  const answer = await new Promise<number>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      cleanup();
      if (chunk.length !== 1) reject(new UpstreamError('the upstream server sent unexpected data in reply to SSLRequest'));
      else resolve(chunk[0]!);
    };
    const onError = (err: Error) => {
      cleanup();
      reject(new UpstreamError(`upstream connection failed during SSL negotiation: ${err.message}`));
    };
    const onClose = () => {
      cleanup();
      reject(new UpstreamError('the upstream server closed the connection during SSL negotiation'));
    };
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
    };
    socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
  });
  if (answer === 0x4e /* N */) {
    if (target.tls.mode === 'prefer') return socket;
    socket.destroy();
    throw new UpstreamError(`the upstream server ${target.host}:${target.port} does not accept TLS, and the connection's tls.mode is ${target.tls.mode}`);
  }
  if (answer !== 0x53 /* S */) {
    socket.destroy();
    throw new UpstreamError(`the upstream server answered SSLRequest with 0x${answer.toString(16)} (expected S or N)`);
  }
  const verify = target.tls.mode === 'verify-full';
  const options: ConnectionOptions = { socket, host: target.host, rejectUnauthorized: verify };
  if (!isIP(target.host)) options.servername = target.host;
  if (verify && target.tls.ca) options.ca = readFileSync(target.tls.ca);
  if (!verify) options.checkServerIdentity = () => undefined;
  const tlsSocket = tlsConnect(options);
  await new Promise<void>((resolve, reject) => {
    tlsSocket.once('secureConnect', () => {
      tlsSocket.removeAllListeners('error');
      resolve();
    });
    tlsSocket.once('error', (err) => reject(new UpstreamError(`TLS handshake with the upstream server failed: ${err.message}`)));
  });
  return tlsSocket;
}

export interface ConnectOptions {
  /** Startup parameters from the client (application_name, client_encoding, options, …). */
  params?: Record<string, string>;
  /** The database the client asked for; used when the target names none. */
  database?: string;
  timeoutMs?: number;
}

/** Opens an authenticated upstream session, ready for queries (ReadyForQuery received). */
export async function connectUpstream(target: UpstreamTarget, options: ConnectOptions = {}): Promise<UpstreamSession> {
  const timeoutMs = options.timeoutMs ?? target.connectTimeoutMs;
  const raw = await openTcp(target, timeoutMs);
  let socket: Socket | TLSSocket = raw;
  const timer = setTimeout(() => socket.destroy(new Error(`no ReadyForQuery within ${timeoutMs} ms`)), timeoutMs);
  try {
    socket = await negotiateTls(raw, target);
    const buffer = new MessageBuffer({ peer: 'upstream server', maxMessageLength: 1024 * 1024 * 1024 });
    const reader = new HandshakeReader(socket, buffer);
    const database = target.database ?? options.database ?? target.user;
    socket.write(buildStartupMessage({ ...options.params, ...target.params, user: target.user, database }));
    const session: Partial<UpstreamSession> = { parameters: [], notices: [], tls: socket !== raw, auth: 'trust' };
    let scram: ScramClient | null = null;
    const needPassword = (how: string) => {
      if (target.password === undefined)
        throw new UpstreamError(`the upstream server asks for ${how} authentication, but the connection has no secret configured`);
      return target.password;
    };
    for (;;) {
      const m = await reader.next();
      switch (m.code) {
        case BackendCode.Authentication: {
          const a = parseAuthentication(m.body);
          if (a.type === 'ok') break;
          if (a.type === 'cleartext') {
            session.auth = 'cleartext';
            socket.write(buildPasswordMessage(needPassword('password')));
          } else if (a.type === 'md5') {
            session.auth = 'md5';
            socket.write(buildPasswordMessage(md5PasswordResponse(target.user, needPassword('MD5'), a.salt)));
          } else if (a.type === 'sasl') {
            if (!a.mechanisms.includes(SCRAM_MECHANISM))
              throw new UpstreamError(`the upstream server offers only ${a.mechanisms.join(', ')}; the gateway speaks ${SCRAM_MECHANISM}`);
            session.auth = 'scram-sha-256';
            scram = new ScramClient(needPassword(SCRAM_MECHANISM));
            socket.write(buildSASLInitialResponse(SCRAM_MECHANISM, scram.clientFirst()));
          } else if (a.type === 'sasl-continue') {
            if (!scram) throw new UpstreamError('the upstream server sent a SASL continuation without a SASL exchange');
            socket.write(buildSASLResponse(scram.clientFinal(a.data)));
          } else if (a.type === 'sasl-final') {
            if (!scram) throw new UpstreamError('the upstream server sent a SASL final message without a SASL exchange');
            scram.verifyServerFinal(a.data);
          } else throw new UpstreamError(`the upstream server asks for an authentication method the gateway does not speak (code ${a.code})`);
          break;
        }
        case BackendCode.ErrorResponse: {
          const fields = parseErrorFields(m.body);
          throw new UpstreamError(`the upstream server refused the login: ${fields.get('M') ?? 'error'}`, fields);
        }
        case BackendCode.NoticeResponse:
          session.notices!.push({ ...m, raw: Buffer.from(m.raw) });
          break;
        case BackendCode.ParameterStatus: {
          const p = parseParameterStatus(m.body);
          session.parameters!.push([p.name, p.value]);
          break;
        }
        case BackendCode.BackendKeyData: {
          const k = parseBackendKeyData(m.body);
          session.pid = k.pid;
          session.secret = k.secret;
          break;
        }
        case BackendCode.NegotiateProtocolVersion:
          break;
        case BackendCode.ReadyForQuery: {
          session.status = String.fromCharCode(m.body[0] ?? 0x49) as 'I';
          session.idleInTransactionMs = await idleInTransactionTimeout(socket, reader);
          reader.detach();
          clearTimeout(timer);
          return { ...(session as UpstreamSession), socket, buffer, pid: session.pid ?? 0, secret: session.secret ?? Buffer.alloc(4) };
        }
        default:
          throw new UpstreamError(`the upstream server sent an unexpected message (0x${m.code.toString(16)}) during startup`);
      }
    }
  } catch (err) {
    clearTimeout(timer);
    socket.destroy();
    raw.destroy();
    throw err instanceof UpstreamError ? err : new UpstreamError(err instanceof Error ? err.message : String(err));
  }
}

const SETTING_UNITS: Record<string, number> = { ms: 1, s: 1000, min: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * Reads idle_in_transaction_session_timeout on the fresh session (one round trip at login): the
 * server ends a session that stays idle in a transaction that long, so a statement held for
 * approval inside a transaction must be decided sooner.
 */
async function idleInTransactionTimeout(socket: Socket | TLSSocket, reader: HandshakeReader): Promise<number> {
  socket.write(buildQuery('SHOW idle_in_transaction_session_timeout'));
  let value: string | null = null;
  let failed: string | null = null;
  for (;;) {
    const m = await reader.next();
    if (m.code === BackendCode.DataRow && m.body.readInt16BE(0) >= 1) {
      const len = m.body.readInt32BE(2);
      value = len < 0 ? null : m.body.toString('utf8', 6, 6 + len);
    } else if (m.code === BackendCode.ErrorResponse) failed = parseErrorFields(m.body).get('M') ?? 'error';
    else if (m.code === BackendCode.ReadyForQuery) break;
  }
  if (failed !== null || value === null) throw new UpstreamError(`cannot read idle_in_transaction_session_timeout from the upstream server: ${failed ?? 'no value'}`);
  const v = /^(\d+)\s*(ms|s|min|h|d)?$/.exec(value.trim());
  if (!v) throw new UpstreamError(`cannot read idle_in_transaction_session_timeout from the upstream server: "${value}"`);
  return Number(v[1]) * (SETTING_UNITS[v[2] ?? 'ms'] ?? 1);
}

/** Sends a CancelRequest for an upstream backend on a new connection (no reply is expected). */
export async function sendUpstreamCancel(target: UpstreamTarget, pid: number, secret: Buffer): Promise<void> {
  const raw = await openTcp(target, 5000);
  try {
    const socket = target.tls.mode === 'require' || target.tls.mode === 'verify-full' ? await negotiateTls(raw, target) : raw;
    await new Promise<void>((resolve) => {
      socket.on('error', () => resolve());
      socket.on('close', () => resolve());
      socket.end(buildCancelRequest(pid, secret));
    });
  } finally {
    raw.destroy();
  }
}

/** Ends an upstream session politely (Terminate, then close). */
export function terminateUpstream(socket: Socket | TLSSocket): void {
  if (!socket.destroyed && socket.writable) socket.end(buildTerminate());
  setTimeout(() => socket.destroy(), 1000).unref();
}
