/**
 * One client connection to an `ssh` connection's listener. The client logs in with its Custody
 * credential (a `cst_` key as the password, or answered at a keyboard-interactive prompt); the
 * gateway logs in upstream with the connection's own credential, which the client never sees.
 *
 * Each session channel's request is decided before it reaches the upstream:
 * - `exec`: the command is parsed (proxy/policy/shell-commands.ts) and the policy decides on its
 *   simple commands, `unknown` included; uploads by `scp -t`, `rsync --server` and `tar x` are also
 *   `file_transfer` with the paths they write;
 * - `shell`: the policy decides on the session as a whole (`ssh: [shell]`);
 * - `subsystem sftp`: relayed packet by packet (sftp.ts), each write, remove and rename decided;
 * - port forwarding is refused unless a rule allows it; agent forwarding and X11 always are.
 * A hold waits for approvers through the hold queue; a refusal reaches the client on stderr with
 * exit status 126. Everything is recorded before it is forwarded (recording.ts says what).
 */
import type { Duplex } from 'node:stream';
import type { AuthContext, AuthenticationType, ClientChannel, ClientInfo, Connection as SshConnection, PseudoTtyInfo, ServerChannel, Session } from 'ssh2';
import type { Client } from 'ssh2';
import ssh2 from 'ssh2';
import type { Connection } from '../../shared/config';
import { type AuditEventInput, type MaskSpan, SESSION_START_VERSION, type SessionEndPayload, type SshSessionStart, type AuthFailureDetails } from '../../shared/events';
import { reconstructLine } from '../../shared/shell-line';
import { shortenForSummary } from '../../shared/holds';
import type { Identity } from '../../shared/identity';
import { newId } from '../ids';
import { AuthError } from '../identity/authenticator';
import type { TextStreamMasker } from '../masking/types';
import { parseExec } from '../policy/shell-commands';
import type { PolicyDecision, PolicyInput } from '../policy/types';
import type { SshKeyRecord, SshKeyStore } from '../identity/ssh-keys';
import type { GatewayServices } from '../services';
import { resolveRemotePath, SftpRelay } from './sftp';
import { EchoWatch, OutputTap } from './terminal';
import { connectSshUpstream, type KnownHosts, SshUpstreamError, type SshUpstreamTarget } from './upstream';

/** Exit status of a command the gateway refused (the shell's "cannot execute"). */
export const REFUSED_EXIT_STATUS = 126;
/** Session channels one connection may hold open at once (OpenSSH's MaxSessions is 10). */
export const MAX_CHANNELS = 16;
/** Failed logins on one connection before the gateway hangs up. */
const MAX_AUTH_FAILURES = 6;
/** Environment variables a client may set; the rest are refused. */
/** What a client may log in with: a registered public key, or its Custody key as the password. */
const AUTH_METHODS: AuthenticationType[] = ['publickey', 'password', 'keyboard-interactive'];
const ENV_ALLOWED = /^(LANG|LANGUAGE|LC_[A-Z]+|TZ|COLORTERM|TERM_PROGRAM|TERM_PROGRAM_VERSION)$/;
const SUMMARY_CHARS = 200;
/** Terminal frames are written at most this often, or when this many characters wait. */
const FRAME_FLUSH_MS = 100;
const FRAME_FLUSH_CHARS = 16 * 1024;
/** A shell quiet this long gets what the masking holdback kept (docs/SSH.md, "Masking"). */
const TERMINAL_IDLE_FLUSH_MS = 30;

export interface SshListenerContext {
  connection: Connection;
  target: SshUpstreamTarget;
  knownHosts: KnownHosts;
  /** Public keys registered for API keys (public-key login). */
  sshKeys: SshKeyStore;
  services: GatewayServices;
  /** Output recorded per exec command and stream, in characters (limits.recordOutputBytes). */
  recordOutputBytes: number;
  /** File content recorded per transfer (limits.recordFileBytes); 0: path, size and hash only. */
  recordFileBytes: number;
  sessions: Set<SshProxySession>;
}

interface ChannelState {
  n: number;
  session: Session;
  pty?: PseudoTtyInfo;
  env: Record<string, string>;
  up?: ClientChannel;
  client?: ServerChannel;
  /** A request was taken: one per channel. */
  taken: boolean;
}

type Frame = [number, 'o' | 'i' | 'r', string] | [number, 'i', { hidden: true; length: number }];

export class SshProxySession {
  readonly id = newId('ssh');
  private identity?: Identity;
  private upstream?: Promise<Client>;
  private up?: Client;
  private started = false;
  private closed = false;
  private readonly startedAt = Date.now();
  private unregisterLive?: () => void;
  private authFailures = 0;
  private nextChannel = 1;
  private readonly open = new Set<ChannelState>();
  private requests = 0;
  private endReason = 'client disconnected';
  private readonly s: GatewayServices;
  private homeDir?: Promise<string>;
  /** The registered SSH key the client logged in with, when it used one. */
  private publicKey?: string;

