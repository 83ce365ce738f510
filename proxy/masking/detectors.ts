/**
 * Built-in detectors. Each has an id (used in masking rules), a type (shown in redactions and
 * replay), a pattern that finds candidates, and — where a checksum or issuance rule exists — a
 * validator that rejects look-alikes. Context-only detectors (dates of birth, AWS secret keys,
 * routing numbers, bare SSNs) look at the text before the candidate.
 *
 * `tail` is what the streaming masker holds back: a pattern (anchored at the end of the buffer)
 * for the trailing characters that could still grow into a match. It must match every unfinished
 * prefix of every match the pattern can make (see docs/MASKING.md, Streaming).
 */
import type { LinearPattern } from './pattern';
import { isIPv6 } from 'node:net';
import { abaRouting, creditCard, esDni, iban, ipv4, jwt, tokenLike, ukNhs, ukNino, usSsn } from './validators';

/**
 * `number`: runs of ≥4 digits with up to two separators between them; `letters`: one or two
 * capitals followed by a digit; `prefix`: literal secret prefixes (ghp_, sk-, eyJ, AKIA, …);
 * `keyword`: credential and birth-date keywords.
 */
export type AnchorKind = 'number' | 'letters' | 'prefix' | 'keyword';

export interface Detector {
  id: string;
  type: string;
  kind: 'pii' | 'secret' | 'custom';
  description: string;
  /** Higher wins when two matches overlap (then the longer one). */
  priority: number;
  /** Global regex finding candidates; a named group starting with `v` marks the part to mask. */
  pattern?: RegExp;
  /** A pattern someone typed (custom detectors), on the linear-time engine; scanned in windows. */
  linear?: LinearPattern;
  /**
   * Shared candidate passes (see scanner.ts) that find every position where `pattern` can start;
   * the pattern then runs sticky at those positions only, instead of over the whole text.
   */
  anchors?: AnchorKind[];
  /** With the `prefix` / `keyword` anchors: the hits (lower-cased prefixes) this detector starts at. */
  hits?: string[];
  /** With the `number` anchor: digits the match needs at least. */
  minDigits?: number;
  /** With the `number` anchor: the match contains a dot (IPv4). */
  needsDot?: boolean;
  /** With `anchors` and no `pattern`: called at each anchor hit instead of a sticky pattern. */
  findAt?: (text: string, pos: number, push: (start: number, end: number) => void) => void;
  /**
   * With the `number` anchor: a cheap check before the pattern runs — the first character (a digit,
   * `+` or `(`), the length of the first run of digits, and the character after that run.
   */
  startShape?: (first: number, runLength: number, after: number) => boolean;
  /** With the `number` anchor: a cheap check of the token [start, end) before the pattern runs. */
  eligible?: (text: string, start: number, end: number) => boolean;
  /** Hand-written matcher instead of `pattern` (for anchors a regex scans slowly). */
  find?: (text: string, push: (start: number, end: number) => void) => void;
  /** Rejects look-alikes; gets the value and its position in the scanned text. */
  validate?: (value: string, text: string, start: number, end: number) => boolean;
  /** Skip the detector when the text has no ASCII digit. */
  needsDigit?: boolean;
  /** Skip the detector unless one of these (lower-case) words occurs in the text. */
  gateWords?: string[];
  /** Regex source, matched with `$` at the end of the stream buffer (see above). */
  tail?: string;
  tailCaseInsensitive?: boolean;
  /** Longest value the detector can mask, in UTF-16 units; bounds the streaming holdback. */
  maxLength: number;
  /** Extra characters the streaming masker holds when there is no `tail` (custom detectors). */
  holdExtra?: number;
  /** Normalises a value before hashing so that equal values correlate (`4111-1111…` = `4111 1111…`). */
  normalize?: (value: string) => string;
}

const onlyDigits = (v: string) => v.replace(/\D/g, '');
const compact = (v: string) => v.replace(/[\s-]/g, '').toUpperCase();

