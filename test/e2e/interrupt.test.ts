// Signals to snap in the middle of a dump, with the real criu and gdb working on a 512 MiB target: the running step
// and everything it started are stopped, the target is put back as it was found (within a second), nothing is left
// under the final name, and snap exits 130/143/129 with one line saying what happened.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { removeTempDirs } from '../helpers/bundle.js';
import {
  expectCleanFailure, expectNoLeftovers, expectNoOutput, expectRunning, expectStopped, fake, REAL_CRIU, REAL_GDB, record, startDump,
  waitUntilRunning, waitUntilTracedBy, type DumpUnderTest,
} from '../helpers/faults.js';
import { cleanupAllTargets, startTarget, waitFor, type Target } from '../helpers/target.js';

const EXIT = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;
const MiB = 1024 * 1024;

/**
 * Waits until criu holds the target and is copying its memory: its log says "Dumping pages", the stretch (about
 * 400 ms of the 0.9 s dump for 512 MiB here) where criu's parasite code runs inside the target.
 */
async function midCheckpoint(dump: DumpUnderTest, target: Target): Promise<void> {
  await waitUntilTracedBy(target, /ld-linux|criu/, dump);
  await waitFor(() => /Dumping pages \(type/.test(dump.workFileText('logs/criu-dump.log')), {
    what: 'criu to start copying pages',
    intervalMs: 2,
    timeoutMs: 30_000,
    detail: () => dump.stderr,
  });
}

/** Waits until gdb is attached and has written `mib` MiB of the core: the core dump is under way. */
async function midCore(dump: DumpUnderTest, target: Target, mib = 16): Promise<void> {
  await waitUntilTracedBy(target, /gdb$/, dump);
  await waitFor(() => dump.workFileSize((names) => names.find((n) => n.startsWith('core.'))) >= mib * MiB, {
    what: `gdb to write ${mib} MiB of core`,
    intervalMs: 2,
    timeoutMs: 30_000,
    detail: () => dump.stderr,
  });
}

afterAll(removeTempDirs);

describe('a running 512 MiB target, interrupted with the real criu and gdb at work', () => {
  let target: Target;
  beforeAll(async () => {
    target = await startTarget({ threads: 4, mib: 512, group: 'setsid' });
  });
  afterAll(cleanupAllTargets);
  afterEach(async () => {
    // A test that failed half way may leave the target frozen: thaw it so the next test starts from a running one.
    if (target.isAlive() && target.threadStates().every((s) => s === 'T')) await target.resume();
    expect(target.isAlive(), `the target died: ${JSON.stringify(target.childExit)}`).toBe(true);
  });

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`${signal} while criu dump runs: target running again, no criu left, no bundle, exit ${EXIT[signal]}`, async () => {
      const dump = startDump(target, { criu: REAL_CRIU, gdb: REAL_GDB });
      await midCheckpoint(dump, target);
      dump.signal(signal);
      const latency = await waitUntilRunning(target, dump.signalledAt!);
      const result = await dump.result;
      // Not stopped while it held the target: criu let go first (see src/pipelines/dump/checkpoint.ts).
      expect(result.stderr).toMatch(/waiting for criu to let go of the tree/);
      record(`${signal} during criu dump (512 MiB): target running ${latency.toFixed(0)} ms after the signal; snap exited after ${dump.signalToExitMs.toFixed(0)} ms`);
      await expectCleanFailure(dump, result, EXIT[signal], new RegExp(`interrupted by ${signal} during the checkpoint \\(criu dump\\); rolled back`));
      expect(dump.stderr).toMatch(/rolled back: target \d+ resumed as it was/);
      await expectRunning(target);
    });

    it(`${signal} while gcore runs: target running within a second, no gdb left, no bundle, exit ${EXIT[signal]}`, async () => {
      const dump = startDump(target, { criu: REAL_CRIU, gdb: REAL_GDB });
      await midCore(dump, target);
      dump.signal(signal);
      const latency = await waitUntilRunning(target, dump.signalledAt!);
      const result = await dump.result;
      record(`${signal} during gcore (512 MiB): target running ${latency.toFixed(0)} ms after the signal; snap exited after ${dump.signalToExitMs.toFixed(0)} ms`);
      await expectCleanFailure(dump, result, EXIT[signal], new RegExp(`interrupted by ${signal} during the core dump \\(gdb\\); rolled back`));
      await expectRunning(target);
    });
  }

  it('SIGHUP while criu dump runs: exit 129, target running', async () => {
    const dump = startDump(target, { criu: REAL_CRIU, gdb: REAL_GDB });
    await midCheckpoint(dump, target);
    dump.signal('SIGHUP');
    const latency = await waitUntilRunning(target, dump.signalledAt!);
    const result = await dump.result;
    record(`SIGHUP during criu dump (512 MiB): target running ${latency.toFixed(0)} ms after the signal`);
    await expectCleanFailure(dump, result, 129, /interrupted by SIGHUP during the checkpoint \(criu dump\); rolled back/);
    await expectRunning(target);
  });

  it('SIGHUP after the terminal is gone (stderr closed): the rollback still finishes, exit 129, target running', async () => {
    const dump = startDump(target, { criu: REAL_CRIU, gdb: REAL_GDB });
    await midCore(dump, target);
    // What a closed terminal does to snap: every later write to stderr fails (EPIPE here, EIO on a tty).
    dump.snap.child.stderr!.destroy();
    dump.signal('SIGHUP');
    await waitUntilRunning(target, dump.signalledAt!);
    const result = await dump.result;
    expect(result.exitCode).toBe(129);
    await expectNoLeftovers(dump);
    expectNoOutput(dump);
    await expectRunning(target);
  });

  it('a second SIGINT during the rollback does not stop it, and snap says so', async () => {
    // criu-hang-hard ignores SIGTERM, so stopping it takes the whole grace period before SIGKILL.
    const dump = startDump(target, { criu: fake('criu-hang-hard'), gdb: REAL_GDB });
    await dump.waitForMarker('the hanging criu to start');
    dump.signal('SIGINT');
    await dump.waitForStderr(/SIGINT received: stopping the running step/);
    dump.signal('SIGINT');
    const result = await dump.result;
    expect(result.stderr).toMatch(/snap: SIGINT received again: the rollback is still running and will finish first/);
    await expectCleanFailure(dump, result, 130, /interrupted by SIGINT during the checkpoint \(criu dump\); rolled back/);
    await expectRunning(target);
  });

  it('SIGINT during preflight (a `criu check` that hangs): exit 130 at once, the target never stopped', async () => {
    await target.resetMaxGap();
    const dump = startDump(target, { criu: fake('criu-check-hang'), gdb: REAL_GDB });
    await dump.waitForMarker('criu check to start', (m) => m.mode === 'check-hang');
    dump.signal('SIGINT');
    const result = await dump.result;
    await expectCleanFailure(dump, result, 130, /interrupted by SIGINT during preflight \(tool versions and `criu check`\); rolled back/);
    expect(result.stderr).not.toMatch(/\[start\] Stop every process/);
    // Never stopped: the worker's longest pause since the reset is a scheduling hiccup, not a freeze.
    expect(target.readProgress().maxGapUs).toBeLessThan(300_000);
    await expectRunning(target);
  });

  it('SIGTERM while the cores are built from the images and the bundle is already being written: exit 143, no bundle, no partial file', async () => {
    const dump = startDump(target, { criu: REAL_CRIU }); // no gdb given: the default, cores built after the release
    await dump.waitForStderr(/\[start\] Cores built from the CRIU images, while the bundle is written/);
    await waitFor(() => dump.partialExists(), { what: 'the partial bundle to appear', intervalMs: 2, timeoutMs: 30_000 });
    dump.signal('SIGTERM');
    const result = await dump.result;
    record(`SIGTERM while the cores are built (512 MiB): snap exited ${dump.signalToExitMs.toFixed(0)} ms after the signal`);
    await expectCleanFailure(dump, result, 143, /interrupted by SIGTERM during .*; rolled back/);
    expect(result.stderr).toMatch(/rolled back: target \d+ resumed as it was; partial bundle removed/);
    await expectRunning(target);
  });

  it('SIGTERM while the bundle is sealed: exit 143, no bundle and no partial file, target running', async () => {
    const dump = startDump(target, { criu: REAL_CRIU, gdb: REAL_GDB });
    await dump.waitForStderr(/\[start\] Seal the bundle/);
    await waitFor(() => dump.partialExists(), { what: 'the partial bundle to appear', intervalMs: 2, timeoutMs: 30_000 });
    dump.signal('SIGTERM');
    const result = await dump.result;
    record(`SIGTERM during seal (512 MiB, zstd): snap exited ${dump.signalToExitMs.toFixed(0)} ms after the signal`);
    await expectCleanFailure(dump, result, 143, /interrupted by SIGTERM during sealing the bundle; rolled back/);
    await expectRunning(target);
  });
});

