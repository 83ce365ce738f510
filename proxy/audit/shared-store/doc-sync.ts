/**
 * Policies, masking rules and console connections shared by the gateways of a group
 * (docs/SCALE-OUT.md, "One configuration"). A `connections` version is the full set of connections
 * added or edited from the console, without secret values (proxy/connections/store.ts versions it
 * on every console change). Each gateway keeps its versions in its own `policy_versions` table, records
 * each in its own chain, and enforces its latest, as a lone gateway does; the shared store's
 * `custody_documents` is where versions meet, each signed by the gateway that made it (its
 * checkpoint key), so whoever can write to the store cannot set the rules:
 *
 * - push: a version made on this gateway by a person (`source: console`) goes to the store. The
 *   config file's content seeds the store only when the group has no version of that kind yet: a
 *   gateway that joins with its own config file takes the group's rules, not the other way round.
 * - pull: the store's newest version of each kind that a trusted gateway signed (key-sync.ts's
 *   TrustSet) is handed to the gateway's thread when it differs from what this gateway enforces;
 *   the gateway checks it as it checks a console edit, records it as its own version (`source:
 *   group`, naming the gateway and version it came from) and enforces it. Versions recorded that
 *   way are never pushed back.
 *
 * The newest signed version wins (the store's change order, config-changes.ts, orders them), so two edits made at once on
 * two gateways end with every gateway enforcing the later one.
 */
import { createHash } from 'node:crypto';
import type Database from 'better-sqlite3';
import type pg from 'pg';
import { canonicalize } from '../../../shared/canonical-json';
import type { ConfigMirror, DocumentRow } from './config-changes';
import type { TrustSet } from './key-sync';

export type DocumentKindName = 'connections' | 'policies' | 'masking';
/**
 * Pulled and applied in this order: a policy version naming a connection that arrives in the same
 * round is checked once the connection exists here.
 */
export const DOCUMENT_KINDS: readonly DocumentKindName[] = ['connections', 'policies', 'masking'];

/** A version from the group for the gateway's thread to check, record and enforce. */
export interface PulledDocument {
  kind: DocumentKindName;
  content: Record<string, unknown>;
  gateway: string;
  version: number;
  author: string;
  authorName: string;
}

/** Fields of a stored version's body that are not its content. */
const EXTRA = new Set(['authorName', 'source', 'note']);

function contentOf(body: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(body).filter(([k]) => !EXTRA.has(k)));
}

const contentHash = (content: unknown) => createHash('sha256').update(canonicalize(content)).digest('hex');
const signedText = (kind: string, hash: string, gateway: string, version: number, createdAt: number) => `custody-document/v1\n${canonicalize([kind, hash, gateway, version, createdAt])}`;

interface LocalVersion {
  version: number;
  author: string;
  created_at: number;
  body: string;
}

export class DocumentSync {
  /** Per kind, the newest local version already considered for pushing. */
  private readonly pushed = new Map<DocumentKindName, number>();
  /** Per kind, the store sequence of the newest version handed over (or found already enforced). */
  private readonly applied = new Map<DocumentKindName, number>();

  constructor(
    private readonly db: Database.Database,
    private readonly gateway: string,
    /** This gateway's signature over a text, base64 (its checkpoint key: shipper-worker.ts). */
    private readonly sign: (text: string) => Promise<string>,
  ) {}

  /** Per kind, the newest version this gateway wrote to the store, and the newest of its own the store's rows have shown it. */
  private readonly wrote = new Map<DocumentKindName, number>();
  private readonly seen = new Map<DocumentKindName, number>();

  /** Pushes this gateway's new versions of each kind. */
  async push(c: pg.Client): Promise<void> {
    for (const kind of DOCUMENT_KINDS) await this.pushKind(c, kind);
  }

  /** The group's newest version of each kind that differs from what this gateway enforces, from the store's rows as `mirror` last read them. */
  pull(mirror: ConfigMirror, trust: TrustSet): PulledDocument[] {
    return DOCUMENT_KINDS.map((kind) => this.pullKind(mirror, kind, trust)).filter((d) => d !== undefined);
  }

