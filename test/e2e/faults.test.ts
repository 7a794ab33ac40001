// Fault injection: fake criu and gdb (test/fixtures/fake-tools) that fail, crash, hang, print garbage or exit 0
// without writing anything; a --timeout; the target killed or its pid handed to another process mid-dump; a disk
// that fills up once the images or the cores are written; the output directory removed mid-dump. Each test checks
// what snap left: the target as it was found, no process, no bundle, no partial file, no journal, the exit code and
// one printable line.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import {
  expectCleanFailure, expectNoJournal, expectNoLeftovers, expectNoOutput, expectOneErrorLine, expectRunning, expectStopped, fake, REAL_CRIU,
  REAL_GDB, record, startDump, startTargetWithPid,
} from '../helpers/faults.js';
import { cleanupAllTargets, startTarget, waitFor, type Target } from '../helpers/target.js';

afterAll(removeTempDirs);

interface ToolFault {
  criu?: string;
  gdb?: string;
  message: RegExp;
}

/** Exit 8: the step failed, the target was put back. */
const STEP_FAULTS: ToolFault[] = [
  { criu: 'criu-fail', message: /criu dump failed \(exit 1, images incomplete\): .*Dumping FAILED/ },
  { criu: 'criu-crash', message: /criu dump failed \(killed by SIGSEGV, images incomplete\)/ },
  { criu: 'criu-garbage', message: /criu dump failed \(exit 3, images incomplete\)/ },
  { criu: 'criu-noimages', message: /criu dump failed \(exit 0, images incomplete\)/ },
  { gdb: 'gdb-fail', message: /gdb did not write a core (?:for [\d, ]+ )?\(exit 1\): .*Operation not permitted/ },
  { gdb: 'gdb-crash', message: /gdb did not write a core (?:for [\d, ]+ )?\(killed by SIGSEGV\)/ },
  { gdb: 'gdb-garbage', message: /gdb did not write a core (?:for [\d, ]+ )?\(exit 3\)/ },
  { gdb: 'gdb-nocore', message: /gdb did not write a core (?:for [\d, ]+ )?\(exit 0\)/ },
  { gdb: 'gdb-badcore', message: /gdb did not write a core (?:for [\d, ]+ )?\(exit 0\)/ },
];

