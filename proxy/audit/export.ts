/**
 * Evidence export: one gzip'd ustar bundle an auditor can verify offline with `custody verify`.
 *
 * Its files are listed in bundle-format.ts, which the verifier reads too.
 *
 * The export appends `export.created` (with the manifest digest) once the bundle is complete. It
 * reads the store in pages and yields between them, so a gateway keeps serving while it runs.
 *
 * In a group (`store.url`) the bundle also carries every chain of the shared store (group-export.ts),
 * and `ocsf.jsonl`, `holds.json` and `report.html` cover them all: the other chains' events in the
 * filter, each record and row naming its gateway, and a per-gateway part in the report. Without a
 * group these three files are as they always were.
 */
import { type CastSource, type TerminalFrame, toAsciicast } from '../../shared/asciicast';
import { createReadStream, mkdtempSync, openSync, closeSync, readFileSync, readSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseDuration, type Config } from '../../shared/config';
import type { AuditEvent, ExportCreatedPayload } from '../../shared/events';
import type { HoldView } from '../../shared/holds';
import { newId } from '../ids';
import type { AuditTrail, Checkpoint } from './checkpoints';
import { HASH_SIZE, MerkleTree } from './merkle';
import { ocsfJson, type OcsfContext } from './ocsf';
import { renderReport, type AccessRow, type GatewaySummaryRow, type HoldOutcomeRow, type ReportData, type SessionRow } from './report';
import type { AuditStore } from './store';
import { sha256hex, storedPayloadText } from './store';
import { writeTarGz } from './tar';
import { type BundleEvent, BUNDLE_FILES, BUNDLE_FORMAT, type BundleManifest, eventLine, GROUP_BUNDLE_FILES, GROUP_WITNESS_FILES, type GroupExport, type GroupSection, manifestFileEntry, manifestNoteText, proofLine } from './bundle-format';
import type { VerifyReport } from './verify/checks';
import { HoldEvidence, holdsAsOfEvents } from './verify/derived';

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
   * shared-store/group-export.ts) into the staging dir and returns the manifest's `group`, with
   * what the report, OCSF records and holds need of the other chains. An export in a group fails
   * when this fails: a bundle without the group's chains is not cut.
   */
  group?: (stageDir: string) => Promise<GroupExport>;
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
    const key = trail.signer.info();
    // Every chain of the group, from the shared store (before this gateway's events are mapped: each OCSF record names its chain).
    const grouped = opts.group ? await opts.group(stage) : undefined;
    const group = grouped?.section;
    const self = group ? { id: key.fingerprint, name: group.chains.find((c) => c.gateway === key.fingerprint)?.name || trail.signer.name } : undefined;

    const ctx: OcsfContext = {
      connectionKinds: connectionKinds(store, opts.config),
      actorNames: new Map(),
      product: { name: 'Custody', version: opts.version },
      origin: trail.signer.name,
      ...(self ? { gateway: self } : {}),
    };
    const stats = newStats(self?.id);
    // The hold.* events exported, of every chain: a full bundle's holds.json is what they say (below).
    const holdEvidence = new HoldEvidence();
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
          collect(stats, { seq, time, kind, session, actor, connection, payload: parsedPayload, spans: parsedSpans }, ctx, self?.id);
          holdEvidence.add(key.fingerprint, { seq, time, kind, actor, payload: parsedPayload });
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
      // The other chains' events in the filter, from group-events.jsonl: into the OCSF records and the report's figures.
      if (grouped && self) await collectGroup(stage, grouped, self.id, ctx, stats, ocsfFd, holdEvidence);
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
    writeFileIn(stage, 'public-key.txt', `${key.verifierKey}\n${key.fingerprint}\n`);
    const listed = grouped && self ? groupHolds(holdsIn(store, filter), grouped, self.id) : holdsIn(store, filter);
    // `custody verify` holds holds.json to the exported hold.* events: each hold as they leave it (a
    // vote or an end not yet written back to the hold's row; unfiltered, one recorded past a
    // chain's cut is not evidence yet).
    const full = !Object.values(filter).some((v) => v !== undefined && v !== null && v !== '');
    const holds = holdsAsOfEvents(listed as HoldView[], holdEvidence, key.fingerprint, full, group ? new Map(group.chains.map((c) => [c.gateway, c.name])) : undefined);
    writeFileIn(stage, 'holds.json', `${JSON.stringify(holds, null, 2)}\n`);
    if (grouped) withVotes(stats.holds, holds as (HoldView & { gateway: string })[]);
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
      ...(grouped && self ? { group: groupReport(stage, grouped, self.id, { treeSize: T, hash: T ? hashes.toString('hex', (T - 1) * HASH_SIZE, T * HASH_SIZE) : '', time: checkpoint.time }, stats, holds, ctx) } : {}),
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

    // Manifest over every file, then its signed digest.
    const names: string[] = BUNDLE_FILES.filter((name) => name !== 'manifest.json' && name !== 'manifest.note');
    if (group) names.push(...GROUP_BUNDLE_FILES, ...GROUP_WITNESS_FILES);
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
      ocsf: { product: ctx.product, connectionKinds: Object.fromEntries(ctx.connectionKinds) },
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
  /** This gateway's purged payloads (the manifest's `purged`). */
  purged: number;
  /** In a group: each chain's events and sessions, and every session (keyed by gateway and session id). */
  chains?: Map<string, { events: number; sessions: Set<string> }>;
  sessions?: Map<string, Omit<SessionRow, 'actorName'>>;
};

