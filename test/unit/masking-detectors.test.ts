import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CustomDetector } from '../../shared/config';
import { BUILTIN_DETECTORS } from '../../proxy/masking/detectors';
import { createMaskingEngine } from '../../proxy/masking/engine';
import { analyzeRegex, compileCustomDetector, resolveOverlaps, scanText } from '../../proxy/masking/scanner';
import { abaRouting, creditCard, esDni, iban, luhn, ukNhs, ukNino, usSsn, VALIDATORS } from '../../proxy/masking/validators';
import { loadCorpus, score } from '../fixtures/masking-corpus/corpus';

const find = (text: string, ids?: string[]) =>
  resolveOverlaps(scanText(text, ids ? BUILTIN_DETECTORS.filter((d) => ids.includes(d.id)) : BUILTIN_DETECTORS, { deadline: Infinity, budgetMs: 1e9 })).map((m) => ({
    type: m.detector.type,
    value: text.slice(m.start, m.end),
  }));

describe('validators', () => {
  it('Luhn and card issuer ranges, lengths and grouping', () => {
    assert.ok(luhn('4111111111111111'));
    assert.ok(!luhn('4111111111111112'));
    for (const ok of ['4111 1111 1111 1111', '4111-1111-1111-1111', '5555555555554444', '3782 822463 10005', '6011111111111117', '3530111333300000', '2223000048400011'])
      assert.ok(creditCard(ok), ok);
    for (const bad of ['4111 1111 1111 1112', '1234567812345670', '4111-1111 1111-1111', '41 1111 1111 1111 11', '0000000000000000', '5606913906516'])
      assert.ok(!creditCard(bad), bad);
  });
  it('IBAN mod-97 and per-country length', () => {
    assert.ok(iban('GB82 WEST 1234 5698 7654 32'));
    assert.ok(iban('DE89370400440532013000'));
    assert.ok(!iban('DE89370400440532013001'), 'checksum');
    assert.ok(!iban('DE8937040044053201300'), 'length for DE is 22');
    assert.ok(!iban('QQ82WEST12345698765432'), 'unknown country');
  });
  it('US SSN issuance rules', () => {
    assert.ok(usSsn('078-05-1120'));
    for (const bad of ['000-12-3456', '666-12-3456', '912-34-5678', '123-00-4567', '123-45-0000']) assert.ok(!usSsn(bad), bad);
  });
  it('ABA routing checksum and prefix', () => {
    assert.ok(abaRouting('021000021'));
    assert.ok(abaRouting('011000015'));
    assert.ok(!abaRouting('021000022'));
    assert.ok(!abaRouting('991000021'), 'prefix 99 is not assigned');
  });
  it('national ids: Spanish DNI/NIE letter, UK NINO prefixes, NHS modulus 11', () => {
    assert.ok(esDni('12345678Z'));
    assert.ok(!esDni('12345678A'));
    assert.ok(esDni('X1234567L'));
    assert.ok(ukNino('AB 12 34 56 C'));
    assert.ok(!ukNino('QQ123456C'), 'Q is never a prefix letter');
    assert.ok(!ukNino('GB123456A'), 'GB is not allocated');
    assert.ok(ukNhs('943 476 5919'));
    assert.ok(!ukNhs('943 476 5918'));
  });
});