describe('a running target, faulty tools', () => {
  let target: Target;
  beforeAll(async () => {
    target = await startTarget({ threads: 4, group: 'setsid' });
  });
  afterAll(cleanupAllTargets);
  afterEach(async () => {
    // A test that failed half way may leave the target frozen: thaw it so the next test starts from a running one.
    if (target.threadStates().every((s) => s === 'T')) await target.resume();
  });

  for (const fault of STEP_FAULTS) {
    const name = fault.criu ?? fault.gdb!;
    it(`${name}: exit 8 with one line, target running, nothing left`, async () => {
      const dump = startDump(target, { criu: fault.criu ? fake(fault.criu) : REAL_CRIU, gdb: fault.gdb ? fake(fault.gdb) : REAL_GDB });
      const result = await dump.result;
      const line = await expectCleanFailure(dump, result, 8, fault.message);
      expect(dump.markerLines().map((m) => m.mode), 'the fake ran its step').toContain(name.replace(/^(criu|gdb)-/, ''));
      expect(result.stderr).toMatch(/rolled back: target \d+ resumed as it was/);
      await expectRunning(target);
      record(`${name}: exit ${result.exitCode} after ${dump.runMs.toFixed(0)} ms: ${line}`);
    });
  }

  it('the images a core is built from are bad, while the bundle is already being written: exit 8, no bundle, no partial file, target running', async () => {
    const dump = startDump(target, { criu: fake('criu-badmm') });
    const result = await dump.result;
    const line = await expectCleanFailure(dump, result, 8, /building a core from CRIU images failed: .*mm-\d+\.img/);
    expect(result.stderr, 'the target was back before the cores').toMatch(/\[done\]\s+Put every process back/);
    expect(result.stderr).toMatch(/\[start\] Cores built from the CRIU images, while the bundle is written/);
    expect(result.stderr).toMatch(/rolled back: target \d+ resumed as it was/);
    await expectRunning(target);
    record(`criu-badmm: exit ${result.exitCode} after ${dump.runMs.toFixed(0)} ms: ${line}`);
  });

  for (const [criu, gdb, step] of [
    ['criu-hang', undefined, 'the checkpoint \\(criu dump\\)'],
    ['criu-hang-hard', undefined, 'the checkpoint \\(criu dump\\)'],
    [undefined, 'gdb-hang', 'the core dump \\(gdb\\)'],
  ] as const) {
    const name = criu ?? gdb;
    it(`${name} with --timeout 5: snap gives up at its deadline (exit 10), the fake and its child killed, target running`, async () => {
      const dump = startDump(target, { criu: criu ? fake(criu) : REAL_CRIU, gdb: gdb ? fake(gdb) : REAL_GDB, args: ['--timeout', '5'] });
      const result = await dump.result;
      record(`${name} --timeout 5: snap exited ${(dump.runMs / 1000).toFixed(2)} s after it started (exit ${result.exitCode})`);
      await expectCleanFailure(dump, result, 10, new RegExp(`${step} did not finish in time; it was killed`));
      expect(dump.markerLines()).toHaveLength(1);
      await expectRunning(target);
    });
  }

  it('a `criu check` that hangs, with --timeout 5: exit 10 after about 5 s, target never stopped', async () => {
    await target.resetMaxGap();
    const dump = startDump(target, { criu: fake('criu-check-hang'), gdb: REAL_GDB, args: ['--timeout', '5'] });
    const result = await dump.result;
    record(`criu-check-hang --timeout 5: snap exited ${(dump.runMs / 1000).toFixed(2)} s after it started`);
    await expectCleanFailure(dump, result, 10, /preflight \(tool versions and `criu check`\) ran past the --timeout of 5 s/);
    expect(target.readProgress().maxGapUs).toBeLessThan(300_000);
    await expectRunning(target);
  });
});

describe('a target paused with SIGSTOP, faulty tools', () => {
  let target: Target;
  beforeAll(async () => {
    target = await startTarget({ threads: 4, group: 'setsid' });
    await target.pauseWith('SIGSTOP');
  });
  afterAll(cleanupAllTargets);

  for (const [criu, gdb] of [
    ['criu-fail', undefined],
    [undefined, 'gdb-crash'],
    ['criu-hang', undefined],
  ] as const) {
    it(`${criu ?? gdb}: the target is still paused and did not advance`, async () => {
      const before = target.readProgress().ticks;
      const dump = startDump(target, {
        criu: criu ? fake(criu) : REAL_CRIU,
        gdb: gdb ? fake(gdb) : REAL_GDB,
        args: criu === 'criu-hang' ? ['--timeout', '3'] : [],
      });
      const result = await dump.result;
      await expectCleanFailure(dump, result, criu === 'criu-hang' ? 10 : 8, /./);
      expect(result.stderr).toMatch(/rolled back: target \d+ left stopped as it was/);
      await expectStopped(target);
      expect(target.readProgress().ticks).toBe(before);
    });
  }
});

