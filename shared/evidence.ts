/** What the gateway reports about evidence leaving the box (/api/audit/status), for the proxy and the console alike. */

/** A tlog-witness the gateway sends its checkpoints to. */
export interface WitnessStatus {
  name: string;
  url: string;
  /** pending: nothing cosigned yet and no failure; failing: the last attempt failed. */
  state: 'ok' | 'failing' | 'pending';
  lastCosigned: { treeSize: number; rootHash: string; cosignedAt: number } | null;
  /** Checkpoints signed since the last cosigned one (what the witness has not seen yet). */
  behind: number;
  lastError: string | null;
  failures: number;
  nextRetryAt: number | null;
}

/**
 * The checkpoint signing key: where it lives (`file`: a key file in the data dir, `sealed`: sealed
 * by the desktop app, `command`: held elsewhere, signed by the audit.signer program) and whether
 * its last signature succeeded (pending: none made yet in this run).
 */
export interface SignerStatus {
  kind: 'file' | 'sealed' | 'command';
  /** The audit.signer program's file name. */
  program: string | null;
  state: 'ok' | 'failing' | 'pending';
  /** Signing attempts that failed in a row (0 once one succeeds). */
  failures: number;
  lastError: string | null;
  failingSince: number | null;
  lastSignedAt: number | null;
}

/** A SIEM sink and its backlog. */
export interface SinkStatus {
  name: string;
  kind: 'syslog' | 'http' | 'nats';
  state: 'ok' | 'failing' | 'idle';
  /** Last event acknowledged by the sink. */
  cursor: number;
  /** Events recorded but not yet acknowledged, and how old the oldest of them is. */
  backlog: number;
  backlogAgeMs: number | null;
  lastDeliveryAt: number | null;
  lastError: string | null;
  failures: number;
}

/** The archive of sealed segments in object storage (audit.archive). */
export interface ArchiveStatus {
  /** `s3://bucket/prefix`, and the endpoint when it is not AWS. */
  location: string;
  every: string;
  /** pending: nothing archived yet and no failure; failing: the last attempt failed. */
  state: 'ok' | 'failing' | 'pending';
  lastSegment: { index: number; firstSeq: number; lastSeq: number; key: string; bytes: number; sealedAt: number; verifiedAt: number; retainUntil: number | null } | null;
  /** Every event up to this seq is in a segment read back from the bucket and verified. */
  archivedThrough: number;
  /** Events recorded but not yet in a verified segment. */
  behind: number;
  /**
   * enabled: segments are written with a retention date (`retainFor` after sealing, in `mode`);
   * absent: the bucket cannot lock them (`detail` says why); unknown: not yet asked, or not allowed to ask.
   */
  objectLock: { state: 'enabled' | 'absent' | 'unknown'; mode: 'COMPLIANCE' | 'GOVERNANCE'; retainFor: string | null; detail: string | null };
  lastError: string | null;
  failures: number;
  nextRetryAt: number | null;
}
