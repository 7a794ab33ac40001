// dump --core-only --core native: the cores written by snap from /proc while the tree is stopped, no gdb in the
// freeze. The bundle's core opens in gdb with every thread and the memory of the stop; the target is put back as it
// was found; a process with 256 GiB reserved and 64 MiB touched gets a core of its data, not of its reservation.
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { DumpResult } from '../../src/pipelines/dump.js';
import { extractBundle, makeTempDir, readExtractedManifest, removeTempDirs } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { fixtureBin } from '../helpers/paths.js';
import { cleanupAllTargets, killPid, startTarget, waitFor } from '../helpers/target.js';

const execFileAsync = promisify(execFile);
const GiB = 1 << 30;

afterEach(cleanupAllTargets);
afterAll(removeTempDirs);

function dumpEnv(dir: string): Record<string, string> {
  return { PROCSNAP_JOURNAL_DIR: join(dir, 'journal'), SNAP_JOURNAL_DIR: join(dir, 'journal') };
}

describe('dump --core-only --core native', () => {
  it('a running 4-thread worker: a core per process from /proc, opening in gdb with every thread; the worker runs on', async () => {
    const target = await startTarget({ threads: 4, mib: 32, group: 'setsid' });
    const before = target.readProgress().ticks;
    const dir = makeTempDir('snap-native-cli-');
    const bundle = join(dir, 'native.tar.zst');
    const run = await runSnap(['dump', String(target.pid), '--core-only', '--core', 'native', '-o', bundle, '--json'], { env: dumpEnv(dir) });
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as DumpResult;
    expect(result.finalState).toBe('running');
    expect(result.steps.map((s) => s.name)).toContain('core');
    expect(run.stderr).toContain('from /proc (native)');
    expect(run.stderr).not.toMatch(/gcore/);
    await target.waitUntilTicksAdvance(3);
    expect(target.threadStates().some((s) => s === 'T')).toBe(false);

    const extracted = await extractBundle(bundle);
    const manifest = readExtractedManifest(extracted);
    expect(manifest.mode).toBe('core-only');
    const { stdout } = await execFileAsync('gdb', ['--nx', '--batch', '-ex', 'info threads', '-ex', 'print snap_ticks', fixtureBin('worker'), join(extracted, `core.${target.pid}`)]);
    expect(stdout.split('\n').filter((l) => /^\*?\s+\d+\s+Thread 0x[0-9a-f]+ \(LWP \d+\)/.test(l))).toHaveLength(4);
    for (const tid of manifest.target.threadIds) expect(stdout).toContain(`(LWP ${tid})`);
    const ticks = Number(/^\$1 = (\d+)$/m.exec(stdout)?.[1]);
    expect(ticks).toBeGreaterThanOrEqual(before);
    expect(ticks).toBeLessThanOrEqual(target.readProgress().ticks);
  });

  it('the default: a worker paused with SIGTSTP stays paused, does not advance a tick, and its core holds the pause', async () => {
    const target = await startTarget({ threads: 4, mib: 16, group: 'own-pgrp' });
    await target.pauseWith('SIGTSTP');
    const at = target.readProgress();
    const dir = makeTempDir('snap-native-cli-');
    const bundle = join(dir, 'paused.tar.zst');
    const run = await runSnap(['dump', String(target.pid), '--core-only', '-o', bundle, '--json'], { env: dumpEnv(dir) });
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as DumpResult;
    expect(result.originalState).toBe('stopped');
    expect(result.finalState).toBe('stopped');
    expect(run.stderr).toContain('from /proc (native)');
    for (let i = 0; i < 5; i++) {
      expect(target.threadStates().every((s) => s === 'T')).toBe(true);
      expect(target.readProgress().ticks).toBe(at.ticks);
      await new Promise((r) => setTimeout(r, 50));
    }
    const extracted = await extractBundle(bundle);
    const { stdout } = await execFileAsync('gdb', ['--nx', '--batch', '-ex', 'info threads', '-ex', 'print snap_ticks', fixtureBin('worker'), join(extracted, `core.${target.pid}`)]);
    expect(stdout.split('\n').filter((l) => /^\*?\s+\d+\s+Thread 0x[0-9a-f]+ \(LWP \d+\)/.test(l))).toHaveLength(4);
    expect(Number(/^\$1 = (\d+)$/m.exec(stdout)?.[1])).toBe(at.ticks);
    await target.resume();
    await target.waitUntilTicksAdvance(3);
  });

  it('--core native without --core-only, and --core images with it, are refused before the target is looked at', async () => {
    const target = await startTarget({ threads: 1, mib: 1, group: 'setsid' });
    const dir = makeTempDir('snap-native-cli-');
    const alone = await runSnap(['dump', String(target.pid), '--core', 'native', '-o', join(dir, 'a.tar.zst')], { env: dumpEnv(dir) });
    expect(alone.exitCode).toBe(2);
    expect(alone.stderr).toMatch(/--core native is for --core-only/);
    const images = await runSnap(['dump', String(target.pid), '--core-only', '--core', 'images', '-o', join(dir, 'b.tar.zst')], { env: dumpEnv(dir) });
    expect(images.exitCode).toBe(2);
    expect(images.stderr).toMatch(/--core images builds the cores from a checkpoint/);
    expect(existsSync(join(dir, 'a.tar.zst')) || existsSync(join(dir, 'b.tar.zst'))).toBe(false);
    expect(target.threadStates().every((s) => s !== 'T')).toBe(true);
  });

  it('a python with 256 GiB reserved and 64 MiB touched: the dump finishes, its core holds the data and opens in gdb', async () => {
    const dir = makeTempDir('snap-native-reserved-');
    const ready = join(dir, 'addr');
    const script = [
      'import ctypes, os, sys, time',
      'libc = ctypes.CDLL(None, use_errno=True)',
      'libc.mmap.restype = ctypes.c_void_p',
      'libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]',
      `addr = libc.mmap(None, ${256 * GiB}, 3, 0x02 | 0x20 | 0x4000, -1, 0)`,
      'chunk = os.urandom(1 << 20)',
      'for i in range(64): ctypes.memmove(addr + i * (4 << 30), chunk, 1 << 20)',
      'for i in range(64): ctypes.c_uint64.from_address(addr + i * (4 << 30)).value = 0x6d61726b00000000 + i',
      'open(sys.argv[1] + ".tmp", "w").write("%x" % addr); os.rename(sys.argv[1] + ".tmp", sys.argv[1])',
      'while True: time.sleep(0.05)',
    ].join('\n');
    const child = spawn('/usr/bin/python3', ['-c', script, ready], { detached: true, stdio: 'ignore' });
    try {
      const base = await waitFor(() => existsSync(ready) && parseInt(readFileSync(ready, 'utf8'), 16), { what: 'the python to reserve and touch its memory', timeoutMs: 20_000 });
      const exe = readlinkSync(`/proc/${child.pid}/exe`);
      const bundle = join(dir, 'reserved.tar.zst');
      const run = await runSnap(['dump', String(child.pid), '--core-only', '--core', 'native', '-o', bundle, '--json'], { env: dumpEnv(dir) });
      expect(run.exitCode, run.stderr).toBe(0);
      const extracted = await extractBundle(bundle);
      const core = join(extracted, `core.${child.pid}`);
      expect(statSync(core).size).toBeLessThan(1 * GiB);
      const at = (i: number) => `0x${(base + i * 4 * GiB).toString(16)}`;
      const { stdout } = await execFileAsync('gdb', ['--nx', '--batch', '-ex', `x/gx ${at(0)}`, '-ex', `x/gx ${at(63)}`, '-ex', `x/gx 0x${(base + 2 * GiB).toString(16)}`, exe, core]);
      expect(stdout).toMatch(new RegExp(`^${at(0)}:\\s+0x6d61726b00000000$`, 'm'));
      expect(stdout).toMatch(new RegExp(`^${at(63)}:\\s+0x6d61726b0000003f$`, 'm'));
      expect(stdout).toMatch(new RegExp(`^0x${(base + 2 * GiB).toString(16)}:\\s+0x0000000000000000$`, 'm'));
    } finally {
      await killPid(child.pid!);
    }
  });
});