/** Is one of `words` within `window` characters before `start`? */
export function contextBefore(text: string, start: number, window: number, words: RegExp): boolean {
  return words.test(text.slice(Math.max(0, start - window), start));
}

// Context words match inside identifiers too (`customer_ssn`, `routingNumber`).
const SSN_CONTEXT = /(?<![a-z])(ssn|ss#|social[\s_-]*security|soc\.?\s*sec|taxpayer|tin)(?![a-z])/i;
const ROUTING_CONTEXT = /(routing|(?<![a-z])(aba|rtn)(?![a-z])|transit|bank[\s_-]*(code|number|no\.?|#))/i;
const NHS_CONTEXT = /(?<![a-z])nhs(?![a-z])/i;
const PHONE_CONTEXT = /(phone|mobile|cell|call|fax|sms|whatsapp|contact|(?<![a-z])tel(?![a-z]))/i;
const VERSION_CONTEXT = /\b(version|ver|v|release|build|firmware|oid)[\s:=]*$/i;

// Tails shared by several detectors (see the file comment). Each is bounded.
/** A trailing run of digits, capitals and number punctuation: card, SSN, phone, IBAN, ids, dates. */
const ID_TAIL = "[+(A-Z0-9][A-Z0-9 ().\\/-]{0,47}";
/** A trailing word-ish run: e-mail local parts, key prefixes, tokens, IPv6 groups. */
const TOKEN_TAIL = '[\\w.%+/=:@-]{1,330}';

const MONTHS = 'jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?';
const DATE = `\\d{4}-\\d{1,2}-\\d{1,2}|\\d{1,2}[/.-]\\d{1,2}[/.-](?:\\d{4}|\\d{2})|\\d{1,2}(?:st|nd|rd|th)?\\s+(?:${MONTHS})\\.?,?\\s+\\d{4}|(?:${MONTHS})\\.?\\s+\\d{1,2}(?:st|nd|rd|th)?,?\\s+\\d{4}`;

function plausibleDate(v: string): boolean {
  const now = new Date().getFullYear();
  const nums = v.match(/\d+/g)?.map(Number) ?? [];
  const year = nums.find((n) => n >= 1000) ?? (nums.length === 3 && nums[2]! < 100 ? 1900 + nums[2]! : undefined);
  if (year !== undefined && (year < 1900 || year > now)) return false;
  const small = nums.filter((n) => n < 1000);
  return small.every((n) => n >= 1 && n <= 31 + (small.length === 3 ? 68 : 0));
}

/** E-mail: found from each `@`, then the local part backwards and the domain forwards. */
const EMAIL_DOMAIN = /(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24})(?![\w-]|\.[A-Za-z0-9])/y;
const FILE_EXTENSIONS = new Set(['png', 'jpg', 'jpeg', 'gif', 'svg', 'webp', 'js', 'ts', 'css', 'json', 'html', 'md', 'txt', 'pdf', 'zip', 'tgz', 'gz']);
function isLocalChar(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 46 || c === 95 || c === 37 || c === 43 || c === 45;
}
function findEmails(text: string, push: (s: number, e: number) => void): void {
  let at = text.indexOf('@');
  while (at !== -1) {
    let s = at;
    while (s > 0 && at - s < 64 && isLocalChar(text.charCodeAt(s - 1))) s--;
    while (s < at && (text[s] === '.' || text[s] === '-')) s++;
    EMAIL_DOMAIN.lastIndex = at + 1;
    const m = s < at && text[at - 1] !== '.' ? EMAIL_DOMAIN.exec(text) : null;
    const before = s > 0 ? text.charCodeAt(s - 1) : 32;
    if (m && !FILE_EXTENSIONS.has(m[1]!.toLowerCase()) && before !== 47 /* a path segment, not an address */) {
      push(s, EMAIL_DOMAIN.lastIndex);
      at = text.indexOf('@', EMAIL_DOMAIN.lastIndex);
    } else at = text.indexOf('@', at + 1);
  }
}

/** IPv6: found from each `:`, expanded over hex digits, colons and an embedded IPv4 tail. */
function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70);
}
function isWordChar(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c === 95;
}
/**
 * IPv6: every colon is a candidate only when the colons around it could form an address — a "::"
 * or seven colons within 39 characters — which rules out times, ratios and JSON punctuation cheaply.
 */
