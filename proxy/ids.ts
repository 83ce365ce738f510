import { randomBytes } from 'node:crypto';

/** Time-ordered, URL-safe ids: `<prefix>_<ms base36><random>`, sortable by creation time. */
export function newId(prefix: string): string {
  return `${prefix}_${Date.now().toString(36).padStart(9, '0')}${randomBytes(8).toString('hex')}`;
}