  constructor(
    private readonly client: SshConnection,
    private readonly info: ClientInfo,
    private readonly ctx: SshListenerContext,
  ) {
    this.s = ctx.services;
    ctx.sessions.add(this);
    client.on('authentication', (a) => this.onAuth(a));
    client.on('ready', () => this.onReady());
    client.on('session', (accept, reject) => this.onSession(accept, reject));
    client.on('tcpip', (accept, reject, info) => void this.onDirectTcpip(accept, reject, info));
    client.on('request', (accept, reject, name) => this.onGlobalRequest(reject, name));
    client.on('error', (err: Error) => {
      this.endReason = `connection error: ${err.message}`;
    });
    client.on('close', () => this.finish());
  }

  private get name(): string {
    return this.ctx.connection.name;
  }

  // ---------------------------------------------------------------- login

  private onAuth(a: AuthContext): void {
    if (this.identity) return a.reject();
    // A gateway the shared store has not admitted serves nothing (docs/SCALE-OUT.md, enrolment).
    const refusal = this.s.admissionRefusal?.();
    if (refusal !== undefined) {
      this.endReason = refusal;
      a.reject([]);
      this.client.end();
      return;
    }
    if (a.method === 'password') return void this.check(a.password, a);
    if (a.method === 'keyboard-interactive') {
      a.prompt([{ prompt: 'Password (your Custody key, cst_…): ', echo: false }], 'Custody gateway', '', (answers) => void this.check(answers[0] ?? '', a));
      return;
    }
    if (a.method === 'publickey') return void this.checkPublicKey(a);
    a.reject(AUTH_METHODS);
  }

  private async check(credential: string, a: AuthContext): Promise<void> {
    try {
      this.identity = await this.s.auth.authenticate(credential || undefined);
    } catch (err) {
      return this.refuseLogin(a, err, this.s.keys.knownPrefix(credential || undefined));
    }
    a.accept();
  }

  /**
   * A public key registered for an API key (`custody keys add-ssh`): a client asking whether the
   * key would do is told yes or no; a signed attempt is verified against the registered key and
   * logs in as that API key. A key nobody registered is not a failed login (clients offer every
   * key they hold); a bad signature or a revoked key is.
   */
  private async checkPublicKey(a: AuthContext & { method: 'publickey' }): Promise<void> {
    let record: SshKeyRecord | undefined;
    try {
      record = await this.ctx.sshKeys.find(a.key.data);
    } catch (err) {
      return this.refuseLogin(a, err, undefined);
    }
    if (!record) return a.reject(AUTH_METHODS);
    if (!a.signature || !a.blob) return a.accept();
    const parsed = ssh2.utils.parseKey(`${record.algo} ${record.publicKey}`);
    const key = parsed instanceof Error ? undefined : Array.isArray(parsed) ? parsed[0] : parsed;
    if (!key || key.verify(a.blob, a.signature, a.hashAlgo) !== true) {
      return this.refuseLogin(a, new AuthError('invalid_token', `the signature made with SSH key ${record.fingerprint} does not verify`), `key:${record.keyId}`);
    }
    try {
      this.identity = await this.s.auth.authenticateKeyId(record.keyId);
    } catch (err) {
      return this.refuseLogin(a, err, `key:${record.keyId}`);
    }
    this.publicKey = record.fingerprint;
    a.accept();
  }

  /** Records a failed login (throttled per source and credential) and refuses it; too many end the connection. */
  private refuseLogin(a: AuthContext, err: unknown, credential: string | undefined): void {
    const message = err instanceof AuthError ? err.message : 'the credential could not be checked';
    const payload = { protocol: 'ssh', user: a.username, client: this.info.ip, method: a.method, reason: err instanceof AuthError ? err.code : 'error', message } satisfies AuthFailureDetails;
    let within = true;
    try {
      within = this.s.login.failures.record(this.info.ip, payload, { connection: this.name, credential });
    } catch {
      // the refusal stands either way
    }
    a.reject(AUTH_METHODS);
    if (!within || ++this.authFailures >= MAX_AUTH_FAILURES) this.client.end();
  }

  private onReady(): void {
    const identity = this.identity!;
    this.unregisterLive = this.s.liveSessions.register({ protocol: 'ssh', session: this.id, identity, terminate: (why) => this.terminate(why) });
    this.upstream = this.connectUpstream(identity);
    // Failures are answered per channel; this keeps the rejection from going unhandled.
    this.upstream.catch(() => {});
  }

