/**
 * Evidence export: one gzip'd ustar bundle an auditor can verify offline with `custody verify`.
 *
 * Its files are listed in bundle-format.ts, which the verifier reads too.
 *
 * The export appends `export.created` (with the manifest digest) once the bundle is complete. It
 * reads the store in pages and yields between them, so a gateway keeps serving while it runs.
 */
import { type CastSource, type TerminalFrame, toAsciicast } from '../../shared/asciicast';
import { mkdtempSync, openSync, closeSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { parseDuration, type Config } from '../../shared/config';
import type { AuditEvent, ExportCreatedPayload } from '../../shared/events';
import { newId } from '../ids';
import type { AuditTrail, Checkpoint } from './checkpoints';
import { HASH_SIZE, MerkleTree } from './merkle';
import { ocsfJson, type OcsfContext } from './ocsf';
import { renderReport, type AccessRow, type ReportData } from './report';
import type { AuditStore } from './store';
import { sha256hex, storedPayloadText } from './store';
import { writeTarGz } from './tar';
import { BUNDLE_FILES, BUNDLE_FORMAT, type BundleManifest, eventLine, GROUP_BUNDLE_FILES, type GroupSection, manifestFileEntry, manifestNoteText, proofLine } from './bundle-format';
import type { VerifyReport } from './verify/checks';

export interface ExportFilter {
  from?: number;
  to?: number;
  /** Identity subject, or a user's display name. */
  user?: string;
  connection?: string;
}

export interface ExportOptions {
  store: AuditStore;
  trail: AuditTrail;
  config: Config;
  /** Where the .tar.gz goes. */
  out: string;
  filter: ExportFilter;
  /** Who asked (identity subject) and their display name. */
  actor: string;
  actorName?: string;
  version: string;
  id?: string;
  /** Integrity check of the store at export time; the report states its result. */
  verify: () => Promise<VerifyReport> | VerifyReport;
  /**
   * In a group (`store.url`): writes the group files (every chain of the shared store,
   * shared-store/group-export.ts) into the staging dir and returns the manifest's `group`. An
   * export in a group fails when this fails: a bundle without the group's chains is not cut.
   */
  group?: (stageDir: string) => Promise<GroupSection>;
  onProgress?: (done: number, total: number) => void;
}

export interface ExportResult {
  id: string;
  out: string;
  bytes: number;
  events: number;
  checkpoint: Checkpoint;
  manifestSha256: string;
  integrity: VerifyReport;
  event: AuditEvent;
  /** The group part, when exported in a group. */
  group?: GroupSection;
}

export class ExportError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExportError';
  }
}

/** `2026-01-31`, `2026-01-31T12:00:00Z`, milliseconds since the epoch, or a duration ago (`30d`, `12h`). */
export function parseTimeArg(text: string, name: string, now = Date.now()): number {
  const t = text.trim();
  if (/^\d+$/.test(t) && t.length >= 10) return Number(t);
  if (/^\d+(ms|s|m|h|d)$/.test(t)) return now - parseDuration(t);
  const ms = Date.parse(t);
  if (!Number.isFinite(ms)) throw new ExportError(`--${name}: "${text}" is not a time (ISO 8601 such as 2026-01-31T00:00:00Z, ms since epoch, or a duration ago such as 30d)`);
  return ms;
}

type Row = [number, number, string, string | null, string | null, string | null, Buffer | string | null, string, string | null, string, string, string];

const PAGE = 2000;
const yieldToLoop = () => new Promise<void>((r) => setImmediate(r));

function filterSql(f: ExportFilter, treeSize: number): { where: string; args: Record<string, unknown> } {
  const where = ['seq <= @treeSize'];
  const args: Record<string, unknown> = { treeSize };
  if (f.from !== undefined) {
    where.push('time >= @from');
    args['from'] = f.from;
  }
  if (f.to !== undefined) {
    where.push('time <= @to');
    args['to'] = f.to;
  }
  if (f.connection) {
    where.push('connection = @connection');
    args['connection'] = f.connection;
  }
  if (f.user) {
    // The user's own events (by subject or display name) and everything in their sessions (approvals included).
    where.push('(actor = @user OR actor IN (SELECT actor FROM sessions WHERE actor_name = @user) OR session IN (SELECT id FROM sessions WHERE actor = @user OR actor_name = @user))');
    args['user'] = f.user;
  }
  return { where: where.join(' AND '), args };
}