describe('the target itself goes away mid-dump', () => {
  afterEach(cleanupAllTargets);

  it('target killed while criu runs: exit 15, "exited ... while criu held the tree", never "put back", nothing sent to it, nothing left', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const dump = startDump(target, { criu: fake('criu-slow'), gdb: REAL_GDB, env: { PROCSNAP_FAKE_DELAY: '1' } });
    await dump.waitForMarker('criu to start');
    await target.kill();
    const result = await dump.result;
    await expectCleanFailure(dump, result, 15, new RegExp(`${target.pid} \\(worker\\) exited during the checkpoint \\(criu dump\\) while criu held the tree: .*not put back`));
    expect(result.stderr).toMatch(new RegExp(`target ${target.pid} is gone \\(gone\\); nothing sent to it`));
    expect(result.stderr).not.toMatch(/was put back/);
  });

  it('target killed while gdb runs: exit 15, "exited ... while gdb held the tree", nothing left', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const dump = startDump(target, { criu: REAL_CRIU, gdb: fake('gdb-slow'), env: { PROCSNAP_FAKE_DELAY: '1' } });
    await dump.waitForMarker('gdb to be given its commands');
    await target.kill();
    const result = await dump.result;
    await expectCleanFailure(dump, result, 15, new RegExp(`${target.pid} \\(worker\\) exited during the core dump \\(gdb\\) while gdb held the tree`));
  });

  it('pid handed to another process mid-dump: exit 9, and the newcomer is never signalled', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const pid = target.pid;
    // criu-fail waits 5 s, then fails: time to kill the target and start another process under its pid (which can
    // take many tries while other processes on the machine take pids too).
    const dump = startDump(target, { criu: fake('criu-fail'), gdb: REAL_GDB, env: { PROCSNAP_FAKE_DELAY: '5' } });
    await dump.waitForMarker('criu to start');
    await target.kill();
    const newcomer = await startTargetWithPid(pid);
    await newcomer.resetMaxGap();
    expect(dump.snap.child.exitCode, 'the newcomer had the pid before criu failed').toBeNull();
    const result = await dump.result;
    await expectCleanFailure(dump, result, 9, new RegExp(`pid ${pid} now belongs to another process \\(start time changed\\) during the checkpoint`));
    expect(result.stderr).toMatch(new RegExp(`target ${pid} is gone \\(reused\\); nothing sent to it`));
    // Never stopped: its longest pause since the reset is a scheduling hiccup, not a SIGSTOP.
    await newcomer.waitUntilTicksAdvance(5);
    expect(newcomer.readProgress().maxGapUs).toBeLessThan(300_000);
    expect(newcomer.threadStates().every((s) => s !== 'T')).toBe(true);
  });
});


