/**
 * The policy engine's contract with the proxies: they describe a request, the engine returns the
 * first matching rule's decision (no match: allow). Implemented in engine.ts.
 */
import type { HoldSpec, PolicyAction, SqlClass, SshOperation } from '../../shared/config';
import type { Identity } from '../../shared/identity';

export interface PolicyInput {
  connection: string;
  protocol: 'http' | 'postgres' | 'ssh';
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
  ssh?: {
    /** What is asked for: an exec that uploads with scp is both `exec` and `file_transfer`. */
    operations: SshOperation[];
    /** Exec: every simple command's words (proxy/ssh/commands.ts), normalised. */
    commands?: string[][];
    /** Exec: the gateway cannot know everything the command runs. */
    unknown?: boolean;
    /** File transfers: the absolute paths written, removed or renamed (both ends of a rename or link). */
    paths?: string[];
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