  private async connectUpstream(identity: Identity): Promise<Client> {
    const t = this.ctx.target;
    let up;
    try {
      up = await connectSshUpstream(t, this.ctx.knownHosts);
    } catch (err) {
      const phase = err instanceof SshUpstreamError ? err.phase : 'connect';
      try {
        this.s.store.appendMany([
          {
            kind: 'ssh.error',
            actor: identity.subject,
            connection: this.name,
            payload: { protocol: 'ssh', fatal: true, phase, message: (err as Error).message, actorName: identity.name, client: this.info.ip, upstream: { host: t.host, port: t.port } },
          },
        ]);
      } catch {
        // the refusal stands either way
      }
      throw err;
    }
    if (this.closed) {
      up.client.end();
      throw new Error('the client went away');
    }
    this.up = up.client;
    up.client.on('close', () => {
      if (!this.closed) {
        this.endReason = 'the upstream closed the connection';
        this.client.end();
      }
    });
    up.client.on('error', (err: Error) => {
      this.endReason = `upstream connection error: ${err.message}`;
    });
    this.s.store.appendMany([
      {
        kind: 'session.start',
        session: this.id,
        actor: identity.subject,
        connection: this.name,
        payload: {
          v: SESSION_START_VERSION,
          protocol: 'ssh',
          actorName: identity.name,
          identity: { subject: identity.subject, name: identity.name, groups: identity.groups, via: identity.via },
          client: { address: this.info.ip, port: this.info.port, software: this.info.header.versions.software, ...(this.publicKey ? { publicKey: this.publicKey } : {}) },
          upstream: { host: t.host, port: t.port, user: t.user, hostKey: up.hostKey, ...(up.learned ? { hostKeyLearned: true as const } : {}) },
        } satisfies SshSessionStart,
      },
    ]);
    this.started = true;
    this.publish('session.started');
    return up.client;
  }

  private publish(type: 'session.started' | 'session.ended'): void {
    // From memory, as the other proxies do: a read of the index could wait on the commit thread.
    const summary = this.s.store.liveSession(this.id);
    if (summary) this.s.bus.publish({ type, session: summary });
  }

  // ---------------------------------------------------------------- channels

  private onSession(accept: () => Session, reject: () => void): void {
    if (this.open.size >= MAX_CHANNELS) return reject();
    const session = accept();
    const state: ChannelState = { n: this.nextChannel++, session, env: {}, taken: false };
    this.open.add(state);
    session.on('close', () => {
      this.open.delete(state);
      state.up?.close();
    });
    session.on('pty', (ok, _no, info) => {
      state.pty = { ...info };
      ok?.();
    });
    session.on('window-change', (ok, _no, info) => {
      if (state.pty) Object.assign(state.pty, info);
      state.up?.setWindow(info.rows, info.cols, info.height, info.width);
      this.onResize?.get(state)?.(info.cols, info.rows);
      ok?.();
    });
    session.on('env', (ok, no, info) => {
      if (ENV_ALLOWED.test(info.key) && Object.keys(state.env).length < 64 && info.val.length < 4096) {
        state.env[info.key] = info.val;
        ok?.();
      } else no?.();
    });
    session.on('signal', (ok, _no, info) => {
      state.up?.signal(info.name);
      ok?.();
    });
    session.on('auth-agent', (_ok, no) => {
      no?.();
      this.refusalEvent(state, 'auth-agent', 'agent forwarding is not available through the Custody gateway');
    });
    session.on('x11', (_ok, no) => {
      no?.();
      this.refusalEvent(state, 'x11', 'X11 forwarding is not available through the Custody gateway');
    });
    session.on('exec', (ok, no, info) => this.take(state, ok, no, (ch) => this.exec(state, ch, info.command)));
    session.on('shell', (ok, no) => this.take(state, ok, no, (ch) => this.shell(state, ch)));
    session.on('subsystem', (ok, no, info) => {
      if (info.name !== 'sftp') {
        no?.();
        this.refusalEvent(state, 'subsystem', `the subsystem ${JSON.stringify(info.name.slice(0, 64))} is not available through the Custody gateway`);
        return;
      }
      this.take(state, ok, no, (ch) => this.sftp(state, ch));
    });
  }

  private onResize?: WeakMap<ChannelState, (cols: number, rows: number) => void> = new WeakMap();

  private take(state: ChannelState, ok: (() => ServerChannel) | undefined, no: (() => void) | undefined, run: (ch: ServerChannel) => Promise<void>): void {
    if (state.taken || !ok) return no?.();
    state.taken = true;
    const ch = ok();
    state.client = ch;
    run(ch).catch((err: unknown) => this.refuse(ch, `the gateway could not carry this request: ${(err as Error).message}`));
  }

  /** Answers a channel request with a refusal: the reason on stderr, exit status 126. */
  private refuse(ch: ServerChannel, message: string): void {
    if (!ch.writable) return;
    ch.stderr.write(`custody: ${message}\r\n`);
    ch.exit(REFUSED_EXIT_STATUS);
    ch.end();
  }

