/**
 * The two sockets of one PostgreSQL session and the flow between them: the client's (plain, or TLS
 * after an SSLRequest or a direct ClientHello) and, once logged in, the upstream's. It reads client
 * bytes into the frontend message buffer, writes each side's output in batches (OutputBatch), and
 * pauses one side while the other cannot take more (backpressure) or while the session takes no
 * client messages. It knows nothing of the protocol but the first byte of direct TLS; what the
 * bytes mean is the session's.
 */
import type { Socket } from 'node:net';
import { type SecureContext, TLSSocket } from 'node:tls';
import { MessageBuffer } from './message-buffer';
import { OutputBatch } from './output-batch';
import { terminateUpstream, type UpstreamSession } from './upstream';

/** What the session hears from its sockets. */
export interface SessionSocketEvents {
  /** True while a TLS ClientHello would open direct TLS (PostgreSQL 17 `sslnegotiation=direct`). */
  readonly acceptsDirectTls: boolean;
  /** Client messages may be read: bytes arrived, or the upstream can take more. */
  pumpFront(): void;
  /** Upstream replies may be read: bytes arrived, or the client can take more. */
  pumpBack(): void;
  /** The client half-closed its connection: it sends nothing more. */
  clientEnded(): void;
  clientClosed(): void;
  upstreamClosed(): void;
  /** A socket failed: if the session ends now, this is why. */
  socketFailed(reason: string): void;
}

/** Client bytes read ahead while the session takes no messages (a hold, a commit), before reading stops. */
export const MAX_UNREAD_CLIENT_BYTES = 8 * 1024 * 1024;

/** How long a client whose connection the gateway ends may take to close its side. */
const CLIENT_CLOSE_GRACE_MS = 2000;

/** A TLS record of type handshake: a ClientHello sent without an SSLRequest first. */
const TLS_HANDSHAKE_RECORD = 0x16;

export class SessionSockets {
  readonly raw: Socket;
  /** The client connection: `raw`, or the TLS socket over it. */
  client: Socket | TLSSocket;
  tls = false;
  /** Messages the client sent, framed (startup packets first, then typed messages). */
  frontend = new MessageBuffer({ startup: true, peer: 'client' });
  upstream: UpstreamSession | null = null;
  /** The session takes no client messages now (login, a hold, a commit, a catalog lookup). */
  frontWaiting = false;
  /** The session takes no upstream replies now (a table-name lookup for masking). */
  backWaiting = false;
  /** The upstream cannot take more: the client is not read until it drains. */
  private frontBlocked = false;
  /** The client cannot take more: the upstream is not read until it drains. */
  private backBlocked = false;
  readonly toClient = new OutputBatch();
  private readonly toUpstream = new OutputBatch();

  constructor(
    socket: Socket,
    private readonly secureContext: SecureContext,
    private readonly events: SessionSocketEvents,
  ) {
    this.raw = socket;
    this.client = socket;
    socket.setNoDelay(true);
    socket.on('error', () => {});
    this.attachClient(socket);
  }

  private readonly onClientData = (chunk: Buffer) => {
    if (chunk[0] === TLS_HANDSHAKE_RECORD && !this.tls && this.frontend.buffered === 0 && this.events.acceptsDirectTls) {
      this.startTls(chunk);
      return;
    }
    this.frontend.push(chunk);
    if (this.frontWaiting && this.frontend.buffered > MAX_UNREAD_CLIENT_BYTES) this.client.pause();
    this.events.pumpFront();
  };

  private readonly onClientEnd = () => this.events.clientEnded();

  private readonly onClientClose = () => this.events.clientClosed();

  private attachClient(socket: Socket | TLSSocket): void {
    socket.on('data', this.onClientData);
    socket.on('end', this.onClientEnd);
    socket.on('close', this.onClientClose);
    socket.on('error', (err: Error) => this.events.socketFailed(`client connection error: ${err.message}`));
    socket.on('drain', () => {
      if (this.backBlocked) {
        this.backBlocked = false;
        this.upstream?.socket.resume();
        this.events.pumpBack();
      }
    });
  }

