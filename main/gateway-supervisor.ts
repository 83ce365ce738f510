/**
 * Keeps the embedded gateway running: spawns proxy/entry (an Electron `utilityProcess` in the app,
 * a forked Node process in tests), waits for its `ready` report, restarts it with exponential
 * backoff when it crashes, and stops it cleanly on quit. The last lines the gateway logged are kept
 * so the user sees why it crashed instead of a silent restart.
 */
import { fork } from 'node:child_process';
import { EventEmitter } from 'node:events';
import type { Readable } from 'node:stream';
import type { GatewayCommand, GatewayReport } from '../shared/gateway-process';

export type ReadyReport = Extract<GatewayReport, { type: 'ready' }>;

/** One running gateway process, whatever started it. */
export interface GatewayProcess {
  readonly pid: number | undefined;
  postMessage(cmd: GatewayCommand): void;
  /** Ends the process at once (SIGKILL-like); used when a clean stop takes too long. */
  kill(): void;
  onMessage(fn: (report: GatewayReport) => void): void;
  onExit(fn: (code: number | null) => void): void;
  /** Each line the process writes to stdout or stderr. */
  onOutput(fn: (line: string) => void): void;
}

export type SupervisorState =
  | { state: 'idle' }
  | { state: 'starting'; attempt: number }
  | { state: 'running'; ready: ReadyReport }
  | { state: 'restarting'; exitCode: number | null; inMs: number; failures: number; lastLines: string[] }
  | { state: 'failed'; reason: string; lastLines: string[] }
  | { state: 'stopping' }
  | { state: 'stopped' };

export interface SupervisorOptions {
  spawn: () => GatewayProcess;
  /** Sent to each new process before it starts the gateway (desktop: the vault key). */
  firstCommands?: () => GatewayCommand[];
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** Consecutive crashes after which the supervisor gives up and waits for `retry()`. */
  maxFailures?: number;
  /** A run at least this long resets the crash count. */
  stableAfterMs?: number;
  /** A process that has not reported `ready` by then is killed and counted as a crash. */
  readyTimeoutMs?: number;
  /** How long `stop()` waits for a clean exit before killing. */
  stopTimeoutMs?: number;
  /** Lines of gateway output kept for crash reports. */
  keepLines?: number;
}

/** Delay before restart number `failures` (1-based): initial × 2^(failures-1), capped. */
export function backoffDelay(failures: number, initialMs: number, maxMs: number): number {
  return Math.min(maxMs, initialMs * 2 ** Math.max(0, failures - 1));
}

export interface GatewaySupervisorEvents {
  state: [SupervisorState];
  ready: [ReadyReport];
  /** The gateway exited without being asked to; `restartInMs` null means the supervisor gave up. */
  crash: [{ exitCode: number | null; lastLines: string[]; restartInMs: number | null; reason: string }];
}

export class GatewaySupervisor extends EventEmitter<GatewaySupervisorEvents> {
  private proc: GatewayProcess | undefined;
  private current: SupervisorState = { state: 'idle' };
  private failures = 0;
  private lines: string[] = [];
  private restartTimer: NodeJS.Timeout | undefined;
  private readyTimer: NodeJS.Timeout | undefined;
  private runningSince = 0;
  private stopRequested = false;
  private stopped: Promise<void> | undefined;
  private linkRequests = 0;
  private readonly linkWaiters = new Map<number, (url: string | null) => void>();
  private readonly o: Required<Omit<SupervisorOptions, 'firstCommands'>> & Pick<SupervisorOptions, 'firstCommands'>;

  constructor(options: SupervisorOptions) {
    super();
    this.o = {
      initialBackoffMs: 500,
      maxBackoffMs: 30_000,
      maxFailures: 6,
      stableAfterMs: 60_000,
      readyTimeoutMs: 60_000,
      stopTimeoutMs: 10_000,
      keepLines: 40,
      ...options,
    };
  }

  get state(): SupervisorState {
    return this.current;
  }

  /** The gateway's last output lines (oldest first). */
  lastLines(): string[] {
    return [...this.lines];
  }