  /** What the policy says, recorded with the request before anything goes upstream. */
  private decide(state: ChannelState, input: Omit<PolicyInput, 'connection' | 'protocol' | 'identity' | 'detectorHits'>, request: Record<string, unknown>): PolicyDecision {
    const d = this.s.policy.evaluate({ ...input, connection: this.name, protocol: 'ssh', identity: this.identity!, detectorHits: [] });
    // Port forwarding is refused unless a rule allows it.
    const decision: PolicyDecision = input.ssh?.operations.includes('port_forward') && !d.rule ? { action: 'deny', reason: 'port forwarding is refused unless a policy allows it (match: {ssh: [port_forward]})' } : d;
    this.requests++;
    this.record([
      { kind: 'ssh.request', payload: { protocol: 'ssh', channel: state.n, ...request, decision: { action: decision.action, rule: decision.rule ?? null, reason: decision.reason ?? null } } },
      ...(decision.action !== 'allow' && decision.action !== 'mask' ? [{ kind: 'policy.decision' as const, payload: { protocol: 'ssh', channel: state.n, action: decision.action, rule: decision.rule ?? null, reason: decision.reason ?? null } }] : []),
    ]);
    return decision;
  }

  /**
   * `audit.remoteCommit: sync`: the request goes upstream only once the shared store holds its record
   * (the refusal message when it does not); null at once otherwise.
   */
  private remoteCommitted(): Promise<string | null> | string | null {
    let answer: string | null | undefined;
    let resolve: ((v: string | null) => void) | undefined;
    this.s.store.remoteCommitted((err) => {
      answer = err ? `the audit log could not record this request in the shared store, so it was not run: ${err.message}` : null;
      resolve?.(answer);
    });
    return answer !== undefined ? answer : new Promise((r) => (resolve = r));
  }

  /** Waits for approvers when the decision is a hold; returns the refusal message, or null to go ahead. */
  private async clear(decision: PolicyDecision, what: string, statement: string, ch: { once(ev: 'close', f: () => void): unknown }): Promise<string | null> {
    if (decision.action === 'deny') return `refused by policy "${decision.rule ?? 'default'}"${decision.reason ? `: ${decision.reason}` : ''}`;
    // Each request is admitted anew: a gateway that stopped admitting (store.staleAfter) runs nothing,
    // even on a connection it admitted before.
    const notAdmitted = this.s.admissionRefusal?.();
    if (notAdmitted !== undefined) return notAdmitted;
    if (decision.action !== 'hold') return this.remoteCommitted();
    const abort = new AbortController();
    ch.once('close', () => abort.abort());
    try {
      const outcome = await this.s.holds.request({
        identity: this.identity!,
        connection: this.name,
        protocol: 'ssh',
        session: this.id,
        rule: decision.rule ?? 'hold',
        ruleReason: decision.reason,
        summary: shortenForSummary(`${what}: ${statement}`, SUMMARY_CHARS),
        statement,
        spec: decision.hold!,
        signal: abort.signal,
      });
      if (outcome.state === 'approved') return this.remoteCommitted();
      const by = outcome.decidedBy.length ? ` by ${outcome.decidedBy.join(', ')}` : '';
      return `held for approval by policy "${decision.rule ?? 'hold'}" and ${outcome.state}${by}: ${outcome.reason}`;
    } catch (err) {
      return `needs approval by policy "${decision.rule ?? 'hold'}", but the hold could not be created: ${(err as Error).message}`;
    }
  }

  private async exec(state: ChannelState, ch: ServerChannel, command: string): Promise<void> {
    const up = await this.upstreamOrRefuse(ch);
    if (!up) return;
    const parsed = parseExec(command);
    const uploads = parsed.transfers.filter((t) => t.direction === 'upload');
    const operations: ('exec' | 'file_transfer')[] = uploads.length ? ['exec', 'file_transfer'] : ['exec'];
    let paths: string[] | undefined;
    if (uploads.length) {
      const relative = uploads.some((t) => t.paths.some((p) => !p.startsWith('/')));
      const home = relative ? await this.home().catch(() => undefined) : '/';
      paths = uploads.flatMap((t) => t.paths.map((p) => (home === undefined && !p.startsWith('/') ? p : resolveRemotePath(home ?? '/', p))));
    }
    const logged = this.forLog(command);
    const decision = this.decide(
      state,
      { ssh: { operations, commands: parsed.commands.map((c) => c.argv), unknown: parsed.unknown.length > 0, ...(paths ? { paths } : {}) }, text: command },
      {
        request: 'exec',
        command: logged.text,
        commands: parsed.commands.map((c) => ({ argv: c.argv.map((a) => this.forLog(a).text), ...(c.wrappers.length ? { wrappers: c.wrappers } : {}) })),
        ...(parsed.unknown.length ? { unknown: parsed.unknown } : {}),
        ...(parsed.transfers.length ? { transfers: parsed.transfers } : {}),
        ...(paths ? { paths } : {}),
        ...(parsed.writes.length ? { writes: parsed.writes } : {}),
        ...(state.pty ? { pty: { term: state.pty.term, cols: state.pty.cols, rows: state.pty.rows } } : {}),
        ...(Object.keys(state.env).length ? { env: Object.keys(state.env) } : {}),
      },
    );
    const refusal = await this.clear(decision, 'ssh exec', logged.text, ch);
    if (refusal) return this.refuse(ch, refusal);
    const opts = { env: state.env, ...(state.pty ? { pty: ptyOptions(state.pty) } : {}) };
    const stream = await new Promise<ClientChannel>((resolve, reject) => up.exec(command, opts, (err, s) => (err ? reject(err) : resolve(s))));
    // A binary transfer's bytes are the file itself: hashed and counted, never masked or kept.
    const transfer = parsed.transfers.length > 0;
    this.bridge(state, ch, stream, { kind: 'exec', transfer, masked: transfer ? undefined : this.masker(decision.mask, !!state.pty) });
  }

