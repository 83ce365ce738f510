/**
 * Checksum and format validators that tell a real identifier from a look-alike. Each takes the
 * matched text (separators included) and returns true when it is plausibly the real thing. Custom
 * detectors name one of these in `validator:` (see VALIDATORS).
 */

/** Digits of `text`, separators dropped. */
export function digitsOf(text: string): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) out += text[i];
  }
  return out;
}

/** Luhn (ISO/IEC 7812-1 Annex B) over the digits of `text`. */
export function luhn(text: string): boolean {
  const d = digitsOf(text);
  if (d.length < 2) return false;
  let sum = 0;
  let double = false;
  for (let i = d.length - 1; i >= 0; i--) {
    let n = d.charCodeAt(i) - 48;
    if (double) {
      n *= 2;
      if (n > 9) n -= 9;
    }
    sum += n;
    double = !double;
  }
  return sum % 10 === 0;
}

/**
 * Payment card number: 12–19 digits, Luhn, a known issuer range (ISO/IEC 7812 IINs of the major
 * networks) with that network's lengths, and consistent grouping when separators are used
 * (4-4-4-4[-3], Amex 4-6-5, Diners 4-6-4).
 */
export function creditCard(text: string): boolean {
  // one pass: digits, and the lengths of the groups between separators
  let d = '';
  let sep = 0;
  let groups = 0;
  let groupLen = 0;
  let shape = '';
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c >= 48 && c <= 57) {
      d += text[i];
      groupLen++;
    } else {
      if (sep && c !== sep) return false; // mixed separators
      sep = c;
      shape += groupLen + '-';
      groups++;
      groupLen = 0;
    }
  }
  if (d.length < 12 || d.length > 19) return false;
  if (/^(\d)\1+$/.test(d) || !luhn(d) || !issuerAccepts(d)) return false;
  if (groups) {
    shape += groupLen;
    const parts = shape.split('-');
    const fours = parts.slice(0, -1).every((g) => g === '4') && groupLen >= 1 && groupLen <= 4;
    if (!(fours || shape === '4-6-5' || shape === '4-6-4' || shape === '4-4-4-4-3')) return false;
  }
  return true;
}

function issuerAccepts(d: string): boolean {
  const len = d.length;
  const p2 = Number(d.slice(0, 2));
  const p3 = Number(d.slice(0, 3));
  const p4 = Number(d.slice(0, 4));
  const p6 = Number(d.slice(0, 6));
  if (d[0] === '4') return len === 16 || len === 19; // Visa (13-digit numbers are no longer issued)
  if (p2 >= 51 && p2 <= 55) return len === 16; // Mastercard
  if (p4 >= 2221 && p4 <= 2720) return len === 16; // Mastercard 2-series
  if (p2 === 34 || p2 === 37) return len === 15; // American Express
  if (p4 === 6011 || (p3 >= 644 && p3 <= 649) || p2 === 65) return len >= 16 && len <= 19; // Discover
  if (p6 >= 622126 && p6 <= 622925) return len >= 16 && len <= 19; // Discover/UnionPay co-brand
  if (p2 === 62) return len >= 16 && len <= 19; // UnionPay
  if (p4 >= 3528 && p4 <= 3589) return len >= 16 && len <= 19; // JCB
  if ((p3 >= 300 && p3 <= 305) || p2 === 36 || p2 === 38 || p2 === 39) return len >= 14 && len <= 19; // Diners Club
  if (p2 === 50 || (p2 >= 56 && p2 <= 69)) return len >= 16 && len <= 19; // Maestro (shorter ones collide with EAN-13 barcodes)
  if (p4 >= 2200 && p4 <= 2204) return len >= 16 && len <= 19; // Mir
  return false;
}