/** Writes the bundle to `opts.out` and records `export.created`. */
export async function exportBundle(opts: ExportOptions): Promise<ExportResult> {
  const { store, trail, filter } = opts;
  const id = opts.id ?? newId('exp');
  const generatedAt = Date.now();
  if (filter.from !== undefined && filter.to !== undefined && filter.from > filter.to) throw new ExportError('--from is after --to');

  const integrity = await opts.verify();
  // The checkpoint the bundle is cut against; refused (and so the export) if the log is broken.
  const checkpoint = await trail.checkpoints.write();
  const T = checkpoint.treeSize;
  const { where, args } = filterSql(filter, T);
  const total = (store.db.prepare(`SELECT count(*) AS n FROM events WHERE ${where}`).get(args) as { n: number }).n;
  opts.onProgress?.(0, total);

  const stage = mkdtempSync(join(tmpdir(), 'custody-export-'));
  try {
    // Every event hash up to T: the tree for the proofs, and hashes.bin.
    const hashes = Buffer.alloc(T * HASH_SIZE);
    const hashPage = store.db.prepare('SELECT seq, hash FROM events WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT 50000').raw();
    for (let after = 0; after < T; ) {
      const rows = hashPage.all(after, T) as [number, string][];
      if (!rows.length) break;
      for (const [seq, hash] of rows) hashes.write(hash, (seq - 1) * HASH_SIZE, HASH_SIZE, 'hex');
      after = rows[rows.length - 1]![0];
      await yieldToLoop();
    }
    const tree = MerkleTree.fromEventHashes(hashes);
    if (tree.root().toString('hex') !== checkpoint.rootHash) throw new ExportError('the stored event hashes do not match the checkpoint just signed; run custody verify');
    writeFileIn(stage, 'hashes.bin', hashes);

    const ctx: OcsfContext = {
      connectionKinds: connectionKinds(store, opts.config),
      actorNames: new Map(),
      product: { name: 'Custody', version: opts.version },
      origin: trail.signer.name,
    };
    const stats = newStats();
    const eventsFd = openSync(join(stage, 'events.jsonl'), 'w', 0o600);
    const ocsfFd = openSync(join(stage, 'ocsf.jsonl'), 'w', 0o600);
    const proofsFd = openSync(join(stage, 'proofs.jsonl'), 'w', 0o600);
    // Recorded SSH terminals, gathered by session and channel, become asciicast files.
    const casts = new Map<string, CastSource>();
    let done = 0;
    let firstSeq: number | undefined;
    let lastSeq: number | undefined;
    try {
      const page = store.db
        .prepare(`SELECT seq, time, kind, session, actor, connection, payload, encoding, spans, payload_hash, prev_hash, hash FROM events WHERE ${where} AND seq > @after ORDER BY seq LIMIT ${PAGE}`)
        .raw();
      for (let after = 0; ; ) {
        const rows = page.all({ ...args, after }) as Row[];
        if (!rows.length) break;
        const ev: string[] = [];
        const oc: string[] = [];
        const pr: string[] = [];
        for (const r of rows) {
          const [seq, time, kind, session, actor, connection, payload, encoding, spansText, payloadHash, prevHash, hash] = r;
          const purged = encoding === 'purged';
          if (purged) stats.purged++;
          const text = storedPayloadText(encoding, payload);
          ev.push(eventLine({ seq, time, kind, session, actor, connection, payloadText: text, spansText: spansText ?? '[]', purged, payloadHash, prevHash, hash }));
          const parsedPayload = purged ? null : (JSON.parse(text) as unknown);
          const parsedSpans = spansText ? (JSON.parse(spansText) as { type: string }[]) : [];
          collect(stats, { seq, time, kind, session, actor, connection, payload: parsedPayload, spans: parsedSpans }, ctx);
          if (session && (kind === 'ssh.request' || kind === 'ssh.output')) castFrames(casts, session, time, kind, parsedPayload);
          oc.push(ocsfJson({ seq, time, kind, session, actor, connection, payload: parsedPayload, masked: parsedSpans.length, hash }, ctx));
          pr.push(proofLine(seq, T, tree.inclusionProof(seq - 1)));
          firstSeq ??= seq;
          lastSeq = seq;
        }
        writeSync(eventsFd, `${ev.join('\n')}\n`);
        writeSync(ocsfFd, `${oc.join('\n')}\n`);
        writeSync(proofsFd, `${pr.join('\n')}\n`);
        done += rows.length;
        after = rows[rows.length - 1]![0];
        opts.onProgress?.(done, total);
        await yieldToLoop();
      }
    } finally {
      closeSync(eventsFd);
      closeSync(ocsfFd);
      closeSync(proofsFd);
    }

    // Checkpoints up to T, each proven a prefix of T.
    const stored = trail.checkpoints.list().filter((c) => c.treeSize <= T);
    writeFileIn(stage, 'checkpoints.jsonl', stored.map((c) => JSON.stringify({ treeSize: c.treeSize, rootHash: c.rootHash, time: c.time, note: c.note })).join('\n') + (stored.length ? '\n' : ''));
    const consistency = stored
      .filter((c) => c.treeSize > 0 && c.treeSize < T)
      .map((c) => JSON.stringify({ from: c.treeSize, to: T, fromRoot: c.rootHash, toRoot: checkpoint.rootHash, path: tree.consistencyProof(c.treeSize).map((h) => h.toString('base64')) }));
    writeFileIn(stage, 'consistency.jsonl', consistency.join('\n') + (consistency.length ? '\n' : ''));
    // Witness cosignatures up to T: `custody verify --witness-key` holds the bundle to them.
    const cosigs = store.db.prepare('SELECT witness, key_id, tree_size, root_hash, checkpoint, signature, cosigned_at FROM checkpoint_cosignatures WHERE tree_size <= ? ORDER BY tree_size, witness').all(T);
    writeFileIn(stage, 'cosignatures.jsonl', cosigs.map((c) => JSON.stringify(c)).join('\n') + (cosigs.length ? '\n' : ''));
    writeFileIn(stage, 'checkpoint.txt', checkpoint.note);
    const key = trail.signer.info();
    writeFileIn(stage, 'public-key.txt', `${key.verifierKey}\n${key.fingerprint}\n`);
    writeFileIn(stage, 'holds.json', `${JSON.stringify(holdsIn(store, filter), null, 2)}\n`);
    const versions = policyVersionsInForce(store, filter, opts.config);
    writeFileIn(stage, 'policy-versions.json', `${JSON.stringify(versions, null, 2)}\n`);

    const summary = integrity.ok
      ? `${integrity.events.toLocaleString('en-US')} events, chain and Merkle tree intact, ${integrity.checkpointsChecked} checkpoints verified at export`
      : `${integrity.failure?.seq !== undefined ? `seq ${integrity.failure.seq}: ` : ''}${integrity.failure?.problem}: ${integrity.failure?.message}`;
    const report: ReportData = {
      generatedAt,
      generatedBy: opts.actorName ? `${opts.actorName} (${opts.actor})` : opts.actor,
      origin: trail.signer.name,
      product: `Custody ${opts.version}`,
      filter,
      key,
      checkpoint: { treeSize: T, rootHash: checkpoint.rootHash, time: checkpoint.time },
      integrity: { ok: integrity.ok, summary, events: integrity.events, purged: integrity.payloadsPurged, checkpoints: integrity.checkpointsChecked },
      events: done,
      firstSeq,
      lastSeq,
      byKind: stats.byKind,
      access: [...stats.access.values()].map((a) => ({ ...a, actorName: ctx.actorNames.get(a.actor) ?? null, sessions: a.sessionIds.size })).map(({ sessionIds: _s, ...rest }) => rest as AccessRow),
      decisions: stats.decisions,
      holds: stats.holds,
      holdCounts: stats.holdCounts,
      masking: stats.masking,
      logins: stats.logins,
      keyChanges: stats.keyChanges,
      policyChanges: stats.policyChanges,
      policyVersions: versions.versions.length,
      exportsRecorded: stats.byKind['export.created'] ?? 0,
      retentionRuns: stats.byKind['retention.run'] ?? 0,
      recordingViews: stats.byKind['recording.viewed'] ?? 0,
    };
    writeFileIn(stage, 'report.html', renderReport(report));
    // Every chain of the group, from the shared store.
    const group = opts.group ? await opts.group(stage) : undefined;

    // Manifest over every file, then its signed digest.
    const names: string[] = BUNDLE_FILES.filter((name) => name !== 'manifest.json' && name !== 'manifest.note');
    if (group) names.push(...GROUP_BUNDLE_FILES);
    for (const [key, cast] of casts) {
      if (!cast.frames.length) continue;
      const name = `ssh-${key}.cast`;
      writeFileIn(stage, name, toAsciicast(cast));
      names.push(name);
    }
    const files: BundleManifest['files'] = {};
    for (const name of names) files[name] = await manifestFileEntry(join(stage, name));
    const manifest: BundleManifest & Record<string, unknown> = {
      format: BUNDLE_FORMAT,
      id,
      createdAt: new Date(generatedAt).toISOString(),
      createdBy: opts.actor,
      origin: trail.signer.name,
      filter,
      checkpoint: { treeSize: T, rootHash: checkpoint.rootHash, time: checkpoint.time },
      events: done,
      firstSeq: firstSeq ?? null,
      lastSeq: lastSeq ?? null,
      purged: stats.purged,
      integrity: { ok: integrity.ok, summary },
      key: { verifierKey: key.verifierKey, fingerprint: key.fingerprint },
      ...(group ? { group } : {}),
      files,
    };
    const manifestText = `${JSON.stringify(manifest, null, 2)}\n`;
    const manifestSha256 = sha256hex(manifestText);
    writeFileIn(stage, 'manifest.json', manifestText);
    writeFileIn(stage, 'manifest.note', await trail.signer.signText(manifestNoteText(manifestSha256)));

    const partial = `${opts.out}.partial`;
    const order = ['manifest.json', 'manifest.note', ...names];
    await writeTarGz(partial, order.map((name) => ({ name, file: join(stage, name), size: statSync(join(stage, name)).size, mtime: generatedAt })));
    let event: AuditEvent;
    try {
      event = store.append({
        kind: 'export.created',
        actor: opts.actor,
        payload: { id, file: basename(opts.out), filter, treeSize: T, rootHash: checkpoint.rootHash, events: done, manifestSha256, integrity: integrity.ok ? 'intact' : 'failed', actorName: opts.actorName ?? null } satisfies ExportCreatedPayload,
      });
    } catch (err) {
      rmSync(partial, { force: true });
      throw err;
    }
    renameSync(partial, opts.out);
    return { id, out: opts.out, bytes: statSync(opts.out).size, events: done, checkpoint, manifestSha256, integrity, event, ...(group ? { group } : {}) };
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

/** Connection name → kind: the config's, then those added from the console (stored), for OCSF classes. */
export function connectionKinds(store: AuditStore, config: Config): Map<string, string> {
  const kinds = new Map<string, string>();
  for (const r of store.db.prepare('SELECT name, config FROM connections').all() as { name: string; config: string }[]) {
    try {
      const kind = (JSON.parse(r.config) as { kind?: unknown }).kind;
      if (typeof kind === 'string') kinds.set(r.name, kind);
    } catch {
      // an unreadable row only costs the OCSF profile
    }
  }
  for (const c of config.connections) kinds.set(c.name, c.kind);
  return kinds;
}

/** Adds an `ssh.request` (a shell's pty) or `ssh.output` (its frames) to the terminal of its session and channel. */
function castFrames(casts: Map<string, CastSource>, session: string, time: number, kind: string, payload: unknown): void {
  const p = (payload ?? {}) as { channel?: number; request?: string; pty?: { term: string; cols: number; rows: number }; frames?: TerminalFrame[] };
  if (typeof p.channel !== 'number') return;
  if (kind === 'ssh.request' && p.request !== 'shell') return;
  const key = `${session.replace(/[^A-Za-z0-9_-]/g, '_')}-${p.channel}`;
  let cast = casts.get(key);
  if (!cast) {
    cast = { startedAt: time, frames: [], title: `${session} channel ${p.channel}` };
    casts.set(key, cast);
  }
  if (p.pty) cast.pty = p.pty;
  if (Array.isArray(p.frames)) cast.frames.push(...p.frames);
}

function writeFileIn(dir: string, name: string, data: string | Buffer): void {
  const fd = openSync(join(dir, name), 'w', 0o600);
  try {
    if (typeof data === 'string') writeSync(fd, data);
    else writeSync(fd, data);
  } finally {
    closeSync(fd);
  }
}

/** Running totals while events are read; `report.ts` turns them into the report's figures. */
type Stats = Pick<ReportData, 'byKind' | 'decisions' | 'holds' | 'holdCounts' | 'masking' | 'logins' | 'keyChanges' | 'policyChanges'> & {
  access: Map<string, Omit<AccessRow, 'actorName' | 'sessions'> & { sessionIds: Set<string> }>;
  purged: number;
};

function newStats(): Stats {
  return { byKind: {}, access: new Map(), decisions: {}, holds: [], holdCounts: {}, masking: {}, logins: { success: 0, failure: 0, logout: 0 }, keyChanges: 0, policyChanges: 0, purged: 0 };
}

const bump = (o: Record<string, number>, k: string, by = 1) => {
  o[k] = (o[k] ?? 0) + by;
};

function collect(
  s: Stats,
  e: { seq: number; time: number; kind: string; session: string | null; actor: string | null; connection: string | null; payload: unknown; spans: { type: string }[] },
  ctx: OcsfContext,
): void {
  const p = (e.payload && typeof e.payload === 'object' ? e.payload : {}) as Record<string, unknown>;
  bump(s.byKind, e.kind);
  if (e.actor && typeof p['actorName'] === 'string' && !ctx.actorNames.has(e.actor)) ctx.actorNames.set(e.actor, p['actorName']);
  for (const span of e.spans) bump(s.masking, span.type || 'UNKNOWN');
  if ((e.kind === 'http.request' || e.kind === 'pg.statement') && e.actor) {
    const key = `${e.actor}\u0000${e.connection ?? ''}`;
    let a = s.access.get(key);
    if (!a) {
      a = { actor: e.actor, connection: e.connection ?? '', requests: 0, statements: 0, first: e.time, last: e.time, sessionIds: new Set() };
      s.access.set(key, a);
    }
    if (e.kind === 'http.request') a.requests++;
    else a.statements++;
    a.first = Math.min(a.first, e.time);
    a.last = Math.max(a.last, e.time);
    if (e.session) a.sessionIds.add(e.session);
  }
  if (e.kind === 'policy.decision' && typeof p['action'] === 'string') bump(s.decisions, p['action']);
  if (e.kind === 'hold.resolved') {
    const state = typeof p['state'] === 'string' ? p['state'] : 'unknown';
    bump(s.holdCounts, state);
    s.holds.push({
      id: String(p['id'] ?? ''),
      time: e.time,
      state,
      connection: e.connection,
      rule: String(p['rule'] ?? ''),
      requester: String(p['requester'] ?? ''),
      decidedBy: Array.isArray(p['decidedBy']) ? (p['decidedBy'] as unknown[]).map(String) : [],
      reason: String(p['reason'] ?? ''),
    });
  }
  if (e.kind === 'auth.login') s.logins.success++;
  if (e.kind === 'auth.failure') s.logins.failure++;
  if (e.kind === 'auth.logout') s.logins.logout++;
  if (e.kind === 'key.created' || e.kind === 'key.revoked') s.keyChanges++;
  if (e.kind === 'policy.changed' || e.kind === 'masking.changed' || e.kind === 'connection.changed') s.policyChanges++;
}

/** Holds created in the window (and matching the user/connection filter), with their votes. */
function holdsIn(store: AuditStore, f: ExportFilter): unknown[] {
  const where: string[] = [];
  const args: Record<string, unknown> = {};
  if (f.from !== undefined) {
    where.push('created_at >= @from');
    args['from'] = f.from;
  }
  if (f.to !== undefined) {
    where.push('created_at <= @to');
    args['to'] = f.to;
  }
  if (f.connection) {
    where.push('connection = @connection');
    args['connection'] = f.connection;
  }
  if (f.user) {
    where.push('requester = @user');
    args['user'] = f.user;
  }
  const rows = store.db.prepare(`SELECT view FROM holds ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at`).all(args) as { view: string }[];
  return rows.map((r) => JSON.parse(r.view) as unknown);
}

/** Policy and masking versions in force during the window: the last one before it and every one inside it. */
function policyVersionsInForce(store: AuditStore, f: ExportFilter, config: Config): { versions: unknown[]; current: { policies: unknown; masking: unknown } } {
  const rows = store.db.prepare('SELECT version, kind, author, created_at, body FROM policy_versions ORDER BY version').all() as { version: number; kind: string; author: string; created_at: number; body: string }[];
  const from = f.from ?? -Infinity;
  const to = f.to ?? Infinity;
  const keep = new Set<number>();
  for (const kind of new Set(rows.map((r) => r.kind))) {
    const ofKind = rows.filter((r) => r.kind === kind);
    const before = ofKind.filter((r) => r.created_at < from).at(-1);
    if (before) keep.add(before.version);
    for (const r of ofKind) if (r.created_at >= from && r.created_at <= to) keep.add(r.version);
  }
  return {
    versions: rows.filter((r) => keep.has(r.version)).map((r) => ({ version: r.version, kind: r.kind, author: r.author, createdAt: new Date(r.created_at).toISOString(), body: JSON.parse(r.body) as unknown })),
    current: { policies: config.policies, masking: config.masking },
  };
}