  private async shell(state: ChannelState, ch: ServerChannel): Promise<void> {
    const up = await this.upstreamOrRefuse(ch);
    if (!up) return;
    const decision = this.decide(
      state,
      { ssh: { operations: ['shell'] }, text: '' },
      { request: 'shell', ...(state.pty ? { pty: { term: state.pty.term, cols: state.pty.cols, rows: state.pty.rows } } : {}), ...(Object.keys(state.env).length ? { env: Object.keys(state.env) } : {}) },
    );
    const refusal = await this.clear(decision, 'ssh shell', `interactive shell${state.pty ? ` (${state.pty.term} ${state.pty.cols}x${state.pty.rows})` : ''}`, ch);
    if (refusal) return this.refuse(ch, refusal);
    const stream = await new Promise<ClientChannel>((resolve, reject) =>
      state.pty ? up.shell(ptyOptions(state.pty), { env: state.env }, (err, s) => (err ? reject(err) : resolve(s))) : up.shell(false, { env: state.env }, (err, s) => (err ? reject(err) : resolve(s))),
    );
    this.bridge(state, ch, stream, { kind: 'shell', transfer: false, masked: this.masker(decision.mask, !!state.pty) });
  }

  private async sftp(state: ChannelState, ch: ServerChannel): Promise<void> {
    const up = await this.upstreamOrRefuse(ch);
    if (!up) return;
    const decision = this.decide(state, { ssh: { operations: ['file_transfer'] }, text: 'sftp' }, { request: 'subsystem', subsystem: 'sftp' });
    const refusal = await this.clear(decision, 'ssh subsystem', 'sftp', ch);
    if (refusal) return this.refuse(ch, refusal);
    const stream = await new Promise<ClientChannel>((resolve, reject) => up.subsys('sftp', (err, s) => (err ? reject(err) : resolve(s))));
    state.up = stream;
    const relay = new SftpRelay({
      client: ch,
      upstream: stream,
      recordFileBytes: this.ctx.recordFileBytes,
      home: () => this.home(),
      decide: (op, paths, detail) =>
        this.decideFile(state, op, paths, detail, ch),
      record: (payload, spans) => this.recordAsync({ kind: 'ssh.sftp', payload: { protocol: 'ssh', channel: state.n, ...payload }, ...(spans?.length ? { spans } : {}) }),
      forLog: (text) => this.forLog(text),
      log: this.s.log,
    });
    relay.start();
    let status: number | undefined;
    stream.on('exit', (code: number | null) => {
      if (typeof code === 'number') status = code;
    });
    stream.on('close', () => {
      relay.end();
      this.recordAsync({ kind: 'ssh.exit', payload: { protocol: 'ssh', channel: state.n, request: 'subsystem', subsystem: 'sftp', exitStatus: status ?? null, durationMs: Date.now() - relay.startedAt, operations: relay.operations } });
      if (ch.writable) {
        if (status !== undefined) ch.exit(status);
        ch.end();
      }
    });
    ch.on('close', () => stream.close());
  }

  /** One SFTP write, remove, rename or link: decided, and held or refused like an exec. */
  private async decideFile(state: ChannelState, op: string, paths: string[], detail: string, ch: ServerChannel): Promise<string | null> {
    const decision = this.s.policy.evaluate({ connection: this.name, protocol: 'ssh', identity: this.identity!, ssh: { operations: ['file_transfer'], paths }, text: detail, detectorHits: [] });
    if (decision.action !== 'allow' && decision.action !== 'mask') {
      this.record([{ kind: 'policy.decision', payload: { protocol: 'ssh', channel: state.n, op, paths, action: decision.action, rule: decision.rule ?? null, reason: decision.reason ?? null } }]);
    }
    return this.clear(decision, `sftp ${op}`, detail, ch);
  }

