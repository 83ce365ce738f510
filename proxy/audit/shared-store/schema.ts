/**
 * The shared PostgreSQL store's schema (docs/SCALE-OUT.md): numbered migrations, append-only like
 * the SQLite ones (proxy/audit/migrations.ts), applied in one transaction under an advisory lock so
 * gateways starting together migrate once. And how a gateway reaches the store: the config's URL
 * with the password from `store.secret`.
 */
import pg from 'pg';
import type { StoreConfig } from '../../../shared/config';
import { readSecret } from '../../config';
import { canonicalEventBody, chainHashOfText, sha256hex } from '../chain';
import type { EventRef } from '../../../shared/events';

export interface PgMigration {
  version: number;
  name: string;
  sql: string;
}

/** Advisory lock keys (pg_advisory_xact_lock): migrations, enrolment (who is first), hold writes. */
export const MIGRATION_LOCK = 0x63757374; // 'cust'
export const ENROLMENT_LOCK = 0x63757375;
/** Every write to the hold tables (custody_holds, custody_hold_votes, custody_grants) takes this lock first. */
export const HOLDS_LOCK = 0x63757376;
/** Every write to custody_console_session_ends takes this lock first (ends are read by change number). */
export const CONSOLE_ENDS_LOCK = 0x63757377;
/** Held (session-level, tried, never waited for) by the gateway making a combined checkpoint: makers take turns. */
export const COMBINED_LOCK = 0x63757378;

/**
 * The session index (`custody_sessions`) of every chain, counted from its shipped events as the
 * SQLite index counts them (chain-writer.ts, `countInSession`): migration 6 fills it for chains
 * shipped before it; from then on the shipper keeps it (session-index.ts).
 */
export const SESSION_INDEX_BACKFILL = `
      INSERT INTO custody_sessions (gateway, id, connection, protocol, actor, actor_name, started_at, last_event_at, ended_at, events, requests, holds, masked, denied, errors)
      SELECT gateway, session,
        (array_agg(connection ORDER BY seq))[1],
        (array_agg(CASE WHEN kind LIKE 'pg.%' THEN 'postgres' WHEN kind LIKE 'http.%' THEN 'http' WHEN kind LIKE 'ssh.%' THEN 'ssh'
                        WHEN kind = 'session.start' AND payload IS NOT NULL THEN CASE WHEN (payload::jsonb ->> 'protocol') IN ('postgres', 'http', 'ssh') THEN payload::jsonb ->> 'protocol' ELSE 'control' END
                        ELSE 'control' END ORDER BY seq))[1],
        (array_agg(actor ORDER BY seq))[1],
        max(CASE WHEN kind = 'session.start' AND payload IS NOT NULL THEN payload::jsonb ->> 'actorName' END),
        min(time), max(time), max(CASE WHEN kind = 'session.end' THEN time END),
        count(*),
        count(CASE WHEN kind IN ('http.request', 'pg.statement', 'ssh.request', 'ssh.sftp') THEN 1 END),
        count(CASE WHEN kind = 'hold.created' THEN 1 END),
        coalesce(sum(CASE WHEN spans IS NOT NULL THEN json_array_length(spans::json) END), 0),
        count(CASE WHEN kind = 'policy.decision' AND payload IS NOT NULL THEN CASE WHEN payload::jsonb ->> 'action' IN ('deny', 'denied', 'expired') THEN 1 END
                   WHEN kind = 'hold.resolved' AND payload IS NOT NULL THEN CASE WHEN payload::jsonb ->> 'state' IN ('deny', 'denied', 'expired') THEN 1 END END),
        count(CASE WHEN kind IN ('http.error', 'pg.error', 'ssh.error') THEN 1 END)
      FROM custody_events WHERE session IS NOT NULL GROUP BY gateway, session`;

/** Every write to a group configuration table takes this lock first (migration 9's trigger). */
export const CONFIG_LOCK = 0x63757379;
/** Announced on commit of every write to a group configuration table (keys, persons, documents). */
export const CONFIG_CHANNEL = 'custody_config';
/**
 * Announced by the shipper when a shipping transaction that carried session events commits (its
 * payload is the shipping gateway's id): the console worker of every other gateway reads what it
 * shipped and pushes it to its consoles live (session-feed.ts).
 */
