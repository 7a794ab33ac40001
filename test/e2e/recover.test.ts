// Crash safety: snap killed with SIGKILL at each step leaves a journal; every snap command then warns, a new dump of
// that target refuses, and `snap recover` kills what the dead snap left running, puts the target back (only if its
// pid still has the recorded start time) and removes the partial output.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { RecoveryAction } from '../../src/pipelines/recover/index.js';
import { PSTREE_MAGIC } from '../../src/criu-images/image-file.js';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runSnap, type SnapResult } from '../helpers/cli.js';
import { image, message } from '../helpers/criu-image-writer.js';
import {
  expectNoLeftovers, expectNoOutput, expectRunning, expectStopped, fake, processesOfRun, REAL_CRIU, REAL_GDB, startDump, startTargetWithPid,
  waitUntilTracedBy,
  type DumpUnderTest,
} from '../helpers/faults.js';
import { cleanupAllTargets, processExists, readProcStat, startTarget, waitFor, type Target } from '../helpers/target.js';

afterAll(removeTempDirs);

function journalPath(dump: DumpUnderTest): string {
  return join(dump.journalDir ?? '/run/procsnap', `target-${dump.target.pid}.json`);
}

function readJournal(dump: DumpUnderTest): { partialPath: string | null; killedByCriu?: { images: string } } | undefined {
  try {
    return JSON.parse(readFileSync(journalPath(dump), 'utf8')) as { partialPath: string | null; killedByCriu?: { images: string } };
  } catch {
    return undefined; // not written yet, or being replaced
  }
}

/** The lock files on the target's process (pid-PID-START.lock) in the dump's journal directory. */
function targetLocks(dump: DumpUnderTest): string[] {
  const dir = dump.journalDir ?? '/run/procsnap';
  return existsSync(dir) ? readdirSync(dir).filter((n) => n.startsWith(`pid-${dump.target.pid}-`)) : [];
}

/** SIGKILL to snap; waits until it is gone and its journal is there, and its lock on the target. */
async function killSnap(dump: DumpUnderTest): Promise<void> {
  dump.signal('SIGKILL');
  const result = await dump.result;
  expect(result.signal).toBe('SIGKILL');
  expect(existsSync(journalPath(dump)), `journal ${journalPath(dump)} after SIGKILL`).toBe(true);
  expect(targetLocks(dump), 'the dead snap\'s lock on the target').toHaveLength(1);
}

function snapEnv(dump: DumpUnderTest): Record<string, string | undefined> {
  return { PROCSNAP_JOURNAL_DIR: dump.journalDir ?? undefined };
}

async function recover(dump: DumpUnderTest): Promise<{ run: SnapResult; mine: RecoveryAction }> {
  const run = await runSnap(['recover', '--json'], { env: snapEnv(dump) });
  expect(run.exitCode, run.stderr).toBe(0);
  const { recovered } = JSON.parse(run.stdout) as { recovered: RecoveryAction[] };
  // A snap killed while it rewrote its journal also leaves the half-written update, which recover removes and lists
  // on its own: not the journal's recovery.
  const mine = recovered.filter((r) => r.targetPid === dump.target.pid && !/\.tmp-\d+$/.test(r.journal));
  expect(mine, run.stdout).toHaveLength(1);
  return { run, mine: mine[0]! };
}

/** What a dead snap's journal does to other commands: a warning everywhere, a refusal for the same target. */
async function expectWarningsAndRefusal(dump: DumpUnderTest): Promise<void> {
  const other = await runSnap(['verify', join(dump.outDir, 'no-such-bundle.tar.zst')], { env: snapEnv(dump) });
  expect(other.stderr).toMatch(new RegExp(`snap: warning: \\d+ target\\(s\\) left by a snap that died \\([\\d, ]*\\b${dump.target.pid}\\b[\\d, ]*\\); run \`snap recover\``));
  const again = await runSnap(['dump', String(dump.target.pid), '-o', join(dump.outDir, 'again.tar.zst')], { env: snapEnv(dump) });
  expect(again.exitCode, again.stderr).toBe(14);
  expect(again.stderr).toMatch(
    new RegExp(`snap: error: a previous snap \\(pid ${dump.pid}\\) died while working on target ${dump.target.pid}; run \`snap recover\` first`),
  );
  expect(existsSync(join(dump.outDir, 'again.tar.zst'))).toBe(false);
}