  private async upstreamOrRefuse(ch: ServerChannel): Promise<Client | undefined> {
    try {
      return await this.upstream!;
    } catch (err) {
      this.refuse(ch, (err as Error).message);
      return undefined;
    }
  }

  /** The upstream user's login directory, which relative paths are relative to (asked once, over SFTP). */
  private home(): Promise<string> {
    this.homeDir ??= (async () => {
      const up = await this.upstream!;
      return new Promise<string>((resolve, reject) =>
        up.sftp((err, sftp) => {
          if (err) return reject(err);
          sftp.realpath('.', (e, p) => {
            sftp.end();
            if (e) reject(e);
            else resolve(p);
          });
        }),
      );
    })();
    return this.homeDir;
  }

  /**
   * Carries one channel's streams both ways, with backpressure, and records them: an exec's output
   * and exit status (`ssh.exit`), a shell's output and input as timed frames (`ssh.output`).
   */
  private bridge(state: ChannelState, ch: ServerChannel, up: ClientChannel, how: { kind: 'exec' | 'shell'; transfer: boolean; masked?: () => TextStreamMasker | undefined }): void {
    state.up = up;
    const t0 = Date.now();
    const frames = how.kind === 'shell' ? new FrameRecorder((payload) => this.recordAsync({ kind: 'ssh.output', payload: { protocol: 'ssh', channel: state.n, ...payload.payload }, spans: payload.spans }), t0) : undefined;
    if (frames && state.pty) frames.add('r', `${state.pty.cols}x${state.pty.rows}`, []);
    this.onResize?.set(state, (cols, rows) => frames?.add('r', `${cols}x${rows}`, []));
    const echo = frames ? new EchoWatch() : undefined;
    const limit = how.kind === 'exec' ? this.ctx.recordOutputBytes : 0;
    let masker: TextStreamMasker | undefined;
    let stderrMasker: TextStreamMasker | undefined;
    try {
      masker = how.masked?.();
      stderrMasker = how.masked?.();
    } catch (err) {
      up.close();
      return this.refuse(ch, `the gateway cannot mask this output, so it refuses the request: ${(err as Error).message}`);
    }
    const stdout = new OutputTap(masker, limit, frames ? (text, spans) => frames.add('o', text, spans) : undefined);
    const stderr = new OutputTap(stderrMasker, limit, frames ? (text, spans) => frames.add('o', text, spans) : undefined);
    let stdin = 0;
    let exit: { code?: number; signal?: string; coreDumped?: boolean; message?: string } = {};
    const typed = (lines: ReturnType<EchoWatch['flush']>) => {
      for (const line of lines) {
        if ('hidden' in line) frames!.addHidden(line.length, line.at);
        else {
          const logged = this.forLog(line.text);
          frames!.add('i', logged.text, logged.spans, line.at);
          this.shellLine(state, line.text, line.at);
        }
      }
    };
    let echoTimer: NodeJS.Timeout | undefined;
    const waitForEcho = () => {
      if (!echo?.waiting || echoTimer) return;
      echoTimer = setTimeout(() => {
        echoTimer = undefined;
        typed(echo.expire(Date.now()));
        waitForEcho();
      }, echo.echoWaitMs);
    };
    // A terminal that goes quiet shows what the masking holdback kept (its prompt, say) after a moment.
    let idleTimer: NodeJS.Timeout | undefined;
    const letOut = () => {
      idleTimer = undefined;
      const rest = stdout.flushHeld();
      if (rest && ch.writable) {
        ch.write(rest);
        typed(echo?.output(rest) ?? []);
      }
    };
    pipe(up, ch, (chunk) => {
      const out = stdout.push(chunk);
      if (echo && out.length) typed(echo.output(typeof out === 'string' ? out : out.toString('utf8')));
      if (how.kind === 'shell' && stdout.held) {
        clearTimeout(idleTimer);
        idleTimer = setTimeout(letOut, TERMINAL_IDLE_FLUSH_MS);
      }
      return out;
    });
    pipe(up.stderr, ch.stderr, (chunk) => stderr.push(chunk));
    pipe(ch, up, (chunk) => {
      stdin += chunk.length;
      if (echo) {
        typed(echo.input(chunk.toString('utf8'), Date.now()));
        waitForEcho();
      }
      return chunk;
    });
    ch.on('end', () => up.end());
    up.on('exit', (code: number | null, signal?: string, coreDumped?: boolean, message?: string) => {
      exit = code !== null && code !== undefined ? { code } : { signal: signal ?? 'KILL', coreDumped: !!coreDumped, ...(message ? { message } : {}) };
    });
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      const restOut = stdout.end();
      const restErr = stderr.end();
      if (restOut && ch.writable) ch.write(restOut);
      if (restErr && ch.writable) ch.stderr.write(restErr);
      clearTimeout(echoTimer);
      clearTimeout(idleTimer);
      if (echo) typed(echo.flush());
      frames?.flush();
      const spans: MaskSpan[] = [...stdout.spans.map((s) => ({ ...s, path: '/stdout' })), ...stderr.spans.map((s) => ({ ...s, path: '/stderr' }))];
      const masked: Record<string, number> = { ...stdout.counts };
      for (const [k, v] of Object.entries(stderr.counts)) masked[k] = (masked[k] ?? 0) + v;
      this.recordAsync({
        kind: 'ssh.exit',
        spans,
        payload: {
          protocol: 'ssh',
          channel: state.n,
          request: how.kind,
          ...(exit.code !== undefined ? { exitStatus: exit.code } : exit.signal ? { signal: exit.signal, coreDumped: exit.coreDumped, ...(exit.message ? { message: exit.message } : {}) } : { exitStatus: null }),
          durationMs: Date.now() - t0,
          bytes: { stdin, stdout: stdout.bytes, stderr: stderr.bytes },
          ...(how.kind === 'exec'
            ? {
                stdout: stdout.recorded,
                stderr: stderr.recorded,
                ...(stdout.truncated || stderr.truncated ? { truncated: true } : {}),
                ...(stdout.binary || how.transfer ? { stdoutSha256: stdout.digest() } : {}),
                ...(stdout.binary ? { binary: true } : {}),
              }
            : {}),
          ...(Object.keys(masked).length ? { masked } : {}),
        },
      });
      if (ch.writable) {
        if (exit.code !== undefined) ch.exit(exit.code);
        else if (exit.signal) ch.exit(exit.signal, exit.coreDumped, exit.message);
        ch.end();
      }
    };
    up.on('close', finish);
    ch.on('close', () => {
      up.close();
      finish();
    });
  }

  /** Output masking; on a pty (a terminal screen) masked values keep their width. */
  private masker(extraRules: string[] | undefined, screen: boolean): () => TextStreamMasker | undefined {
    return () => this.s.masking.forConnection(this.ctx.connection, extraRules)?.textStream(extraRules, { screen });
  }

  // ---------------------------------------------------------------- forwarding

  private async onDirectTcpip(accept: () => ServerChannel, reject: () => void, info: { destIP: string; destPort: number; srcIP: string; srcPort: number }): Promise<void> {
    const state: ChannelState = { n: this.nextChannel++, session: undefined as unknown as Session, env: {}, taken: true };
    const target = `${info.destIP}:${info.destPort}`;
    let up: Client;
    try {
      up = await this.upstream!;
    } catch {
      return reject();
    }
    const decision = this.decide(state, { ssh: { operations: ['port_forward'] }, text: target }, { request: 'direct-tcpip', destination: target });
    const refusal = await this.clear(decision, 'ssh port forward', target, { once: () => undefined });
    if (refusal) return reject();
    up.forwardOut(info.srcIP, info.srcPort, info.destIP, info.destPort, (err, stream) => {
      if (err) return reject();
      const ch = accept();
      ch.pipe(stream).pipe(ch);
    });
  }

  private onGlobalRequest(reject: (() => void) | undefined, name: string): void {
    // Remote forwarding (tcpip-forward) and the rest are not carried.
    reject?.();
    if (name === 'tcpip-forward' || name === 'streamlocal-forward@openssh.com') {
      this.refusalEvent({ n: 0 } as ChannelState, name, 'remote port forwarding is not available through the Custody gateway');
    }
  }

  private refusalEvent(state: Pick<ChannelState, 'n'>, request: string, reason: string): void {
    try {
      this.record([{ kind: 'ssh.request', payload: { protocol: 'ssh', channel: state.n, request, decision: { action: 'deny', rule: null, reason } } }]);
    } catch {
      // refused either way
    }
  }

  // ---------------------------------------------------------------- recording

  private forLog(text: string): { text: string; spans: MaskSpan[] } {
    const m = this.s.masking.rows(this.ctx.connection);
    if (!m.active) return { text, spans: [] };
    const r = m.text(text, 'log');
    return { text: r.text, spans: r.spans };
  }

  /** Commits before returning: a request is in the log before it is forwarded (throws when it cannot be). */
  private record(events: Omit<AuditEventInput, 'session' | 'actor' | 'connection'>[]): void {
    this.s.store.appendMany(events.map((e) => ({ ...e, session: this.id, actor: this.identity?.subject, connection: this.name })));
  }

  /**
   * A line entered in a shell (echoed, ended with Enter), rebuilt from its keys and recorded as
   * `ssh.command`, best effort: `uncertain` says why it may differ from what ran (docs/SSH.md).
   */
  private shellLine(state: ChannelState, typed: string, at: number): void {
    if (!/[\r\n]$/.test(typed)) return;
    const { line, uncertain } = reconstructLine(typed);
    if (!line.trim()) return;
    const logged = this.forLog(line);
    this.recordAsync({
      kind: 'ssh.command',
      payload: { protocol: 'ssh', channel: state.n, request: 'shell', line: logged.text, typedAt: at, ...(uncertain.length ? { uncertain } : {}) },
      ...(logged.spans.length ? { spans: logged.spans.map((sp) => ({ ...sp, path: '/line' })) } : {}),
    });
  }

  /** Output, exits and file operations follow the bytes they describe; a store that fails ends the session. */
  private recordAsync(e: Omit<AuditEventInput, 'session' | 'actor' | 'connection'>): void {
    this.s.store.appendAsync([{ ...e, session: this.id, actor: this.identity?.subject, connection: this.name }], (err) => {
      if (err) this.terminate(`the audit log cannot record this session, so the gateway ends it: ${err.message}`);
    });
  }

  // ---------------------------------------------------------------- end

  /** Ends the session with a reason every open channel is told on stderr. */
  terminate(reason: string): void {
    this.endReason = reason;
    for (const st of this.open) {
      const ch = st.client;
      if (ch?.writable) {
        ch.stderr.write(`\r\ncustody: ${reason}\r\n`);
        ch.exit(REFUSED_EXIT_STATUS);
        ch.end();
      }
    }
    setTimeout(() => this.client.end(), 50).unref();
  }

  shutdown(): void {
    this.terminate('the Custody gateway is shutting down');
  }

  private onFinished: () => void = () => {};
  /** Resolves once the session has ended and its end is recorded. */
  readonly finished = new Promise<void>((resolve) => (this.onFinished = resolve));

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.recordEnd();
    } finally {
      this.onFinished();
    }
  }

  private recordEnd(): void {
    this.ctx.sessions.delete(this);
    this.unregisterLive?.();
    this.up?.end();
    if (!this.started) return;
    try {
      this.s.store.appendMany([
        { kind: 'session.end', session: this.id, actor: this.identity?.subject, connection: this.name, payload: { protocol: 'ssh', reason: this.endReason, durationMs: Date.now() - this.startedAt, requests: this.requests } satisfies SessionEndPayload },
      ]);
      this.publish('session.ended');
    } catch (err) {
      this.s.log.error(`ssh ${this.name}: cannot record the end of session ${this.id}: ${(err as Error).message}`);
    }
  }
}

