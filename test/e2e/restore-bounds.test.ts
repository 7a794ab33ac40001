// Everything read from a bundle is hostile until checked, and bounded: a manifest naming /dev/zero or a FIFO as the
// executable, a manifest too large to be real or listing a million artifacts. Each is refused quickly, with snap's
// memory bounded; nothing is extracted or run. A host file hashed by restore (a 1 TiB sparse executable) is read
// within the --timeout and stops at SIGTERM.
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { zstdCompressSync } from 'node:zlib';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { artifactRecord, buildTar, craftedManifest, manifestEntry, repackBundle, tarHeader, writeCraftedBundle } from '../helpers/bundles.js';
import { killPid, readProcStat, startTarget, waitFor } from '../helpers/target.js';
import { runSnap, snapWithPeak, startSnap } from '../helpers/cli.js';

afterAll(removeTempDirs);

describe('a bundle with an entry hidden after the end of its tar', () => {
  it('in a second zstd frame: verify and restore refuse it with exit 11, naming data after the end', async () => {
    const dir = makeTempDir('snap-hidden-');
    const image = Buffer.from('image');
    const honest = writeCraftedBundle(join(dir, 'honest.tar.zst'), [manifestEntry(craftedManifest([artifactRecord('criu/inventory.img', image)])), { name: 'criu/inventory.img', data: image }]);
    const verifyHonest = await runSnap(['verify', honest]);
    expect(verifyHonest.exitCode, verifyHonest.stderr).toBe(0);
    const hidden = join(dir, 'hidden.tar.zst');
    writeFileSync(hidden, Buffer.concat([readFileSync(honest), zstdCompressSync(buildTar([{ name: 'criu/evil.img', data: Buffer.from('payload') }]))]));
    for (const args of [['verify', hidden], ['restore', hidden, '--allow-unsigned']]) {
      const run = await runSnap(args);
      expect(run.exitCode, run.stderr).toBe(11);
      expect(run.stderr).toMatch(/data after the end of the tar archive/);
    }
  });
});