export const EVENTS_CHANNEL = 'custody_events';
/** The tables migration 9 numbers and announces (as it was written: migrations never change). */
const CONFIG_TABLES_9 = [
  'custody_api_keys',
  'custody_api_key_signatures',
  'custody_api_key_changes',
  'custody_persons',
  'custody_person_signatures',
  'custody_person_links',
  'custody_person_locks',
  'custody_documents',
] as const;
/** SSH keys registered under API keys (migration 14), numbered and announced the same way. */
const SSH_KEY_TABLES = ['custody_ssh_keys', 'custody_ssh_key_signatures', 'custody_ssh_key_removals'] as const;
/** Every table of the one change order, as config-changes.ts reads them. */
export const CONFIG_TABLES = [...CONFIG_TABLES_9, ...SSH_KEY_TABLES] as const;
export type ConfigTable = (typeof CONFIG_TABLES)[number];

function configChangeSql(table: ConfigTable): string {
  return `
      ALTER TABLE ${table} ADD COLUMN change BIGINT NOT NULL DEFAULT nextval('custody_config_change');
      ALTER TABLE ${table} ALTER COLUMN change DROP DEFAULT;
      CREATE INDEX ${table}_change ON ${table} (change);
      CREATE TRIGGER ${table}_change BEFORE INSERT OR UPDATE ON ${table} FOR EACH ROW EXECUTE FUNCTION custody_config_number();
      CREATE TRIGGER ${table}_notify AFTER INSERT OR UPDATE ON ${table} FOR EACH STATEMENT EXECUTE FUNCTION custody_config_notify();`;
}

/** The rows the dashboard counts over the other gateways' traffic (team-dashboard.ts): migration 10 indexes them by time. */
export const DASHBOARD_ROWS = "(kind IN ('http.request', 'pg.statement', 'policy.decision', 'hold.resolved') OR spans IS NOT NULL)";