  start(): void {
    if (this.proc || this.stopRequested) return;
    this.launch();
  }

  /** After `failed`: start again with a fresh crash count. */
  retry(): void {
    if (this.current.state !== 'failed' || this.stopRequested) return;
    this.failures = 0;
    this.launch();
  }

  /**
   * A fresh single-use console login link from the running gateway (links work once, for 10
   * minutes). Rejects when the gateway is not running or does not answer within 5 s.
   */
  loginLink(): Promise<string> {
    const proc = this.proc;
    if (!proc || this.current.state !== 'running') return Promise.reject(new Error('the gateway is not running'));
    const id = ++this.linkRequests;
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.linkWaiters.delete(id);
        reject(new Error('the gateway did not answer with a login link'));
      }, 5000);
      this.linkWaiters.set(id, (url) => {
        clearTimeout(timer);
        if (url) resolve(url);
        else reject(new Error('the gateway issued no login link'));
      });
      try {
        proc.postMessage({ type: 'login-link', id });
      } catch (err) {
        clearTimeout(timer);
        this.linkWaiters.delete(id);
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
  }

  /** Asks the gateway to stop, waits for it to exit (killing it after `stopTimeoutMs`). Idempotent. */
  stop(): Promise<void> {
    this.stopRequested = true;
    clearTimeout(this.restartTimer);
    clearTimeout(this.readyTimer);
    this.stopped ??= new Promise<void>((resolve) => {
      const proc = this.proc;
      if (!proc) {
        this.setState({ state: 'stopped' });
        resolve();
        return;
      }
      this.setState({ state: 'stopping' });
      const killTimer = setTimeout(() => proc.kill(), this.o.stopTimeoutMs);
      proc.onExit(() => {
        clearTimeout(killTimer);
        this.setState({ state: 'stopped' });
        resolve();
      });
      try {
        proc.postMessage({ type: 'stop' });
      } catch {
        proc.kill();
      }
    });
    return this.stopped;
  }

  private setState(s: SupervisorState): void {
    this.current = s;
    this.emit('state', s);
  }

  private keep(line: string): void {
    this.lines.push(line);
    if (this.lines.length > this.o.keepLines) this.lines.splice(0, this.lines.length - this.o.keepLines);
  }

  private launch(): void {
    this.setState({ state: 'starting', attempt: this.failures + 1 });
    let proc: GatewayProcess;
    try {
      proc = this.o.spawn();
    } catch (err) {
      this.keep(`could not start the gateway process: ${(err as Error).message}`);
      this.crashed(null, `could not start the gateway process: ${(err as Error).message}`);
      return;
    }
    this.proc = proc;
    let startError: string | undefined;
    proc.onOutput((line) => this.keep(line));
    proc.onMessage((report) => {
      if (this.proc !== proc) return;
      if (report.type === 'ready') {
        clearTimeout(this.readyTimer);
        this.runningSince = Date.now();
        this.setState({ state: 'running', ready: report });
        this.emit('ready', report);
      } else if (report.type === 'login-link') {
        const waiter = this.linkWaiters.get(report.id);
        this.linkWaiters.delete(report.id);
        waiter?.(report.url);
      } else if (report.type === 'error') {
        startError = report.message;
        this.keep(report.message);
      }
    });
    proc.onExit((code) => {
      if (this.proc !== proc) return;
      this.proc = undefined;
      clearTimeout(this.readyTimer);
      if (this.stopRequested) return;
      if (startError !== undefined) {
        // The gateway said why it cannot start (bad config, port taken): restarting will not help.
        this.failures++;
        this.setState({ state: 'failed', reason: startError, lastLines: this.lastLines() });
        this.emit('crash', { exitCode: code, lastLines: this.lastLines(), restartInMs: null, reason: startError });
        return;
      }
      this.crashed(code, `the gateway exited unexpectedly (exit code ${code ?? 'none'})`);
    });
    for (const cmd of this.o.firstCommands?.() ?? []) proc.postMessage(cmd);
    this.readyTimer = setTimeout(() => {
      this.keep(`the gateway did not report ready within ${this.o.readyTimeoutMs / 1000}s`);
      proc.kill();
    }, this.o.readyTimeoutMs);
  }

  private crashed(exitCode: number | null, reason: string): void {
    if (this.runningSince && Date.now() - this.runningSince >= this.o.stableAfterMs) this.failures = 0;
    this.runningSince = 0;
    this.failures++;
    const lastLines = this.lastLines();
    if (this.failures >= this.o.maxFailures) {
      const why = `${reason}; gave up after ${this.failures} attempts in a row`;
      this.setState({ state: 'failed', reason: why, lastLines });
      this.emit('crash', { exitCode, lastLines, restartInMs: null, reason: why });
      return;
    }
    const inMs = backoffDelay(this.failures, this.o.initialBackoffMs, this.o.maxBackoffMs);
    this.setState({ state: 'restarting', exitCode, inMs, failures: this.failures, lastLines });
    this.emit('crash', { exitCode, lastLines, restartInMs: inMs, reason });
    this.restartTimer = setTimeout(() => {
      if (!this.stopRequested) this.launch();
    }, inMs);
  }
}

