/**
 * Audit integrity and evidence export over REST:
 *
 *   GET  /api/audit/status          tree size and root, signing key (verifier key, fingerprint),
 *                                   last checkpoint, last verification               (reviewer)
 *   POST /api/audit/verify          verifies the store now; the result becomes the last verification
 *   POST /api/exports               {from?, to?, user?, connection?} → 202 {id}; progress on the
 *                                   WebSocket: export.progress, export.done {url}, export.failed
 *   GET  /api/exports               this gateway's exports
 *   GET  /api/exports/:id           one export's state
 *   GET  /api/exports/:id/download  the bundle (.tar.gz)
 *
 * Admins satisfy the reviewer role, so "admin or reviewer" is `role: 'reviewer'`.
 */
import { createReadStream, statSync } from 'node:fs';
import { ExportError, type ExportFilter, parseTimeArg } from '../../audit/export';
import type { AuditService, ExportJob, VerificationRecord } from '../../audit/service';
import type { GatewayServices } from '../../services';
import { HANDLED, HttpError, type Router, sendJson } from '../router';

function audit(s: GatewayServices): AuditService {
  if (!s.audit) throw new HttpError(503, 'audit_unavailable', 'the audit trail is not running on this gateway');
  return s.audit;
}

function verificationView(v: VerificationRecord | null) {
  if (!v) return null;
  const f = v.failure;
  return {
    ...v,
    time: v.verifiedAt,
    message: v.ok ? `${v.events} events intact` : `${f?.seq !== undefined ? `seq ${f.seq}: ` : ''}${f?.problem}: ${f?.message}`,
    firstBadSeq: f?.seq ?? null,
    problem: f?.problem ?? null,
  };
}

function jobView(j: ExportJob) {
  const { file: _file, ...rest } = j;
  return { ...rest, url: j.state === 'done' ? `/api/exports/${j.id}/download` : undefined };
}

function filterFrom(body: unknown): ExportFilter {
  if (body === undefined || body === null) return {};
  if (typeof body !== 'object' || Array.isArray(body)) throw new HttpError(400, 'bad_request', 'the body is {"from", "to", "user", "connection"}, each optional');
  const b = body as Record<string, unknown>;
  for (const k of Object.keys(b)) if (!['from', 'to', 'user', 'connection'].includes(k)) throw new HttpError(400, 'bad_request', `unknown field "${k}"`);
  const f: ExportFilter = {};
  try {
    for (const k of ['from', 'to'] as const) {
      const v = b[k];
      if (v === undefined || v === null || v === '') continue;
      if (typeof v === 'number' && Number.isFinite(v)) f[k] = v;
      else if (typeof v === 'string') f[k] = parseTimeArg(v, k);
      else throw new ExportError(`${k} must be a time (ISO 8601 or ms since epoch)`);
    }
  } catch (err) {
    throw new HttpError(400, 'bad_request', (err as Error).message.replace(/^--/, ''));
  }
  for (const k of ['user', 'connection'] as const) {
    const v = b[k];
    if (v === undefined || v === null || v === '') continue;
    if (typeof v !== 'string') throw new HttpError(400, 'bad_request', `${k} must be a string`);
    f[k] = v;
  }
  if (f.from !== undefined && f.to !== undefined && f.from > f.to) throw new HttpError(400, 'bad_request', 'from is after to');
  return f;
}

export function registerAuditRoutes(router: Router, s: GatewayServices): void {
  router.get(
    '/api/audit/status',
    () => {
      const a = audit(s);
      const st = a.status();
      const head = a.trail.checkpoints.head();
      return {
        events: st.events,
        treeSize: head.size,
        rootHash: head.root.toString('hex'),
        headHash: st.headHash,
        origin: st.key.name,
        publicKey: st.key.verifierKey,
        fingerprint: st.key.fingerprint,
        key: st.key,
        signer: st.signer,
        checkpointInterval: st.checkpointInterval,
        lastCheckpoint: st.lastCheckpoint,
        lastVerification: verificationView(st.lastVerification),
        retention: st.retention,
        witnesses: st.witnesses,
        sinks: st.sinks,
        archive: st.archive,
        ...(s.combinedCheckpoints ? { combinedCheckpoint: s.combinedCheckpoints.health() } : {}),
      };
    },
    { role: 'reviewer' },
  );

  router.post(
    '/api/audit/verify',
    async ({ identity }) => {
      const rec = await audit(s).verify(identity!.subject);
      return verificationView(rec);
    },
    { role: 'reviewer' },
  );

  router.post(
    '/api/exports',
    async ({ identity, json, res }) => {
      const filter = filterFrom(await json());
      const job = audit(s).startExport(filter, { subject: identity!.subject, name: identity!.name });
      sendJson(res, 202, jobView(job));
      return HANDLED;
    },
    { role: 'reviewer' },
  );

  router.get('/api/exports', () => ({ exports: audit(s).listJobs().map(jobView) }), { role: 'reviewer' });

  router.get(
    '/api/exports/:id',
    ({ params }) => {
      const job = audit(s).job(params['id']!);
      if (!job) throw new HttpError(404, 'not_found', `no export ${params['id']}`);
      return jobView(job);
    },
    { role: 'reviewer' },
  );

  router.get(
    '/api/exports/:id/download',
    ({ params, res }) => {
      const job = audit(s).job(params['id']!);
      if (!job) throw new HttpError(404, 'not_found', `no export ${params['id']}`);
      if (job.state === 'running') throw new HttpError(409, 'not_ready', `export ${job.id} is still running (${job.done} of ${job.total} events)`);
      if (job.state === 'failed') throw new HttpError(410, 'export_failed', `export ${job.id} failed: ${job.error}`);
      const size = statSync(job.file).size;
      res.writeHead(200, {
        'content-type': 'application/gzip',
        'content-length': size,
        'content-disposition': `attachment; filename="custody-evidence-${job.id}.tar.gz"`,
        'cache-control': 'no-store',
        'x-content-type-options': 'nosniff',
      });
      createReadStream(job.file).pipe(res);
      return HANDLED;
    },
    { role: 'reviewer' },
  );
}
