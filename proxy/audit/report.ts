/**
 * The evidence bundle's human-readable report: one self-contained HTML file (inline CSS, no
 * scripts, no external resources) summarising who accessed what, approvals and denials, masking by
 * detector type and the integrity status, mapped to SOC 2 (2017 TSC, rev. 2022) CC6.1, CC6.2, CC6.3,
 * CC7.2, CC8.1 and ISO/IEC 27001:2022 Annex A 5.15, 5.18, 8.2, 8.15, 8.16.
 *
 * A bundle exported in a group covers every chain it carries: the figures are the group's, the
 * rows name their gateway, and a per-gateway summary and the list of sessions are added. Without
 * a group the report is as it always was.
 */

export interface AccessRow {
  actor: string;
  actorName: string | null;
  connection: string;
  requests: number;
  statements: number;
  sessions: number;
  first: number;
  last: number;
  /** In a group: the chain (gateway id) the requests were recorded in. */
  gateway?: string;
}

export interface HoldOutcomeRow {
  id: string;
  time: number;
  state: string;
  connection: string | null;
  rule: string;
  requester: string;
  decidedBy: string[];
  reason: string;
  /** In a group: the chain (gateway id) that recorded the outcome. */
  gateway?: string;
  /** In a group: the hold's votes (holds.json), each with the gateway it was cast on. */
  votes?: { byName: string; decision: string; gateway: string }[];
}

/** A session of a group bundle, from its events on one chain. */
export interface SessionRow {
  gateway: string;
  id: string;
  actor: string | null;
  actorName: string | null;
  connection: string | null;
  events: number;
  /** HTTP requests, SQL statements and SSH requests. */
  requests: number;
  first: number;
  last: number;
}

/** One chain of a group bundle: what the bundle holds of it, where it ends and its newest signed checkpoint. */
export interface GatewaySummaryRow {
  id: string;
  /** Its host name, as its gateway row says. */
  name: string;
  /** The gateway that exported the bundle: its figures are those of events.jsonl, its head and checkpoint checkpoint.txt's. */
  self: boolean;
  events: number;
  sessions: number;
  holds: number;
  /** The chain's last event in the bundle: seq and hash. */
  head: { size: number; hash: string };
  checkpoint?: { treeSize: number; time: number };
}

export interface ReportData {
  generatedAt: number;
  generatedBy: string;
  origin: string;
  product: string;
  filter: { from?: number; to?: number; user?: string; connection?: string };
  key: { verifierKey: string; fingerprint: string };
  checkpoint: { treeSize: number; rootHash: string; time: number };
  integrity: { ok: boolean; summary: string; events: number; purged: number; checkpoints: number };
  events: number;
  firstSeq?: number;
  lastSeq?: number;
  byKind: Record<string, number>;
  access: AccessRow[];
  decisions: Record<string, number>;
  holds: HoldOutcomeRow[];
  holdCounts: Record<string, number>;
  masking: Record<string, number>;
  logins: { success: number; failure: number; logout: number };
  keyChanges: number;
  policyChanges: number;
  policyVersions: number;
  exportsRecorded: number;
  retentionRuns: number;
  recordingViews: number;
  /** In a group: every chain the bundle carries, and every session of their events in the filter. */
  group?: { group: string; gateways: GatewaySummaryRow[]; sessions: SessionRow[] };
}

const esc = (v: unknown) =>
  String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const iso = (t: number | undefined) => (t === undefined ? '—' : new Date(t).toISOString().replace('.000Z', 'Z'));
const n = (v: number) => v.toLocaleString('en-US');

/** A table cell already written as HTML (escaped by whoever made it). */
interface Html {
  html: string;
}
const isHtml = (c: unknown): c is Html => typeof c === 'object' && c !== null && typeof (c as Html).html === 'string';

