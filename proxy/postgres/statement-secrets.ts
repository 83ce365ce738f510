/**
 * Passwords written into statements (`CREATE ROLE … PASSWORD '…'`, `ALTER USER … ENCRYPTED
 * PASSWORD '…'`, `CREATE USER MAPPING … OPTIONS (password '…')`) are replaced before the text is
 * recorded or shown on a hold card. The literal after the PASSWORD keyword is found with the same
 * tokenizer the PL/pgSQL splitter uses (quotes, E'' escapes, dollar quoting and comments), so it
 * works on text the parser rejects as well.
 */
import { tokenizePlpgsql } from './plpgsql';

export const REDACTED_PASSWORD = "'[REDACTED]'";

const MAYBE = /password/i;

/** `sql` with every string literal that follows a PASSWORD keyword replaced by `'[REDACTED]'`. */
export function redactStatementSecrets(sql: string): string {
  if (!MAYBE.test(sql)) return sql;
  const tokens = tokenizePlpgsql(sql);
  let out = '';
  let from = 0;
  for (let i = 0; i + 1 < tokens.length; i++) {
    if (tokens[i]!.word !== 'PASSWORD') continue;
    const lit = tokens[i + 1]!;
    // A string constant in any spelling ('…', E'…', U&'…', $$…$$); `$1` is a parameter, not a literal.
    if (!/^([EeUuBbXxNn]?'|[Uu]&'|\$)/.test(lit.text) || /^\$\d/.test(lit.text)) continue;
    out += sql.slice(from, lit.start) + REDACTED_PASSWORD;
    from = lit.end;
  }
  return out + sql.slice(from);
}
