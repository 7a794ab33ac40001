// Everything read from a bundle is hostile until checked, and bounded: a manifest naming /dev/zero or a FIFO as the
// executable, a manifest too large to be real or listing a million artifacts. Each is refused quickly, with snap's
// memory bounded; nothing is extracted or run.
import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { artifactRecord, craftedManifest, manifestEntry, writeCraftedBundle } from '../helpers/bundles.js';
import { runSnap, snapEntry } from '../helpers/cli.js';

afterAll(removeTempDirs);

/** Runs snap as the child of a small python3 that reads the peak RSS of its waited-for children from the kernel
 *  (getrusage RUSAGE_CHILDREN, KiB): snap's own peak, measured from outside it. */
function snapWithPeak(args: string[], env: Record<string, string>): { run: { exitCode: number | null; stderr: string }; peakKiB: number } {
  const wrapper = 'import resource, subprocess, sys\nr = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\nsys.stdout.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) + "\\n" + str(r.returncode) + "\\n")\nsys.stderr.buffer.write(r.stderr)';
  const r = spawnSync('/usr/bin/python3', ['-c', wrapper, process.execPath, snapEntry, ...args], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 120_000 });
  const [peak, code] = r.stdout.trim().split('\n');
  return { run: { exitCode: Number(code), stderr: r.stderr }, peakKiB: Number(peak) };
}

describe('restore bounds what a bundle can make it do', () => {
  const dir = makeTempDir('snap-bounds-');
  const work = makeTempDir('snap-bounds-work-');
  const env = { SNAP_JOURNAL_DIR: makeTempDir('snap-bounds-journal-') };

  for (const [what, exe] of [['/dev/zero', '/dev/zero'], ['a FIFO', join(dir, 'fifo')]] as const) {
    it(`a manifest naming ${what} as the executable: refused, nothing restored`, async () => {
      if (exe !== '/dev/zero') execFileSync('mkfifo', [exe]);
      const image = Buffer.from('image');
      const manifest = craftedManifest([artifactRecord('criu/inventory.img', image)]);
      manifest.target.exe = exe;
      manifest.target.exeSha256 = '0'.repeat(64);
      const bundle = writeCraftedBundle(join(dir, `exe-${what.replace(/\W/g, '')}.tar.zst`), [manifestEntry(manifest), { name: 'criu/inventory.img', data: image }]);
      const run = await runSnap(['restore', bundle, '--allow-unsigned', '--work-dir', work], { env, timeoutMs: 20_000 });
      expect(run.timedOut, 'snap did not hang on it').toBe(false);
      expect(run.exitCode, run.stderr).toBe(12);
      expect(run.stderr).toMatch(/not a regular file/);
      expect(readdirSync(work)).toEqual([]);
    });
  }

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