function findIpv6(text: string, push: (s: number, e: number) => void): void {
  const colons: number[] = [];
  for (let i = text.indexOf(':'); i !== -1; i = text.indexOf(':', i + 1)) colons.push(i);
  let doneTo = -1;
  let runStart = 0;
  let runPos = 0;
  for (let k = 0; k < colons.length; k++) {
    const i = colons[k]!;
    if (i < doneTo) continue;
    // a colon of an address has a hex digit or another colon beside it
    const pc = i > 0 ? text.charCodeAt(i - 1) : 0;
    const nc = text.charCodeAt(i + 1);
    if (!(isHex(pc) || pc === 58 || isHex(nc) || nc === 58) || (pc === 58 && nc === 58) /* ":::" is never in one */) continue;
    let plausible = false;
    for (let j = k; j >= 0 && i - colons[j]! <= 39 && !plausible; j--) plausible = (j + 6 < colons.length && colons[j + 6]! - colons[j]! <= 39) || (j + 1 < colons.length && colons[j + 1] === colons[j]! + 1 && colons[j + 1]! - i <= 39);
    for (let j = k + 1; j < colons.length && colons[j]! - i <= 39 && !plausible; j++) plausible = colons[j] === colons[j - 1]! + 1;
    if (!plausible) continue;
    // back over hex digits and colons, at most 40 (the run start is kept, so runs are read once)
    if (runPos < i - 41) runPos = runStart = i - 41; // only the last 40 characters matter
    for (; runPos < i; runPos++) {
      const c = text.charCodeAt(runPos);
      if (!(isHex(c) || c === 58)) runStart = runPos + 1;
    }
    const s = Math.max(runStart, i - 40);
    let e = i;
    while (e < text.length && (isHex(text.charCodeAt(e)) || text.charCodeAt(e) === 58 || text.charCodeAt(e) === 46) && e - s < 46) e++;
    while (e > i && (text[e - 1] === '.' || text[e - 1] === ':') && !text.endsWith('::', e)) e--;
    const okLeft = s === 0 || !(isWordChar(text.charCodeAt(s - 1)) || text.charCodeAt(s - 1) === 46);
    const okRight = e === text.length || !(isWordChar(text.charCodeAt(e)) || text.charCodeAt(e) === 46);
    // 2–8 colons and at most one "::" before the full check (cheap on runs of colons)
    let nColons = 0;
    let doubles = 0;
    for (let q = s; q < e && okLeft && okRight; q++)
      if (text.charCodeAt(q) === 58) {
        nColons++;
        if (q > s && text.charCodeAt(q - 1) === 58) doubles++;
      }
    const candidate = okLeft && okRight && nColons >= 2 && nColons <= 8 && doubles <= 1 ? text.slice(s, e) : '';
    if (candidate && isIPv6(candidate)) {
      const groups = candidate.split(':').filter(Boolean);
      if (groups.length >= 2 && /[1-9a-f]/i.test(candidate.replace(/::/, ''))) {
        push(s, e);
        doneTo = e;
        continue;
      }
    }
    doneTo = Math.max(doneTo, e);
  }
}

/**
 * AWS secret keys: 40 base64 characters within 100 characters after "secret", "aws" or an access
 * key id (the keyword and prefix passes call this at each hit).
 */
