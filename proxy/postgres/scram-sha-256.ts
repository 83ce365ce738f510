/**
 * SCRAM-SHA-256 client side (RFC 5802, RFC 7677) as PostgreSQL uses it for upstream logins
 * (https://www.postgresql.org/docs/current/sasl-authentication.html): no channel binding (`n,,`),
 * the user name is left empty in client-first (the server uses the startup user), and the password
 * is normalized with SASLprep only in the trivial ASCII sense — PostgreSQL itself falls back to the
 * raw bytes when SASLprep fails, so ASCII passwords are exact.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes, timingSafeEqual } from 'node:crypto';

export const SCRAM_MECHANISM = 'SCRAM-SHA-256';

function hmac(key: Buffer, data: string | Buffer): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

function xor(a: Buffer, b: Buffer): Buffer {
  const out = Buffer.allocUnsafe(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! ^ b[i]!;
  return out;
}

export class ScramError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ScramError';
  }
}

function parseAttributes(msg: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of msg.split(',')) {
    const eq = part.indexOf('=');
    if (eq !== 1) throw new ScramError(`malformed SCRAM message: "${msg}"`);
    out.set(part[0]!, part.slice(2));
  }
  return out;
}

/** One SCRAM-SHA-256 exchange: clientFirst() → clientFinal(serverFirst) → verifyServerFinal(serverFinal). */
export class ScramClient {
  private readonly nonce: string;
  private readonly clientFirstBare: string;
  private expectedServerSignature: Buffer | null = null;

  constructor(
    private readonly password: string,
    nonce = randomBytes(18).toString('base64'),
  ) {
    this.nonce = nonce;
    this.clientFirstBare = `n=*,r=${this.nonce}`;
  }

  /** client-first-message: `n,,n=*,r=<nonce>`. */
  clientFirst(): Buffer {
    return Buffer.from(`n,,${this.clientFirstBare}`);
  }

  /** client-final-message for the server-first-message `r=…,s=…,i=…`. */
  clientFinal(serverFirst: Buffer): Buffer {
    const text = serverFirst.toString('utf8');
    const attrs = parseAttributes(text);
    const nonce = attrs.get('r');
    const salt = attrs.get('s');
    const iterations = Number(attrs.get('i'));
    if (!nonce || !salt || !Number.isInteger(iterations) || iterations < 1) throw new ScramError('the server-first SCRAM message lacks r, s or i');
    if (!nonce.startsWith(this.nonce) || nonce.length === this.nonce.length) throw new ScramError('the server nonce does not extend the client nonce');
    const saltedPassword = pbkdf2Sync(this.password.normalize('NFKC'), Buffer.from(salt, 'base64'), iterations, 32, 'sha256');
    const clientKey = hmac(saltedPassword, 'Client Key');
    const storedKey = createHash('sha256').update(clientKey).digest();
    const clientFinalWithoutProof = `c=${Buffer.from('n,,').toString('base64')},r=${nonce}`;
    const authMessage = `${this.clientFirstBare},${text},${clientFinalWithoutProof}`;
    const clientSignature = hmac(storedKey, authMessage);
    const proof = xor(clientKey, clientSignature).toString('base64');
    const serverKey = hmac(saltedPassword, 'Server Key');
    this.expectedServerSignature = hmac(serverKey, authMessage);
    return Buffer.from(`${clientFinalWithoutProof},p=${proof}`);
  }

  /** Checks the server-final-message `v=<signature>`; throws when the server did not prove it knows the password. */
  verifyServerFinal(serverFinal: Buffer): void {
    const attrs = parseAttributes(serverFinal.toString('utf8'));
    if (attrs.has('e')) throw new ScramError(`the server rejected SCRAM authentication: ${attrs.get('e')}`);
    const v = attrs.get('v');
    if (!v || !this.expectedServerSignature) throw new ScramError('the server-final SCRAM message lacks a signature');
    const got = Buffer.from(v, 'base64');
    if (got.length !== this.expectedServerSignature.length || !timingSafeEqual(got, this.expectedServerSignature))
      throw new ScramError('the server signature does not match: the upstream is not the server that holds this password');
  }
}
