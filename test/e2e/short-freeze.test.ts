// `snap dump --short-freeze`: the target is frozen only while criu dumps; the core is built from the CRIU images
// after the target is back. The core must still open in gdb with every thread and the memory of the dump point.
import { execFile } from 'node:child_process';
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

describe('snap dump --short-freeze', () => {
  it('a running 4-thread target is released before its core is built, and the core opens in gdb with all 4 threads', async () => {
    const target = await startTarget({ threads: 4, mib: 32, group: 'setsid' });
    const before = target.readProgress().ticks;
    const bundle = join(makeTempDir('snap-test-out-'), 'sf.tar.zst');
    const run = await runSnap(['dump', String(target.pid), '-o', bundle, '--short-freeze', '--json'], { env: { SNAP_JOURNAL_DIR: journalDir } });
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as DumpResult;
    // The core is built after the target is put back: the freeze ends before the core step starts.
    expect(result.steps.map((s) => s.name)).toEqual(['preflight', 'stop', 'checkpoint', 'final-state', 'core', 'seal']);
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

  it('a target paused with SIGTSTP stays paused and does not advance a step', async () => {
    const target = await startTarget({ threads: 4, mib: 16, group: 'own-pgrp' });
    await target.pauseWith('SIGTSTP');
    const at = target.readProgress();
    const bundle = join(makeTempDir('snap-test-out-'), 'sf-paused.tar.zst');
    const run = await runSnap(['dump', String(target.pid), '-o', bundle, '--short-freeze', '--json'], { env: { SNAP_JOURNAL_DIR: journalDir } });
    expect(run.exitCode, run.stderr).toBe(0);
    for (let i = 0; i < 6; i++) {
      expect(target.threadStates().every((s) => s === 'T')).toBe(true);
      expect(target.readProgress().ticks).toBe(at.ticks);
      expect(target.readProgress().counters).toEqual(at.counters);
      await sleep(50);
    }
    const extracted = await extractBundle(bundle);
    const gdb = await gdbOnCore(extracted, target.pid);
    expect(gdb.threads, gdb.out).toBe(4);
    expect(gdb.ticks).toBe(at.ticks);
    await target.resume();
    await target.waitUntilTicksAdvance(3);
  });
});