describe('Ctrl+C at moments spread over a dump of a running 64 MiB target', () => {
  afterAll(cleanupAllTargets);

  // By default criu holds the tree (seize, parasite, pages, release); with --core gcore gdb then attaches to it too.
  for (const [mode, runs, args, gdb] of [
    ['criu dump', 20, [], undefined],
    ['--core gcore', 10, ['--core', 'gcore'], REAL_GDB],
  ] as const) {
    it(`${mode}, ${runs} runs: the target is alive and running after every one; exit 130 each time (or 0 once the capture was done)`, async () => {
      const target = await startTarget({ threads: 4, mib: 64, group: 'setsid' });
      const exits: number[] = [];
      for (let i = 0; i < runs; i++) {
        const dump = startDump(target, { criu: REAL_CRIU, gdb, args: [...args] });
        await waitUntilTracedBy(target, /ld-linux|criu/, dump);
        // From the moment criu holds the target, later and later.
        await new Promise((r) => setTimeout(r, i * 8));
        dump.signal('SIGINT');
        const result = await dump.result;
        exits.push(result.exitCode ?? -1);
        expect(target.isAlive(), `run ${i}: the target died: ${result.stderr}`).toBe(true);
        if (result.exitCode === 130) {
          await expectNoLeftovers(dump);
          expectNoOutput(dump);
        }
        await expectRunning(target);
      }
      record(`SIGINT at ${runs} moments of a ${mode} (64 MiB): exits ${exits.join(' ')}`);
      // A signal that lands once the bundle is sealed finds nothing to interrupt: that dump succeeded.
      expect(exits.every((e) => e === 130 || e === 0), exits.join(' ')).toBe(true);
      expect(exits.filter((e) => e === 130).length).toBeGreaterThan(0);
    });
  }
});

