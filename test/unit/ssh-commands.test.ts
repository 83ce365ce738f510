// How SSH exec commands are read (proxy/policy/shell-commands.ts) and matched by policies: the
// command corpus in test/fixtures/ssh-commands.jsonl, allow-list and hold semantics, and the SSH
// parts that work on bytes without sockets (SFTP packet framing, terminal output and echo).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import ssh2 from 'ssh2';
import { Config } from '../../shared/config';
import type { Identity } from '../../shared/identity';
import { PolicyEngine } from '../../proxy/policy/engine';
import { commandMatches, compileCommandPattern, parseExec } from '../../proxy/policy/shell-commands';
import { generateEd25519 } from '../../proxy/ssh/keygen';
import { resolveRemotePath, SftpPacketReader } from '../../proxy/ssh/sftp';
import { EchoWatch, OutputTap } from '../../proxy/ssh/terminal';

interface Case {
  cmd: string;
  commands: string[];
  unknown?: boolean;
  uploads?: string[];
  writes?: string[];
}

const corpus = readFileSync(new URL('../fixtures/ssh-commands.jsonl', import.meta.url), 'utf8')
  .split('\n')
  .filter((l) => l.trim() && !l.startsWith('#'))
  .map((l) => JSON.parse(l) as Case);

const identity: Identity = { subject: 'key:t', name: 't', groups: ['dev'], roles: ['user'], via: 'api-key' };

function decide(engine: PolicyEngine, cmd: string) {
  const p = parseExec(cmd);
  const uploads = p.transfers.filter((t) => t.direction === 'upload');
  return engine.evaluate({
    connection: 'box',
    protocol: 'ssh',
    identity,
    ssh: { operations: uploads.length ? ['exec', 'file_transfer'] : ['exec'], commands: p.commands.map((c) => c.argv), unknown: p.unknown.length > 0, paths: uploads.flatMap((t) => t.paths) },
    text: cmd,
    detectorHits: [],
  });
}

describe('ssh exec commands', () => {
  it(`reads each of the ${corpus.length} corpus commands as recorded`, () => {
    assert.ok(corpus.length >= 60);
    for (const c of corpus) {
      const p = parseExec(c.cmd);
      assert.deepEqual(p.commands.map((x) => x.argv.join(' ')), c.commands, c.cmd);
      assert.equal(p.unknown.length > 0, !!c.unknown, `${c.cmd}: ${p.unknown.join('; ')}`);
      assert.deepEqual(p.transfers.filter((t) => t.direction === 'upload').flatMap((t) => t.paths), c.uploads ?? [], c.cmd);
      assert.deepEqual(p.writes, c.writes ?? [], c.cmd);
    }
  });

  it('an allow-list lets through only commands it names; everything else, however hidden, reaches the hold', () => {
    const config = Config.parse({
      connections: [{ name: 'box', kind: 'ssh', upstream: 'ssh://deploy@127.0.0.1:22', listen: '127.0.0.1:2222' }],
      policies: [
        { name: 'read-only', match: { commands: ['systemctl status *', 'journalctl *', 'tail *', 'ls *', 'df *', 'cat *', 'grep *'] }, action: 'allow' },
        { name: 'hold-rest', match: { ssh: ['exec', 'shell'] }, action: 'hold', hold: { approvers: ['ops'] } },
      ],
    });
    const engine = new PolicyEngine(config.policies);
    for (const ok of ['systemctl status nginx', 'journalctl -u nginx --since today | tail -n 50', 'ls -la /var/log && df -h', 'cat access.log | grep 500']) assert.equal(decide(engine, ok).rule, 'read-only', ok);
    for (const c of corpus.filter((x) => /rm|bash|sh$|eval|source|^\. |python|node|perl|\$/.test(x.cmd))) assert.equal(decide(engine, c.cmd).rule, 'hold-rest', c.cmd);
  });

  it('a hold or deny rule on a command matches it under every spelling, and matches what it cannot see', () => {
    const engine = new PolicyEngine(Config.parse({ policies: [{ name: 'no-rm-rf', match: { commands: ['rm -rf *'] }, action: 'deny' }] }).policies);
    for (const c of corpus.filter((x) => x.cmd.includes('rm') && x.commands.some((a) => a.startsWith('rm -f -r')))) assert.equal(decide(engine, c.cmd).action, 'deny', c.cmd);
    assert.equal(decide(engine, 'sh -c "echo harmless"').action, 'deny', 'an interpreter is unknown, so a deny rule takes it');
    assert.equal(decide(engine, 'rm -f one-file').action, 'allow');
  });

  it('file transfer rules match the paths written, by any road', () => {
    const engine = new PolicyEngine(Config.parse({ policies: [{ name: 'no-etc', match: { ssh: ['file_transfer'], paths: ['/etc/*'] }, action: 'deny' }] }).policies);
    assert.equal(decide(engine, 'scp -t /etc/cron.d').action, 'deny');
    assert.equal(decide(engine, 'rsync --server -vlogDtpre.iLsfxC . /etc/ssh').action, 'deny');
    assert.equal(decide(engine, 'tar -xf - -C /etc/nginx').action, 'deny');
    assert.equal(decide(engine, 'scp -t /srv/upload').action, 'allow');
    assert.equal(decide(engine, 'scp -f /etc/passwd').action, 'allow', 'a download writes nothing');
    assert.equal(resolveRemotePath('/home/deploy', '../../etc/passwd'), '/etc/passwd');
  });

  it('patterns: a lone * spans words, options are compared normalised', () => {
    assert.ok(commandMatches(compileCommandPattern('rm -r -f *'), parseExec('rm -fr /x').commands[0]!.argv));
    assert.ok(commandMatches(compileCommandPattern('journalctl *'), ['journalctl']));
    assert.ok(!commandMatches(compileCommandPattern('systemctl status *'), ['systemctl', 'restart', 'nginx']));
    assert.ok(commandMatches(compileCommandPattern('/usr/bin/ls *'), ['ls', '-l']));
  });

  it('config: ssh connections need listen and a user, hostKey is a SHA256 fingerprint', () => {
    const bad = Config.safeParse({ connections: [{ name: 'box', kind: 'ssh', upstream: 'ssh://10.0.0.5', hostKey: 'md5:aa' }] });
    assert.equal(bad.success, false);
    const messages = bad.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('\n');
    assert.match(messages, /listen: a ssh connection needs listen/);
    assert.match(messages, /upstream: an ssh upstream is a URL with the login user/);
    assert.match(messages, /hostKey: an OpenSSH fingerprint/);
  });
});

