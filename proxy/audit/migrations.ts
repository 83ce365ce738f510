/**
 * Numbered schema migrations for the SQLite store. Append only: never edit a migration that has
 * shipped; add the next number. Each runs in its own transaction and bumps `PRAGMA user_version`.
 */

/** A row of the `api_keys` table (migration 1), as the key index and the shared store's key sync read it. */
export interface ApiKeyRow {
  id: string;
  name: string;
  hash: string;
  groups: string;
  created_at: number;
  created_by: string | null;
  expires_at: number | null;
  revoked_at: number | null;
  last_used_at: number | null;
}

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'events, sessions, identity, holds, checkpoints, policy versions, connections',
    sql: `
      CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        time INTEGER NOT NULL,
        kind TEXT NOT NULL,
        session TEXT,
        actor TEXT,
        connection TEXT,
        payload BLOB,                 -- canonical JSON text, or deflated when large; NULL once purged
        encoding TEXT NOT NULL,       -- 'json' | 'deflate' | 'purged'
        spans TEXT,                   -- JSON array of MaskSpan, NULL once purged
        payload_hash TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
      );
      CREATE INDEX events_session ON events(session, seq);
      CREATE INDEX events_time ON events(time);
      CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        connection TEXT,
        protocol TEXT NOT NULL,
        actor TEXT,
        actor_name TEXT,
        started_at INTEGER NOT NULL,
        last_event_at INTEGER NOT NULL,
        ended_at INTEGER,
        events INTEGER NOT NULL DEFAULT 0,
        requests INTEGER NOT NULL DEFAULT 0,
        holds INTEGER NOT NULL DEFAULT 0,
        masked INTEGER NOT NULL DEFAULT 0,
        denied INTEGER NOT NULL DEFAULT 0,
        errors INTEGER NOT NULL DEFAULT 0
      );
      CREATE INDEX sessions_started ON sessions(started_at);
      CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        groups TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT,
        expires_at INTEGER,
        revoked_at INTEGER,
        last_used_at INTEGER
      );
      CREATE TABLE users (
        subject TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        groups TEXT NOT NULL,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL
      );
      CREATE TABLE console_sessions (
        id TEXT PRIMARY KEY,
        identity TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
      );
      CREATE TABLE holds (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        session TEXT,
        connection TEXT NOT NULL,
        requester TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        resolved_at INTEGER,
        view TEXT NOT NULL            -- JSON HoldView
      );
      CREATE INDEX holds_state ON holds(state, created_at);
      CREATE TABLE grants (
        id TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        connection TEXT NOT NULL,
        rule TEXT NOT NULL,
        hold TEXT NOT NULL,
        expires_at INTEGER NOT NULL
      );
      CREATE TABLE checkpoints (
        tree_size INTEGER NOT NULL,
        root_hash TEXT NOT NULL,
        time INTEGER NOT NULL,
        note TEXT NOT NULL,
        PRIMARY KEY (tree_size, time)
      );
      CREATE TABLE policy_versions (
        version INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,           -- 'policies' | 'masking'
        author TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        body TEXT NOT NULL            -- JSON
      );
      CREATE TABLE connections (
        name TEXT PRIMARY KEY,
        config TEXT NOT NULL,         -- JSON Connection without the secret value
        secret BLOB,                  -- encrypted secret
        updated_at INTEGER NOT NULL
      );
      CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
      );
    `,
  },
  {
    version: 2,
    name: 'persons (every credential belongs to one), single-use login links',
    sql: `
      CREATE TABLE persons (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        locked_at INTEGER,
        locked_by TEXT
      );
      CREATE INDEX persons_name ON persons(name);
      CREATE TABLE person_credentials (
        credential TEXT PRIMARY KEY,  -- identity subject: key:<id>, <issuer>#<claim>, local:<user>
        person TEXT NOT NULL REFERENCES persons(id),
        kind TEXT NOT NULL,           -- 'api-key' | 'oidc' | 'local'
        linked_at INTEGER NOT NULL,
        linked_by TEXT NOT NULL
      );
      CREATE INDEX person_credentials_person ON person_credentials(person);
      CREATE TABLE login_links (
        digest TEXT PRIMARY KEY,      -- SHA-256 of the link's token; the token itself is never stored
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER,
        created_by TEXT NOT NULL
      );
    `,
  },
  {
    version: 3,
    name: 'witness cosignatures of checkpoints, SIEM sink cursors',
    sql: `
      CREATE TABLE checkpoint_cosignatures (
        witness TEXT NOT NULL,        -- the witness's key name
        key_id TEXT NOT NULL,         -- 8 hex digits
        tree_size INTEGER NOT NULL,
        root_hash TEXT NOT NULL,      -- hex, as cosigned
        checkpoint TEXT NOT NULL,     -- the checkpoint note text the witness signed
        signature TEXT NOT NULL,      -- the witness's cosignature line
        cosigned_at INTEGER NOT NULL, -- the cosignature's own timestamp (ms)
        PRIMARY KEY (witness, key_id, tree_size, root_hash)
      );
      CREATE TABLE sink_cursors (
        name TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,         -- last event delivered (and acknowledged)
        delivered_at INTEGER
      );
    `,
  },
  {
    version: 4,
    name: 'archive segments sealed into object storage',
    sql: `
      CREATE TABLE archive_segments (
        idx INTEGER PRIMARY KEY,      -- 1, 2, … in seq order
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,    -- the segment's checkpoint covers exactly last_seq events
        root_hash TEXT NOT NULL,      -- hex root of the tree of last_seq events
        last_hash TEXT NOT NULL,      -- hash of event last_seq
        checkpoint TEXT NOT NULL,     -- the signed checkpoint note the segment is cut at
        checkpoint_time INTEGER NOT NULL,
        prev_root_hash TEXT NOT NULL, -- the tree of first_seq - 1 events it continues
        prev_last_hash TEXT NOT NULL,
        object_key TEXT NOT NULL,
        sealed_at INTEGER NOT NULL,
        uploaded_at INTEGER,
        verified_at INTEGER,          -- read back from the bucket and verified; NULL while pending
        bytes INTEGER,
        sha256 TEXT,
        version_id TEXT,
        lock_mode TEXT,               -- COMPLIANCE | GOVERNANCE when written under Object Lock
        retain_until INTEGER
      );
      CREATE UNIQUE INDEX archive_segments_first ON archive_segments(first_seq);
    `,
  },
  {
    version: 5,
    name: 'SSH public keys registered for API keys (public-key login to ssh connections)',
    sql: `
      CREATE TABLE ssh_keys (
        fingerprint TEXT PRIMARY KEY, -- SHA256:… of the public key blob, as ssh-keygen -l prints it
        key_id TEXT NOT NULL,         -- the API key whose identity (groups, person, expiry) it logs in as
        algo TEXT NOT NULL,           -- ssh-ed25519, ecdsa-sha2-nistp256, rsa-sha2-…
        public_key TEXT NOT NULL,     -- base64 of the public key blob
        comment TEXT,
        created_at INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        removed_at INTEGER
      );
      CREATE INDEX ssh_keys_key ON ssh_keys(key_id);
    `,
  },
  {
    version: 6,
    name: 'the compact range each archive segment ends with (the next one continues it)',
    sql: `
      -- JSON array of hex hashes: the perfect subtrees of the tree of last_seq events, largest first.
      -- Written when the segment is verified in the bucket; NULL for segments sealed before this column.
      ALTER TABLE archive_segments ADD COLUMN compact_range TEXT;
    `,
  },
];