/** `self`: this gateway's id, in a group (the figures are then kept per chain too). */
function newStats(self?: string): Stats {
  return {
    byKind: {},
    access: new Map(),
    decisions: {},
    holds: [],
    holdCounts: {},
    masking: {},
    logins: { success: 0, failure: 0, logout: 0 },
    keyChanges: 0,
    policyChanges: 0,
    purged: 0,
    ...(self ? { chains: new Map(), sessions: new Map() } : {}),
  };
}

const bump = (o: Record<string, number>, k: string, by = 1) => {
  o[k] = (o[k] ?? 0) + by;
};

/** Adds one event to the figures; `gateway`: its chain, in a group (rows then name it). */
function collect(
  s: Stats,
  e: { seq: number; time: number; kind: string; session: string | null; actor: string | null; connection: string | null; payload: unknown; spans: { type: string }[] },
  ctx: OcsfContext,
  gateway?: string,
): void {
  const p = (e.payload && typeof e.payload === 'object' ? e.payload : {}) as Record<string, unknown>;
  bump(s.byKind, e.kind);
  if (gateway !== undefined && s.chains && s.sessions) {
    let chain = s.chains.get(gateway);
    if (!chain) s.chains.set(gateway, (chain = { events: 0, sessions: new Set() }));
    chain.events++;
    if (e.session) {
      chain.sessions.add(e.session);
      const key = `${gateway}\u0000${e.session}`;
      let row = s.sessions.get(key);
      if (!row) s.sessions.set(key, (row = { gateway, id: e.session, actor: e.actor, connection: e.connection, events: 0, requests: 0, first: e.time, last: e.time }));
      row.events++;
      if (e.kind === 'http.request' || e.kind === 'pg.statement' || e.kind === 'ssh.request') row.requests++;
      row.actor ??= e.actor;
      row.connection ??= e.connection;
      row.first = Math.min(row.first, e.time);
      row.last = Math.max(row.last, e.time);
    }
  }
  if (e.actor && typeof p['actorName'] === 'string' && !ctx.actorNames.has(e.actor)) ctx.actorNames.set(e.actor, p['actorName']);
  for (const span of e.spans) bump(s.masking, span.type || 'UNKNOWN');
  if ((e.kind === 'http.request' || e.kind === 'pg.statement') && e.actor) {
    const key = `${e.actor}\u0000${e.connection ?? ''}${gateway !== undefined ? `\u0000${gateway}` : ''}`;
    let a = s.access.get(key);
    if (!a) {
      a = { actor: e.actor, connection: e.connection ?? '', requests: 0, statements: 0, first: e.time, last: e.time, sessionIds: new Set(), ...(gateway !== undefined ? { gateway } : {}) };
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
      ...(gateway !== undefined ? { gateway } : {}),
    });
  }
  if (e.kind === 'auth.login') s.logins.success++;
  if (e.kind === 'auth.failure') s.logins.failure++;
  if (e.kind === 'auth.logout') s.logins.logout++;
  if (e.kind === 'key.created' || e.kind === 'key.revoked') s.keyChanges++;
  if (e.kind === 'policy.changed' || e.kind === 'masking.changed' || e.kind === 'connection.changed') s.policyChanges++;
}

