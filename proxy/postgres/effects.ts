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
  routine(name: string): ResolvedEffect | undefined;
  operator(name: string): ResolvedEffect | undefined;
  type(name: string): ResolvedEffect | undefined;
  relation(name: string): RelationEffect | undefined;
}

const READING = new Set<SqlClass>(['select', 'read_only']);
const WRITING = new Set<SqlClass>(['insert', 'update', 'delete', 'merge', 'truncate']);

/** The statement's classes once its calls, operators, cast types and relations are accounted for. */
export function foldStatement(st: Omit<ClassifiedStatement, 'sql'>, lookup: EffectLookup): SqlClass[] {
  const classes = new Set<SqlClass>(st.classes);
  let readOnly = classes.has('read_only') || st.readOnlyIfResolved === true;
  const add = (e: ResolvedEffect | undefined) => {
    if (!e) {
      classes.add('unknown');
      readOnly = false;
      return;
    }
    for (const c of e.classes) if (c !== 'read_only') classes.add(c);
    if (!e.readOnly) readOnly = false;
  };
  for (const name of st.calls ?? []) add(lookup.routine(name));
  for (const name of st.operators ?? []) add(lookup.operator(name));
  for (const name of st.types ?? []) add(lookup.type(name));
  const writes = st.classes.some((c) => WRITING.has(c));
  for (const name of st.tables) {
    const r = lookup.relation(name);
    // A relation the catalog does not show (created in the client's open transaction, a
    // temporary table of the session) proves nothing either way: no read_only, no other class.
    if (!r) {
      readOnly = false;
      continue;
    }
    add(r.read);
    if (writes) add(r.write);
  }
  if (readOnly && [...classes].every((c) => READING.has(c))) classes.add('read_only');
  else classes.delete('read_only');
  return [...classes];
}

/** A classification with every statement folded (see foldStatement). */
export function foldEffects(c: Classification, lookup: EffectLookup): Classification {
  return { ...c, statements: c.statements.map((st) => ({ ...st, classes: foldStatement(st, lookup) })) };
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