describe('ssh keys', () => {
  it('makes Ed25519 pairs that read back, also when the public key starts with a zero byte', () => {
    // ssh2's own generator gets one pair in about 256 wrong; 3000 draws meet such a key almost surely.
    for (let i = 0; i < 3000; i++) {
      const pair = generateEd25519(i % 2 ? 'a comment' : undefined);
      const pub = ssh2.utils.parseKey(pair.public);
      const priv = ssh2.utils.parseKey(pair.private);
      assert.ok(!(pub instanceof Error) && !(priv instanceof Error), `pair ${i}: ${pair.public}`);
      assert.equal(Buffer.from(pair.public.split(' ')[1]!, 'base64').length, 51, 'ssh-ed25519 with a 32-byte key');
      assert.ok(pub.getPublicSSH().equals(priv.getPublicSSH()));
    }
  });
});

describe('ssh byte streams', () => {
  it('reads SFTP packets split at every byte boundary', () => {
    const packets = [Buffer.from([1, 0, 0, 0, 3]), Buffer.concat([Buffer.from([17, 0, 0, 0, 7, 0, 0, 0, 1]), Buffer.from('/')])];
    const frames = packets.map((p) => Buffer.concat([Buffer.from([0, 0, 0, p.length]), p]));
    const wire = Buffer.concat(frames);
    for (let cut = 0; cut <= wire.length; cut++) {
      const r = new SftpPacketReader();
      const got = [...r.push(wire.subarray(0, cut)), ...r.push(wire.subarray(cut))];
      assert.deepEqual(got.map((b) => b.toString('hex')), frames.map((b) => b.toString('hex')), `cut at ${cut}`);
    }
    assert.throws(() => new SftpPacketReader().push(Buffer.from([0x7f, 0, 0, 0, 1])), /out of bounds/);
  });

  it('reads large SFTP packets arriving in many pieces, with any pieces between them', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 70_000 }), { minLength: 1, maxLength: 6 }), fc.array(fc.integer({ min: 1, max: 40_000 }), { minLength: 1, maxLength: 40 }), (sizes, cuts) => {
        const frames = sizes.map((n, i) => {
          const f = Buffer.alloc(4 + n, i + 1);
          f.writeUInt32BE(n, 0);
          return f;
        });
        const wire = Buffer.concat(frames);
        const r = new SftpPacketReader();
        const got: Buffer[] = [];
        let off = 0;
        for (let i = 0; off < wire.length; i++) {
          const n = cuts[i % cuts.length]!;
          got.push(...r.push(wire.subarray(off, off + n)));
          off += n;
        }
        assert.equal(got.length, frames.length);
        got.forEach((g, i) => assert.ok(g.equals(frames[i]!), `packet ${i}`));
      }),
      { numRuns: 200 },
    );
    const r = new SftpPacketReader();
    assert.deepEqual(r.push(Buffer.from([0x7f, 0])), []);
    assert.throws(() => r.push(Buffer.from([0, 1, 9])), /out of bounds/);
  });

  it('decodes output without splitting a UTF-8 character, and passes binary output through unrecorded', () => {
    const tap = new OutputTap(undefined, 1000);
    const text = Buffer.from('héllo wörld ✓');
    for (let i = 0; i < text.length; i++) tap.push(text.subarray(i, i + 1));
    tap.end();
    assert.equal(tap.recorded, 'héllo wörld ✓');
    const bin = new OutputTap(undefined, 1000);
    const bytes = Buffer.from([0x1f, 0x8b, 0xff, 0xfe, 0x00]);
    assert.deepEqual(bin.push(bytes), bytes);
    assert.equal(bin.binary, true);
    assert.equal(bin.recorded, '');
  });

  it('records typed input only when the terminal echoed it; a password typed with echo off is its length only', () => {
    const w = new EchoWatch();
    w.input('ls', 1);
    w.output('ls');
    assert.deepEqual(w.input('\r', 2), [{ text: 'ls\r', at: 1 }]);
    w.output('\r\n[sudo] password for deploy: ');
    w.input('hunter2', 3);
    assert.deepEqual(w.input('\r', 4), []);
    assert.deepEqual(w.output('\r\n'), [], 'a newline is no echo of the secret');
    assert.deepEqual(w.expire(4 + w.echoWaitMs), [{ hidden: true, length: 7, at: 3 }]);
    // A pasted line is echoed after its Enter: it waits for the echo.
    assert.deepEqual(w.input('uptime\r', 10), []);
    assert.deepEqual(w.output('upti'), []);
    assert.deepEqual(w.output('me\r\n 10:00 up'), [{ text: 'uptime\r', at: 10 }]);
  });
});