export const PG_MIGRATIONS: PgMigration[] = [
  {
    version: 1,
    name: 'group, gateways, one hash chain per gateway, signed checkpoints',
    sql: `
      CREATE TABLE custody_group (
        singleton BOOLEAN PRIMARY KEY DEFAULT true CHECK (singleton),
        group_id TEXT NOT NULL,
        created_at BIGINT NOT NULL
      );
      -- One row per gateway key. An index of the chains, never the authority on who may sign:
      -- verify derives that from gateway.approved events under signed checkpoints.
      CREATE TABLE custody_gateways (
        id TEXT PRIMARY KEY,                    -- SHA256:… fingerprint of the checkpoint-signing key
        public_key TEXT NOT NULL,               -- base64 raw Ed25519 key
        key_name TEXT NOT NULL,                 -- the signed-note key name (checkpoint origin)
        name TEXT NOT NULL,                     -- host name, for people
        status TEXT NOT NULL CHECK (status IN ('enrolled', 'pending', 'approved')),
        request TEXT NOT NULL,                  -- the enrolment request, signed by the key itself
        requested_at BIGINT NOT NULL,
        approved_by TEXT,                       -- the approving gateway's id
        approval_seq BIGINT,                    -- where its gateway.approved event sits in its chain
        shipped_seq BIGINT NOT NULL DEFAULT 0,  -- the shipping cursor: rows 1..shipped_seq are here
        shipped_hash TEXT NOT NULL DEFAULT '${'0'.repeat(64)}',
        shipped_cp_time BIGINT NOT NULL DEFAULT 0,
        shipped_cp_size BIGINT NOT NULL DEFAULT 0,
        last_seen BIGINT NOT NULL
      );
      CREATE TABLE custody_events (
        gateway TEXT NOT NULL,
        seq BIGINT NOT NULL,
        time BIGINT NOT NULL,
        kind TEXT NOT NULL,
        session TEXT,
        actor TEXT,
        connection TEXT,
        payload TEXT,                           -- canonical JSON; NULL once purged locally before shipping
        purged BOOLEAN NOT NULL,
        spans TEXT,
        payload_hash TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        PRIMARY KEY (gateway, seq)
      );
      CREATE INDEX custody_events_kind ON custody_events (kind) WHERE kind LIKE 'gateway.%';
      CREATE TABLE custody_checkpoints (
        gateway TEXT NOT NULL,
        tree_size BIGINT NOT NULL,
        time BIGINT NOT NULL,
        root_hash TEXT NOT NULL,
        note TEXT NOT NULL,
        PRIMARY KEY (gateway, tree_size, time)
      );
    `,
  },
  {
    version: 2,
    name: 'API keys shared by the group, signed by the gateways that hold them',
    sql: `
      CREATE TABLE custody_api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        hash TEXT NOT NULL,                     -- SHA-256 of the whole key (never the key)
        groups TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT,
        origin TEXT NOT NULL                    -- the gateway that first pushed it
      );
      CREATE TABLE custody_api_key_signatures (
        id TEXT NOT NULL REFERENCES custody_api_keys (id),
        gateway TEXT NOT NULL,                  -- the signing gateway's id (fingerprint of its key)
        signature TEXT NOT NULL,                -- Ed25519 over the creation fields (key-sync.ts)
        PRIMARY KEY (id, gateway)
      );
      CREATE TABLE custody_api_key_changes (
        id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('revoked', 'expired')),
        at BIGINT NOT NULL,
        gateway TEXT NOT NULL,
        signature TEXT NOT NULL,
        PRIMARY KEY (id, kind, gateway)
      );
    `,
  },
  {
    version: 3,
    name: 'holds across gateways: holds, votes, leases, one change order',
    sql: `
      -- Every write to the hold tables takes HOLDS_LOCK and then the next change number, so change
      -- numbers are committed in order and a reader's cursor never skips a row still in flight.
      CREATE SEQUENCE custody_hold_change;
      CREATE TABLE custody_holds (
        id TEXT PRIMARY KEY,
        gateway TEXT NOT NULL,                  -- the owner: the gateway whose request waits
        state TEXT NOT NULL,
        view TEXT NOT NULL,                     -- the HoldView as the owner (or the abandoner) last wrote it
        created_seq BIGINT NOT NULL,            -- the owner's hold.created, cited by votes cast elsewhere
        created_hash TEXT NOT NULL,
        resolved_by TEXT,                       -- the gateway whose chain records the resolution
        resolved_seq BIGINT,
        resolved_hash TEXT,
        abandoning TEXT,                        -- a gateway that claimed the holds of an owner whose lease expired
        abandoning_at BIGINT,
        created_at BIGINT NOT NULL,
        change BIGINT NOT NULL
      );
      CREATE INDEX custody_holds_change ON custody_holds (change);
      CREATE INDEX custody_holds_pending ON custody_holds (gateway) WHERE state = 'pending';
      CREATE TABLE custody_hold_votes (
        hold TEXT NOT NULL,
        gateway TEXT NOT NULL,                  -- where it was cast: its hold.vote is in that chain
        seq BIGINT NOT NULL,
        hash TEXT NOT NULL,
        person TEXT NOT NULL,
        vote TEXT NOT NULL,                     -- the HoldVote, with grantMs
        change BIGINT NOT NULL,
        PRIMARY KEY (hold, gateway, seq)
      );
      CREATE INDEX custody_hold_votes_change ON custody_hold_votes (change);
      CREATE TABLE custody_leases (
        gateway TEXT PRIMARY KEY,
        renewed_at BIGINT NOT NULL,             -- the store's clock, ms
        expires_at BIGINT NOT NULL
      );
    `,
  },
  {
    version: 4,
    name: 'policy and masking versions shared by the group, signed by the gateway that made them',
    sql: `
      CREATE TABLE custody_documents (
        seq BIGSERIAL PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('policies', 'masking')),
        content TEXT NOT NULL,                  -- canonical JSON of the version's content
        hash TEXT NOT NULL,                     -- SHA-256 of content
        gateway TEXT NOT NULL,                  -- the gateway that made it (and signed it)
        version INTEGER NOT NULL,               -- its version number on that gateway
        author TEXT NOT NULL,
        author_name TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        signature TEXT NOT NULL,                -- Ed25519 over kind, hash, gateway, version, time (doc-sync.ts)
        UNIQUE (gateway, kind, version)
      );
    `,
  },
  {
    version: 5,
    name: 'persons, their credential links and their locks shared by the group, signed by gateways',
    sql: `
      -- A person's creation fields; immutable once written (person-sync.ts).
      CREATE TABLE custody_persons (
        id TEXT PRIMARY KEY,                    -- person_local of a gateway is person_local@<gateway id>
        name TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        created_by TEXT NOT NULL,
        origin TEXT NOT NULL                    -- the gateway that first pushed it
      );
      CREATE TABLE custody_person_signatures (
        id TEXT NOT NULL REFERENCES custody_persons (id),
        gateway TEXT NOT NULL,                  -- each gateway that holds the person signs its creation fields
        signature TEXT NOT NULL,
        PRIMARY KEY (id, gateway)
      );
      -- Which person a credential belongs to, as each gateway holds it; the newest signed link wins.
      CREATE TABLE custody_person_links (
        credential TEXT NOT NULL,               -- key:<id> or <issuer>#<subject>
        gateway TEXT NOT NULL,
        person TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('api-key', 'oidc')),
        linked_at BIGINT NOT NULL,
        linked_by TEXT NOT NULL,
        signature TEXT NOT NULL,                -- Ed25519 over credential, person, kind, time, by
        PRIMARY KEY (credential, gateway)
      );
      -- Locks: the earliest a trusted gateway signed wins, and nothing unlocks.
      CREATE TABLE custody_person_locks (
        id TEXT NOT NULL,
        gateway TEXT NOT NULL,
        at BIGINT NOT NULL,
        locked_by TEXT NOT NULL,
        signature TEXT NOT NULL,
        PRIMARY KEY (id, gateway)
      );
    `,
  },
  {
    version: 6,
    name: "every gateway's session index, and console sign-in sessions signed by the gateway that made them",
    sql: `
      -- The session index of each chain, kept by its shipper in the transaction that ships the
      -- events (session-index.ts): one row per (gateway, session), counted as the SQLite index counts.
      CREATE TABLE custody_sessions (
        gateway TEXT NOT NULL,
        id TEXT NOT NULL,
        connection TEXT,
        protocol TEXT NOT NULL,
        actor TEXT,
        actor_name TEXT,
        started_at BIGINT NOT NULL,
        last_event_at BIGINT NOT NULL,
        ended_at BIGINT,
        events BIGINT NOT NULL,
        requests BIGINT NOT NULL,
        holds BIGINT NOT NULL,
        masked BIGINT NOT NULL,
        denied BIGINT NOT NULL,
        errors BIGINT NOT NULL,
        PRIMARY KEY (gateway, id)
      );
      CREATE INDEX custody_sessions_last ON custody_sessions (last_event_at DESC);
      CREATE INDEX custody_sessions_id ON custody_sessions (id);
      CREATE INDEX custody_events_session ON custody_events (session, gateway, seq) WHERE session IS NOT NULL;
      -- Chains shipped before this migration: their sessions, counted from the shipped events.
      ${SESSION_INDEX_BACKFILL};

      -- Console sign-in sessions (console-session-rows.ts): only the SHA-256 of the cookie, the
      -- identity, and an Ed25519 signature by the gateway that made it; another gateway accepts it
      -- only when a gateway it trusts signed it.
      CREATE TABLE custody_console_sessions (
        digest TEXT PRIMARY KEY,
        identity TEXT NOT NULL,                 -- canonical JSON of the Identity
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        gateway TEXT NOT NULL,                  -- the gateway that made it (and signed it)
        signature TEXT NOT NULL
      );
      CREATE INDEX custody_console_sessions_expiry ON custody_console_sessions (expires_at);
      -- Ends (logout, a locked person, a revoked key), on whichever gateway: every gateway reads
      -- them after its cursor and drops its copy. Written under CONSOLE_ENDS_LOCK, so change
      -- numbers are committed in order.
      CREATE SEQUENCE custody_console_session_change;
      CREATE TABLE custody_console_session_ends (
        digest TEXT PRIMARY KEY,
        at BIGINT NOT NULL,
        gateway TEXT NOT NULL,
        change BIGINT NOT NULL
      );
      CREATE INDEX custody_console_session_ends_change ON custody_console_session_ends (change);
    `,
  },
  {
    version: 7,
    name: 'combined checkpoints of every chain, and the other gateways\' cosignatures',
    sql: `
      -- One row per interval: the first gateway to claim it makes the checkpoint (combined-checkpoint.ts).
      CREATE TABLE custody_combined_checkpoints (
        interval_start BIGINT PRIMARY KEY,      -- ms since epoch, a multiple of audit.groupCheckpointInterval
        maker TEXT NOT NULL,                    -- the gateway that made and signed it
        made_at BIGINT NOT NULL,
        chains INTEGER NOT NULL,                -- leaves: one per chain
        root_hash TEXT NOT NULL,                -- hex RFC 6962 root of the leaves
        note TEXT NOT NULL,                     -- the signed note (origin custody-group/<group id>)
        ranges TEXT NOT NULL                    -- JSON per chain: its last row's hash and compact range, so a
                                                -- gateway continues from here without reading the chain again
      );
      CREATE TABLE custody_combined_cosignatures (
        interval_start BIGINT NOT NULL REFERENCES custody_combined_checkpoints (interval_start),
        gateway TEXT NOT NULL,                  -- the cosigning gateway
        cosignature TEXT NOT NULL,              -- a tlog-cosignature/v1 line under the gateway's key
        cosigned_at BIGINT NOT NULL,
        PRIMARY KEY (interval_start, gateway)
      );
    `,
  },
  {
    version: 8,
    name: 'gateways removed from the group',
    sql: `
      -- A removed gateway serves nothing; its row stays, an index of the gateway.removed event in
      -- the remover's chain (enrolment.ts, findRemoval), as approved_by indexes an approval.
      ALTER TABLE custody_gateways DROP CONSTRAINT custody_gateways_status_check;
      ALTER TABLE custody_gateways ADD CONSTRAINT custody_gateways_status_check CHECK (status IN ('enrolled', 'pending', 'approved', 'removed'));
      ALTER TABLE custody_gateways ADD COLUMN removed_by TEXT;
      ALTER TABLE custody_gateways ADD COLUMN removal_seq BIGINT;
    `,
  },
  {
    version: 9,
    name: 'group configuration numbered by one change order and announced on commit (NOTIFY custody_config)',
    sql: `
      -- Every row written to a configuration table (insert or update, by a gateway or by hand)
      -- takes CONFIG_LOCK and then the next change number, in the writing transaction: change
      -- numbers are committed in order, so a reader that keeps the highest it has read misses
      -- nothing when it reads change > cursor. Each writing statement announces its table on
      -- commit (pg_notify collapses repeats within a transaction).
      CREATE SEQUENCE custody_config_change;
      CREATE FUNCTION custody_config_number() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM pg_advisory_xact_lock(${CONFIG_LOCK});
        NEW.change := nextval('custody_config_change');
        RETURN NEW;
      END $$;
      CREATE FUNCTION custody_config_notify() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM pg_notify('${CONFIG_CHANNEL}', TG_TABLE_NAME);
        RETURN NULL;
      END $$;
      ${CONFIG_TABLES_9.map(configChangeSql).join('\n')}
    `,
  },
  {
    version: 10,
    name: "the rows the dashboard counts, by time (its charts over every gateway's traffic)",
    sql: `
      -- Only the rows the dashboard reads (requests, decisions, hold outcomes, masked values), so
      -- the other events cost no entry; the queries repeat the predicate word for word.
      CREATE INDEX custody_events_dashboard ON custody_events (time) WHERE ${DASHBOARD_ROWS};
    `,
  },
  {
    version: 11,
    name: 'votes on holds signed by the gateway where they were cast',
    sql: `
      -- Ed25519 by the casting gateway's checkpoint key over the row's other columns but change
      -- (hold-rows.ts, voteText). The owner counts a vote only when it verifies under the key
      -- proven for the gateway the row names; a row without one (written before) is not counted.
      ALTER TABLE custody_hold_votes ADD COLUMN signature TEXT;
    `,
  },
  {
    version: 12,
    name: "witnesses' cosignatures on the group's log of combined checkpoints",
    sql: `
      -- The combined checkpoints, oldest first, as an append-only log of their own (group-log.ts:
      -- origin custody-group-log/<group id>, leaf i = the i-th combined checkpoint's signed note);
      -- one row per head a witness (audit.witnesses[]) cosigned. range and last_interval let the
      -- next head and its consistency proof be computed from the rows after it only.
      CREATE TABLE custody_group_witness_cosignatures (
        witness TEXT NOT NULL,                  -- the witness's key name
        key_id TEXT NOT NULL,                   -- its cosigner key id (hex)
        tree_size BIGINT NOT NULL,              -- combined checkpoints in the log
        root_hash TEXT NOT NULL,                -- hex RFC 6962 root
        last_interval BIGINT NOT NULL,          -- interval_start of the newest combined checkpoint it covers (-1: none)
        range TEXT NOT NULL,                    -- JSON compact range of the tree at tree_size: [[height, base64 hash], …]
        checkpoint TEXT NOT NULL,               -- the note text cosigned
        signature TEXT NOT NULL,                -- the witness's cosignature line
        cosigned_at BIGINT NOT NULL,
        PRIMARY KEY (witness, key_id, tree_size)
      );
    `,
  },
  {
    version: 13,
    name: 'time-boxed grants shared by the group, signed by the gateway that held the request',
    sql: `
      -- One row per grant an approval gave, written by the gateway that held the request (grant-rows.ts).
      -- Numbered from the hold changes under HOLDS_LOCK and announced on custody_holds, so the hold
      -- worker that follows holds reads them too. A gateway applies a row only when its signature
      -- verifies under the key proven for the gateway it names (grantText covers every column but
      -- change and signature).
      CREATE TABLE custody_grants (
        id TEXT PRIMARY KEY,
        gateway TEXT NOT NULL,                  -- the gateway that held the request and signs the row
        subject TEXT NOT NULL,                  -- the requester's identity subject
        connection TEXT NOT NULL,
        rule TEXT NOT NULL,
        hold TEXT NOT NULL,                     -- the hold whose approval gave it
        granted_by TEXT NOT NULL,               -- JSON array of the approvers' names
        resolved_seq BIGINT NOT NULL,           -- the hold.resolved that gave it, in the holding gateway's chain
        resolved_hash TEXT NOT NULL,
        expires_at BIGINT NOT NULL,             -- ms since epoch
        created_at BIGINT NOT NULL,
        signature TEXT,                         -- Ed25519 by the holding gateway's checkpoint key
        change BIGINT NOT NULL
      );
      CREATE INDEX custody_grants_change ON custody_grants (change);
    `,
  },
  {
    version: 14,
    name: 'SSH keys shared by the group, signed by the gateways that hold them; removals signed',
    sql: `
      -- One row per registration of a public key (key-sync.ts): a key removed and
      -- registered again is a new row, so a removal, which names its registration, stays sticky.
      CREATE TABLE custody_ssh_keys (
        fingerprint TEXT NOT NULL,              -- SHA256:… of the public key blob
        created_at BIGINT NOT NULL,
        key_id TEXT NOT NULL,                   -- the API key it logs in as
        algo TEXT NOT NULL,
        public_key TEXT NOT NULL,               -- base64 of the public key blob
        comment TEXT,
        created_by TEXT NOT NULL,
        origin TEXT NOT NULL,                   -- the gateway that first pushed it
        PRIMARY KEY (fingerprint, created_at)
      );
      CREATE TABLE custody_ssh_key_signatures (
        fingerprint TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        gateway TEXT NOT NULL,                  -- the signing gateway's id
        signature TEXT NOT NULL,                -- Ed25519 over the creation fields
        PRIMARY KEY (fingerprint, created_at, gateway),
        FOREIGN KEY (fingerprint, created_at) REFERENCES custody_ssh_keys (fingerprint, created_at)
      );
      CREATE TABLE custody_ssh_key_removals (
        fingerprint TEXT NOT NULL,
        created_at BIGINT NOT NULL,             -- the registration removed
        key_id TEXT NOT NULL,
        at BIGINT NOT NULL,
        gateway TEXT NOT NULL,                  -- the gateway that made or accepted the removal
        signature TEXT NOT NULL,
        PRIMARY KEY (fingerprint, created_at, gateway)
      );
      ${SSH_KEY_TABLES.map(configChangeSql).join('\n')}
    `,
  },
  {
    version: 15,
    name: 'retention runs found by chain',
    sql: `
      -- A chain's retention.run events (retention.ts): a bundle cut before the newest run still
      -- carries it (group-export.ts), so the purged payloads in the bundle are explained.
      -- payload is NULL and purged true also for rows purged in the store when their chain's run
      -- was shipped (shipping.ts), not only for rows purged before they were shipped.
      CREATE INDEX custody_events_retention ON custody_events (gateway, seq) WHERE kind = 'retention.run';
    `,
  },
  {
    version: 16,
    name: 'console connections shared by the group as a third kind of signed document',
    sql: `
      -- The full set of console-managed connections (doc-sync.ts, kind connections), secret values
      -- never included: env and file references travel, a sealed value only as {"value": true}.
      ALTER TABLE custody_documents DROP CONSTRAINT custody_documents_kind_check;
      ALTER TABLE custody_documents ADD CONSTRAINT custody_documents_kind_check CHECK (kind IN ('policies', 'masking', 'connections'));
    `,
  },
];