/** After recover: nothing of the run is left, no output, no journal. */
async function expectAllCleared(dump: DumpUnderTest): Promise<void> {
  await expectNoLeftovers(dump);
  expectNoOutput(dump);
  expect(existsSync(journalPath(dump)), 'journal after recover').toBe(false);
  expect(targetLocks(dump), 'lock on the target after recover').toEqual([]);
}

/** Waits until criu holds the target and copies its memory (its parasite runs inside the target). */
async function midCheckpoint(dump: DumpUnderTest, target: Target): Promise<void> {
  await waitUntilTracedBy(target, /ld-linux|criu/, dump);
  await waitFor(() => /Dumping pages \(type/.test(dump.workFileText('logs/criu-dump.log')), { what: 'criu to copy pages', intervalMs: 2, timeoutMs: 30_000 });
}

/** A dump whose snap got SIGKILL while the real gdb wrote the core: the target is left frozen, its journal there. */
async function killedWhileGdbWrites(target: Target): Promise<DumpUnderTest> {
  const dump = startDump(target, { criu: REAL_CRIU, gdb: REAL_GDB });
  await waitUntilTracedBy(target, /gdb$/, dump);
  await waitFor(() => dump.workFileSize((names) => names.find((n) => n.startsWith('core.'))) > 8 * 1024 * 1024, { what: 'gdb to write 8 MiB', intervalMs: 2 });
  await killSnap(dump);
  await expectStopped(target);
  return dump;
}

/** The hanging fake has started its child (`sleep 3600`, in the fake's process group). */
async function waitForChild(dump: DumpUnderTest, pgid: number): Promise<void> {
  await waitFor(() => processesOfRun(dump.token).some((p) => p.includes(`pgrp ${pgid}`) && p.includes('sleep 3600')), {
    what: `the fake's child in process group ${pgid}`,
    detail: () => processesOfRun(dump.token).join('; '),
  });
}

describe('SIGKILL to snap at each step of a running target, then snap recover', () => {
  let target: Target;
  beforeAll(async () => {
    target = await startTarget({ threads: 4, mib: 256, group: 'setsid' });
  });
  afterAll(cleanupAllTargets);
  afterEach(async () => {
    // A test that failed half way may leave the target frozen: thaw it so the next test starts from a running one.
    if (target.isAlive() && target.threadStates().every((s) => s === 'T')) await target.resume();
    if (target.isAlive()) await expectRunning(target);
  });

  it('during preflight (a hanging `criu check`): the journal says nothing was sent; recover removes it', async () => {
    const dump = startDump(target, { criu: fake('criu-check-hang'), gdb: REAL_GDB });
    await dump.waitForMarker('criu check to start', (m) => m.mode === 'check-hang');
    await killSnap(dump);
    await expectWarningsAndRefusal(dump);
    const { mine } = await recover(dump);
    expect(mine.outcome).toBe('recovered');
    expect(mine.actions).toContain(`target ${target.pid} was never signalled`);
    await expectAllCleared(dump);
  });

  it('while the real criu copies memory: criu finishes, the target stays frozen until recover, then runs on undamaged', async () => {
    const dump = startDump(target, { criu: REAL_CRIU, gdb: REAL_GDB });
    await midCheckpoint(dump, target);
    await killSnap(dump);
    // criu is not killed with snap (killed while it holds the target, it can take it down): it finishes its dump and
    // lets go, and the target stays in the SIGSTOP stop snap put it in.
    await expectStopped(target);
    await expectWarningsAndRefusal(dump);
    const { mine } = await recover(dump);
    expect(mine.outcome).toBe('recovered');
    expect(mine.actions).toContain(`target ${target.pid} resumed`);
    await target.waitUntilTicksAdvance(20);
    await expectAllCleared(dump);
  });

  it('while a hanging criu and its child run: criu outlives snap (it is not killed with it), and recover kills both', async () => {
    const dump = startDump(target, { criu: fake('criu-hang'), gdb: REAL_GDB });
    const marker = await dump.waitForMarker('the hanging criu to start');
    await waitForChild(dump, marker.pid);
    await killSnap(dump);
    expect(processesOfRun(dump.token).filter((p) => p.includes(`pgrp ${marker.pid}`))).toHaveLength(2);
    await expectStopped(target);
    const { mine } = await recover(dump);
    expect(mine.outcome).toBe('recovered');
    // The fake is a bash script: its comm is bash.
    expect(mine.actions.join('; ')).toMatch(/killed leftover (bash \(pid \d+\), sleep|sleep \(pid \d+\), bash) \(pid \d+\)/);
    await expectAllCleared(dump);
  });

  it('while the real gdb writes the core: the target stays frozen until recover', async () => {
    const dump = await killedWhileGdbWrites(target);
    await expectWarningsAndRefusal(dump);
    const { mine } = await recover(dump);
    expect(mine.outcome).toBe('recovered');
    await target.waitUntilTicksAdvance(20);
    await expectAllCleared(dump);
  });

  it('recover --list and --dry-run change nothing; recover PID acts on that target only', async () => {
    const dump = await killedWhileGdbWrites(target);
    const env = snapEnv(dump);

    const listed = await runSnap(['recover', '--list', '--json'], { env });
    expect(listed.exitCode, listed.stderr).toBe(0);
    const { journals } = JSON.parse(listed.stdout) as { journals: { targetPid: number; status: string; operation: string; touched: boolean; snapPid: number }[] };
    expect(journals.find((j) => j.targetPid === target.pid)).toMatchObject({ status: 'left', operation: 'dump', touched: true, snapPid: dump.pid });
    expect((await runSnap(['recover', '--list'], { env })).stdout).toMatch(new RegExp(`left\\s+target ${target.pid}: dump by snap ${dump.pid}, at core`));

    const other = await runSnap(['recover', String(target.pid + 100000), '--dry-run'], { env });
    expect(other.stdout.trim()).toBe(`nothing to recover for target ${target.pid + 100000}`);

    const dry = await runSnap(['recover', String(target.pid), '--dry-run', '--json'], { env });
    expect(dry.exitCode, dry.stderr).toBe(0);
    const planned = (JSON.parse(dry.stdout) as { recovered: RecoveryAction[]; dryRun: boolean }).recovered;
    expect(planned).toHaveLength(1);
    expect(planned[0]!.outcome).toBe('recovered');
    expect(planned[0]!.actions).toContain(`would resume target ${target.pid}`);
    expect(planned[0]!.actions.some((a) => /^would remove .*\.work-/.test(a)), planned[0]!.actions.join('; ')).toBe(true);
    await expectStopped(target);
    expect(existsSync(journalPath(dump)), 'the journal after a dry run').toBe(true);

    const done = await runSnap(['recover', String(target.pid), '--json'], { env });
    expect(done.exitCode, done.stderr).toBe(0);
    const [mine] = (JSON.parse(done.stdout) as { recovered: RecoveryAction[] }).recovered;
    expect(mine?.outcome).toBe('recovered');
    expect(mine?.actions).toContain(`target ${target.pid} resumed`);
    await target.waitUntilTicksAdvance(20);
    await expectAllCleared(dump);
  });

  it('while a hanging gdb and its child run: the kernel kills gdb, recover kills the child it left', async () => {
    const dump = startDump(target, { criu: REAL_CRIU, gdb: fake('gdb-hang') });
    const marker = await dump.waitForMarker('the hanging gdb to get its commands');
    await waitForChild(dump, marker.pid);
    await killSnap(dump);
    // setpriv --pdeathsig took the fake itself; the `sleep` it started is still there, in the fake's process group.
    await waitFor(() => processesOfRun(dump.token).every((p) => !p.includes('fake-tools/gdb-hang')), { what: 'the kernel to kill the fake' });
    expect(processesOfRun(dump.token).filter((p) => p.includes(`pgrp ${marker.pid}`) && p.includes('sleep 3600'))).toHaveLength(1);
    // Once init has reaped the fake, its pid names no process: only the group (the pid as pgid) is left to find.
    await waitFor(() => !existsSync(`/proc/${marker.pid}`), { what: `init to reap the fake (pid ${marker.pid})`, timeoutMs: 10_000 });
    await expectStopped(target);
    const { mine } = await recover(dump);
    expect(mine.outcome).toBe('recovered');
    expect(mine.actions.join('; ')).toMatch(/killed leftover sleep \(pid \d+\)/);
    await expectAllCleared(dump);
  });

  it('while the bundle is sealed: the partial file is left, and recover removes it', async () => {
    const dump = startDump(target, { criu: REAL_CRIU, gdb: REAL_GDB });
    await waitFor(() => readJournal(dump)?.partialPath ?? undefined, { what: 'the partial bundle to be journalled', intervalMs: 2, timeoutMs: 60_000 });
    await killSnap(dump);
    expect(readdirSync(dump.outDir).some((n) => n.includes('.partial-'))).toBe(true);
    const journal = JSON.parse(readFileSync(journalPath(dump), 'utf8')) as { partialPath: string | null; step: string };
    // The bundle is written from the release on, beside the cores and stacks built from the images.
    expect(['core', 'stacks', 'seal']).toContain(journal.step);
    expect(journal.partialPath).toMatch(/\.x\.tar\.zst\.partial-/);
    const { mine } = await recover(dump);
    expect(mine.outcome).toBe('recovered');
    expect(mine.actions).toContain(`removed ${journal.partialPath}`);
    await expectAllCleared(dump);
  });
});

describe('dump --leave killed: SIGKILL to snap once criu has ended the tree, before the bundle is sealed', () => {
  afterEach(cleanupAllTargets);

  it('recover keeps the images, all there is of the process now, names them and how to restore them, and clears the rest', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    // The stacks' gdb hangs: criu has dumped and ended the tree, the bundle is not sealed.
    const dump = startDump(target, { criu: REAL_CRIU, gdb: fake('gdb-hang'), args: ['--core', 'images', '--leave', 'killed'] });
    await dump.waitForMarker('the stacks gdb to start');
    await waitFor(() => target.childExit, { what: 'criu to end the target' });
    expect(target.childExit).toEqual({ code: null, signal: 'SIGKILL' });
    const images = readJournal(dump)?.killedByCriu?.images;
    expect(images, 'the journal names the images').toBeDefined();
    await killSnap(dump);
    const { mine } = await recover(dump);
    expect(mine.outcome).toBe('target-gone');
    expect(mine.actions.join('; ')).toContain(`its images are kept in ${images} (\`criu restore --images-dir ${images} --restore-detached\``);
    for (const f of ['inventory.img', 'pstree.img', `core-${target.pid}.img`, `mm-${target.pid}.img`]) expect(existsSync(join(images!, f)), f).toBe(true);
    await expectNoLeftovers(dump);
    expect(existsSync(journalPath(dump)), 'journal after recover').toBe(false);
    expect(targetLocks(dump), 'lock on the target after recover').toEqual([]);
  });
});