const AWS_SECRET_HIT = /secret|aws|(?:AKIA|ASIA)[A-Z2-7]{16}/iy;
function isB64(c: number): boolean {
  return (isWordChar(c) && c !== 95) || c === 47 || c === 43;
}
/** Runs of exactly 40 base64 characters (not followed by "=") starting in the 100 characters after the hit. */
function findAwsSecretAt(text: string, pos: number, push: (s: number, e: number) => void): void {
  AWS_SECRET_HIT.lastIndex = pos;
  const hit = AWS_SECRET_HIT.exec(text);
  if (!hit) return;
  const from = pos + hit[0].length;
  const to = Math.min(text.length, from + 100);
  let i = from;
  while (i < to) {
    if (!isB64(text.charCodeAt(i))) {
      i++;
      continue;
    }
    const start = i;
    while (i < text.length && i - start <= 40 && isB64(text.charCodeAt(i))) i++;
    if (i - start === 40 && text.charCodeAt(i) !== 61 && (start === 0 || !isB64(text.charCodeAt(start - 1)))) push(start, i);
    while (i < text.length && isB64(text.charCodeAt(i))) i++;
  }
}

export const BUILTIN_DETECTORS: Detector[] = [
  {
    id: 'credit_card',
    type: 'CREDIT_CARD',
    kind: 'pii',
    description: 'Payment card number (Luhn, issuer ranges and lengths, consistent 4-digit grouping)',
    priority: 50,
    anchors: ['number'],
    startShape: (first, run) => first !== 43 && first !== 40 && (run === 4 || run >= 12),
    minDigits: 12,
    pattern: /(?<![\w./+-])\d(?:[ -]?\d){11,18}(?![\w]|[.-]\d)/g,
    validate: (v) => creditCard(v),
    needsDigit: true,
    tail: ID_TAIL,
    maxLength: 23,
    normalize: onlyDigits,
  },
  {
    id: 'iban',
    type: 'IBAN',
    kind: 'pii',
    description: 'International bank account number (ISO 13616 mod-97, per-country length)',
    priority: 50,
    anchors: ['letters'],
    pattern: /(?<![\w])[A-Z]{2}\d{2}(?:(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?|[A-Z0-9]{11,30})(?![\w])/g,
    validate: (v) => iban(v),
    needsDigit: true,
    tail: ID_TAIL,
    maxLength: 42,
    normalize: compact,
  },
  {
    id: 'us_ssn',
    type: 'US_SSN',
    kind: 'pii',
    description: 'US Social Security number (area/group/serial rules; unseparated only next to "SSN")',
    priority: 50,
    anchors: ['number'],
    startShape: (first, run, after) => (run === 3 && (after === 45 || after === 32)) || run === 9,
    minDigits: 9,
    pattern: /(?<![\w./-])\d{3}([- ]?)\d{2}\1\d{4}(?![\w]|[.-]\d)/g,
    validate: (v, text, start) => usSsn(v) && (/[- ]/.test(v) || contextBefore(text, start, 40, SSN_CONTEXT)),
    needsDigit: true,
    tail: ID_TAIL,
    maxLength: 11,
    normalize: onlyDigits,
  },
  {
    id: 'us_routing',
    type: 'US_ROUTING',
    kind: 'pii',
    description: 'US bank routing number (ABA prefix and 3-7-1 checksum; needs "routing"/"ABA" nearby)',
    priority: 52,
    anchors: ['number'],
    startShape: (_f, run) => run === 9,
    minDigits: 9,
    pattern: /(?<![\w./-])\d{9}(?![\w]|[.-]\d)/g,
    validate: (v, text, start) => abaRouting(v) && contextBefore(text, start, 48, ROUTING_CONTEXT),
    needsDigit: true,
    tail: ID_TAIL,
    maxLength: 9,
  },
  {
    id: 'uk_nino',
    type: 'UK_NINO',
    kind: 'pii',
    description: 'UK National Insurance number (HMRC prefix rules, suffix A–D)',
    priority: 50,
    anchors: ['letters'],
    pattern: /(?<![\w])[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![\w])/g,
    validate: (v) => ukNino(v),
    needsDigit: true,
    tail: ID_TAIL,
    maxLength: 13,
    normalize: compact,
  },
  {
    id: 'es_dni',
    type: 'ES_DNI',
    kind: 'pii',
    description: 'Spanish DNI / NIE (mod-23 check letter)',
    priority: 50,
    anchors: ['number', 'letters'],
    startShape: (_f, run) => run === 8,
    minDigits: 7,
    // the token ends in 7–8 digits followed by the check letter (or a dash before it)
    eligible: (text, _s, end) => {
      const c = text.charCodeAt(end);
      return ((c >= 65 && c <= 90) || c === 45) && /^\d{7}$/.test(text.slice(end - 7, end));
    },
    pattern: /(?<![\w-])(?:\d{8}|[XYZ]-?\d{7})-?[A-Z](?![\w])/g,
    validate: (v) => esDni(v),
    needsDigit: true,
    tail: ID_TAIL,
    maxLength: 11,
    normalize: compact,
  },
  {
    id: 'uk_nhs',
    type: 'UK_NHS',
    kind: 'pii',
    description: 'UK NHS number (modulus 11; needs "NHS" nearby)',
    priority: 55,
    anchors: ['number'],
    startShape: (_f, run, after) => (run === 3 && (after === 45 || after === 32)) || run === 10,
    minDigits: 10,
    pattern: /(?<![\w./-])\d{3}([ -]?)\d{3}\1\d{4}(?![\w]|[.-]\d)/g,
    validate: (v, text, start) => ukNhs(v) && contextBefore(text, start, 40, NHS_CONTEXT),
    needsDigit: true,
    tail: ID_TAIL,
    maxLength: 12,
    normalize: onlyDigits,
  },
  {
    id: 'phone',
    type: 'PHONE',
    kind: 'pii',
    description: 'Phone number: E.164 (+CC …), North American (NANP rules) and trunk-prefixed national formats',
    priority: 30,
    anchors: ['number'],
    startShape: (first, run, after) => first === 43 || first === 40 || first === 48 || run === 10 || ((run === 3 || run === 1) && (after === 45 || after === 46 || after === 32)),
    minDigits: 7,
    eligible: (text, start, end) => !(end - start === 10 && text[start + 4] === '-' && text[start + 7] === '-'), // ISO dates
    pattern:
      /(?<![\w.+/-])(?:\+[1-9]\d{0,2}(?:[ .-]?\(?\d{1,5}\)?){1,5}|(?:1[ .-])?(?:\(\d{3}\) ?|\d{3}[.-])\d{3}[.-]\d{4}|\d{3} \d{3} \d{4}|0\d{2,4}[ -]\d{3,4}[ -]?\d{3,4}|0[1-9](?:[ .]\d{2}){4}|\d{10})(?![\w]|[.-]\d)/g,
    validate: (v, text, start) => {
      const d = onlyDigits(v);
      if (v.startsWith('+')) return d.length >= 8 && d.length <= 15;
      if (/^\d{10}$/.test(v)) return /^[2-9]\d{2}[2-9]\d{6}$/.test(d) && contextBefore(text, start, 32, PHONE_CONTEXT);
      if (v.startsWith('0')) return d.length >= 9 && d.length <= 11;
      const nanp = d.length === 11 ? d.slice(1) : d;
      return nanp.length === 10 && /^[2-9]\d{2}[2-9]\d{6}$/.test(nanp);
    },
    needsDigit: true,
    tail: ID_TAIL,
    maxLength: 24,
    normalize: (v) => (v.startsWith('+') ? '+' : '') + onlyDigits(v),
  },
  {
    id: 'email',
    type: 'EMAIL',
    kind: 'pii',
    description: 'E-mail address (RFC 5321 lengths; file names such as icon@2x.png excluded)',
    priority: 30,
    find: findEmails,
    tail: TOKEN_TAIL,
    maxLength: 320,
    normalize: (v) => v.toLowerCase(),
  },
  {
    id: 'ipv4',
    type: 'IP_ADDRESS',
    kind: 'pii',
    description: 'IPv4 address (octets 0–255; version strings and OIDs excluded)',
    priority: 25,
    anchors: ['number'],
    startShape: (_f, run, after) => run <= 3 && after === 46,
    minDigits: 4,
    needsDot: true,
    pattern: /(?<![\w.-])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)/g,
    validate: (v, text, start) => ipv4(v) && !VERSION_CONTEXT.test(text.slice(Math.max(0, start - 12), start)),
    needsDigit: true,
    tail: ID_TAIL,
    maxLength: 15,
  },
  {
    id: 'ipv6',
    type: 'IP_ADDRESS',
    kind: 'pii',
    description: 'IPv6 address (RFC 4291 text forms, at least two groups)',
    priority: 25,
    find: findIpv6,
    tail: TOKEN_TAIL,
    maxLength: 45,
    normalize: (v) => v.toLowerCase(),
  },
  {
    id: 'date_of_birth',
    type: 'DATE_OF_BIRTH',
    kind: 'pii',
    description: 'Date of birth, only next to "DOB", "date of birth", "born", "birthday"',
    priority: 45,
    anchors: ['keyword'],
    hits: ['d', 'birth', 'born'],
    pattern: new RegExp(
      `(?<![A-Za-z])(?:d\\.?o\\.?b|date[\\s_-]*of[\\s_-]*birth|birth(?:[\\s_-]*date|day)?|born(?:\\s+on)?)(?![A-Za-z])\\.?(?:\\\\?["'])?\\s{0,8}(?:[:=-]\\s{0,8})?(?:\\\\?["'])?(?:is\\s{1,3}|on\\s{1,3}|was\\s{1,3})?(?<v>${DATE})(?!\\w)`,
      'gid',
    ),
    validate: (v) => plausibleDate(v),
    tail: `(?:\\d{1,2}(?:st|nd|rd|th)?\\s{1,3})?(?:${MONTHS})[a-z]{0,6}\\.?,?(?:\\s{1,3}\\d{0,4}(?:st|nd|rd|th)?,?){0,2}\\s{0,3}|\\d{1,2}(?:st|nd|rd|th)?\\s{1,3}[a-z]{0,9}`,
    tailCaseInsensitive: true,
    maxLength: 30,
  },
  // ---- secrets ----
  {
    id: 'aws_access_key',
    type: 'AWS_ACCESS_KEY',
    kind: 'secret',
    description: 'AWS access key id (AKIA…, ASIA… temporary, ABIA, ACCA)',
    priority: 80,
    anchors: ['prefix'],
    hits: ['akia', 'asia', 'abia', 'acca'],
    pattern: /(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}(?![A-Za-z0-9])/g,
    validate: (v) => tokenLike(v.slice(4)),
    tail: TOKEN_TAIL,
    maxLength: 20,
  },
  {
    id: 'aws_secret_key',
    type: 'AWS_SECRET_KEY',
    kind: 'secret',
    description: 'AWS secret access key (40 base64 characters next to "secret"/"aws" or an access key id)',
    priority: 75,
    anchors: ['keyword', 'prefix'],
    hits: ['secret', 'aws', 'akia', 'asia'],
    findAt: findAwsSecretAt,
    validate: (v) => /[a-z]/.test(v) && /[A-Z]/.test(v) && /[0-9/+]/.test(v) && tokenLike(v),
    tail: TOKEN_TAIL,
    maxLength: 40,
  },
  {
    id: 'github_token',
    type: 'GITHUB_TOKEN',
    kind: 'secret',
    description: 'GitHub token (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_)',
    priority: 80,
    anchors: ['prefix'],
    hits: ['gh', 'github_pat_'],
    pattern: /(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244})(?![A-Za-z0-9_])/g,
    validate: (v) => tokenLike(v.slice(v.indexOf('_') + 1)),
    tail: TOKEN_TAIL,
    maxLength: 255,
  },
  {
    id: 'slack_token',
    type: 'SLACK_TOKEN',
    kind: 'secret',
    description: 'Slack token (xoxb-, xoxp-, xoxa-, xoxr-, xoxs-, xoxe-, xapp-) and incoming-webhook URL',
    priority: 80,
    anchors: ['prefix'],
    hits: ['xox', 'xapp-', 'https://hooks.slack.com'],
    pattern: /(?<![\w-])(?:xox[abposre]-(?:\d+-)?[A-Za-z0-9-]{10,250}|xapp-\d-[A-Za-z0-9-]{10,250}|https:\/\/hooks\.slack\.com\/services\/T[A-Z0-9]+\/B[A-Z0-9]+\/[A-Za-z0-9]{16,64})(?![\w-])/g,
    validate: (v) => tokenLike(v.replace(/^.*\//, '').replace(/^x[a-z]+-/, '')),
    tail: TOKEN_TAIL,
    maxLength: 270,
  },
  {
    id: 'stripe_key',
    type: 'STRIPE_KEY',
    kind: 'secret',
    description: 'Stripe secret or restricted key (sk_live_, sk_test_, rk_live_, rk_test_) and webhook secret (whsec_)',
    priority: 80,
    anchors: ['prefix'],
    hits: ['sk_', 'rk_', 'whsec_'],
    pattern: /(?<![\w])(?:(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,247}|whsec_[A-Za-z0-9]{24,100})(?![\w])/g,
    validate: (v) => tokenLike(v.replace(/^(?:sk|rk)_(?:live|test)_|^whsec_/, '')),
    tail: TOKEN_TAIL,
    maxLength: 255,
  },
  {
    id: 'anthropic_key',
    type: 'ANTHROPIC_KEY',
    kind: 'secret',
    description: 'Anthropic API key (sk-ant-…)',
    priority: 85,
    anchors: ['prefix'],
    hits: ['sk-'],
    pattern: /(?<![\w-])sk-ant-[a-z]{2,8}\d{2}-[A-Za-z0-9_-]{20,200}(?![\w-])/g,
    validate: (v) => tokenLike(v.slice(14)),
    tail: TOKEN_TAIL,
    maxLength: 220,
  },
  {
    id: 'openai_key',
    type: 'OPENAI_KEY',
    kind: 'secret',
    description: 'OpenAI API key (sk-…, sk-proj-…, sk-svcacct-…, sk-admin-…)',
    priority: 80,
    anchors: ['prefix'],
    hits: ['sk-'],
    pattern: /(?<![\w-])sk-(?!ant-)(?:(?:proj|svcacct|admin|None)-)?[A-Za-z0-9_-]{20,200}(?![\w-])/g,
    validate: (v) => /\d/.test(v) && /[a-z]/.test(v) && /[A-Z]/.test(v) && tokenLike(v.slice(3)),
    tail: TOKEN_TAIL,
    maxLength: 212,
  },
  {
    id: 'jwt',
    type: 'JWT',
    kind: 'secret',
    description: 'JSON Web Token (three base64url segments, header decodes with "alg")',
    priority: 85,
    anchors: ['prefix'],
    hits: ['eyj'],
    pattern: /(?<![\w-])eyJ[A-Za-z0-9_-]{5,2000}\.[A-Za-z0-9_-]{2,8000}\.[A-Za-z0-9_-]{0,1000}(?![\w-])/g,
    validate: (v) => jwt(v),
    tail: 'eyJ[\\w.-]{0,11010}|ey?',
    maxLength: 11010,
  },
  {
    id: 'private_key',
    type: 'PRIVATE_KEY',
    kind: 'secret',
    description: 'PEM / OpenSSH / PGP private key block (multi-line; also JSON-escaped and truncated blocks)',
    priority: 95,
    anchors: ['prefix'],
    hits: ['-----begin'],
    pattern:
      /-----BEGIN ((?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?)-----(?:[\s\S]{0,16384}?-----END \1-----|(?:\\[rn]|[\r\n]|[A-Za-z0-9+/=:,-])*)/g,
    tail: '-----BEGIN (?![\\s\\S]*?-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----)[\\s\\S]{0,16500}|-{1,5}(?:B(?:E(?:G(?:I(?:N(?: [A-Z0-9 ]{0,40})?)?)?)?)?)?',
    maxLength: 16500,
  },
  {
    id: 'password',
    type: 'PASSWORD',
    kind: 'secret',
    description: 'Password or secret after password=, pwd:, "secret": … and the password in scheme://user:password@host',
    priority: 70,
    anchors: ['keyword', 'prefix'],
    hits: ['pass', 'pwd', 'secret', 'api', 'access', 'auth', 'private', '://'],
    pattern:
      /(?:(?<![A-Za-z])(?:pass(?:word|wd|phrase)?|pwd|secret|(?:api[_-]?|private[_-]?)key|apikey|(?:access|auth)[_-]?token)(?![A-Za-z])(?:\\?["'])?\s{0,8}(?:[:=]|=>)\s{0,8}(?:\\?"(?<v1>[^"\\\n]{1,200})\\?"|'(?<v2>[^'\n]{1,200})'|(?<v3>[^\s"'&;,)}\]<>\\]{1,200}))|:\/\/[^\s:/@]{0,100}:(?<v4>[^\s@/]{1,200})@)/gid,
    validate: (v) => notPlaceholderValue(v),
    tail: '(?:pass(?:word|wd|phrase)?|pwd|secret|api[_-]?key|apikey|token|private[_-]?key)\\\\?["\']?\\s{0,8}(?:[:=]|=>)?\\s{0,8}\\\\?["\']?[^\\n]{0,201}|:(?:\\/(?:\\/[^\\s:/@]{0,100}(?::[^\\s@/]{0,200})?)?)?',
    tailCaseInsensitive: true,
    maxLength: 200,
  },
  {
    id: 'bearer_token',
    type: 'BEARER_TOKEN',
    kind: 'secret',
    description: 'Token after "Bearer", "Basic" or "Token" in an Authorization header or text',
    priority: 40,
    anchors: ['keyword'],
    hits: ['bearer', 'basic', 'token'],
    pattern: /\b(?:[Bb]earer|BEARER|[Bb]asic|[Tt]oken)\s{1,8}(?<v>[A-Za-z0-9._~+/-]{16,4096}={0,3})(?![\w.~+/=-])/gd,
    validate: (v) => tokenLike(v) && /\d/.test(v),
    tail: `(?:[Bb]earer|BEARER|[Bb]asic|[Tt]oken)\\s{1,8}[A-Za-z0-9._~+/=-]{0,4100}|${TOKEN_TAIL}`,
    maxLength: 4099,
  },
];