function ptyOptions(p: PseudoTtyInfo) {
  return { term: p.term, rows: p.rows, cols: p.cols, height: p.height, width: p.width, modes: p.modes };
}

/** Copies `from` to `to` through `map`, pausing `from` while `to` is full. */
function pipe(from: Duplex | NodeJS.ReadableStream, to: NodeJS.WritableStream, map: (chunk: Buffer) => Buffer | string): void {
  let full = false;
  from.on('data', (chunk: Buffer) => {
    const out = map(chunk);
    if (!out.length) return;
    if (!to.write(out) && !full) {
      full = true;
      from.pause();
      to.once('drain', () => {
        full = false;
        from.resume();
      });
    }
  });
}

/**
 * A terminal's frames (`[ms since start, 'o' output | 'i' input | 'r' resize, data]`), written as
 * `ssh.output` events every FRAME_FLUSH_MS or FRAME_FLUSH_CHARS: the asciicast v2 event stream,
 * in milliseconds.
 */
class FrameRecorder {
  private frames: Frame[] = [];
  private spans: MaskSpan[] = [];
  private chars = 0;
  private timer?: NodeJS.Timeout;
  private seq = 0;

  constructor(
    private readonly write: (e: { payload: Record<string, unknown>; spans: MaskSpan[] }) => void,
    private readonly t0: number,
  ) {}

  add(type: 'o' | 'i' | 'r', text: string, spans: MaskSpan[], at = Date.now()): void {
    if (!text) return;
    const i = this.frames.length;
    this.frames.push([at - this.t0, type, text]);
    for (const s of spans) this.spans.push({ ...s, path: `/frames/${i}/2` });
    this.chars += text.length;
    this.schedule();
  }

  addHidden(length: number, at: number): void {
    this.frames.push([at - this.t0, 'i', { hidden: true, length }]);
    this.schedule();
  }

  private schedule(): void {
    if (this.chars >= FRAME_FLUSH_CHARS) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), FRAME_FLUSH_MS);
  }

  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.frames.length) return;
    this.write({ payload: { part: this.seq++, frames: this.frames }, spans: this.spans });
    this.frames = [];
    this.spans = [];
    this.chars = 0;
  }
}