describe('Ctrl+C just after gdb is given a process, before it attaches', () => {
  afterAll(cleanupAllTargets);

  // gdb (the fake, then the real one it runs) is given the process and takes a second to attach: a gdb signalled in
  // that stretch is one signalled as it attaches, which took a worker down once. snap waits for it to be done.
  it('snap waits for gdb to be done with the process it was given, then rolls back: exit 130, target running', async () => {
    const target = await startTarget({ threads: 4, mib: 64, group: 'setsid' });
    const dump = startDump(target, { criu: REAL_CRIU, gdb: fake('gdb-slow'), args: ['--core', 'gcore'], env: { PROCSNAP_FAKE_DELAY: '1' } });
    await dump.waitForMarker('gdb to be given its process');
    dump.signal('SIGINT');
    const result = await dump.result;
    expect(result.stderr).toMatch(new RegExp(`waiting for gdb to be done with process ${target.pid}, which it was given`));
    await expectCleanFailure(dump, result, 130, /interrupted by SIGINT during the core dump \(gdb\); rolled back/);
    expect(target.isAlive()).toBe(true);
    await expectRunning(target);
  });
});

describe('Ctrl+C while gdb reads the stacks', () => {
  afterAll(cleanupAllTargets);

  // The tree is back and its core built; gdb, slowed, is reading the stacks when the signal comes. The unwinding
  // stops on the signal's own name: once seen as "unexpected error: undefined", exit 70.
  it('exit 130 naming the stacks, rolled back, nothing left, target running', async () => {
    const target = await startTarget({ threads: 4, mib: 64, group: 'setsid' });
    const dump = startDump(target, { criu: REAL_CRIU, gdb: fake('gdb-slow'), args: ['--core', 'images'], env: { PROCSNAP_FAKE_DELAY: '5' } });
    await dump.waitForMarker('gdb to start reading the stacks');
    dump.signal('SIGINT');
    const result = await dump.result;
    await expectCleanFailure(dump, result, 130, /interrupted by SIGINT during the stacks; rolled back/);
    await expectRunning(target);
  });
});

describe('a Ctrl+Z-paused 256 MiB target, interrupted', () => {
  let target: Target;
  beforeAll(async () => {
    target = await startTarget({ threads: 4, mib: 256, group: 'own-pgrp' });
    await target.pauseWith('SIGTSTP');
  });
  afterAll(cleanupAllTargets);

  // criu stopped while it holds the target lets a paused target run a step (one tick in half the runs here), so snap
  // waits until criu lets go of the target, then stops it and rolls back.
  it('SIGINT while criu dump runs: criu lets go first, the target is still paused and did not advance', async () => {
    const before = target.readProgress().ticks;
    const dump = startDump(target, { criu: REAL_CRIU, gdb: REAL_GDB });
    await midCheckpoint(dump, target);
    dump.signal('SIGINT');
    const result = await dump.result;
    record(`SIGINT during criu dump of a paused 256 MiB target: snap exited ${dump.signalToExitMs.toFixed(0)} ms after the signal`);
    expect(result.stderr).toMatch(/waiting for criu to let go of the tree \(1 process held, at most \d+ s\): killed while it holds them, criu can take a process down/);
    await expectCleanFailure(dump, result, 130, /interrupted by SIGINT during the checkpoint \(criu dump\); rolled back/);
    await expectStopped(target);
    expect(target.readProgress().ticks).toBe(before);
  });

  it('SIGTERM while gcore runs: the target is still paused and did not advance', async () => {
    const before = target.readProgress().ticks;
    const dump = startDump(target, { criu: REAL_CRIU, gdb: REAL_GDB });
    await midCore(dump, target, 8);
    dump.signal('SIGTERM');
    const result = await dump.result;
    await expectCleanFailure(dump, result, 143, /interrupted by SIGTERM during the core dump \(gdb\); rolled back/);
    await expectStopped(target);
    expect(target.readProgress().ticks).toBe(before);
    await target.resume();
    await target.waitUntilTicksAdvance(3);
  });
});
