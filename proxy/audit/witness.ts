/**
 * A C2SP tlog-witness (https://c2sp.org/tlog-witness): `POST /add-checkpoint` takes `old <size>`,
 * the consistency proof lines, a blank line and a signed checkpoint, and answers with this
 * witness's cosignature once it has checked that
 *
 *   - the checkpoint's origin is a log it knows (404 otherwise),
 *   - the log's own key signed it (403 otherwise),
 *   - `old` is the size it last cosigned for that origin (409 with that size, text/x.tlog.size),
 *   - the proof shows the old tree is a prefix of the new one (422 otherwise), and at equal sizes
 *     the roots are the same (409): a fork is refused, never cosigned.
 *
 * The latest cosigned checkpoint per origin is kept in a small JSON state file, replaced atomically
 * (write, fsync, rename) before the answer goes out. Requests are checked and recorded
 * synchronously, one at a time, so two racing submissions cannot roll the state back.
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { KeyObject } from 'node:crypto';
import { keyFingerprint } from './checkpoint-signer';
import { cosign } from './cosignature';
import { HASH_SIZE, verifyConsistency } from './merkle';
import { type NoteVerifier, parseCheckpointText, parseNote, verifyNote } from './signed-note';

const MAX_BODY = 64 * 1024;
const MAX_PROOF_LINES = 63;

interface LogState {
  size: number;
  /** base64 root hash */
  root: string;
  /** The checkpoint note as cosigned (without the witness's line). */
  note: string;
  cosignedAt: number;
}

interface StateFile {
  logs: Record<string, LogState>;
}

export interface WitnessOptions {
  name: string;
  privateKey: KeyObject;
  stateFile: string;
  /** Logs this witness accepts checkpoints from: origin → the log's verifier keys. */
  logs: Map<string, NoteVerifier[]>;
  /** Refusals worth keeping (a fork attempt is evidence); one line each. */
  onRefusal?: (line: string) => void;
}

export class WitnessError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly body?: string,
    readonly contentType = 'text/plain; charset=utf-8',
  ) {
    super(message);
  }
}

export class Witness {
  private state: StateFile;

  constructor(private readonly opts: WitnessOptions) {
    this.state = existsSync(opts.stateFile) ? readState(opts.stateFile) : { logs: {} };
  }

  latest(origin: string): LogState | undefined {
    return this.state.logs[origin];
  }

  /** Checks one add-checkpoint body and, when it passes, records it and returns the cosignature line(s). */
  addCheckpoint(body: string): string {
    const { old, proof, note } = parseRequest(body);
    let parsed: ReturnType<typeof parseNote>;
    let cp: ReturnType<typeof parseCheckpointText>;
    try {
      parsed = parseNote(note);
      cp = parseCheckpointText(parsed.text);
    } catch (err) {
      throw new WitnessError(400, `not a signed checkpoint: ${(err as Error).message}`);
    }
    const keys = this.opts.logs.get(cp.origin);
    if (!keys) throw new WitnessError(404, `unknown log origin "${cp.origin}"`);
    const signer = keys.find((k) => verifyNote(parsed, k).ok);
    if (!signer) throw new WitnessError(403, `no signature from a known key of "${cp.origin}" verifies`);
    if (cp.key !== undefined && cp.key !== keyFingerprint(signer.publicKey)) throw new WitnessError(403, `the checkpoint names signing key ${cp.key}, but it is signed by ${keyFingerprint(signer.publicKey)}`);
    if (old > cp.treeSize) throw new WitnessError(400, `old size ${old} is larger than the checkpoint's ${cp.treeSize}`);
    const prev = this.state.logs[cp.origin];
    const prevSize = prev?.size ?? 0;
    const root = cp.rootHash.toString('base64');
    if (old !== prevSize) throw new WitnessError(409, `the latest checkpoint cosigned for "${cp.origin}" has size ${prevSize}, not ${old}`, `${prevSize}\n`, 'text/x.tlog.size');
    if (old === cp.treeSize && prev && prev.root !== root) {
      this.refused(`fork: "${cp.origin}" presented a different root at size ${old} than the one cosigned`);
      throw new WitnessError(409, `refused: a different tree of size ${old} was already cosigned for "${cp.origin}" (a fork)`, `${prevSize}\n`, 'text/x.tlog.size');
    }
    if ((old === 0 || old === cp.treeSize) && proof.length) throw new WitnessError(422, `the consistency proof from size ${old} to ${cp.treeSize} must be empty`);
    if (old > 0 && old < cp.treeSize && !verifyConsistency(old, cp.treeSize, Buffer.from(prev!.root, 'base64'), cp.rootHash, proof)) {
      this.refused(`fork: "${cp.origin}" size ${cp.treeSize} is not consistent with the cosigned size ${old}`);
      throw new WitnessError(422, `the consistency proof from ${old} to ${cp.treeSize} does not verify: refused (the log is not an extension of what was cosigned)`);
    }
    const now = Date.now();
    // Memory follows the disk: a failed write leaves both at the old checkpoint (and no cosignature).
    const next: StateFile = { logs: { ...this.state.logs, [cp.origin]: { size: cp.treeSize, root, note, cosignedAt: now } } };
    writeState(this.opts.stateFile, next);
    this.state = next;
    return cosign(parsed.text, this.opts.name, this.opts.privateKey, Math.floor(now / 1000));
  }