/**
 * The other chains' events in the filter (group-events.jsonl, less this gateway's own chain, which
 * events.jsonl carries, and the rows carried only to say who may sign): their OCSF records, each
 * naming its chain, appended to `ocsfFd`, and their figures added to `stats`. Payloads are taken as
 * the store holds them: masked as recorded.
 */
async function collectGroup(stage: string, grouped: GroupExport, self: string, ctx: OcsfContext, stats: Stats, ocsfFd: number, holdEvidence: HoldEvidence): Promise<void> {
  const carried = new Set(grouped.carriedOnly);
  const contexts = new Map<string, OcsfContext>();
  const contextOf = (gateway: string): OcsfContext => {
    let c = contexts.get(gateway);
    if (!c) {
      // metadata.uid is `<chain id>#<seq>`: chains of one host share its default origin.
      c = { ...ctx, origin: gateway, gateway: { id: gateway, name: grouped.section.chains.find((x) => x.gateway === gateway)?.name ?? '' } };
      contexts.set(gateway, c);
    }
    return c;
  };
  const input = createReadStream(join(stage, 'group-events.jsonl'), 'utf8');
  let oc: string[] = [];
  try {
    for await (const line of createInterface({ input, crlfDelay: Infinity })) {
      if (!line) continue;
      const e = JSON.parse(line) as BundleEvent & { gateway: string };
      if (e.gateway === self) continue;
      holdEvidence.add(e.gateway, { seq: e.seq, time: e.time, kind: e.kind, actor: e.actor, payload: e.purged ? null : e.payload });
      if (carried.has(`${e.gateway} ${e.seq}`)) continue;
      const chainCtx = contextOf(e.gateway);
      const payload = e.purged ? null : e.payload;
      const spans = Array.isArray(e.spans) ? (e.spans as { type: string }[]) : [];
      collect(stats, { seq: e.seq, time: e.time, kind: e.kind, session: e.session, actor: e.actor, connection: e.connection, payload, spans }, chainCtx, e.gateway);
      oc.push(ocsfJson({ seq: e.seq, time: e.time, kind: e.kind, session: e.session, actor: e.actor, connection: e.connection, payload, masked: spans.length, hash: e.hash }, chainCtx));
      if (oc.length >= PAGE) {
        writeSync(ocsfFd, `${oc.join('\n')}\n`);
        oc = [];
        await yieldToLoop();
      }
    }
  } finally {
    input.destroy();
  }
  if (oc.length) writeSync(ocsfFd, `${oc.join('\n')}\n`);
}

/** A group bundle's holds: this gateway's (as it holds them) and every other gateway's from the store, each once, naming its gateway. */
function groupHolds(own: unknown[], grouped: GroupExport, self: string): unknown[] {
  const names = new Map(grouped.section.chains.map((c) => [c.gateway, c.name]));
  const named = (view: HoldView, gateway: string) => ({ ...view, gateway, gatewayName: names.get(gateway) ?? '' });
  const rows = own.map((v) => named(v as HoldView, self));
  const seen = new Set(rows.map((r) => r.id));
  for (const h of grouped.holds) {
    if (h.gateway === self || seen.has(h.view.id)) continue;
    seen.add(h.view.id);
    rows.push(named(h.view, h.gateway));
  }
  return rows.sort((x, y) => x.createdAt - y.createdAt);
}