function notPlaceholderValue(v: string): boolean {
  return tokenLikeOrWord(v);
}

/** Passwords can be words ("hunter2"); reject only placeholders and references to variables. */
function tokenLikeOrWord(v: string): boolean {
  if (v.length < 3) return false;
  if (/^[*x•.#_-]+$/i.test(v) || /^(.)\1+$/.test(v)) return false;
  if (/^(<[^>]*>?|\$\{[^}]*\}?|\$\(?[A-Za-z_][A-Za-z0-9_]*\)?|%\(?\w*\)?s|\{\{[^}]*(\}\})?|\{[^}]*\}?|process\.env\.\w+|os\.environ.*|env\(.*)$/.test(v)) return false;
  if (/^(null|none|nil|undefined|true|false|redacted|\[redacted\]|hidden|required|optional|empty|string|str|int|your[_-]?\w*|xxx+|\*+)$/i.test(v)) return false;
  if (/^\[[A-Z_]+(:[0-9a-f]+)?\]$/.test(v)) return false;
  return true;
}

export const BUILTIN_BY_ID = new Map(BUILTIN_DETECTORS.map((d) => [d.id, d]));

/** Detector groups usable in rules: `all`, `pii`, `secrets`. */
export const DETECTOR_GROUPS: Record<string, string[]> = {
  all: BUILTIN_DETECTORS.map((d) => d.id),
  pii: BUILTIN_DETECTORS.filter((d) => d.kind === 'pii').map((d) => d.id),
  secrets: BUILTIN_DETECTORS.filter((d) => d.kind === 'secret').map((d) => d.id),
  ip_address: ['ipv4', 'ipv6'],
};