describe('restore bounds what a bundle can make it do', () => {
  const dir = makeTempDir('snap-bounds-');
  const work = makeTempDir('snap-bounds-work-');
  const env = { PROCSNAP_JOURNAL_DIR: makeTempDir('snap-bounds-journal-') };

  for (const [what, exe] of [['/dev/zero', '/dev/zero'], ['a FIFO', join(dir, 'fifo')]] as const) {
    it(`a real bundle whose manifest names ${what} as the executable: refused at once, nothing hashed forever, nothing restored`, async () => {
      if (exe !== '/dev/zero') execFileSync('mkfifo', [exe]);
      const target = await startTarget({ threads: 1, group: 'setsid' });
      const real = join(dir, `real-${what.replace(/\W/g, '')}.tar.zst`);
      expect((await runSnap(['dump', String(target.pid), '-o', real, '--quiet'], { env })).exitCode).toBe(0);
      await target.kill();
      const bundle = await repackBundle(real, join(dir, `exe-${what.replace(/\W/g, '')}.tar.zst`), (extracted, manifest) => {
        manifest.target.exe = exe;
        writeFileSync(join(extracted, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
      });
      const run = await runSnap(['restore', bundle, '--allow-unsigned', '--work-dir', work], { env, timeoutMs: 20_000 });
      expect(run.timedOut, 'snap did not hang on it').toBe(false);
      expect(run.exitCode, run.stderr).toBe(12);
      expect(run.stderr).toContain(`the manifest says ${exe}`);
      expect(run.stderr).not.toContain('[start] Restore the tree with criu restore');
      expect(readdirSync(work)).toEqual([]);
    });
  }

  describe('a 1 TiB sparse regular file where the executable was (the manifest declaring that size)', () => {
    let bundle: string;
    const exeDir = makeTempDir('snap-bounds-exe-');
    const exe = join(exeDir, 'sleeper');

    it('is dumped as a program, then grown to 1 TiB', async () => {
      copyFileSync('/bin/sleep', exe);
      execFileSync('chmod', ['755', exe]);
      const child = spawn(exe, ['1000'], { detached: true, stdio: 'ignore' });
      const pid = child.pid!;
      await waitFor(() => readProcStat(pid)?.state === 'S', { what: 'the sleeper to sleep' });
      const real = join(dir, 'sleeper.tar.zst');
      const dump = await runSnap(['dump', String(pid), '-o', real, '--quiet'], { env });
      expect(dump.exitCode, dump.stderr).toBe(0);
      await killPid(pid);
      execFileSync('truncate', ['-s', '1T', exe]);
      bundle = await repackBundle(real, join(dir, 'sparse-exe.tar.zst'), (extracted, manifest) => {
        manifest.target.exeSize = 1024 ** 4;
        writeFileSync(join(extracted, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
      });
    });

    it('restore --timeout 5: ends at the deadline with exit 10, nothing restored', async () => {
      const run = await runSnap(['restore', bundle, '--allow-unsigned', '--work-dir', work, '--timeout', '5'], { env, timeoutMs: 30_000 });
      expect(run.timedOut, 'snap ended by itself').toBe(false);
      expect(run.exitCode, run.stderr).toBe(10);
      expect(run.stderr).toMatch(/--timeout of 5 s/);
      expect(run.stderr).not.toContain('[start] Restore the tree with criu restore');
      expect(readdirSync(work)).toEqual([]);
    });

    it('SIGTERM while it hashes: exit 143, promptly', async () => {
      const snap = startSnap(['restore', bundle, '--allow-unsigned', '--work-dir', work], { env, timeoutMs: 60_000 });
      let stderr = '';
      snap.child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      await waitFor(() => stderr.includes('[start] Preflight'), { what: 'the preflight to start', timeoutMs: 30_000 });
      await new Promise((r) => setTimeout(r, 1000));
      const sent = performance.now();
      snap.child.kill('SIGTERM');
      const run = await snap.result;
      expect(run.timedOut, 'snap ended by itself').toBe(false);
      expect(run.exitCode, run.stderr).toBe(143);
      expect(run.stderr).toMatch(/interrupted by SIGTERM during hashing the executable/);
      expect(performance.now() - sent).toBeLessThan(20_000);
      expect(readdirSync(work)).toEqual([]);
    });
  });

  it('a small bundle declaring a 4 GiB image: refused before anything is written, unsigned (exit 11) and, allowed, for want of room (exit 12)', async () => {
    const GiB = 1024 ** 3;
    const manifest = craftedManifest([{ path: 'criu/pages-1.img', kind: 'criu-image', size: 4 * GiB, sha256: '0'.repeat(64) }]);
    // The entry's header says 4 GiB; the bytes behind it are never reached, because the head decides first.
    const tar = Buffer.concat([buildTar([manifestEntry(manifest)]).subarray(0, -1024), tarHeader({ name: 'criu/pages-1.img' }, 4 * GiB), Buffer.alloc(64 << 10)]);
    const bundle = join(dir, 'declares-4g.tar.zst');
    writeFileSync(bundle, zstdCompressSync(tar));
    const unsigned = await runSnap(['restore', bundle, '--work-dir', work], { env });
    expect(unsigned.exitCode, unsigned.stderr).toBe(11);
    expect(unsigned.stderr).toMatch(/not signed/);
    expect(readdirSync(work)).toEqual([]);
    const small = makeTempDir('snap-bounds-tmpfs-');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64m,mode=0700', 'tmpfs', small]);
    try {
      const allowed = await runSnap(['restore', bundle, '--allow-unsigned', '--work-dir', small], { env });
      expect(allowed.exitCode, allowed.stderr).toBe(12);
      expect(allowed.stderr).toMatch(/images need 4\.0 GiB/);
      expect(readdirSync(small)).toEqual([]);
    } finally {
      execFileSync('umount', [small]);
    }
  });

  it('a manifest of more than 4 MiB (a million artifacts): refused with exit 11, peak RSS under 300 MiB', async () => {
    const manifest = craftedManifest([]);
    const one = artifactRecord('criu/x.img', Buffer.alloc(0));
    manifest.artifacts = Array.from({ length: 1_000_000 }, (_, i) => ({ ...one, path: `criu/${i}.img` }));
    const bundle = writeCraftedBundle(join(dir, 'million.tar.zst'), [manifestEntry(manifest)]);
    for (const command of ['restore', 'verify', 'inspect']) {
      const args = command === 'restore' ? [command, bundle, '--allow-unsigned', '--work-dir', work] : [command, bundle];
      const { run, peakKiB } = snapWithPeak(args, env);
      expect(run.exitCode, `${command}: ${run.stderr}`).toBe(11);
      expect(run.stderr).toMatch(/too large/);
      expect(peakKiB, `${command} peak RSS`).toBeGreaterThan(0);
      expect(peakKiB / 1024, `${command} peak RSS in MiB`).toBeLessThan(300);
    }
    expect(readdirSync(work)).toEqual([]);
  });
});
