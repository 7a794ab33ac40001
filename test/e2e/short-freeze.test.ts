// Where the cores come from. By default (--core images) the target is frozen only while criu dumps, and the core is
// built from the CRIU images after the target is back: it must still open in gdb with every thread and the memory of
// the dump point. --core gcore has gdb write it while the target is frozen. The images are read by snap itself: a
// host without crit (CRIU's python image decoder) gets the same short freeze.
import { execFile } from 'node:child_process';
import { statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DumpResult } from '../../src/pipelines/dump.js';
import { extractBundle, makeTempDir, readExtractedManifest, removeTempDirs, schemaProblems } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { fixtureBin } from '../helpers/paths.js';
import { cleanupAllTargets, startTarget } from '../helpers/target.js';

const execFileAsync = promisify(execFile);

let journalDir: string;
beforeAll(() => {
  journalDir = makeTempDir('snap-test-journal-');
});
afterEach(cleanupAllTargets);
afterAll(removeTempDirs);

async function gdbOnCore(extracted: string, pid: number): Promise<{ threads: number; ticks: number; out: string }> {
  const { stdout } = await execFileAsync('gdb', [
    '--nx', '--batch', '-ex', 'info threads', '-ex', 'print snap_ticks', fixtureBin('worker'), join(extracted, `core.${pid}`),
  ]);
  return {
    threads: stdout.split('\n').filter((l) => /^\*?\s+\d+\s+Thread 0x[0-9a-f]+ \(LWP \d+\)/.test(l)).length,
    ticks: Number(/^\$1 = (\d+)$/m.exec(stdout)?.[1] ?? NaN),
    out: stdout,
  };
}