/** IBAN lengths per country (SWIFT IBAN registry). */
export const IBAN_LENGTHS: Record<string, number> = {
  AD: 24, AE: 23, AL: 28, AT: 20, AZ: 28, BA: 20, BE: 16, BG: 22, BH: 22, BI: 27, BR: 29, BY: 28, CH: 21, CR: 22,
  CY: 28, CZ: 24, DE: 22, DJ: 27, DK: 18, DO: 28, EE: 20, EG: 29, ES: 24, FI: 18, FK: 18, FO: 18, FR: 27, GB: 22,
  GE: 22, GI: 23, GL: 18, GR: 27, GT: 28, HN: 28, HR: 21, HU: 28, IE: 22, IL: 23, IQ: 23, IS: 26, IT: 27, JO: 30,
  KW: 30, KZ: 20, LB: 28, LC: 32, LI: 21, LT: 20, LU: 20, LV: 21, LY: 25, MC: 27, MD: 24, ME: 22, MK: 19, MN: 20,
  MR: 27, MT: 31, MU: 30, NI: 28, NL: 18, NO: 15, OM: 23, PK: 24, PL: 28, PS: 29, PT: 25, QA: 29, RO: 24, RS: 22,
  RU: 33, SA: 24, SC: 31, SD: 18, SE: 24, SI: 19, SK: 24, SM: 27, SO: 23, ST: 25, SV: 28, TL: 23, TN: 24, TR: 26,
  UA: 29, VA: 22, VG: 24, XK: 20, YE: 30,
};

/** IBAN (ISO 13616): the country's registered length and the mod-97 check (ISO 7064). */
export function iban(text: string): boolean {
  const s = text.replace(/ /g, '').toUpperCase();
  const want = IBAN_LENGTHS[s.slice(0, 2)];
  if (!want || s.length !== want || !/^[A-Z]{2}\d{2}[A-Z0-9]+$/.test(s)) return false;
  const r = s.slice(4) + s.slice(0, 4);
  let rem = 0;
  for (let i = 0; i < r.length; i++) {
    const c = r.charCodeAt(i);
    const v = c >= 65 ? c - 55 : c - 48;
    rem = v >= 10 ? (rem * 100 + v) % 97 : (rem * 10 + v) % 97;
  }
  return rem === 1;
}

/** US SSN issuance rules: area not 000, 666 or 900–999; group not 00; serial not 0000. */
export function usSsn(text: string): boolean {
  const d = digitsOf(text);
  if (d.length !== 9) return false;
  const area = Number(d.slice(0, 3));
  if (area === 0 || area === 666 || area >= 900) return false;
  if (d.slice(3, 5) === '00' || d.slice(5) === '0000') return false;
  if (/^(\d)\1+$/.test(d) || d === '123456789') return false;
  return true;
}

/** ABA routing transit number: valid Federal Reserve prefix and the 3-7-1 weighted checksum. */
export function abaRouting(text: string): boolean {
  const d = digitsOf(text);
  if (d.length !== 9) return false;
  const p = Number(d.slice(0, 2));
  if (!((p <= 12) || (p >= 21 && p <= 32) || (p >= 61 && p <= 72) || p === 80)) return false;
  if (/^0+$/.test(d)) return false;
  const n = (i: number) => d.charCodeAt(i) - 48;
  const sum = 3 * (n(0) + n(3) + n(6)) + 7 * (n(1) + n(4) + n(7)) + (n(2) + n(5) + n(8));
  return sum % 10 === 0;
}

const DNI_LETTERS = 'TRWAGMYFPDXBNJZSQVHLCKE';

/** Spanish DNI (8 digits + check letter) and NIE (X/Y/Z + 7 digits + check letter): number mod 23. */
export function esDni(text: string): boolean {
  const s = text.replace(/[\s-]/g, '').toUpperCase();
  const m = /^([XYZ]?)(\d{7,8})([A-Z])$/.exec(s);
  if (!m) return false;
  const [, prefix, digits, letter] = m;
  if (prefix && digits!.length !== 7) return false;
  if (!prefix && digits!.length !== 8) return false;
  const num = Number((prefix ? String('XYZ'.indexOf(prefix)) : '') + digits);
  return DNI_LETTERS[num % 23] === letter;
}

