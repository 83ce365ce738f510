/**
 * Ed25519 signatures made outside this process (audit.signer): a program given the exact bytes to
 * sign on stdin writes the 64-byte signature to stdout, raw or as base64 on one line — the shape of
 * git's gpg.program and of `ssh-keygen -Y sign`, which a PKCS#11 tool (scripts/pkcs11-sign.sh runs
 * pkcs11-tool) or a cloud KMS CLI fits. The private key stays in the token or the KMS.
 *
 * The program runs as a child process (no shell), so the caller's thread only waits on a promise;
 * it is killed after the configured timeout. Every signature is checked against the public key
 * pinned in the config before it is used: a program that signs with another key (a wrong slot, a
 * wrong KMS key) fails like one that does not answer.
 */
import { spawn } from 'node:child_process';
import { basename } from 'node:path';
import { type KeyObject, verify } from 'node:crypto';

/** Output the gateway reads from a signer program (a signature is 64 bytes; base64 of it 88 characters). */
const MAX_STDOUT = 4096;
/** What of the program's stderr is kept for the reason shown in the log and the status. */
const MAX_STDERR = 2048;

/** A signature the external signer did not make: it failed, timed out, or signed with another key. */
export class SignerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SignerError';
  }
}

export interface SignerCommand {
  /** `[program, args...]` */
  command: readonly string[];
  timeoutMs: number;
}

/** The program's name as the log and the status show it (its file name, not its arguments). */
export function signerProgramName(command: readonly string[]): string {
  return basename(command[0] ?? '');
}

/** Runs the signer program on `message` and returns the signature it wrote, checked under `publicKey`. */
export async function signWithCommand(cmd: SignerCommand, message: Buffer, publicKey: KeyObject): Promise<Buffer> {
  const program = signerProgramName(cmd.command);
  const { code, signal, stdout, stderr, timedOut, spawnError } = await run(cmd, message);
  const why = firstLine(stderr);
  if (spawnError) throw new SignerError(`the signer program ${program} cannot be started: ${spawnError}`);
  if (stdout.length > MAX_STDOUT) throw new SignerError(`the signer program ${program} wrote more than ${MAX_STDOUT} bytes to stdout, not a signature`);
  if (timedOut) throw new SignerError(`the signer program ${program} did not answer within ${Math.round(cmd.timeoutMs / 100) / 10} s (killed)${why ? `: ${why}` : ''}`);
  if (code !== 0) throw new SignerError(`the signer program ${program} ${signal ? `was killed by ${signal}` : `exited with code ${code}`}${why ? `: ${why}` : ''}`);
  const signature = parseSignature(stdout);
  if (!signature) throw new SignerError(`the signer program ${program} wrote ${stdout.length} bytes to stdout, not a 64-byte Ed25519 signature (raw or base64)`);
  if (!verify(null, message, publicKey, signature)) throw new SignerError(`the signature from ${program} does not verify under audit.signer.publicKey: it signs with another key`);
  return signature;
}

/** A 64-byte signature from the program's output: the raw bytes, or one line of base64. */
export function parseSignature(out: Buffer): Buffer | undefined {
  if (out.length === 64) return out;
  const text = out.toString('latin1').trim();
  if (!/^[A-Za-z0-9+/]{86}==$/.test(text)) return undefined;
  return Buffer.from(text, 'base64');
}

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
  timedOut: boolean;
  spawnError?: string;
}

function run(cmd: SignerCommand, message: Buffer): Promise<RunResult> {
  return new Promise((resolve) => {
    const [program, ...args] = cmd.command;
    const child = spawn(program!, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let outBytes = 0;
    let err = '';
    let timedOut = false;
    let settled = false;
    const finish = (r: Omit<RunResult, 'stdout' | 'stderr' | 'timedOut'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ...r, stdout: Buffer.concat(out), stderr: err, timedOut });
    };
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, cmd.timeoutMs);
    timer.unref();
    child.stdout.on('data', (d: Buffer) => {
      outBytes += d.length;
      out.push(d);
      if (outBytes > MAX_STDOUT) child.kill('SIGKILL');
    });
    child.stderr.on('data', (d: Buffer) => {
      if (err.length < MAX_STDERR) err += d.toString('utf8').slice(0, MAX_STDERR - err.length);
    });
    child.on('error', (e) => finish({ code: null, signal: null, spawnError: e.message }));
    child.on('close', (code, signal) => finish({ code, signal }));
    // A program that exits without reading its input closes the pipe: not an error of ours.
    child.stdin.on('error', () => {});
    child.stdin.end(message);
  });
}

function firstLine(text: string): string {
  return (
    text
      .split('\n')
      .map((l) => l.trim())
      .find((l) => l) ?? ''
  ).slice(0, 300);
}