/** A group report's hold outcomes, each with its votes from holds.json and the gateway each was cast on (the hold's own when unnamed). */
function withVotes(outcomes: HoldOutcomeRow[], holds: (HoldView & { gateway: string })[]): void {
  const byId = new Map(holds.map((h) => [h.id, h]));
  for (const o of outcomes) {
    const h = byId.get(o.id);
    if (h?.votes.length) o.votes = h.votes.map((v) => ({ byName: v.byName, decision: v.decision, gateway: v.gateway ?? h.gateway }));
  }
}

/** The report's per-gateway part: each chain's figures, head and newest checkpoint, and every session. */
function groupReport(stage: string, grouped: GroupExport, self: string, ownHead: { treeSize: number; hash: string; time: number }, stats: Stats, holds: unknown[], ctx: OcsfContext): NonNullable<ReportData['group']> {
  const newest = new Map<string, { treeSize: number; time: number }>();
  for (const line of readFileSync(join(stage, 'group-checkpoints.jsonl'), 'utf8').split('\n')) {
    if (!line) continue;
    const c = JSON.parse(line) as { gateway: string; treeSize: number; time: number };
    const had = newest.get(c.gateway);
    if (!had || c.treeSize > had.treeSize || (c.treeSize === had.treeSize && c.time > had.time)) newest.set(c.gateway, { treeSize: c.treeSize, time: c.time });
  }
  const holdsOf = new Map<string, number>();
  for (const h of holds as { gateway: string }[]) holdsOf.set(h.gateway, (holdsOf.get(h.gateway) ?? 0) + 1);
  const gateways: GatewaySummaryRow[] = [];
  const hashesFd = openSync(join(stage, 'group-hashes.bin'), 'r');
  try {
    let offset = 0;
    const chains = grouped.section.chains.some((c) => c.gateway === self) ? grouped.section.chains : [...grouped.section.chains, { gateway: self, name: '', size: 0, events: 0 }];
    for (const c of chains) {
      const own = c.gateway === self;
      let hash = '';
      if (own) hash = ownHead.hash;
      else if (c.size > 0) {
        const buf = Buffer.alloc(HASH_SIZE);
        readSync(hashesFd, buf, 0, HASH_SIZE, offset + (c.size - 1) * HASH_SIZE);
        hash = buf.toString('hex');
      }
      offset += c.size * HASH_SIZE;
      const figures = stats.chains?.get(c.gateway);
      const checkpoint = own ? { treeSize: ownHead.treeSize, time: ownHead.time } : newest.get(c.gateway);
      gateways.push({
        id: c.gateway,
        name: c.name,
        self: own,
        events: figures?.events ?? 0,
        sessions: figures?.sessions.size ?? 0,
        holds: holdsOf.get(c.gateway) ?? 0,
        head: { size: own ? ownHead.treeSize : c.size, hash },
        ...(checkpoint ? { checkpoint } : {}),
      });
    }
  } finally {
    closeSync(hashesFd);
  }
  const sessions = [...(stats.sessions?.values() ?? [])].map((r) => ({ ...r, actorName: r.actor ? (ctx.actorNames.get(r.actor) ?? null) : null })).sort((x, y) => x.first - y.first || x.gateway.localeCompare(y.gateway));
  return { group: grouped.section.group, gateways, sessions };
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
  // Connections versions (connections/store.ts, shared with the group) are not rules: their changes are in events.jsonl (connection.changed).
  const rows = store.db.prepare("SELECT version, kind, author, created_at, body FROM policy_versions WHERE kind IN ('policies', 'masking') ORDER BY version").all() as { version: number; kind: string; author: string; created_at: number; body: string }[];
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