function table(headers: string[], rows: unknown[][], empty: string): string {
  if (!rows.length) return `<p class="muted">${esc(empty)}</p>`;
  return `<table><thead><tr>${headers.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows
    .map((r) => `<tr>${r.map((c) => `<td>${typeof c === 'number' ? n(c) : isHtml(c) ? c.html : esc(c)}</td>`).join('')}</tr>`)
    .join('')}</tbody></table>`;
}

/** Rows listed in full before the rest are left to the bundle's files. */
const LISTED = 1000;

interface Control {
  framework: string;
  id: string;
  title: string;
  evidence: string;
  files: string;
}

function controls(d: ReportData): Control[] {
  const requests = d.access.reduce((s, a) => s + a.requests + a.statements, 0);
  const held = Object.values(d.holdCounts).reduce((s, v) => s + v, 0);
  const masked = Object.values(d.masking).reduce((s, v) => s + v, 0);
  const denied = (d.decisions['deny'] ?? 0) + (d.holdCounts['denied'] ?? 0) + (d.holdCounts['expired'] ?? 0);
  const integrity = `${d.integrity.ok ? 'Verified intact' : 'VERIFICATION FAILED'}: ${d.integrity.summary}`;
  return [
    { framework: 'SOC 2', id: 'CC6.1', title: 'Logical access security', evidence: `${n(requests)} requests and statements, each attributed to an authenticated identity (${d.access.length} identity/connection pairs); ${n(d.logins.failure)} failed sign-ins recorded.`, files: 'events.jsonl, ocsf.jsonl (3002, 6003, 6005)' },
    { framework: 'SOC 2', id: 'CC6.2', title: 'Registration and authorization of users', evidence: `${n(d.keyChanges)} API key creations and revocations, ${n(d.logins.success)} console sign-ins, each a chained event.`, files: 'events.jsonl (key.*, auth.*)' },
    { framework: 'SOC 2', id: 'CC6.3', title: 'Role-based access, least privilege, segregation of duties', evidence: `${n(held)} requests held for approval (${n(d.holdCounts['approved'] ?? 0)} approved, ${n(d.holdCounts['denied'] ?? 0)} denied, ${n(d.holdCounts['expired'] ?? 0)} expired); requesters never approve their own holds; ${n(d.decisions['deny'] ?? 0)} requests denied by policy.`, files: 'holds.json, events.jsonl (hold.*, policy.decision), ocsf.jsonl (6004)' },
    { framework: 'SOC 2', id: 'CC7.2', title: 'Monitoring of system components for anomalies', evidence: `Every session recorded before forwarding; ${n(denied)} denials, ${n(masked)} masked values, ${n((d.byKind['http.error'] ?? 0) + (d.byKind['pg.error'] ?? 0))} errors in the window. ${integrity}.`, files: 'events.jsonl, report.html' },
    { framework: 'SOC 2', id: 'CC8.1', title: 'Change management', evidence: `${n(d.policyChanges)} policy and masking changes recorded in the window; ${n(d.policyVersions)} policy versions in force included.`, files: 'policy-versions.json, events.jsonl (policy.changed, masking.changed)' },
    { framework: 'ISO/IEC 27001:2022', id: 'A.5.15', title: 'Access control', evidence: `Ordered allow/deny/mask/hold rules decide every request: ${Object.entries(d.decisions).map(([k, v]) => `${k} ${n(v)}`).join(', ') || 'no rule decisions in the window'}.`, files: 'policy-versions.json, events.jsonl (policy.decision)' },
    { framework: 'ISO/IEC 27001:2022', id: 'A.5.18', title: 'Access rights', evidence: `Access rights granted and revoked through API keys and identity-provider groups (${n(d.keyChanges)} key changes); time-boxed grants only through recorded approvals.`, files: 'events.jsonl (key.*, hold.resolved)' },
    { framework: 'ISO/IEC 27001:2022', id: 'A.8.2', title: 'Privileged access rights', evidence: `Destructive or sensitive operations held for named approver groups: ${n(held)} holds, outcomes listed below with approvers and reasons.`, files: 'holds.json, ocsf.jsonl (6004)' },
    {
      framework: 'ISO/IEC 27001:2022',
      id: 'A.8.15',
      title: 'Logging',
      evidence: `Hash-chained log (RFC 8785 canonical JSON, SHA-256) under an RFC 6962 Merkle tree with Ed25519-signed checkpoints; ${n(d.events)} events exported, each with an inclusion proof against the checkpoint of ${n(d.checkpoint.treeSize)} events. ${integrity}.${others(d) ? ` ${n(others(d))} events of ${n(d.group!.gateways.length - 1)} other gateways' chains, each chain held to its own signed checkpoints and to the combined checkpoints the gateways cosigned.` : ''}`,
      files: `checkpoint.txt, checkpoints.jsonl, proofs.jsonl, hashes.bin, public-key.txt, manifest.json${d.group ? ', group-events.jsonl, group-hashes.bin, group-checkpoints.jsonl, group-combined.jsonl, group-gateways.json' : ''}`,
    },
    { framework: 'ISO/IEC 27001:2022', id: 'A.8.16', title: 'Monitoring activities', evidence: `${n(d.recordingViews)} recording views, ${n(d.exportsRecorded)} evidence exports and ${n(d.retentionRuns)} retention runs are themselves recorded; checkpoints are signed on a timer even when idle.`, files: 'events.jsonl (recording.viewed, export.created, retention.run), checkpoints.jsonl' },
  ];
}