/** Applies the migrations the store lacks; returns the versions applied. */
export async function migrateSharedStore(client: pg.ClientBase, migrations: readonly PgMigration[] = PG_MIGRATIONS): Promise<number[]> {
  await client.query('BEGIN');
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await client.query('CREATE TABLE IF NOT EXISTS custody_schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)');
    const done = new Set((await client.query<{ version: number }>('SELECT version FROM custody_schema_migrations')).rows.map((r) => r.version));
    const known = Math.max(0, ...migrations.map((m) => m.version));
    const newer = [...done].filter((v) => v > known);
    if (newer.length) throw new Error(`the shared store's schema is at version ${Math.max(...newer)}, newer than this gateway knows (${known}); upgrade this gateway`);
    const applied: number[] = [];
    for (const m of migrations) {
      if (done.has(m.version)) continue;
      await client.query(m.sql);
      await client.query('INSERT INTO custody_schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [m.version, m.name, Date.now()]);
      applied.push(m.version);
    }
    await client.query('COMMIT');
    return applied;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/** What `pg.Client` needs to reach the store: the URL, and the password from `store.secret`. */
export interface StoreConnection {
  connectionString: string;
  password?: string;
}

export function storeConnection(store: StoreConfig): StoreConnection {
  const password = readSecret(store.secret, 'store.secret');
  return password === undefined ? { connectionString: store.url } : { connectionString: store.url, password };
}

/** The URL as it may be shown: no user, no query. */
export function storeLabel(url: string): string {
  try {
    const u = new URL(url);
    return `postgres://${u.host}${u.pathname}`;
  } catch {
    return 'the shared store';
  }
}

/** A connected client, its errors kept from crashing the process (they surface on the next query). */
export async function connectStore(conn: StoreConnection, timeoutMs = 5000, applicationName = 'custody'): Promise<pg.Client> {
  const client = new pg.Client({ ...conn, connectionTimeoutMillis: timeoutMs, application_name: applicationName });
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => {});
    throw err;
  }
  return client;
}