/** Calls `fn` with each complete line from a byte stream. */
export function forEachLine(stream: Readable | null | undefined, fn: (line: string) => void): void {
  if (!stream) return;
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    rest += chunk;
    let i: number;
    while ((i = rest.indexOf('\n')) >= 0) {
      const line = rest.slice(0, i).replace(/\r$/, '');
      rest = rest.slice(i + 1);
      if (line) fn(line);
    }
  });
  stream.on('end', () => {
    if (rest) fn(rest);
    rest = '';
  });
}

/** The minimal shape of Electron's `UtilityProcess` this module uses. */
export interface UtilityProcessLike {
  readonly pid: number | undefined;
  readonly stdout: Readable | null;
  readonly stderr: Readable | null;
  postMessage(message: unknown): void;
  kill(): boolean;
  on(event: 'message', fn: (message: unknown) => void): unknown;
  on(event: 'exit', fn: (code: number) => void): unknown;
}

/** Adapts an Electron utilityProcess (already forked with `stdio: 'pipe'`). */
export function utilityGatewayProcess(child: UtilityProcessLike): GatewayProcess {
  return {
    get pid() {
      return child.pid;
    },
    postMessage: (cmd) => child.postMessage(cmd),
    kill: () => void child.kill(),
    onMessage: (fn) => void child.on('message', (m) => fn(m as GatewayReport)),
    onExit: (fn) => void child.on('exit', (code) => fn(code)),
    onOutput: (fn) => {
      forEachLine(child.stdout, fn);
      forEachLine(child.stderr, fn);
    },
  };
}

/** Forks a Node script as the gateway (tests, and development without Electron). */
export function forkGatewayProcess(modulePath: string, args: string[], options: { execArgv?: string[]; env?: NodeJS.ProcessEnv; execPath?: string } = {}): GatewayProcess {
  const child = fork(modulePath, args, {
    execArgv: options.execArgv ?? [],
    env: options.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    ...(options.execPath ? { execPath: options.execPath } : {}),
  });
  const exitListeners: ((code: number | null) => void)[] = [];
  let exited: { code: number | null } | undefined;
  child.on('exit', (code, signal) => {
    exited = { code: code ?? (signal ? null : 0) };
    for (const fn of exitListeners) fn(exited.code);
  });
  child.on('error', () => {}); // reported through 'exit'
  return {
    pid: child.pid,
    postMessage: (cmd) => {
      if (child.connected) child.send(cmd);
    },
    kill: () => void child.kill('SIGKILL'),
    onMessage: (fn) => void child.on('message', (m) => fn(m as GatewayReport)),
    onExit: (fn) => {
      if (exited) fn(exited.code);
      else exitListeners.push(fn);
    },
    onOutput: (fn) => {
      forEachLine(child.stdout, fn);
      forEachLine(child.stderr, fn);
    },
  };
}