/**
 * UK National Insurance number (HMRC NIM39110): two prefix letters (D, F, I, Q, U, V never used;
 * O never second; BG, GB, KN, NK, NT, TN, ZZ never allocated), six digits, suffix A–D.
 */
export function ukNino(text: string): boolean {
  const s = text.replace(/\s/g, '').toUpperCase();
  const m = /^([A-CEGHJ-PR-TW-Z])([A-CEGHJ-NPR-TW-Z])(\d{6})([A-D])$/.exec(s);
  if (!m) return false;
  return !['BG', 'GB', 'KN', 'NK', 'NT', 'TN', 'ZZ'].includes(m[1]! + m[2]!);
}

/** UK NHS number: 10 digits, modulus 11 check digit (weights 10..2). */
export function ukNhs(text: string): boolean {
  const d = digitsOf(text);
  if (d.length !== 10 || /^(\d)\1+$/.test(d)) return false;
  let sum = 0;
  for (let i = 0; i < 9; i++) sum += (d.charCodeAt(i) - 48) * (10 - i);
  let check = 11 - (sum % 11);
  if (check === 11) check = 0;
  if (check === 10) return false;
  return check === d.charCodeAt(9) - 48;
}

/** IPv4 dotted quad with each octet 0–255 and no leading zeros. */
export function ipv4(text: string): boolean {
  const parts = text.split('.');
  if (parts.length !== 4) return false;
  return parts.every((p) => /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/.test(p));
}

/** A JWT (RFC 7519) whose first segment decodes to a JOSE header with an `alg`. */
export function jwt(text: string): boolean {
  const seg = text.split('.');
  if (seg.length !== 3) return false;
  try {
    const header = JSON.parse(Buffer.from(seg[0]!, 'base64url').toString('utf8')) as unknown;
    return typeof header === 'object' && header !== null && typeof (header as Record<string, unknown>)['alg'] === 'string';
  } catch {
    return false;
  }
}

/** Rejects placeholders ("xxxx…", "<token>", "${VAR}", "****") that only look like secrets. */
export function notPlaceholder(text: string): boolean {
  if (text.length < 4) return text.length > 0 && !/^[*x.]+$/i.test(text);
  if (/^(.)\1+$/.test(text)) return false;
  if (/^[*x•.#_-]+$/i.test(text)) return false;
  if (/^(<[^>]*>|\$\{[^}]*\}|\$[A-Z_][A-Z0-9_]*|%\(?\w*\)?s|\{\{[^}]*\}\}|\{[^}]*\})$/.test(text)) return false;
  if (/^(null|none|nil|undefined|true|false|changeme|redacted|\[redacted\]|hidden|secret|password|example|string|required|optional|empty|your[_-]?\w*|xxx+)$/i.test(text)) return false;
  if (/^\[[A-Z_]+(:[0-9a-f]+)?\]$/.test(text)) return false; // already masked by us
  return true;
}

/** A random-looking token: not a placeholder, and not one repeated run (`sk-aaaaaaaa…`). */
export function tokenLike(text: string): boolean {
  if (!notPlaceholder(text)) return false;
  const want = Math.min(10, Math.ceil(text.length / 4));
  const seen = new Uint8Array(128);
  let distinct = 0;
  for (let i = 0; i < text.length && distinct < want; i++) {
    const c = text.charCodeAt(i);
    if (c >= 128 || !seen[c]) {
      if (c < 128) seen[c] = 1;
      distinct++;
    }
  }
  return distinct >= want;
}

/** Named validators available to custom detectors (`validator: luhn`). */
export const VALIDATORS: Record<string, (value: string) => boolean> = {
  luhn,
  credit_card: creditCard,
  iban,
  us_ssn: usSsn,
  aba: abaRouting,
  es_dni: esDni,
  uk_nino: ukNino,
  uk_nhs: ukNhs,
  ipv4,
  jwt,
  token: tokenLike,
};
