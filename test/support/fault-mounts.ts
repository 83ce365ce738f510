/**
 * Filesystems for the fault-injection tests (root only; CI runs as root): a small tmpfs to fill
 * (a full disk), and an ext4 image on a loop device whose kernel error handling turns it
 * read-only under the gateway (`errors=remount-ro` and `trigger_fs_error`: what a failing disk
 * does; a plain `mount -o remount,ro` is refused while files are open for writing), which can also
 * be frozen for a while (fsfreeze, what snapshot backups do). Each returns
 * `skip` with the reason when it cannot be had here.
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

function run(cmd: string, args: string[]): { ok: boolean; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? r.error.message : ''}`.trim() };
}

const notRoot = () => (process.getuid?.() !== 0 ? 'needs root to mount a filesystem (CI runs as root)' : undefined);

export interface SmallDisk {
  dir: string;
  /** Writes a file until the disk is full; returns its size in bytes. */
  fill(): number;
  /** Deletes what `fill` wrote. */
  free(): void;
  unmount(): void;
}

/** A tmpfs of `mb` MiB, or why there is none. */
export function smallTmpfs(mb: number): SmallDisk | { skip: string } {
  const why = notRoot();
  if (why) return { skip: why };
  const dir = mkdtempSync(join(tmpdir(), 'custody-fulldisk-'));
  const m = run('mount', ['-t', 'tmpfs', '-o', `size=${mb}m,mode=0700`, 'tmpfs', dir]);
  if (!m.ok) {
    rmSync(dir, { recursive: true, force: true });
    return { skip: `mount -t tmpfs failed: ${m.out}` };
  }
  const filler = join(dir, 'filler');
  return {
    dir,
    fill() {
      const fd = openSync(filler, 'a');
      const block = Buffer.alloc(256 * 1024, 0x61);
      let size = 0;
      try {
        for (;;) size += writeSync(fd, block);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
        // The last partial block, byte by byte down to nothing.
        for (let n = 4096; n >= 1; n = n >> 1) {
          try {
            for (;;) size += writeSync(fd, block, 0, n);
          } catch {
            // full at this size; try a smaller one
          }
        }
      } finally {
        closeSync(fd);
      }
      return size;
    },
    free() {
      rmSync(filler, { force: true });
    },
    unmount() {
      run('umount', ['-l', dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface FailingDisk {
  dir: string;
  /** The kernel records an error on the filesystem and makes it read-only at once. */
  fail(): void;
  /**
   * Freezes the filesystem (fsfreeze, as a snapshot backup does: writes wait) for `ms`, thawed by
   * a process of its own, so a caller whose thread blocks in a write is thawed too.
   */
  freeze(ms: number): void;
  /** Unmounts, repairs (e2fsck) and mounts it again writable, to read what it kept. */
  repair(): void;
  unmount(): void;
}

/** An ext4 image of `mb` MiB on a loop device, mounted errors=remount-ro; or why there is none. */
export function failingExt4(mb: number): FailingDisk | { skip: string } {
  const why = notRoot();
  if (why) return { skip: why };
  const base = mkdtempSync(join(tmpdir(), 'custody-rodisk-'));
  const image = join(base, 'disk.img');
  const dir = join(base, 'mnt');
  const cleanup = () => rmSync(base, { recursive: true, force: true });
  const steps: [string, string[]][] = [
    ['truncate', ['-s', `${mb}M`, image]],
    ['mkfs.ext4', ['-q', '-F', image]],
    ['mkdir', ['-m', '0700', dir]],
    ['mount', ['-o', 'loop,errors=remount-ro', image, dir]],
  ];
  for (const [cmd, args] of steps) {
    const r = run(cmd, args);
    if (!r.ok) {
      cleanup();
      return { skip: `${cmd} failed: ${r.out}` };
    }
  }
  const device = () => basename(run('findmnt', ['-no', 'SOURCE', dir]).out);
  const trigger = `/sys/fs/ext4/${device()}/trigger_fs_error`;
  const check = run('test', ['-w', trigger]);
  if (!check.ok) {
    run('umount', [dir]);
    cleanup();
    return { skip: `${trigger} is not there (this kernel cannot fail an ext4 filesystem on demand)` };
  }
  return {
    dir,
    fail() {
      const fd = openSync(trigger, 'w');
      try {
        writeSync(fd, 'custody fault test\n');
      } finally {
        closeSync(fd);
      }
    },
    freeze(ms: number) {
      const thaw = spawn('sh', ['-c', `sleep ${ms / 1000}; fsfreeze -u '${dir}'`], { stdio: 'ignore', detached: true });
      thaw.unref();
      const r = run('fsfreeze', ['-f', dir]);
      if (!r.ok) throw new Error(`fsfreeze failed: ${r.out}`);
    },
    repair() {
      const u = run('umount', [dir]);
      if (!u.ok) throw new Error(`umount failed: ${u.out}`);
      run('e2fsck', ['-fy', image]);
      const m = run('mount', ['-o', 'loop', image, dir]);
      if (!m.ok) throw new Error(`mount after e2fsck failed: ${m.out}`);
    },
    unmount() {
      run('umount', [dir]);
      cleanup();
    },
  };
}