describe('snap recover when the target is not what it was', () => {
  afterEach(cleanupAllTargets);

  it('the target has exited since: "target-gone", nothing sent, files removed', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const dump = startDump(target, { criu: fake('criu-hang'), gdb: REAL_GDB });
    await waitForChild(dump, (await dump.waitForMarker('the hanging criu to start')).pid);
    await killSnap(dump);
    await target.kill();
    const { mine } = await recover(dump);
    expect(mine.outcome).toBe('target-gone');
    expect(mine.actions).toContain(`target ${target.pid} has exited`);
    await expectAllCleared(dump);
  });

  it('its pid now names another (paused) process: recover leaves that process alone', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const pid = target.pid;
    const dump = startDump(target, { criu: fake('criu-hang'), gdb: REAL_GDB });
    await waitForChild(dump, (await dump.waitForMarker('the hanging criu to start')).pid);
    await killSnap(dump);
    await target.kill();
    const newcomer = await startTargetWithPid(pid);
    await newcomer.pauseWith('SIGSTOP'); // a SIGCONT from recover would show: it would run again
    const { mine } = await recover(dump);
    expect(mine.outcome, mine.actions.join('; ')).toBe('target-gone');
    expect(mine.actions).toContain(`pid ${pid} now belongs to another process; not touched`);
    await expectStopped(newcomer);
    await expectAllCleared(dump);
  });

  it('a journal whose snap is still alive is left alone ("in-progress"), and that dump finishes', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const dump = startDump(target, { criu: fake('criu-slow'), gdb: REAL_GDB, env: { PROCSNAP_FAKE_DELAY: '2' } });
    await dump.waitForMarker('criu to start');
    const { mine } = await recover(dump);
    expect(mine.outcome).toBe('in-progress');
    const result = await dump.result;
    expect(result.exitCode, result.stderr).toBe(0);
    expect(existsSync(dump.output)).toBe(true);
    await expectRunning(target);
  });
});

