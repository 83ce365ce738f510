import assert from 'node:assert/strict';
import { createPrivateKey } from 'node:crypto';
import { describe, it } from 'node:test';
import { keyFingerprint } from '../../proxy/audit/checkpoint-signer';
import {
  ed25519KeyId,
  formatCheckpointText,
  formatVerifierKey,
  keyIdHex,
  NoteFormatError,
  parseCheckpointText,
  parseNote,
  parseVerifierKey,
  signNote,
  verifyNote,
} from '../../proxy/audit/signed-note';

// Known-answer vectors from golang.org/x/mod/sumdb/note (note_test.go, example_test.go), the
// reference implementation of C2SP signed-note.
const PETER_VKEY = 'PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW';
const PETER_SKEY = 'PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz';
const TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const NOTE = `${TEXT}\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n`;
// transparency-dev/formats note tests: a verifier key whose base64 contains '+'.
const PLUS_VKEY = 'TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6';

function peterPrivateKey() {
  const seed = Buffer.from(PETER_SKEY.slice('PRIVATE+KEY+PeterNeumann+c74f20a3+'.length), 'base64').subarray(1);
  return createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]), format: 'der', type: 'pkcs8' });
}

describe('C2SP signed notes (Ed25519)', () => {
  it('parses verifier keys and derives the key id as SHA-256(name ‖ 0x0A ‖ 0x01 ‖ key)[:4]', () => {
    const v = parseVerifierKey(PETER_VKEY);
    assert.equal(v.name, 'PeterNeumann');
    assert.equal(keyIdHex(v.keyId), 'c74f20a3');
    assert.equal(keyIdHex(ed25519KeyId(v.name, v.publicKey)), 'c74f20a3');
    assert.equal(formatVerifierKey(v), PETER_VKEY);
    assert.equal(keyIdHex(parseVerifierKey(PLUS_VKEY).keyId), '7997405c');
    assert.match(keyFingerprint(v.publicKey), /^SHA256:[A-Za-z0-9+/]{43}$/);
    assert.throws(() => parseVerifierKey('PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW'), NoteFormatError);
    assert.throws(() => parseVerifierKey('PeterNeumann+c74f20a3'), NoteFormatError);
    assert.throws(() => parseVerifierKey('Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW'), NoteFormatError);
  });

  it('verifies the reference note and signs it byte for byte', () => {
    const v = parseVerifierKey(PETER_VKEY);
    assert.deepEqual(verifyNote(NOTE, v), { ok: true, text: TEXT });
    assert.equal(signNote(TEXT, 'PeterNeumann', peterPrivateKey()), NOTE);
  });

  it('rejects an altered note, ignores unknown signers, refuses malformed notes', () => {
    const v = parseVerifierKey(PETER_VKEY);
    assert.equal(verifyNote(NOTE.replace('answer', 'Answer'), v).ok, false);
    assert.equal((verifyNote(NOTE.replace('answer', 'Answer'), v) as { reason: string }).reason, 'bad-signature');
    const other = parseVerifierKey(PLUS_VKEY);
    assert.equal((verifyNote(NOTE, other) as { reason: string }).reason, 'unknown-key');
    assert.throws(() => parseNote(TEXT), NoteFormatError);
    assert.throws(() => parseNote(`${TEXT}\n-- PeterNeumann abc\n`), NoteFormatError);
    assert.throws(() => signNote('no newline', 'x', peterPrivateKey()), NoteFormatError);
    assert.throws(() => signNote('bell\u0007\n', 'x', peterPrivateKey()), NoteFormatError);
  });

  it('writes and reads tlog checkpoints (origin, size, base64 root, time extension)', () => {
    const root = Buffer.alloc(32, 7);
    const text = formatCheckpointText({ origin: 'custody/host', treeSize: 42, rootHash: root, time: Date.parse('2026-03-01T10:00:00Z') });
    assert.equal(text, `custody/host\n42\n${root.toString('base64')}\ntime 2026-03-01T10:00:00.000Z\n`);
    assert.deepEqual(parseCheckpointText(text), { origin: 'custody/host', treeSize: 42, rootHash: root, time: Date.parse('2026-03-01T10:00:00Z') });
    assert.deepEqual(parseCheckpointText(`example.com/log\n0\n${root.toString('base64')}\n`), { origin: 'example.com/log', treeSize: 0, rootHash: root });
    assert.throws(() => parseCheckpointText('custody/host\n042\nAAAA\n'), NoteFormatError);
    assert.throws(() => parseCheckpointText(`custody/host\n1\n${Buffer.alloc(31).toString('base64')}\n`), NoteFormatError);
    assert.throws(() => parseCheckpointText(`custody/host\n1\n${root.toString('base64')}\n\n`), NoteFormatError);
  });
});
