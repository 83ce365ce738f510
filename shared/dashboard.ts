/** `GET /api/dashboard`: counts over time for the console's dashboard (proxy/control/routes/dashboard.ts). */
export interface DashboardBucket {
  /** Bucket start, ms since epoch. */
  t: number;
  requests: number;
  holdsApproved: number;
  holdsDenied: number;
  holdsExpired: number;
  masked: number;
  denied: number;
  /** Requests a policy rule matched (any action). */
  hits: number;
}

/** With a shared store: one gateway's share of the window (`self`: the gateway that answered). */
export interface DashboardGateway {
  id: string;
  name: string;
  self: boolean;
  sessions: number;
  requests: number;
  masked: number;
  denied: number;
}

export interface DashboardData {
  from: number;
  to: number;
  bucketMs: number;
  series: DashboardBucket[];
  maskedByType: { type: string; count: number }[];
  policyHits: { rule: string; action: string; count: number }[];
  totals: { sessions: number; requests: number; masked: number; denied: number; holds: { pending: number; approved: number; denied: number; expired: number; abandoned: number } };
  /** With a shared store: every gateway of the group, this one first; the figures above are their sum. */
  gateways?: DashboardGateway[];
  /** With a shared store whose counts could not be read: why the figures are this gateway's only. */
  incomplete?: string;
}