describe('built-in detectors', () => {
  it('find each type in running text and reject look-alikes', () => {
    const text = [
      'card 4111 1111 1111 1111, bad 4111 1111 1111 1112, order 1234567890123, ref 078051120',
      'ssn 078-05-1120; not 000-12-3456; SSN 078051120',
      'mail jane.doe@example.com, not icon@2x.png or user@localhost',
      'IBAN GB82 WEST 1234 5698 7654 32, invalid DE89 3704 0044 0532 0130 01',
      'call +1 (415) 555-2671 or 020 7946 0958; not 2024-05-01 nor 123-456-7890',
      'from 192.168.1.20 and fe80::1ff:fe23:4567:890a; version 1.2.3.4; time 12:00:01; MAC 00:1A:2B:3C:4D:5E; std::vector',
      'routing number 021000021; NINO AB 12 34 56 C; DNI 12345678Z; NHS 943 476 5919; DOB: 1985-03-14; meeting 03/14/2024',
    ].join('\n');
    const got = find(text).map((f) => `${f.type}=${f.value}`);
    assert.deepEqual(got, [
      'CREDIT_CARD=4111 1111 1111 1111',
      'US_SSN=078-05-1120',
      'US_SSN=078051120',
      'EMAIL=jane.doe@example.com',
      'IBAN=GB82 WEST 1234 5698 7654 32',
      'PHONE=+1 (415) 555-2671',
      'PHONE=020 7946 0958',
      'IP_ADDRESS=192.168.1.20',
      'IP_ADDRESS=fe80::1ff:fe23:4567:890a',
      'US_ROUTING=021000021',
      'UK_NINO=AB 12 34 56 C',
      'ES_DNI=12345678Z',
      'UK_NHS=943 476 5919',
      'DATE_OF_BIRTH=1985-03-14',
    ]);
  });

  it('find secrets and mask only the credential part of passwords and URLs', () => {
    const pem = '-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDu2dVp1iK6N2P0DqX4s2kAFDIzOWlbVDMXQ8yfFRQ8IAAAAJg=\n-----END OPENSSH PRIVATE KEY-----';
    const text = [
      'aws_access_key_id=AKIAIOSFODNN7EXAMPLE aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
      'token ghp_16C7e42F292c6912E7710c838347Ae178B4a and xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx',
      'sk_live_4eC39HqLyjWDarjtT1zdp7dc sk-proj-abcDEF123ghiJKL456mnoPQR789stuVWX',
      'sk-ant-api03-abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789_-abcdefghijklmnopqrstuvwxyz0123456789AA',
      'Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U',
      'password=hunter2 postgres://app:s3cr3t@db:5432/app Authorization: Bearer abcdef0123456789abcdef',
      pem,
      'placeholders: password=${DB_PASSWORD} AKIAXXXXXXXXXXXXXXXX ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx sk-learn',
    ].join('\n');
    const got = find(text).map((f) => `${f.type}=${f.value}`);
    assert.deepEqual(got, [
      'AWS_ACCESS_KEY=AKIAIOSFODNN7EXAMPLE',
      'AWS_SECRET_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY',
      'GITHUB_TOKEN=ghp_16C7e42F292c6912E7710c838347Ae178B4a',
      'SLACK_TOKEN=xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx',
      'STRIPE_KEY=sk_live_4eC39HqLyjWDarjtT1zdp7dc',
      'OPENAI_KEY=sk-proj-abcDEF123ghiJKL456mnoPQR789stuVWX',
      'ANTHROPIC_KEY=sk-ant-api03-abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789_-abcdefghijklmnopqrstuvwxyz0123456789AA',
      'JWT=eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U',
      'PASSWORD=hunter2',
      'PASSWORD=s3cr3t',
      'BEARER_TOKEN=abcdef0123456789abcdef',
      `PRIVATE_KEY=${pem}`,
    ]);
  });

  it('mask a PEM key that is cut off before its END line (fail safe)', () => {
    const got = find('key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw\n7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyeh\n');
    assert.equal(got.length, 1);
    assert.equal(got[0]!.type, 'PRIVATE_KEY');
    assert.ok(got[0]!.value.includes('kuemMghRniWaoLcyeh'));
  });
});

describe('labelled corpus', () => {
  it('recall and precision per type are at least 0.95', () => {
    const corpus = loadCorpus();
    assert.ok(corpus.length >= 6, 'corpus files present');
    const scores = score(corpus, (text) =>
      resolveOverlaps(scanText(text, BUILTIN_DETECTORS, { deadline: Infinity, budgetMs: 1e9 })).map((m) => ({ type: m.detector.type, start: m.start, end: m.end })),
    );
    const types = [...scores.values()];
    assert.ok(types.length >= 20, `types scored: ${types.map((t) => t.type).join(', ')}`);
    const report = types.map((s) => `${s.type}: n=${s.labels} recall=${s.recall.toFixed(3)} precision=${s.precision.toFixed(3)}`).join('\n');
    for (const s of types) {
      assert.ok(s.labels >= 25, `${s.type} has only ${s.labels} labelled values\n${report}`);
      assert.ok(s.recall >= 0.95, `${s.type} recall ${s.recall}\n${report}`);
      assert.ok(s.precision >= 0.95, `${s.type} precision ${s.precision}\n${report}`);
    }
    const negatives = corpus.find((d) => d.file === 'hard-negatives.txt')!;
    assert.equal(negatives.labels.length, 0);
    assert.ok(negatives.text.length > 20_000);
  });
});

