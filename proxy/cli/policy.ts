/**
 * `custody policy check FILE [--strict] [--json]` — validates a policy file and warns about rules
 * that can never fire or are shadowed (see proxy/policy/check.ts). Exit 1 on errors (with
 * `--strict`, on warnings too).
 *
 * `custody policy dry-run FILE [--from T] [--to T] [--json]` — replays the requests recorded in the
 * store through the file's rules and reports what they would have allowed, held, denied and masked,
 * and which sessions would have gone differently (see proxy/policy/dry-run.ts).
 *
 * FILE is YAML (or JSON): a list of rules, or a mapping with `policies:` (a whole config file works;
 * its `connections` and `masking` are then used for the checks too). The gateway's connections and
 * masking rules come from `--config`, and connections added from the console from the store.
 * Times: ISO 8601, milliseconds since the epoch, or a duration back from now (`24h`, `7d`).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LineCounter, parseDocument, type Node as YamlNode } from 'yaml';
import { type Config, type ConnectionKind, parseDuration, type PolicyRule } from '../../shared/config';
import { yamlLineOf } from '../../shared/yaml-lines';
import { AuditStore } from '../audit/store';
import { resolveConfig } from '../config';
import { connectionsNow } from '../connections/store';
import { checkPolicies, formatPolicyIssue, parsePolicies, type PolicyContext } from '../policy/check';
import type { DryRunReport, Outcome } from '../../shared/api';
import { candidateMasking, dryRun } from '../policy/dry-run';
import { validateMaskingConfig } from '../masking/engine';
import { type Io, type ParsedArgs, rejectUnknown, str, UsageError } from './args';

const USAGE = 'usage: custody policy check FILE [--strict] [--json] | custody policy dry-run FILE [--from T] [--to T] [--json]';

interface PolicyFile {
  file: string;
  rules: unknown;
  /** Path prefix of the rules inside the document (`['policies']` or `[]`). */
  at: (string | number)[];
  connections?: { name: string; kind: ConnectionKind }[];
  masking?: { id: string; connections?: string[] }[];
  detectors?: string[];
  /** The file's own `{masking, detectors}` as written, when it has either (a whole config). */
  maskingDoc?: { masking: unknown; detectors: unknown };
  doc: ReturnType<typeof parseDocument>;
  lines: LineCounter;
}

function readPolicyFile(file: string): PolicyFile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`${file}: cannot read (${code === 'ENOENT' ? 'no such file' : (code ?? String(err))})`);
  }
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    throw new Error(`${file}:${e.linePos?.[0]?.line ?? 1}: invalid YAML: ${e.message.split('\n')[0]}`);
  }
  const value = doc.toJS() as unknown;
  if (Array.isArray(value)) return { file, rules: value, at: [], doc, lines };
  if (value && typeof value === 'object' && 'policies' in value) {
    const v = value as { policies: unknown; connections?: unknown; masking?: unknown; detectors?: unknown };
    const connections = Array.isArray(v.connections)
      ? v.connections.filter((c): c is { name: string; kind: ConnectionKind } => !!c && typeof c === 'object' && typeof (c as { name?: unknown }).name === 'string' && typeof (c as { kind?: unknown }).kind === 'string')
      : undefined;
    const masking = Array.isArray(v.masking) ? v.masking.filter((m): m is { id: string } => !!m && typeof m === 'object' && typeof (m as { id?: unknown }).id === 'string') : undefined;
    const detectors = Array.isArray(v.detectors) ? v.detectors.map((d) => (d as { id?: unknown })?.id).filter((id): id is string => typeof id === 'string') : undefined;
    const maskingDoc = v.masking !== undefined || v.detectors !== undefined ? { masking: v.masking ?? [], detectors: v.detectors ?? [] } : undefined;
    return { file, rules: v.policies ?? [], at: ['policies'], connections, masking, detectors, maskingDoc, doc, lines };
  }
  throw new Error(`${file}: expected a list of policy rules, or a mapping with "policies:"`);
}

