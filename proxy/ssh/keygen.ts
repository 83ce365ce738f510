/**
 * Ed25519 key pairs in OpenSSH format. ssh2's generateKeyPairSync strips the leading zero bytes of
 * the public key, so about one pair in 256 comes out with a 31-byte key that neither ssh2's
 * parseKey nor OpenSSH reads back (mscdex/ssh2#1390): such a pair is drawn again. A gateway host
 * key made that way would have stopped every later start of the gateway with "does not load".
 */
import ssh2 from 'ssh2';

export function generateEd25519(comment?: string): { private: string; public: string } {
  for (;;) {
    const pair = ssh2.utils.generateKeyPairSync('ed25519', comment === undefined ? undefined : { comment });
    if (!(ssh2.utils.parseKey(pair.private) instanceof Error) && !(ssh2.utils.parseKey(pair.public) instanceof Error)) return pair;
  }
}