  private local(kind: DocumentKindName, after: number): LocalVersion[] {
    return this.db.prepare('SELECT version, author, created_at, body FROM policy_versions WHERE kind = ? AND version > ? ORDER BY version').all(kind, after) as LocalVersion[];
  }

  private async pushKind(c: pg.Client, kind: DocumentKindName): Promise<void> {
    let cursor = this.pushed.get(kind);
    let seed = false;
    if (cursor === undefined) {
      const mine = (await c.query<{ v: number | null }>('SELECT max(version) AS v FROM custody_documents WHERE gateway = $1 AND kind = $2', [this.gateway, kind])).rows[0]?.v ?? null;
      const any = (await c.query('SELECT 1 FROM custody_documents WHERE kind = $1 LIMIT 1', [kind])).rowCount! > 0;
      const latest = (this.db.prepare('SELECT max(version) AS v FROM policy_versions WHERE kind = ?').get(kind) as { v: number | null }).v ?? 0;
      if (mine !== null) {
        cursor = Number(mine);
        this.wrote.set(kind, cursor);
      }
      else if (!any && latest > 0) {
        // An empty group takes this gateway's rules in force as its first version.
        cursor = latest - 1;
        seed = true;
      } else cursor = latest;
    }
    for (const v of this.local(kind, cursor)) {
      const body = JSON.parse(v.body) as Record<string, unknown>;
      cursor = v.version;
      if (!seed && body['source'] !== 'console') continue;
      const content = contentOf(body);
      const hash = contentHash(content);
      const signature = await this.sign(signedText(kind, hash, this.gateway, v.version, v.created_at));
      await c.query(
        'INSERT INTO custody_documents (kind, content, hash, gateway, version, author, author_name, created_at, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (gateway, kind, version) DO NOTHING',
        [kind, canonicalize(content), hash, this.gateway, v.version, v.author, String(body['authorName'] ?? v.author), v.created_at, signature],
      );
      this.wrote.set(kind, v.version);
    }
    this.pushed.set(kind, cursor);
  }

  private pullKind(mirror: ConfigMirror, kind: DocumentKindName, trust: TrustSet): PulledDocument | undefined {
    // Nothing is taken while this gateway holds a version newer than the rows read: one made here
    // since the last push, or pushed but not read back yet. Older rows would undo it (they are
    // older in the store's order too), so the round after the read decides.
    for (const x of mirror.documents) if (x.kind === kind && x.gateway === this.gateway) this.seen.set(kind, Math.max(this.seen.get(kind) ?? 0, x.version));
    if ((this.wrote.get(kind) ?? 0) > (this.seen.get(kind) ?? 0)) return undefined;
    const newest = (this.db.prepare('SELECT max(version) AS v FROM policy_versions WHERE kind = ?').get(kind) as { v: number | null }).v ?? 0;
    if (newest > (this.pushed.get(kind) ?? Infinity)) return undefined;
    const after = this.applied.get(kind) ?? 0;
    // The newest version a trusted gateway signed, whose content is what it signed.
    let r: DocumentRow | undefined;
    for (const x of mirror.documents) {
      if (x.kind !== kind || x.change <= after || (r && r.change > x.change)) continue;
      if (contentHash(JSON.parse(x.content)) === x.hash && trust.verify(x.gateway, signedText(kind, x.hash, x.gateway, x.version, x.created_at), x.signature)) r = x;
    }
    if (!r) return undefined;
    const taken = r.change;
    this.applied.set(kind, taken);
    // Older versions of this kind can no longer win.
    mirror.documents = mirror.documents.filter((x) => x.kind !== kind || x.change > taken);
    const latest = this.db.prepare('SELECT body FROM policy_versions WHERE kind = ? ORDER BY version DESC LIMIT 1').get(kind) as { body: string } | undefined;
    if (latest && contentHash(contentOf(JSON.parse(latest.body) as Record<string, unknown>)) === r.hash) return undefined;
    return { kind, content: JSON.parse(r.content) as Record<string, unknown>, gateway: r.gateway, version: r.version, author: r.author, authorName: r.author_name };
  }
}