describe('a disk that is full', () => {
  const mounts: string[] = [];
  function tmpfs(size: string): string {
    const dir = makeTempDir('snap-fault-tmpfs-');
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', dir]);
    mounts.push(dir);
    return dir;
  }
  afterEach(async () => {
    await cleanupAllTargets();
    for (const dir of mounts.splice(0)) execFileSync('umount', [dir]);
  });
  /** A dump whose criu, once its images are written, fills outDir up to its last `leaveMib` MiB. */
  const dumpFillingAfterCriu = (target: Target, outDir: string, leaveMib: number, args: string[] = []) =>
    startDump(target, { outDir, criu: fake('criu-fill'), args: ['--compression', 'none', ...args], env: { PROCSNAP_FAKE_FILL_DIR: outDir, PROCSNAP_FAKE_LEAVE_MIB: String(leaveMib) } });

  it('no room for the bundle at preflight (8 MiB tmpfs): exit 7 before the target is touched', async () => {
    const target = await startTarget({ threads: 4, mib: 64, group: 'setsid' });
    await target.resetMaxGap();
    const dump = startDump(target, { outDir: tmpfs('8m'), criu: REAL_CRIU, gdb: REAL_GDB, args: ['--compression', 'none'] });
    const result = await dump.result;
    await expectCleanFailure(dump, result, 7, /not enough room in .*: .* free, about .* needed/);
    expect(result.stderr).not.toMatch(/\[start\] Stop the target/);
    expect(target.readProgress().maxGapUs).toBeLessThan(300_000);
    await expectRunning(target);
  });

  it('the disk fills up while the bundle is written: exit 7, no partial file, target running', async () => {
    // 64 MiB of random memory: core and images about 66 MiB each, the uncompressed bundle their sum. The preflight
    // estimate (the mappings the core holds, the memory criu dumps, and a bundle of both) fits in 400 MiB; after
    // gcore, the fake gdb fills the disk up to the last 20 MiB.
    const target = await startTarget({ threads: 4, mib: 64, group: 'setsid' });
    const outDir = tmpfs('400m');
    const dump = startDump(target, {
      outDir,
      criu: REAL_CRIU,
      gdb: fake('gdb-fill'),
      args: ['--compression', 'none'],
      env: { PROCSNAP_FAKE_FILL_DIR: outDir, PROCSNAP_FAKE_LEAVE_MIB: '20' },
    });
    const result = await dump.result;
    expect(result.stderr, 'the tree was back: the estimate passed').toMatch(/\[done\]\s+Put every process back/);
    expect(result.exitCode, result.stderr).toBe(7);
    // Which write meets the full disk first (a core's recipe, the stacks, the bundle streaming beside them) varies
    // from run to run; each is named by its filesystem, as df shows it, besides the directory.
    expectOneErrorLine(result, new RegExp(`no space left while [a-z ]+ in ${outDir}, on the filesystem mounted at ${outDir} \\(tmpfs\\)`));
    expect(result.stderr).not.toMatch(/unexpected error|stored whole/);
    await expectNoLeftovers(dump);
    expectNoOutput(dump, ['filler']);
    expectNoJournal(dump);
    await expectRunning(target);
  });

  for (const encrypted of [false, true])
    it(`the disk fills while ${encrypted ? 'an encrypted' : 'a zstd'} bundle is written: exit 7 naming it, no partial file, no zstd left, target running`, async () => {
      // The bundle goes from the zstd program into the file, or through a FIFO to the thread that seals and writes
      // it: a full disk there is named like any other (not the broken pipe it leaves behind), and the program, which
      // would wait forever on a FIFO nobody reads, is gone.
      const target = await startTarget({ threads: 4, mib: 64, group: 'setsid' });
      const outDir = tmpfs('400m');
      const keys = makeTempDir('snap-fault-age-');
      execFileSync('age-keygen', ['-o', join(keys, 'id.txt')], { stdio: 'ignore' });
      const recipient = execFileSync('age-keygen', ['-y', join(keys, 'id.txt')], { encoding: 'utf8' }).trim();
      const dump = startDump(target, {
        outDir,
        criu: fake('criu-fill'),
        args: encrypted ? ['--encrypt-to', recipient] : [],
        env: { PROCSNAP_FAKE_FILL_DIR: outDir, PROCSNAP_FAKE_LEAVE_MIB: '90' },
      });
      const result = await dump.result;
      expect(result.exitCode, result.stderr).toBe(7);
      expectOneErrorLine(result, new RegExp(`no space left while [a-z ]+ in ${outDir}, on the filesystem mounted at ${outDir} \\(tmpfs\\)`));
      expect(result.stderr).not.toMatch(/unexpected error|EPIPE|SIGKILL|exited with/);
      await expectNoLeftovers(dump);
      expectNoOutput(dump, ['filler']);
      expectNoJournal(dump);
      await expectRunning(target);
    });

  it('--leave killed, the disk fills after criu ended the tree: exit 7, and its images, all there is of the process now, are kept and named', async () => {
    const target = await startTarget({ threads: 4, mib: 64, group: 'setsid' });
    const outDir = tmpfs('400m');
    // criu dumps and ends the tree as asked; the fake then fills the disk, so the bundle cannot be written.
    const dump = dumpFillingAfterCriu(target, outDir, 2, ['--leave', 'killed']);
    const result = await dump.result;
    expect(result.exitCode, result.stderr).toBe(7);
    expectOneErrorLine(result, new RegExp(`no space left while [a-z ]+ in ${outDir}`));
    await waitFor(() => target.childExit, { what: 'the target to be reaped' });
    expect(target.childExit).toEqual({ code: null, signal: 'SIGKILL' });
    const kept = /its images are kept in (\S+) /.exec(result.stderr)?.[1];
    expect(kept, result.stderr).toBeDefined();
    for (const image of ['inventory.img', 'pstree.img', `core-${target.pid}.img`, `mm-${target.pid}.img`]) expect(existsSync(join(kept!, image)), image).toBe(true);
    expect(existsSync(dump.output)).toBe(false);
    expect(result.stderr).not.toMatch(/rolled back|resumed|unexpected error/);
    await expectNoLeftovers(dump);
    expectNoJournal(dump);
  });

  it('no room left at all after gcore: the recipe of the core fails on ENOSPC, exit 7 naming the step and the filesystem, nothing left', async () => {
    // The fake gdb fills the disk to the last byte after its gcore: the first write of the core's recipe (its blob:
    // the ELF head, which no image holds) fails, every time, before any other write of the capture does.
    const target = await startTarget({ threads: 4, mib: 64, group: 'setsid' });
    const outDir = tmpfs('400m');
    const dump = startDump(target, {
      outDir,
      criu: REAL_CRIU,
      gdb: fake('gdb-fill'),
      args: ['--compression', 'none'],
      env: { PROCSNAP_FAKE_FILL_DIR: outDir, PROCSNAP_FAKE_LEAVE_MIB: '0' },
    });
    const result = await dump.result;
    expect(result.exitCode, result.stderr).toBe(7);
    expectOneErrorLine(result, new RegExp(`no space left while keeping the cores as recipes in ${outDir}, on the filesystem mounted at ${outDir} \\(tmpfs\\); free space there`));
    expect(result.stderr, 'a full disk is not a core that could not be matched').not.toMatch(/stored whole/);
    expect(result.stderr).toMatch(/rolled back: target \d+ resumed as it was/);
    await expectNoLeftovers(dump);
    expectNoOutput(dump, ['filler']);
    expectNoJournal(dump);
    await expectRunning(target);
  });

  it('room for the CRIU images but not for the cores built from them: exit 7 naming the step and the filesystem, nothing left', async () => {
    // The fake criu leaves 16 MiB once its images are written; the core built from them holds the 64 MiB of memory.
    const target = await startTarget({ threads: 4, mib: 64, group: 'setsid' });
    const outDir = tmpfs('400m');
    const dump = dumpFillingAfterCriu(target, outDir, 16);
    const result = await dump.result;
    expect(result.exitCode, result.stderr).toBe(7);
    expectOneErrorLine(result, new RegExp(`no space left while writing the cores in ${outDir}, on the filesystem mounted at ${outDir} \\(tmpfs\\)`));
    expect(result.stderr).toMatch(/\[start\] Cores built from the CRIU images/);
    expect(result.stderr).toMatch(/rolled back: target \d+ resumed as it was/);
    await expectNoLeftovers(dump);
    expectNoOutput(dump, ['filler']);
    expectNoJournal(dump);
    await expectRunning(target);
  });
});

describe('the output directory removed mid-dump', () => {
  afterEach(cleanupAllTargets);

  it('removed while criu runs: exit 7 naming the directory and its filesystem, target running, nothing left, the directory not made again', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const outDir = join(makeTempDir('snap-fault-parent-'), 'out');
    mkdirSync(outDir, { mode: 0o700 });
    const dump = startDump(target, { outDir, criu: fake('criu-slow'), env: { PROCSNAP_FAKE_DELAY: '2' } });
    await dump.waitForMarker('criu to start');
    rmSync(outDir, { recursive: true, force: true });
    const result = await dump.result;
    expect(result.exitCode, result.stderr).toBe(7);
    expectOneErrorLine(result, new RegExp(`output directory ${outDir} was removed while writing the CRIU images \\(it was on the filesystem mounted at \\S+ \\(\\w+\\)\\)`));
    expect(result.stderr).toMatch(/rolled back: target \d+ resumed as it was/);
    expect(existsSync(outDir), 'snap does not make the directory again').toBe(false);
    await expectNoLeftovers(dump);
    expectNoJournal(dump);
    await expectRunning(target);
  });
});