  /**
   * What this witness last cosigned for `origin` (`GET /checkpoint?origin=…`, this witness's own
   * addition to the protocol): the checkpoint text and its cosignature line, the one it answered
   * with (Ed25519 is deterministic, and the time is the one recorded), so a verifier can hold a log
   * to the witness itself rather than to a copy of its cosignatures that the log's store keeps.
   */
  cosigned(origin: string): { origin: string; treeSize: number; checkpoint: string; cosignature: string; cosignedAt: number } | undefined {
    const s = this.state.logs[origin];
    if (!s) return undefined;
    const text = parseNote(s.note).text;
    return { origin, treeSize: s.size, checkpoint: text, cosignature: cosign(text, this.opts.name, this.opts.privateKey, Math.floor(s.cosignedAt / 1000)), cosignedAt: s.cosignedAt };
  }

  private refused(line: string): void {
    this.opts.onRefusal?.(`${new Date().toISOString()} ${line}`);
  }

  /** The HTTP face: POST /add-checkpoint, and GET /checkpoint?origin=… (what it last cosigned for that log). */
  server(): Server {
    return createServer((req, res) => void this.handle(req, res));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const send = (status: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) }).end(body);
    };
    const url = new URL(req.url ?? '/', 'http://witness');
    const path = url.pathname;
    if (path === '/checkpoint' && (req.method === 'GET' || req.method === 'HEAD')) {
      const origin = url.searchParams.get('origin');
      if (!origin) return send(400, 'GET /checkpoint?origin=ORIGIN: which log\n');
      const c = this.cosigned(origin);
      if (!c) return send(404, `this witness has cosigned nothing for "${origin}"\n`);
      return send(200, `${JSON.stringify(c)}\n`, 'application/json');
    }
    if (path !== '/add-checkpoint') return send(404, 'not found: this witness serves POST /add-checkpoint and GET /checkpoint?origin=ORIGIN\n');
    if (req.method !== 'POST') {
      res.setHeader('allow', 'POST');
      return send(405, 'add-checkpoint takes POST\n');
    }
    let body: string;
    try {
      body = await readBody(req);
    } catch (err) {
      return send(413, `${(err as Error).message}\n`);
    }
    try {
      send(200, this.addCheckpoint(body));
    } catch (err) {
      if (err instanceof WitnessError) return send(err.status, err.body ?? `${err.message}\n`, err.contentType);
      // Could not record (disk full, …): never cosign what was not persisted.
      send(500, `the witness could not record the checkpoint: ${(err as Error).message}\n`);
    }
  }
}

function parseRequest(body: string): { old: number; proof: Buffer[]; note: string } {
  const blank = body.indexOf('\n\n');
  if (blank < 0) throw new WitnessError(400, 'the body is "old <size>", proof lines, a blank line, then the checkpoint');
  const head = body.slice(0, blank).split('\n');
  const m = /^old (0|[1-9][0-9]*)$/.exec(head[0] ?? '');
  if (!m || !Number.isSafeInteger(Number(m[1]))) throw new WitnessError(400, 'the first line must be "old <size>" in decimal without leading zeroes');
  const lines = head.slice(1);
  if (lines.length > MAX_PROOF_LINES) throw new WitnessError(400, `at most ${MAX_PROOF_LINES} consistency proof lines`);
  const proof = lines.map((l) => {
    const h = Buffer.from(l, 'base64');
    if (h.length !== HASH_SIZE || h.toString('base64') !== l) throw new WitnessError(400, 'each proof line is one base64 SHA-256 hash');
    return h;
  });
  return { old: Number(m[1]), proof, note: body.slice(blank + 2) };
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new Error(`the body is larger than ${MAX_BODY} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function readState(file: string): StateFile {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`${file}: unreadable witness state (${(err as Error).message}); refusing to start rather than forget what was cosigned`);
  }
  const logs = (parsed as StateFile | null)?.logs;
  if (!logs || typeof logs !== 'object') throw new Error(`${file}: not a witness state file`);
  for (const [origin, s] of Object.entries(logs)) {
    if (!Number.isSafeInteger(s?.size) || typeof s.root !== 'string' || Buffer.from(s.root, 'base64').length !== HASH_SIZE) throw new Error(`${file}: the entry for "${origin}" is damaged`);
  }
  return { logs };
}

function writeState(file: string, state: StateFile): void {
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeSync(fd, `${JSON.stringify(state, null, 2)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
}