/** The shortest start of each chain id (at least 8 characters of its fingerprint) that tells it from the others. */
function shortIds(ids: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const id of ids) {
    const base = id.startsWith('SHA256:') ? 'SHA256:'.length : 0;
    let len = base + 8;
    while (len < id.length && ids.some((o) => o !== id && o.startsWith(id.slice(0, len)))) len++;
    out.set(id, len < id.length ? `${id.slice(0, len)}…` : id);
  }
  return out;
}

/** Events of the other chains of a group bundle. */
const others = (d: ReportData) => (d.group ? d.group.gateways.filter((g) => !g.self).reduce((s, g) => s + g.events, 0) : 0);

/** The per-gateway part of a group bundle's report: a summary of each chain, and every session. */
function groupSections(d: ReportData, gw: (id: string) => Html): string {
  const g = d.group!;
  const summary = table(
    ['Gateway', 'Events in this bundle', 'Sessions', 'Holds', 'Chain head', 'Newest signed checkpoint'],
    g.gateways.map((x) => [
      { html: `${esc(x.name || 'gateway')}${x.self ? ' (exported this bundle)' : ''}<br><code>${esc(x.id)}</code>` },
      x.events,
      x.sessions,
      x.holds,
      { html: `seq ${n(x.head.size)}${x.head.hash ? `<br><code>${esc(x.head.hash)}</code>` : ''}` },
      x.checkpoint ? `${n(x.checkpoint.treeSize)} events, signed ${iso(x.checkpoint.time)}${x.self ? " (this bundle's checkpoint)" : ''}` : 'none',
    ]),
    'No chains.',
  );
  const sessions = table(
    ['Gateway', 'Session', 'Identity', 'Connection', 'Events', 'Requests', 'First', 'Last'],
    g.sessions.slice(0, LISTED).map((s) => [gw(s.gateway), s.id, s.actorName && s.actor ? `${s.actorName} (${s.actor})` : (s.actor ?? ''), s.connection ?? '', s.events, s.requests, iso(s.first), iso(s.last)]),
    'No sessions in this window.',
  );
  return `
<h2>Gateways</h2>
<p class="muted">Group <code>${esc(g.group)}</code>: ${n(g.gateways.length)} chains, one per gateway. Every figure in this report covers all of them, and every row names the gateway whose chain recorded it. A chain's head is its last event in this bundle; it may lie past the chain's own newest checkpoint, where a combined checkpoint the gateways cosigned commits to it.</p>
${summary}

<h2>Sessions</h2>
${sessions}${g.sessions.length > LISTED ? `<p class="muted">${n(g.sessions.length - LISTED)} more in events.jsonl and group-events.jsonl.</p>` : ''}
`;
}

