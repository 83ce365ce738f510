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

export interface DashboardData {
  from: number;
  to: number;
  bucketMs: number;
  series: DashboardBucket[];
  maskedByType: { type: string; count: number }[];
  policyHits: { rule: string; action: string; count: number }[];
  totals: { sessions: number; requests: number; masked: number; denied: number; holds: { pending: number; approved: number; denied: number; expired: number; abandoned: number } };
}
