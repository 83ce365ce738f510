/**
 * A masking rule as compiled for use: its detectors resolved, its scopes, connections, column
 * patterns and JSON paths parsed. Compiled in rules.ts; named by the scanner's matches, so it sits
 * apart from both.
 */
import type { MaskingRule, MaskScope } from '../../shared/config';
import type { Detector } from './detectors';

export interface ColumnPattern {
  table?: string;
  column: string;
}

/** One step of a JSONPath subset: a property name, an array index, or `*`. */
export type JsonPathStep = { name: string } | { index: number } | { any: true };

export interface CompiledRule {
  id: string;
  rule: MaskingRule;
  detectors: Detector[];
  scope: Set<MaskScope>;
  connections?: Set<string>;
  columns?: ColumnPattern[];
  jsonPaths?: JsonPathStep[][];
}