/** Line of the deepest node along `path` (relative to where the rules sit in the file). */
function lineOf(pf: PolicyFile, path: (string | number)[]): number {
  return yamlLineOf(pf.doc.contents as YamlNode | null, [...pf.at, ...path], pf.lines);
}

export function parseTime(v: string | undefined, name: string, now = Date.now()): number | undefined {
  if (v === undefined) return undefined;
  if (/^\d+$/.test(v)) return Number(v);
  if (/^\d+(ms|s|m|h|d)$/.test(v)) return now - parseDuration(v);
  const t = Date.parse(v);
  if (!Number.isFinite(t)) throw new UsageError(`--${name}: expected an ISO 8601 time, ms since the epoch, or a duration such as 24h`);
  return t;
}

function loadRules(pf: PolicyFile, io: Io): PolicyRule[] | undefined {
  const parsed = parsePolicies(pf.rules);
  if (parsed.ok) return parsed.rules;
  for (const i of parsed.issues) {
    const field = i.path.map((p, j) => (typeof p === 'number' ? (j === 0 ? `rule #${p + 1}` : `[${p}]`) : `.${p}`)).join('');
    io.out(`${pf.file}:${lineOf(pf, i.path)}: error: ${field}: ${i.message}\n`);
  }
  return undefined;
}

export async function policyCommand(args: ParsedArgs, io: Io): Promise<number> {
  const [, sub, file] = args.positionals;
  if (sub !== 'check' && sub !== 'dry-run') throw new UsageError(USAGE);
  if (!file) throw new UsageError(`policy ${sub} needs a FILE (${USAGE.replace('usage: ', '')})`);
  rejectUnknown(args, sub === 'check' ? ['config', 'data-dir', 'strict', 'json'] : ['config', 'data-dir', 'from', 'to', 'json']);
  const from = sub === 'dry-run' ? parseTime(str(args, 'from'), 'from') : undefined;
  const to = sub === 'dry-run' ? parseTime(str(args, 'to'), 'to') : undefined;
  const { config, dataDir } = resolveConfig({ config: str(args, 'config'), dataDir: str(args, 'data-dir') });
  const pf = readPolicyFile(file);
  const dbFile = join(dataDir, 'custody.db');
  const store = existsSync(dbFile) ? AuditStore.open(dataDir, { readonly: true }) : undefined;
  try {
    // What exists on the gateway: the file's own connections and masking (a whole config), else --config's, plus the store's.
    const gateway = store ? connectionsNow(config, store) : config.connections.map((c) => ({ name: c.name, kind: c.kind }));
    const byName = new Map([...gateway, ...(pf.connections ?? [])].map((c) => [c.name, c.kind] as const));
    const ctx: PolicyContext = { connections: [...byName].map(([name, kind]) => ({ name, kind })), masking: pf.masking ?? config.masking, detectors: [...(pf.detectors ?? []), ...config.detectors.map((d) => d.id)] };
    const rules = loadRules(pf, io);
    if (!rules) {
      io.err(`custody policy ${sub}: ${file} is not a valid policy list\n`);
      return 1;
    }
    const issues = checkPolicies(rules, ctx);
    const errors = issues.filter((i) => i.level === 'error');
    if (sub === 'check') {
      if (args.flags['json']) io.out(`${JSON.stringify({ rules: rules.length, issues }, null, 2)}\n`);
      else for (const i of issues) io.out(`${file}:${lineOf(pf, i.path)}: ${formatPolicyIssue(i)}\n`);
      const warnings = issues.length - errors.length;
      io.err(`${rules.length} rule${rules.length === 1 ? '' : 's'}: ${errors.length} error${errors.length === 1 ? '' : 's'}, ${warnings} warning${warnings === 1 ? '' : 's'}\n`);
      return errors.length || (args.flags['strict'] && warnings) ? 1 : 0;
    }
    if (errors.length) {
      for (const i of errors) io.out(`${file}:${lineOf(pf, i.path)}: ${formatPolicyIssue(i)}\n`);
      io.err(`custody policy dry-run: ${file} has errors; fix them first (custody policy check)\n`);
      return 1;
    }
    if (!store) throw new Error(`no recorded traffic: ${dbFile} does not exist (use --config or --data-dir to find the store)`);
    // The candidate's masking rules: the file's own when it has them, else the gateway's.
    let maskingConfig: Pick<Config, 'masking' | 'detectors'> = config;
    if (pf.maskingDoc) {
      const checked = validateMaskingConfig(pf.maskingDoc);
      if (!checked.ok) {
        for (const i of checked.issues) io.out(`${file}:${lineOf({ ...pf, at: [] }, i.path)}: error: ${i.path.join('.')}: ${i.message}\n`);
        io.err(`custody policy dry-run: ${file} has invalid masking rules; fix them first\n`);
        return 1;
      }
      maskingConfig = checked.config;
    }
    const masking = candidateMasking(maskingConfig);
    const report = dryRun(store, rules, { from, to, connections: ctx.connections!, roles: config.identity.roles, masking });
    if (args.flags['json']) io.out(`${JSON.stringify(report, null, 2)}\n`);
    else io.out(formatReport(report));
    return 0;
  } finally {
    store?.close();
  }
}