describe('custom detectors', () => {
  const engineWith = (detectors: unknown[], ruleDetectors: string[]) =>
    createMaskingEngine(
      { detectors: detectors.map((d) => CustomDetector.parse(d)), masking: [{ id: 'r', detectors: ruleDetectors, scope: ['client', 'upstream', 'log'], strategy: 'redact', keepLast: 4 }] },
      { hmacKey: Buffer.alloc(32, 1) },
    );
  const mask = (engine: ReturnType<typeof engineWith>, text: string) =>
    engine.forConnection({ name: 'svc', kind: 'http', upstream: 'http://127.0.0.1:1' })!.request('/', 'text/plain', Buffer.from(text)).log as string;

  it('regex with a named validator, type and context words', () => {
    const e = engineWith([{ id: 'employee_id', type: 'EMPLOYEE', pattern: 'EMP-\\d{6}', context: ['employee', 'staff'], negativeContext: ['example'] }, { id: 'acct', pattern: '\\b\\d{16}\\b', validator: 'luhn' }], ['employee_id', 'acct']);
    assert.equal(mask(e, 'staff badge EMP-123456 issued'), 'staff badge [EMPLOYEE] issued');
    assert.equal(mask(e, 'ticket EMP-123456 opened'), 'ticket EMP-123456 opened', 'no context word nearby');
    assert.equal(mask(e, 'employee example EMP-123456'), 'employee example EMP-123456', 'negative context lowers it away');
    assert.equal(mask(e, 'acct 4111111111111111 and 4111111111111112'), 'acct [ACCT] and 4111111111111112');
  });

  it('dictionaries match whole words, case-insensitively by default', () => {
    const e = engineWith([{ id: 'customer', dictionary: ['Acme Corp', 'Globex', 'Initech'] }], ['customer']);
    assert.equal(mask(e, 'Deal with ACME CORP and globex, not Globexia.'), 'Deal with [CUSTOMER] and [CUSTOMER], not Globexia.');
  });

  it('reject bad definitions with a message naming the detector', () => {
    assert.throws(() => compileCustomDetector(CustomDetector.parse({ id: 'x', pattern: '(unclosed' }), VALIDATORS), /detector "x": invalid regular expression/);
    // the linear-time engine runs nested repetition safely, and refuses what it cannot run
    assert.ok(compileCustomDetector(CustomDetector.parse({ id: 'x', pattern: '(a+)+$' }), VALIDATORS).linear);
    assert.throws(() => compileCustomDetector(CustomDetector.parse({ id: 'x', pattern: 'a(?=b)' }), VALIDATORS), /detector "x": the pattern uses lookahead and lookbehind/);
    assert.throws(() => compileCustomDetector(CustomDetector.parse({ id: 'x', pattern: '(?<!b)a' }), VALIDATORS), /detector "x": the pattern uses lookahead and lookbehind/);
    assert.throws(() => compileCustomDetector(CustomDetector.parse({ id: 'x', pattern: '(a)\\1' }), VALIDATORS), /detector "x": the pattern uses backreferences/);
    assert.throws(() => compileCustomDetector(CustomDetector.parse({ id: 'x', pattern: '(?<n>a)\\k<n>' }), VALIDATORS), /detector "x": the pattern uses backreferences/);
    assert.ok(compileCustomDetector(CustomDetector.parse({ id: 'x', pattern: '[(?=]x' }), VALIDATORS), 'inside a class, (?= is three characters');
    assert.throws(() => compileCustomDetector(CustomDetector.parse({ id: 'x', pattern: '\\d+', validator: 'nope' }), VALIDATORS), /unknown validator "nope"/);
    assert.throws(() => compileCustomDetector(CustomDetector.parse({ id: 'x', pattern: 'a*' }), VALIDATORS), /matches the empty string/);
  });

  it('analyses pattern length for the streaming holdback', () => {
    assert.equal(analyzeRegex('EMP-\\d{6}').maxLength, 10);
    assert.equal(analyzeRegex('(?:ab|cde){2}x?').maxLength, 7);
    assert.equal(analyzeRegex('\\w+').maxLength, Infinity);
    assert.equal(analyzeRegex('(\\w+\\s?)*').nestedRepetition, true);
    assert.equal(analyzeRegex('(?<=x)a{1,3}(?!y)').maxLength, 3);
  });
});
