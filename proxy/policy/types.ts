/**
 * The policy engine's contract with the proxies: they describe a request, the engine returns the
 * first matching rule's decision (no match: allow). Implemented in engine.ts.
 */
import type { HoldSpec, PolicyAction, SqlClass } from '../../shared/config';
import type { Identity } from '../../shared/identity';

export interface PolicyInput {
  connection: string;
  protocol: 'http' | 'postgres';
  identity: Identity;
  http?: {
    method: string;
    /** Path after the connection name, e.g. `/chat/completions`. */
    path: string;
    model?: string;
    /** The request defines or carries tool calls. */
    tools: boolean;
  };
  sql?: {
    classes: SqlClass[];
    tables: string[];
  };
  /** The request's text for `match.content` (prompt text, SQL), before masking. */
  text: string;
  /** Detector ids that found something in the request. */
  detectorHits: string[];
}

export interface PolicyDecision {
  action: PolicyAction;
  /** Name of the rule that matched; undefined when nothing matched (default allow). */
  rule?: string;
  reason?: string;
  mask?: string[];
  hold?: HoldSpec;
}

export interface PolicyEvaluator {
  evaluate(input: PolicyInput): PolicyDecision;
}