export function renderReport(d: ReportData): string {
  const f = d.filter;
  const scope = [
    `from ${f.from !== undefined ? iso(f.from) : 'the first event'}`,
    `to ${f.to !== undefined ? iso(f.to) : 'the export'}`,
    f.user ? `user ${f.user}` : 'all users',
    f.connection ? `connection ${f.connection}` : 'all connections',
  ].join(', ');
  const status = d.integrity.ok ? '<span class="ok">INTACT</span>' : '<span class="bad">FAILED</span>';
  const kinds = Object.entries(d.byKind).sort((a, b) => b[1] - a[1]);
  // In a group, rows name the gateway whose chain recorded them: its host name and the start of its
  // chain id (the full id in the Gateways table, and in the label's title).
  const names = new Map((d.group?.gateways ?? []).map((g) => [g.id, g]));
  const short = shortIds([...names.keys()]);
  const label = (id: string) => `<span class="gw">${esc(names.get(id)?.name || 'gateway')} <code title="${esc(id)}">${esc(short.get(id) ?? id)}</code></span>`;
  const gw = (id: string): Html => ({ html: label(id) });
  const byGateway = (row: { gateway?: string }): unknown[] => (d.group ? [gw(row.gateway ?? '')] : []);
  const gatewayHeader = d.group ? ['Gateway'] : [];
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Custody evidence report — ${esc(iso(d.generatedAt))}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2430;margin:2rem auto;max-width:1100px;padding:0 1rem}
h1{font-size:1.6rem;margin:0 0 .25rem}h2{font-size:1.15rem;margin:2rem 0 .5rem;border-bottom:1px solid #d7dce3;padding-bottom:.25rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{border:1px solid #d7dce3;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f2f4f7}td{font-variant-numeric:tabular-nums}.muted{color:#6b7480}.ok{color:#0a7a2f;font-weight:700}.bad{color:#b3261e;font-weight:700}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace;word-break:break-all}dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dt{color:#6b7480}
@media print{body{margin:0}h2{break-after:avoid}table{break-inside:auto}}${d.group ? '\n.gw code{white-space:nowrap;word-break:normal}' : ''}
</style></head><body>
<h1>Custody evidence report</h1>
<p class="muted">${esc(d.product)} · log <code>${esc(d.origin)}</code> · generated ${esc(iso(d.generatedAt))} by ${esc(d.generatedBy)}</p>
<dl>
<dt>Scope</dt><dd>${esc(scope)}</dd>
<dt>Events exported</dt><dd>${n(d.events)}${d.firstSeq !== undefined ? ` (seq ${n(d.firstSeq)} – ${n(d.lastSeq!)})` : ''}${d.group ? ` of this gateway, and ${n(others(d))} of the group's ${n(d.group.gateways.length - 1)} other gateways (group-events.jsonl)` : ''}</dd>
<dt>Integrity</dt><dd>${status} — ${esc(d.integrity.summary)}</dd>
<dt>Checkpoint</dt><dd>${n(d.checkpoint.treeSize)} events, root <code>${esc(d.checkpoint.rootHash)}</code>, signed ${esc(iso(d.checkpoint.time))}</dd>
<dt>Signing key</dt><dd><code>${esc(d.key.verifierKey)}</code><br>fingerprint <code>${esc(d.key.fingerprint)}</code></dd>
</dl>
${
  d.group
    ? `<p class="muted">Check this bundle offline with <code>custody verify &lt;bundle&gt; --keys FILE</code>, FILE listing the group's keys you hold (<code>custody verify --store URL --show-keys</code>); this gateway's fingerprint is <code>${esc(d.key.fingerprint)}</code>.</p>
${groupSections(d, gw)}`
    : `<p class="muted">Check this bundle offline with <code>custody verify &lt;bundle&gt; --key ${esc(d.key.fingerprint)}</code>. The fingerprint should match the one you hold from the gateway's console or CLI (<code>custody verify --show-key</code>).</p>`
}

<h2>Control mapping</h2>
${table(['Framework', 'Control', 'Title', 'Evidence in this bundle', 'Files'], controls(d).map((c) => [c.framework, c.id, c.title, c.evidence, c.files]), '')}

<h2>Who accessed what</h2>
${table(
  [...gatewayHeader, 'Identity', 'Name', 'Connection', 'HTTP requests', 'SQL statements', 'Sessions', 'First', 'Last'],
  d.access.map((a) => [...byGateway(a), a.actor, a.actorName ?? '', a.connection, a.requests, a.statements, a.sessions, iso(a.first), iso(a.last)]),
  'No requests or statements in this window.',
)}

<h2>Approvals and denials</h2>
${table(['Outcome', 'Count'], Object.entries(d.holdCounts).map(([k, v]) => [k, v]), 'No holds in this window.')}
${table(
  [...gatewayHeader, 'Time', 'Hold', 'Outcome', 'Connection', 'Rule', 'Requester', 'Decided by', 'Reason'],
  d.holds.slice(0, LISTED).map((h) => [
    ...byGateway(h),
    iso(h.time),
    h.id,
    h.state,
    h.connection ?? '',
    h.rule,
    h.requester,
    d.group && h.votes?.length ? { html: h.votes.map((v) => `${esc(v.byName)} (${esc(v.decision)}) on ${label(v.gateway)}`).join('<br>') } : h.decidedBy.join(', '),
    h.reason,
  ]),
  '',
)}${d.holds.length > LISTED ? `<p class="muted">${n(d.holds.length - LISTED)} more in holds.json and events.jsonl.</p>` : ''}
<h3>Policy decisions</h3>
${table(['Action', 'Count'], Object.entries(d.decisions).map(([k, v]) => [k, v]), 'No policy rule matched in this window (default allow).')}

<h2>Masking by detector type</h2>
${table(['Type', 'Values masked'], Object.entries(d.masking).sort((a, b) => b[1] - a[1]).map(([k, v]) => [k, v]), 'Nothing was masked in this window.')}

<h2>Sign-ins</h2>
${table(['Successful', 'Failed', 'Sign-outs'], [[d.logins.success, d.logins.failure, d.logins.logout]], '')}

<h2>Events by kind</h2>
${table(['Kind', 'Count'], kinds.map(([k, v]) => [k, v]), 'No events.')}

<h2>Integrity</h2>
<p>${status} ${esc(d.integrity.summary)}</p>
<p>Each event is canonical JSON (RFC 8785) chained by SHA-256 to the one before it; the event hashes are the leaves of an RFC 6962 Merkle tree whose root is signed as a C2SP checkpoint with Ed25519. <code>proofs.jsonl</code> holds an inclusion proof for every exported event against <code>checkpoint.txt</code>; <code>hashes.bin</code> holds every event hash up to it, so a later copy of the log can be held to this checkpoint (<code>custody verify &lt;data dir&gt; --since-checkpoint &lt;this bundle&gt;</code>). ${n(d.integrity.purged)} payloads were purged by retention; their hashes remain in the chain.</p>${
  d.group
    ? `\n<p>The status above is this gateway's store, verified at export. The other gateways' chains are as the shared store held them: <code>custody verify &lt;bundle&gt; --keys FILE</code> checks each against its own key's signed checkpoints and the combined checkpoints every gateway cosigned, and who may sign from the keys you pin.</p>`
    : ''
}
</body></html>
`;
}
