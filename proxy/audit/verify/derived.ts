/**
 * What `custody verify BUNDLE` recomputes from the events it verified: `ocsf.jsonl` and
 * `holds.json` (docs/AUDIT.md, "Evidence export"). The manifest's digests bind these files to the
 * gateway that exported the bundle, which signs the manifest; they do not bind them to the events.
 * So every OCSF record is mapped again from the event it names with the exporter's mapper
 * (ocsf.ts), under the context the manifest gives (`ocsf`: the product and each connection's kind,
 * which the events do not say), and compared canonically; every exported event the export maps
 * must have its record; and each hold in holds.json must say what the `hold.created`, `hold.vote`
 * and `hold.resolved` events in the bundle say of it. Each mismatch names the line or hold, the
 * chain and the seq.
 *
 * The exporter uses HoldEvidence and holdsAsOfEvents to write holds.json as the exported events
 * leave each hold, so what verify holds it to is what was written. A bundle exported before the
 * manifest carried `ocsf` is held to its manifest only (its holds.json was not written this way).
 *
 * In a filtered bundle an event outside the filter is not exported, so what cannot be told from
 * the events it does carry is not required: a hold whose hold.created is not carried, a vote
 * without its hold.vote, a hold not pending without its hold.resolved; and the rows carried only to
 * say who may sign may lack a record.
 */
import type { HoldState, HoldView, HoldVote } from '../../../shared/holds';
import { type BundleEvent, type BundleManifest, GROUP_TRUST_KINDS } from '../bundle-format';
import { canonicalPayload } from '../chain';
import { ocsfJson, type OcsfContext } from '../ocsf';
import { safeParse } from './checks';

export interface DerivedFailure {
  chain: string;
  seq?: number;
  problem: 'derived-mismatch';
  message: string;
}

export interface DerivedReport {
  /**
   * False for a bundle exported before these files were derived from the exported events alone
   * (its manifest has no `ocsf`): they are then held to the manifest only, as before.
   */
  checked: boolean;
  /** OCSF records checked. */
  ocsfRecords: number;
  /** Holds in holds.json held to their events. */
  holds: number;
  failures: DerivedFailure[];
}

type Obj = Record<string, unknown>;
const objectOf = (v: unknown): Obj => (v && typeof v === 'object' ? (v as Obj) : {});

/** A hold.* event of a chain, as the export reads it. */
export interface HoldEventInput {
  seq: number;
  time: number;
  kind: string;
  actor: string | null;
  payload: unknown;
}

interface VoteEvidence {
  gateway: string;
  seq: number;
  by: string;
  byName: string;
  decision: string;
  reason: string;
  at: number;
  person?: string;
}

interface HoldEvents {
  created?: { gateway: string; seq: number; view: Obj };
  votes: VoteEvidence[];
  resolved?: { gateway: string; seq: number; state: string };
}

/** The hold.created, hold.vote and hold.resolved events of every chain of a bundle, by hold id. */
export class HoldEvidence {
  readonly holds = new Map<string, HoldEvents>();

  add(gateway: string, e: HoldEventInput): void {
    if (e.kind !== 'hold.created' && e.kind !== 'hold.vote' && e.kind !== 'hold.resolved') return;
    const p = objectOf(e.payload);
    if (typeof p['id'] !== 'string') return;
    let h = this.holds.get(p['id']);
    if (!h) this.holds.set(p['id'], (h = { votes: [] }));
    if (e.kind === 'hold.created') h.created ??= { gateway, seq: e.seq, view: p };
    else if (e.kind === 'hold.vote') {
      h.votes.push({ gateway, seq: e.seq, by: e.actor ?? '', byName: String(p['byName'] ?? ''), decision: String(p['decision'] ?? ''), reason: String(p['reason'] ?? ''), at: e.time, ...(typeof p['person'] === 'string' ? { person: p['person'] } : {}) });
    } else h.resolved ??= { gateway, seq: e.seq, state: String(p['state'] ?? '') };
  }
}

/** A vote of a hold's view and a hold.vote event are one: same voter, decision, reason, time and gateway cast on. */
function sameVote(v: HoldVote, e: VoteEvidence, holdGateway: string): boolean {
  return v.by === e.by && v.decision === e.decision && v.reason === e.reason && v.at === e.at && (v.gateway ?? holdGateway) === e.gateway;
}