  /** Answers an SSLRequest with `S` and switches the client connection to TLS. */
  acceptSslRequest(): void {
    this.client.write('S');
    this.startTls(null);
  }

  /** Switches the client connection to TLS; `initial` holds a ClientHello already read (direct TLS). */
  private startTls(initial: Buffer | null): void {
    const raw = this.raw;
    raw.off('data', this.onClientData);
    raw.off('end', this.onClientEnd);
    raw.off('close', this.onClientClose);
    if (initial) {
      raw.pause();
      raw.unshift(initial);
    }
    const secure = new TLSSocket(raw, { isServer: true, secureContext: this.secureContext, ALPNProtocols: ['postgresql'] });
    this.client = secure;
    this.tls = true;
    this.frontend = new MessageBuffer({ startup: true, peer: 'client' });
    this.attachClient(secure);
    secure.on('error', (err) => {
      this.events.socketFailed(`TLS error: ${err.message}`);
      raw.destroy();
    });
  }

  sendClient(message: Buffer): void {
    this.toClient.push(message);
  }

  /** Drops replies not yet sent to the client (their results could not be journaled). */
  discardClientOutput(): void {
    this.toClient.clear();
  }

  /** While true, replies stay queued: their results are not in the journal yet (session.ts pumpBack). */
  holdClient = false;

  flushClient(): void {
    if (this.holdClient || this.toClient.empty) return;
    if (!this.toClient.flushTo(this.client) && this.upstream && !this.backBlocked) {
      this.backBlocked = true;
      this.upstream.socket.pause();
    }
  }

  sendUpstream(message: Buffer): void {
    this.toUpstream.push(message);
  }

  flushUpstream(): void {
    if (!this.upstream || this.toUpstream.empty) return;
    if (!this.toUpstream.flushTo(this.upstream.socket) && !this.frontBlocked) {
      this.frontBlocked = true;
      this.client.pause();
    }
  }

  /**
   * Stops taking client messages. `pauseSocket: false` keeps reading the socket into the buffer (up
   * to MAX_UNREAD_CLIENT_BYTES), so a client that sends Terminate or goes away while its statement
   * is held is seen at once.
   */
  wait(pauseSocket: boolean): void {
    this.frontWaiting = true;
    if (pauseSocket) this.client.pause();
  }

  /** Reads the client socket again, unless the upstream is still full. */
  resumeClient(): void {
    if (!this.frontBlocked) this.client.resume();
  }

  /** The logged-in upstream connection: its replies are pumped to the session, its drain resumes the client. */
  attachUpstream(upstream: UpstreamSession): void {
    this.upstream = upstream;
    const socket = upstream.socket;
    socket.on('data', (chunk: Buffer) => {
      upstream.buffer.push(chunk);
      this.events.pumpBack();
    });
    socket.on('error', (err) => this.events.socketFailed(`upstream connection error: ${err.message}`));
    socket.on('close', () => this.events.upstreamClosed());
    socket.on('drain', () => {
      if (this.frontBlocked) {
        this.frontBlocked = false;
        if (!this.frontWaiting) this.client.resume();
        this.events.pumpFront();
      }
    });
  }

  /** Stops reading upstream replies until `resumeReplies` (the session looks something up first). */
  pauseReplies(): void {
    this.backWaiting = true;
    this.upstream?.socket.pause();
  }

  resumeReplies(): void {
    this.backWaiting = false;
    if (!this.backBlocked) this.upstream?.socket.resume();
  }

  /** Closes the upstream connection (Terminate, then the socket) and drops what was not yet sent to it. */
  closeUpstream(): void {
    const upstream = this.upstream;
    if (upstream) {
      this.upstream = null;
      upstream.socket.removeAllListeners('data');
      terminateUpstream(upstream.socket);
    }
    this.toUpstream.clear();
  }

  /** Ends the client connection, and destroys it if the client does not close its side in time. */
  endClient(): void {
    const client = this.client;
    if (client.destroyed) return;
    client.end();
    setTimeout(() => client.destroy(), CLIENT_CLOSE_GRACE_MS).unref();
  }
}