/** A row of `custody_events` as pg returns it (BIGINT columns as strings). */
export interface PgEventRow {
  seq: string;
  time: string;
  kind: string;
  session: string | null;
  actor: string | null;
  connection: string | null;
  payload: string | null;
  purged: boolean;
  spans: string | null;
  payload_hash: string;
  prev_hash: string;
  hash: string;
}

export const PG_EVENT_COLUMNS = 'seq, time, kind, session, actor, connection, payload, purged, spans, payload_hash, prev_hash, hash';

/** Whether a stored row's payload still matches its payload hash (a purged payload has none to check). */
export function payloadIntact(r: PgEventRow): boolean {
  return r.purged || (r.payload !== null && sha256hex(`{"payload":${r.payload},"spans":${r.spans ?? '[]'}}`) === r.payload_hash);
}

/** The hash a stored row's fields give after `prevHash` (equal to its `hash` when it is intact). */
export function rowChainHash(prevHash: string, r: PgEventRow): string {
  return chainHashOfText(prevHash, canonicalEventBody({ seq: Number(r.seq), time: Number(r.time), kind: r.kind as never, session: r.session, actor: r.actor, connection: r.connection, payloadHash: r.payload_hash }));
}

/** Whether a stored row may cite events of other chains (`refs`: a vote on another gateway's hold, …). */
export function citesOthers(r: Pick<PgEventRow, 'kind' | 'payload'>): boolean {
  return r.kind.startsWith('hold.') && !!r.payload?.includes('"refs"');
}

/** The well-formed references in a payload (anything else in `refs` is a reference that cannot resolve). */
export function eventRefs(payload: string): EventRef[] {
  const refs = (JSON.parse(payload) as { refs?: unknown }).refs;
  if (!Array.isArray(refs)) return [];
  return refs.map((x: Partial<EventRef>) => ({ gateway: String(x?.gateway), seq: Number(x?.seq), hash: String(x?.hash) }));
}