type ListedHold = HoldView & { gateway?: string; gatewayName?: string };

/**
 * holds.json as the exported events leave each hold: each carried vote among its votes and its
 * state the one its carried hold.resolved gives (a hold's row can lag its chain). `full`: every
 * event up to each chain's cut is exported, so a hold whose hold.created is not is left out, and a
 * vote or an end that is not is not evidence yet (the hold is then pending); a carried
 * hold.created whose hold has no row is listed from the event. `own`: the exporting gateway's id;
 * `names`: in a group, each chain's gateway name (holds then name their gateway).
 */
export function holdsAsOfEvents(listed: readonly ListedHold[], ev: HoldEvidence, own: string, full: boolean, names?: ReadonlyMap<string, string>): ListedHold[] {
  const out: ListedHold[] = [];
  const seen = new Set<string>();
  for (const h of listed) {
    const g = h.gateway ?? own;
    const r = ev.holds.get(h.id);
    seen.add(h.id);
    if (!r?.created) {
      if (!full) out.push(h);
      continue;
    }
    const listedVotes = Array.isArray(h.votes) ? h.votes : [];
    const votes = full ? listedVotes.filter((v) => r.votes.some((e) => sameVote(v, e, g))) : [...listedVotes];
    for (const e of r.votes) {
      if (!votes.some((v) => sameVote(v, e, g))) votes.push({ by: e.by, ...(e.person ? { person: e.person } : {}), byName: e.byName, decision: e.decision as HoldVote['decision'], reason: e.reason, at: e.at, ...(e.gateway !== g ? { gateway: e.gateway } : {}) });
    }
    votes.sort((x, y) => x.at - y.at);
    const next: ListedHold = { ...h, votes };
    if (r.resolved) next.state = r.resolved.state as HoldState;
    else if (full && h.state !== 'pending') {
      next.state = 'pending';
      delete next.resolvedAt;
      delete next.resolution;
    }
    out.push(next);
  }
  if (full) {
    for (const [id, r] of ev.holds) {
      if (seen.has(id) || !r.created) continue;
      const { actorName: _name, ...view } = r.created.view;
      const listedView = holdsAsOfEvents([{ ...(view as unknown as HoldView), ...(names ? { gateway: r.created.gateway, gatewayName: names.get(r.created.gateway) ?? '' } : {}) }], ev, own, full, names)[0]!;
      out.push(listedView);
    }
    out.sort((x, y) => x.createdAt - y.createdAt);
  }
  return out;
}

/** Lines of a bundle file, parsed (a line that cannot be read is undefined), with their 1-based numbers. */
function* jsonLines(buf: Buffer | undefined): Generator<{ line: number; text: string; value: unknown }> {
  if (!buf) return;
  let start = 0;
  let n = 0;
  while (start < buf.length) {
    let end = buf.indexOf(0x0a, start);
    if (end < 0) end = buf.length;
    n++;
    if (end > start) {
      const text = buf.toString('utf8', start, end);
      yield { line: n, text, value: safeParse(text) };
    }
    start = end + 1;
  }
}

/** Where two JSON values first differ: a path and both sides (undefined: absent on that side). */
function firstDifference(got: unknown, want: unknown, path = ''): { path: string; got: unknown; want: unknown } | undefined {
  if (got && want && typeof got === 'object' && typeof want === 'object' && Array.isArray(got) === Array.isArray(want)) {
    const keys = [...new Set([...Object.keys(want), ...Object.keys(got)])];
    for (const k of keys) {
      const d = firstDifference((got as Obj)[k], (want as Obj)[k], Array.isArray(want) ? `${path}[${k}]` : path ? `${path}.${k}` : k);
      if (d) return d;
    }
    return undefined;
  }
  return canonicalOf(got) === canonicalOf(want) ? undefined : { path: path || '(the record)', got, want };
}

function canonicalOf(v: unknown): string {
  try {
    return v === undefined ? 'undefined' : canonicalPayload(v);
  } catch {
    return JSON.stringify(v) ?? 'undefined';
  }
}

const shown = (v: unknown) => (v === undefined ? 'absent' : JSON.stringify(v).slice(0, 200));

type ChainEvent = BundleEvent & { gateway: string };

/**
 * Holds a bundle's ocsf.jsonl and holds.json to its events. `own`: the exporting gateway's id (the
 * fingerprint of public-key.txt). Run after the events themselves verified.
 */
