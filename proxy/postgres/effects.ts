/**
 * Folds what the catalog knows about the routines, operators and relations a statement uses into
 * its classes (pure: the lookups are answered from the catalog's cache, ./catalog.ts). A call the
 * catalog could not resolve makes the statement `unknown`; `read_only` survives only when every
 * call, operator and relation it uses is resolved as free of side effects.
 */
import type { SqlClass } from '../../shared/config';
import type { Classification, ClassifiedStatement } from './classify';

/** What using a routine, operator or relation adds to a statement. */
export interface ResolvedEffect {
  classes: SqlClass[];
  /** Free of side effects: reads only, calls nothing that writes, locks or reaches outside. */
  readOnly: boolean;
}

/** A relation's code: what runs when it is read (view definitions, row-level-security USING) and when it is written (triggers, rules, defaults, CHECK and WITH CHECK expressions). */
export interface RelationEffect {
  read: ResolvedEffect;
  write: ResolvedEffect;
}

/** Answers from a cache; undefined means not resolved. */
export interface EffectLookup {
  /**
   * Changes whenever an answer may have changed (the cache was refilled or dropped): a fold made
   * under the same generation gives the same classes. Without it, nothing is remembered.
   */
  generation?(): number;
  routine(name: string): ResolvedEffect | undefined;
  operator(name: string): ResolvedEffect | undefined;
  type(name: string): ResolvedEffect | undefined;
  relation(name: string): RelationEffect | undefined;
}

const READING = new Set<SqlClass>(['select', 'read_only']);
const WRITING = new Set<SqlClass>(['insert', 'update', 'delete', 'merge', 'truncate']);

/** What folding one statement found so far (a plain object: no closure per statement). */
interface Fold {
  classes: Set<SqlClass>;
  readOnly: boolean;
}

function addEffect(fold: Fold, e: ResolvedEffect | undefined): void {
  if (!e) {
    fold.classes.add('unknown');
    fold.readOnly = false;
    return;
  }
  for (const c of e.classes) if (c !== 'read_only') fold.classes.add(c);
  if (!e.readOnly) fold.readOnly = false;
}

/** The statement's classes once its calls, operators, cast types and relations are accounted for. */
export function foldStatement(st: Omit<ClassifiedStatement, 'sql'>, lookup: EffectLookup): SqlClass[] {
  const fold: Fold = { classes: new Set<SqlClass>(st.classes), readOnly: false };
  fold.readOnly = fold.classes.has('read_only') || st.readOnlyIfResolved === true;
  if (st.calls) for (const name of st.calls) addEffect(fold, lookup.routine(name));
  if (st.operators) for (const name of st.operators) addEffect(fold, lookup.operator(name));
  if (st.types) for (const name of st.types) addEffect(fold, lookup.type(name));
  let writes = false;
  for (const c of st.classes) if (WRITING.has(c)) writes = true;
  for (const name of st.tables) {
    const r = lookup.relation(name);
    // A relation the catalog does not show (created in the client's open transaction, a
    // temporary table of the session) proves nothing either way: no read_only, no other class.
    if (!r) {
      fold.readOnly = false;
      continue;
    }
    addEffect(fold, r.read);
    if (writes) addEffect(fold, r.write);
  }
  let reading = fold.readOnly;
  if (reading) for (const c of fold.classes) if (!READING.has(c)) reading = false;
  if (reading) fold.classes.add('read_only');
  else fold.classes.delete('read_only');
  return [...fold.classes];
}

/**
 * Folds remembered per statement shape: the classifier hands out the same arrays for statements
 * that differ only in literals (classify.ts), so a fold is found again by its input arrays, and
 * reused while the lookup's generation is the same. The result is frozen: it is shared.
 */
interface RememberedFold {
  lookup: EffectLookup;
  generation: number;
  calls: unknown;
  operators: unknown;
  types: unknown;
  tables: unknown;
  readOnlyIfResolved: boolean | undefined;
  classes: SqlClass[];
}
const remembered = new WeakMap<readonly SqlClass[], RememberedFold>();

function foldRemembered(st: Omit<ClassifiedStatement, 'sql'>, lookup: EffectLookup): SqlClass[] {
  if (!lookup.generation) return foldStatement(st, lookup);
  const generation = lookup.generation();
  const r = remembered.get(st.classes);
  if (
    r !== undefined &&
    r.lookup === lookup &&
    r.generation === generation &&
    r.calls === st.calls &&
    r.operators === st.operators &&
    r.types === st.types &&
    r.tables === st.tables &&
    r.readOnlyIfResolved === st.readOnlyIfResolved
  )
    return r.classes;
  const classes = Object.freeze(foldStatement(st, lookup)) as SqlClass[];
  remembered.set(st.classes, { lookup, generation, calls: st.calls, operators: st.operators, types: st.types, tables: st.tables, readOnlyIfResolved: st.readOnlyIfResolved, classes });
  return classes;
}

/** A classification with every statement folded (see foldStatement). */
export function foldEffects(c: Classification, lookup: EffectLookup): Classification {
  const statements = new Array<ClassifiedStatement>(c.statements.length);
  for (let i = 0; i < statements.length; i++) {
    const st = c.statements[i]!;
    statements[i] = { ...st, classes: foldRemembered(st, lookup) };
  }
  return c.error === undefined ? { statements } : { statements, error: c.error };
}

/** The effect of running a body or expression: its folded classes, read-only if they say so. */
export function effectOf(st: Omit<ClassifiedStatement, 'sql'>, lookup: EffectLookup): ResolvedEffect {
  const classes = foldStatement(st, lookup);
  return { classes: classes.filter((c) => c !== 'read_only'), readOnly: classes.includes('read_only') };
}

/** Every name a classification asks the catalog about. */
export function namesOf(c: Classification): { routines: string[]; operators: string[]; types: string[]; relations: string[] } {
  const routines = new Set<string>();
  const operators = new Set<string>();
  const types = new Set<string>();
  const relations = new Set<string>();
  for (const st of c.statements) {
    for (const n of st.calls ?? []) routines.add(n);
    for (const n of st.operators ?? []) operators.add(n);
    for (const n of st.types ?? []) types.add(n);
    for (const n of st.tables) relations.add(n);
  }
  return { routines: [...routines], operators: [...operators], types: [...types], relations: [...relations] };
}