describe('snap dump: cores built from the CRIU images (the default)', () => {
  it('a running 4-thread target is released before its core is built, and the core opens in gdb with all 4 threads', async () => {
    const target = await startTarget({ threads: 4, mib: 32, group: 'setsid' });
    const before = target.readProgress().ticks;
    const bundle = join(makeTempDir('snap-test-out-'), 'sf.tar.zst');
    const run = await runSnap(['dump', String(target.pid), '-o', bundle, '--json'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as DumpResult;
    // The core is built after the target is put back: the freeze ends before the core step starts.
    expect(result.steps.map((s) => s.name)).toEqual(['preflight', 'criu-ready', 'stop', 'checkpoint', 'final-state', 'core', 'stacks', 'seal']);
    const finalStep = result.steps.find((s) => s.name === 'final-state')!;
    const coreStep = result.steps.find((s) => s.name === 'core')!;
    expect(Date.parse(coreStep.startedAt)).toBeGreaterThanOrEqual(Date.parse(finalStep.endedAt));
    expect(target.threadStates().some((s) => s === 'T')).toBe(false);
    await target.waitUntilTicksAdvance(5);

    const extracted = await extractBundle(bundle);
    const manifest = readExtractedManifest(extracted);
    expect(schemaProblems(manifest)).toEqual([]);
    expect(manifest.mode).toBe('short-freeze');
    const gdb = await gdbOnCore(extracted, target.pid);
    expect(gdb.threads, gdb.out).toBe(4);
    for (const tid of manifest.target.threadIds) expect(gdb.out).toContain(`(LWP ${tid})`);
    // snap_ticks in the core is the dump point: not before the last tick seen before the dump, not after now.
    expect(gdb.ticks).toBeGreaterThanOrEqual(before);
    expect(gdb.ticks).toBeLessThanOrEqual(target.readProgress().ticks);
  });

  // A job-control stop, whichever signal made it: criu seizes only SIGSTOP and SIGTSTP stops, and gdb would resume a
  // job-control-stopped process when it detaches; every one is turned into a SIGSTOP stop without a thread running.
  for (const [signal, core] of [['SIGTSTP', 'images'], ['SIGTTIN', 'images'], ['SIGTTOU', 'images'], ['SIGTTIN', 'gcore']] as const) {
    it(`a target paused with ${signal} (--core ${core}) stays paused, does not advance a step, and its stop is converted`, async () => {
      const target = await startTarget({ threads: 4, mib: 16, group: 'own-pgrp' });
      await target.pauseWith(signal);
      const at = target.readProgress();
      const bundle = join(makeTempDir('snap-test-out-'), 'sf-paused.tar.zst');
      const run = await runSnap(['dump', String(target.pid), '-o', bundle, '--core', core, '--json'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
      expect(run.exitCode, run.stderr).toBe(0);
      const result = JSON.parse(run.stdout) as DumpResult;
      expect(result.originalState).toBe('stopped');
      expect(result.finalState).toBe('stopped');
      expect(result.normalization.action).toBe('converted');
      for (let i = 0; i < 6; i++) {
        expect(target.threadStates().every((s) => s === 'T')).toBe(true);
        expect(target.readProgress().ticks).toBe(at.ticks);
        expect(target.readProgress().counters).toEqual(at.counters);
        await sleep(50);
      }
      const extracted = await extractBundle(bundle);
      const manifest = readExtractedManifest(extracted);
      expect(manifest.normalization.action).toBe('converted');
      expect(manifest.normalization.note).toContain(`already stopped (by ${signal})`);
      expect(manifest.normalization.note).toMatch(/converted to a SIGSTOP stop/);
      const gdb = await gdbOnCore(extracted, target.pid);
      expect(gdb.threads, gdb.out).toBe(4);
      expect(gdb.ticks).toBe(at.ticks);
      await target.resume();
      await target.waitUntilTicksAdvance(3);
    });
  }

  it('--core gcore: gdb writes the core while the target is frozen, before it is put back, and the manifest says so', async () => {
    const target = await startTarget({ threads: 2, mib: 8, group: 'setsid' });
    const bundle = join(makeTempDir('snap-test-out-'), 'gcore.tar.zst');
    const run = await runSnap(['dump', String(target.pid), '-o', bundle, '--core', 'gcore', '--json'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as DumpResult;
    expect(result.steps.map((s) => s.name)).toEqual(['preflight', 'criu-ready', 'stop', 'checkpoint', 'core', 'final-state', 'core-recipes', 'stacks', 'seal']);
    const extracted = await extractBundle(bundle);
    const manifest = readExtractedManifest(extracted);
    expect(manifest.mode).toBe('standard');
    expect(manifest.artifacts.map((a) => a.path)).toContain('logs/gdb.log');
    // gdb's core is not stored: the pages it shares with the images are taken from them, and `snap core` (run by
    // extractBundle) rebuilt it to the sha256 of the file gdb wrote, or it would have failed.
    const paths = manifest.artifacts.map((a) => a.path);
    expect(paths).not.toContain(`core.${target.pid}`);
    expect(manifest.processes?.[0]).toMatchObject({ core: `core.${target.pid}`, coreStored: false });
    const blob = manifest.artifacts.find((a) => a.path === `core-blob.${target.pid}`)!;
    expect(blob.size, 'the 8 MiB of random memory is taken from the images, not stored again').toBeLessThan(8 << 20);
    expect(statSync(join(extracted, `core.${target.pid}`)).size).toBeGreaterThan(8 << 20);
    expect((await gdbOnCore(extracted, target.pid)).threads).toBe(2);
  });

  it('needs no crit: with none on the host, the cores are still built from the images after the release', async () => {
    const target = await startTarget({ threads: 2, mib: 8, group: 'setsid' });
    // A prefix with criu and gdb only, and a PATH without any crit.
    const prefix = makeTempDir('snap-prefix-');
    for (const tool of ['criu', 'gdb']) symlinkSync(`/opt/procsnap/bin/${tool}`, join(prefix, tool));
    const env = { PROCSNAP_JOURNAL_DIR: journalDir, PROCSNAP_PREFIX_BIN: prefix, PATH: '/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' };
    const found = await execFileAsync('sh', ['-c', 'command -v crit || echo none'], { env });
    expect(found.stdout.trim()).toBe('none');
    const bundle = join(makeTempDir('snap-test-out-'), 'nocrit.tar.zst');
    const run = await runSnap(['dump', String(target.pid), '-o', bundle, '--json'], { env });
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stderr).not.toMatch(/\bcrit\b/);
    const result = JSON.parse(run.stdout) as DumpResult;
    expect(result.steps.map((s) => s.name)).toEqual(['preflight', 'criu-ready', 'stop', 'checkpoint', 'final-state', 'core', 'stacks', 'seal']);
    expect(result.warnings).toEqual([]);
    const extracted = await extractBundle(bundle);
    expect(readExtractedManifest(extracted).mode).toBe('short-freeze');
    expect((await gdbOnCore(extracted, target.pid)).threads).toBe(2);
  });

  it('--timeout that expires after the target is back does not throw the capture away: the bundle is finished, exit 0', async () => {
    const target = await startTarget({ threads: 2, mib: 8, group: 'setsid' });
    // A prefix whose gdb starts 7 s late when it opens a core: the stacks, unwound after the release, end well past a
    // --timeout of 5 s. Asked for its version (before the freeze), it answers at once.
    const prefix = makeTempDir('snap-slow-gdb-');
    symlinkSync('/opt/procsnap/bin/criu', join(prefix, 'criu'));
    writeFileSync(join(prefix, 'gdb'), '#!/bin/sh\ncase "$*" in *--version*) ;; *) sleep 7 ;; esac\nexec /opt/procsnap/bin/gdb "$@"\n', { mode: 0o755 });
    const bundle = join(makeTempDir('snap-test-out-'), 'late.tar.zst');
    const run = await runSnap(['dump', String(target.pid), '-o', bundle, '--timeout', '5', '--json'], { env: { PROCSNAP_JOURNAL_DIR: journalDir, PROCSNAP_PREFIX_BIN: prefix } });
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as DumpResult;
    const released = result.steps.find((s) => s.name === 'final-state')!;
    const sealed = result.steps.find((s) => s.name === 'seal')!;
    expect(Date.parse(sealed.endedAt) - Date.parse(result.steps[0]!.startedAt), 'the dump ran past its --timeout').toBeGreaterThan(5000);
    expect(released.status).toBe('ok');
    const verify = await runSnap(['verify', bundle]);
    expect(verify.exitCode, verify.stderr).toBe(0);
    expect(target.threadStates().some((s) => s === 'T')).toBe(false);
  });
});