describe('the default journal directory (/run/procsnap)', () => {
  afterEach(cleanupAllTargets);

  it('SIGKILL while frozen, then `snap recover` with no settings: target running again', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const dump = startDump(target, { criu: fake('criu-hang'), gdb: REAL_GDB, journalDir: null });
    await waitForChild(dump, (await dump.waitForMarker('the hanging criu to start')).pid);
    await killSnap(dump);
    expect(journalPath(dump)).toBe(`/run/procsnap/target-${target.pid}.json`);
    await expectStopped(target);
    await expectWarningsAndRefusal(dump);
    const { mine } = await recover(dump);
    expect(mine.outcome).toBe('recovered');
    await expectRunning(target);
    await expectAllCleared(dump);
  });
});

describe('a snap that died between creating a file and journalling it', () => {
  afterEach(cleanupAllTargets);

  it('recover still finds its partial bundle, work directory and half-written journal update by its pid, and nothing else', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const journalDir = makeTempDir('snap-fault-journal-');
    const outDir = makeTempDir('snap-fault-out-');
    const deadSnap = 4_194_303; // above pid_max: no process has it, so the journal's snap is dead
    const output = join(outDir, 'x.tar.zst');
    const partial = join(outDir, `.x.tar.zst.partial-${deadSnap}-0a1b2c3d`);
    const work = join(outDir, `.x.tar.zst.work-${deadSnap}-Ab12Cd`);
    const someoneElses = join(outDir, '.x.tar.zst.partial-999-ffffffff');
    writeFileSync(partial, 'half a bundle');
    mkdirSync(join(work, 'logs'), { recursive: true });
    writeFileSync(join(work, 'logs', 'gdb.log'), 'log');
    writeFileSync(someoneElses, 'not ours');
    writeFileSync(join(journalDir, `target-${target.pid}.json.tmp-${deadSnap}`), ''); // killed mid journal update
    const now = new Date().toISOString();
    writeFileSync(
      join(journalDir, `target-${target.pid}.json`),
      JSON.stringify({
        version: 1, operation: 'dump', snapPid: deadSnap, snapStartTime: 1,
        target: { pid: target.pid, startTime: target.startTime(), bootId: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim() },
        originalState: 'running', restoreTo: 'running', step: 'seal', touched: true,
        output, partialPath: null, workDir: null, toolPids: [], startedAt: now, updatedAt: now,
      }),
    );
    const run = await runSnap(['recover', '--json'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(run.exitCode, run.stderr).toBe(0);
    const { recovered } = JSON.parse(run.stdout) as { recovered: RecoveryAction[] };
    const mine = recovered.filter((r) => r.outcome === 'recovered');
    expect(mine).toHaveLength(1);
    expect(mine[0]!.actions).toEqual(expect.arrayContaining([`removed ${partial}`, `removed ${work}`]));
    expect(recovered.filter((r) => r.outcome === 'unreadable').map((r) => r.actions)).toEqual([['removed a half-written journal update']]);
    expect(readdirSync(outDir)).toEqual(['.x.tar.zst.partial-999-ffffffff']);
    expect(readdirSync(journalDir)).toEqual([]);
    await expectRunning(target);
  });
});

describe('a restore that died: recover kills only what its journal records as restored', () => {
  afterEach(cleanupAllTargets);

  it('a recorded pid with another start time and a live pid of the images never recorded are not touched; a recorded one is killed', async () => {
    const journalDir = makeTempDir('snap-fault-journal-');
    const workDir = makeTempDir('snap-fault-restore-work-');
    const deadSnap = 4_194_303; // above pid_max: no process has it, so the journal's snap is dead
    const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    // Unrelated processes, both started long after the dead snap (snapStartTime 1) and both with pids of the images.
    const taken = await startTarget({ threads: 2, group: 'setsid' });
    const never = await startTarget({ threads: 2, group: 'setsid' });
    const restored = spawn('/bin/sleep', ['3600'], { detached: true, stdio: 'ignore' });
    restored.unref();
    const mine = restored.pid!;
    try {
      const tasks = [mine, taken.pid, never.pid].map((pid) => message('pstree_entry', { pid, ppid: 1, pgid: pid, sid: pid, threads: [pid] }));
      mkdirSync(join(workDir, 'criu'));
      writeFileSync(join(workDir, 'criu', 'pstree.img'), image(PSTREE_MAGIC, tasks));
      const now = new Date().toISOString();
      writeFileSync(
        join(journalDir, `target-${mine}.json`),
        JSON.stringify({
          version: 1, operation: 'restore', snapPid: deadSnap, snapStartTime: 1, target: { pid: mine, startTime: 0, bootId },
          originalState: 'running', restoreTo: 'running', step: 'restoring', touched: true, output: null, partialPath: null, workDir,
          toolPids: [], startedAt: now, updatedAt: now,
          restored: [
            { pid: mine, startTime: readProcStat(mine)!.startTime, bootId },
            { pid: taken.pid, startTime: taken.startTime()! - 1, bootId }, // the pid is now another process's
          ],
        }),
      );
      const env = { PROCSNAP_JOURNAL_DIR: journalDir };

      const dry = await runSnap(['recover', '--dry-run', '--json'], { env });
      expect(dry.exitCode, dry.stderr).toBe(0);
      expect((JSON.parse(dry.stdout) as { recovered: RecoveryAction[] }).recovered[0]!.actions).toContain(`would kill partly restored ${mine}`);
      expect(processExists(mine), 'the recorded process after a dry run').toBe(true);

      const run = await runSnap(['recover', '--json'], { env });
      expect(run.exitCode, run.stderr).toBe(0);
      const { recovered } = JSON.parse(run.stdout) as { recovered: RecoveryAction[] };
      expect(recovered, run.stdout).toHaveLength(1);
      expect(recovered[0]!.outcome).toBe('recovered');
      expect(recovered[0]!.actions).toEqual(
        expect.arrayContaining([
          `killed partly restored ${mine}`,
          `pid ${taken.pid} now belongs to another process; not touched`,
          expect.stringMatching(new RegExp(`^\\S+ \\(pid ${never.pid}\\) has a pid of the images' tree but was not recorded as restored; not touched$`)),
        ]),
      );
      expect(recovered[0]!.actions.filter((a) => a.startsWith('killed')), 'what was killed').toEqual([`killed partly restored ${mine}`]);
      await waitFor(() => !processExists(mine) || readProcStat(mine)?.state === 'Z', { what: `the recorded process ${mine} to be killed` });
      for (const other of [taken, never]) {
        expect(other.isAlive(), `process ${other.pid}`).toBe(true);
        await expectRunning(other);
        await other.waitUntilTicksAdvance(5);
      }
      expect(readdirSync(journalDir)).toEqual([]);
      expect(existsSync(workDir), 'the work directory').toBe(false);
    } finally {
      if (processExists(mine)) process.kill(mine, 'SIGKILL');
    }
  });
});
