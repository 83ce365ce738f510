/**
 * What a SQL statement does to the session's prepared-statement and portal namespaces, which SQL
 * shares with the protocol: `PREPARE s1 AS …` creates the statement a later Bind of `s1` runs,
 * `EXECUTE s1` runs it, `DEALLOCATE [ALL]` and `DISCARD ALL` remove statements, `DECLARE`/`CLOSE`
 * and every transaction end touch portals. The protocol state (protocol-state.ts) needs these
 * effects to predict what the server holds; the classifier answers a different question (what a
 * statement does to data), so this is read from the parse tree separately.
 */
import { parseSync } from 'libpg-query';

export type NamespaceEffect =
  | { k: 'prepare'; name: string; sql: string }
  | { k: 'execute'; name: string }
  | { k: 'deallocate'; name: string }
  | { k: 'deallocate_all' }
  | { k: 'discard_all' }
  | { k: 'cursor'; name: string | null }
  /** May end the transaction (and so every portal) or start one: COMMIT, ROLLBACK, BEGIN, CALL, DO. */
  | { k: 'transaction' };

/** Per statement of the text (same order as the classifier's), the namespace effects; `null` when the text does not parse. */
export type NamespaceEffects = NamespaceEffect[][] | null;

/** Words without which a statement cannot touch a namespace: text without them is not parsed again. */
const WORDS = /\b(prepare|execute|deallocate|discard|declare|close|commit|rollback|abort|end|begin|start|call|do|savepoint|release)\b/i;
const NONE: NamespaceEffect[] = [];
/** The answer for the common case, one statement that touches no namespace (shared: never modified). */
const ONE_PLAIN: NamespaceEffect[][] = [NONE];
const LRU_MAX = 1000;
const cache = new Map<string, NamespaceEffects>();

type Node = Record<string, unknown>;

/**
 * The namespace effects of each of the `count` statements in `sql` (as the classifier split it).
 * Needs the parser loaded (classify.ts loadSqlParser).
 */
export function namespaceEffects(sql: string, count: number): NamespaceEffects {
  if (!WORDS.test(sql)) return count === 1 ? ONE_PLAIN : new Array<NamespaceEffect[]>(count).fill(NONE);
  const hit = cache.get(sql);
  if (hit !== undefined) return hit;
  const result = effectsUncached(sql);
  if (cache.size >= LRU_MAX) cache.delete(cache.keys().next().value!);
  cache.set(sql, result);
  return result;
}

function effectsUncached(sql: string): NamespaceEffects {
  let tree: { stmts?: { stmt?: Node; stmt_location?: number; stmt_len?: number }[] };
  try {
    tree = parseSync(sql) as typeof tree;
  } catch {
    return null;
  }
  const bytes = Buffer.from(sql);
  const out: NamespaceEffect[][] = [];
  for (const s of tree.stmts ?? []) {
    if (!s.stmt) continue;
    const start = s.stmt_location ?? 0;
    const end = s.stmt_len ? start + s.stmt_len : bytes.length;
    out.push(effectsOf(s.stmt, bytes.toString('utf8', start, end).trim()));
  }
  return out;
}

function effectsOf(stmt: Node, text: string): NamespaceEffect[] {
  const type = Object.keys(stmt)[0]!;
  const n = (stmt[type] ?? {}) as Node;
  switch (type) {
    case 'PrepareStmt':
      return [{ k: 'prepare', name: String(n['name'] ?? ''), sql: text }];
    case 'ExecuteStmt':
      return [{ k: 'execute', name: String(n['name'] ?? '') }];
    case 'DeallocateStmt':
      return n['isall'] ? [{ k: 'deallocate_all' }] : [{ k: 'deallocate', name: String(n['name'] ?? '') }];
    case 'DiscardStmt':
      return n['target'] === 'DISCARD_ALL' ? [{ k: 'discard_all' }] : [];
    case 'DeclareCursorStmt':
      return [{ k: 'cursor', name: String(n['portalname'] ?? '') }];
    case 'ClosePortalStmt':
      return [{ k: 'cursor', name: typeof n['portalname'] === 'string' ? n['portalname'] : null }];
    case 'TransactionStmt':
    case 'CallStmt':
    case 'DoStmt':
      return [{ k: 'transaction' }];
    default:
      return [];
  }
}
