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
