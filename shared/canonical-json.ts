/**
 * Canonical JSON per RFC 8785 (JCS): object keys sorted by UTF-16 code units, no insignificant
 * whitespace, numbers in ECMAScript shortest form, strings escaped as JSON.stringify does (which
 * matches JCS). The same value always yields the same bytes, so it always hashes the same.
 */
export function canonicalize(value: unknown): string {
  switch (typeof value) {
    case 'string':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError('canonical JSON cannot encode NaN or Infinity');
      return JSON.stringify(value); // ECMAScript Number::toString, as RFC 8785 §3.2.2.3 requires
    case 'boolean':
      return value ? 'true' : 'false';
    case 'undefined':
      throw new TypeError('canonical JSON cannot encode undefined');
    case 'bigint':
    case 'symbol':
    case 'function':
      throw new TypeError(`canonical JSON cannot encode a ${typeof value}`);
  }
  if (value === null) return 'null';
  if (Array.isArray(value)) return `[${value.map((v) => (v === undefined ? 'null' : canonicalize(v))).join(',')}]`;
  const withToJson = value as { toJSON?: () => unknown };
  if (typeof withToJson.toJSON === 'function') return canonicalize(withToJson.toJSON());
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort(); // default sort compares UTF-16 code units, as RFC 8785 §3.2.3 requires
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalize(obj[k])}`).join(',')}}`;
}