const OUTCOMES: Outcome[] = ['allowed', 'held', 'denied', 'masked'];

export function formatReport(r: DryRunReport): string {
  const when = (t: number | null) => (t === null ? '…' : new Date(t).toISOString());
  const out: string[] = [];
  out.push(`Replayed ${r.requests} recorded request${r.requests === 1 ? '' : 's'} in ${r.sessions} session${r.sessions === 1 ? '' : 's'} (${when(r.from)} to ${when(r.to)})`);
  out.push('');
  out.push(`            ${OUTCOMES.map((o) => o.padStart(8)).join('')}`);
  out.push(`recorded    ${OUTCOMES.map((o) => String(r.recorded[o]).padStart(8)).join('')}`);
  out.push(`candidate   ${OUTCOMES.map((o) => String(r.candidate[o]).padStart(8)).join('')}`);
  out.push('');
  out.push(`${r.changedRequests} request${r.changedRequests === 1 ? '' : 's'} in ${r.changedSessions} session${r.changedSessions === 1 ? '' : 's'} would go differently${r.changedRequests ? ':' : '.'}`);
  for (const [t, n] of Object.entries(r.transitions).sort((a, b) => b[1] - a[1])) out.push(`  ${t.padEnd(18)} ${n}`);
  out.push('');
  out.push(`Values masked (requests and responses): recorded ${r.maskedValues.recorded} → candidate ${r.maskedValues.candidate}`);
  if (Object.keys(r.byRule).length) {
    out.push('');
    out.push('Matches per rule:');
    for (const [rule, n] of Object.entries(r.byRule).sort((a, b) => b[1] - a[1])) out.push(`  ${rule.padEnd(32)} ${n}`);
  }
  if (r.changed.length) {
    out.push('');
    out.push('Sessions that change:');
    for (const s of r.changed) {
      out.push(`  ${s.session}  ${s.connection ?? '-'}  ${s.actorName ?? s.actor ?? '-'}  ${s.changed}/${s.requests} requests`);
      for (const e of s.examples) out.push(`    #${e.seq} ${new Date(e.time).toISOString()} ${e.recorded}${e.recordedRule ? ` (${e.recordedRule})` : ''} → ${e.candidate}${e.candidateRule ? ` (${e.candidateRule})` : ''}  ${e.summary}`);
    }
  }
  if (r.partial) {
    out.push('');
    out.push(`${r.partial} request${r.partial === 1 ? ' was' : 's were'} replayed from partial records (body not recorded, groups or SQL classes unknown).`);
  }
  out.push('Note: replay sees recorded text, which is masked; content rules that look for masked values see the redaction, and a masking rule removed by the candidate cannot unmask what the log holds masked.');
  return `${out.join('\n')}\n`;
}