export function verifyDerived(files: ReadonlyMap<string, Buffer>, own: string): DerivedReport {
  const failures: DerivedFailure[] = [];
  const fail = (chain: string, seq: number | undefined, message: string) => failures.push({ chain, ...(seq !== undefined ? { seq } : {}), problem: 'derived-mismatch', message });
  const manifest = objectOf(safeParse(files.get('manifest.json')?.toString('utf8') ?? '')) as Partial<BundleManifest>;
  const section = manifest.group;
  const filter = manifest.filter ?? {};
  const full = !Object.values(filter).some((v) => v !== undefined && v !== null && v !== '');
  const context = manifest.ocsf;
  if (!context) return { checked: false, ocsfRecords: 0, holds: 0, failures };

  // The events, in the order the export mapped them: the exporting gateway's own, then the others' in group-events.jsonl.
  const ownEvents: ChainEvent[] = [];
  for (const l of jsonLines(files.get('events.jsonl'))) if (l.value && typeof l.value === 'object') ownEvents.push({ ...(l.value as BundleEvent), gateway: own });
  const otherEvents: ChainEvent[] = [];
  if (section) for (const l of jsonLines(files.get('group-events.jsonl'))) if (l.value && typeof l.value === 'object' && (l.value as ChainEvent).gateway !== own) otherEvents.push(l.value as ChainEvent);

  // OCSF: every record mapped again from the event it names.
  let ocsfRecords = 0;
  {
    const names = new Map((section?.chains ?? []).map((c) => [c.gateway, c.name]));
    const base: OcsfContext = {
      connectionKinds: new Map(Object.entries(objectOf(context.connectionKinds)).map(([k, v]) => [k, String(v)])),
      actorNames: new Map(),
      product: { name: String(context.product?.name ?? ''), version: String(context.product?.version ?? '') },
      origin: String(manifest.origin ?? ''),
      ...(section ? { gateway: { id: own, name: names.get(own) || String(manifest.origin ?? '') } } : {}),
    };
    const records = new Map<string, { line: number; value: Obj }>();
    for (const l of jsonLines(files.get('ocsf.jsonl'))) {
      ocsfRecords++;
      const custody = objectOf(objectOf(objectOf(l.value)['unmapped'])['custody']);
      const seq = custody['seq'];
      const chain = section ? custody['gateway'] : own;
      if (typeof chain !== 'string' || typeof seq !== 'number') {
        fail('', undefined, `ocsf.jsonl line ${l.line}: not an OCSF record naming an exported event (its unmapped.custody has no ${typeof seq !== 'number' ? 'seq' : 'gateway'})`);
        continue;
      }
      const key = `${chain} ${seq}`;
      const had = records.get(key);
      if (had) fail(chain, seq, `ocsf.jsonl line ${l.line} (chain ${chain} seq ${seq}): a second record of one event (the first is line ${had.line})`);
      else records.set(key, { line: l.line, value: objectOf(l.value) });
    }
    const contexts = new Map<string, OcsfContext>();
    const contextOf = (gateway: string): OcsfContext => {
      if (gateway === own) return base;
      let c = contexts.get(gateway);
      if (!c) contexts.set(gateway, (c = { ...base, origin: gateway, gateway: { id: gateway, name: names.get(gateway) ?? '' } }));
      return c;
    };
    const trust = new Set<string>(GROUP_TRUST_KINDS);
    // Rows carried only to say who may sign have no record; under a time or connection filter those outside it are known to be such.
    const mayLack = (e: ChainEvent) =>
      e.gateway !== own && trust.has(e.kind) && (!!filter.user || (filter.from !== undefined && e.time < filter.from) || (filter.to !== undefined && e.time > filter.to) || (!!filter.connection && e.connection !== filter.connection));
    for (const e of [...ownEvents, ...otherEvents]) {
      const key = `${e.gateway} ${e.seq}`;
      const record = records.get(key);
      if (!record && mayLack(e)) continue;
      const payload = e.purged ? null : e.payload;
      const p = objectOf(payload);
      // As the export does for each event it maps: a display name seen in an earlier event names the actor in later records.
      if (e.actor && typeof p['actorName'] === 'string' && !base.actorNames.has(e.actor)) base.actorNames.set(e.actor, p['actorName']);
      if (!record) {
        fail(e.gateway, e.seq, `ocsf.jsonl (chain ${e.gateway} seq ${e.seq}): no record of this exported event (${e.kind})`);
        continue;
      }
      records.delete(key);
      const ctx = contextOf(e.gateway);
      const want = safeParse(ocsfJson({ seq: e.seq, time: e.time, kind: e.kind, session: e.session, actor: e.actor, connection: e.connection, payload, masked: Array.isArray(e.spans) ? e.spans.length : 0, hash: e.hash }, ctx));
      const d = firstDifference(record.value, want);
      if (d) fail(e.gateway, e.seq, `ocsf.jsonl line ${record.line} (chain ${e.gateway} seq ${e.seq}): ${d.path} is ${shown(d.got)}, but the event (${e.kind}) maps to ${shown(d.want)}`);
    }
    for (const [key, r] of records) {
      const [chain, seq] = key.split(' ') as [string, string];
      fail(chain, Number(seq), `ocsf.jsonl line ${r.line} (chain ${chain} seq ${seq}): the bundle exports no such event of that chain`);
    }
  }

  // holds.json: each hold against its hold.* events.
  const ev = new HoldEvidence();
  for (const e of [...ownEvents, ...otherEvents]) ev.add(e.gateway, { seq: e.seq, time: e.time, kind: e.kind, actor: e.actor, payload: e.purged ? null : e.payload });
  const listed = safeParse(files.get('holds.json')?.toString('utf8') ?? '[]');
  let holds = 0;
  if (!Array.isArray(listed)) fail('', undefined, 'holds.json: not a list of holds');
  else {
    const seen = new Set<string>();
    for (const raw of listed as ListedHold[]) {
      holds++;
      const id = String(objectOf(raw)['id'] ?? '');
      const g = typeof raw.gateway === 'string' ? raw.gateway : own;
      const at = (chain: string, seq?: number) => `holds.json hold ${id} (chain ${chain}${seq !== undefined ? ` seq ${seq}` : ''})`;
      if (seen.has(id)) {
        fail(g, undefined, `${at(g)}: listed twice`);
        continue;
      }
      seen.add(id);
      const r = ev.holds.get(id);
      if (r?.created && r.created.gateway !== g) {
        fail(g, r.created.seq, `${at(g)}: its gateway is ${g}, but its hold.created is at seq ${r.created.seq} of chain ${r.created.gateway}`);
        continue;
      }
      if (!r?.created) {
        // A filtered bundle may not carry it (created outside the events' filter); a full one carries every hold.created up to each cut.
        if (full) fail(g, undefined, `${at(g)}: the bundle exports no hold.created of this hold in chain ${g}`);
        continue;
      }
      const votes = Array.isArray(raw.votes) ? raw.votes : [];
      for (const e of r.votes) {
        if (!votes.some((v) => sameVote(v, e, g))) fail(e.gateway, e.seq, `${at(e.gateway, e.seq)}: the vote that hold.vote records (${e.byName}: ${e.decision}, ${new Date(e.at).toISOString()}) is missing from its votes`);
      }
      if (full) {
        for (const v of votes) {
          if (!r.votes.some((e) => sameVote(v, e, g))) fail(v.gateway ?? g, undefined, `${at(v.gateway ?? g)}: its vote by ${String(v.byName)} (${String(v.decision)}, ${typeof v.at === 'number' ? new Date(v.at).toISOString() : String(v.at)}) has no hold.vote in the bundle`);
        }
      }
      if (r.resolved && raw.state !== r.resolved.state) fail(r.resolved.gateway, r.resolved.seq, `${at(r.resolved.gateway, r.resolved.seq)}: its state is ${String(raw.state)}, but its hold.resolved says ${r.resolved.state}`);
      else if (!r.resolved && full && raw.state !== 'pending') fail(g, r.created.seq, `${at(g, r.created.seq)}: its state is ${String(raw.state)}, but the bundle exports no hold.resolved of it`);
    }
    if (full) {
      for (const [id, r] of ev.holds) {
        if (r.created && !seen.has(id)) fail(r.created.gateway, r.created.seq, `holds.json (chain ${r.created.gateway} seq ${r.created.seq}): hold ${id}, whose hold.created the bundle exports, is missing`);
      }
    }
  }
  return { checked: true, ocsfRecords, holds, failures };
}
