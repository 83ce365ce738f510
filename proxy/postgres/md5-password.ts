/**
 * MD5 password response for AuthenticationMD5Password
 * (https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP):
 * `'md5' + md5hex(md5hex(password + user) + salt)`.
 */
import { createHash } from 'node:crypto';

export function md5PasswordResponse(user: string, password: string, salt: Buffer): string {
  const inner = createHash('md5').update(password + user).digest('hex');
  return `md5${createHash('md5').update(Buffer.concat([Buffer.from(inner), salt])).digest('hex')}`;
}
