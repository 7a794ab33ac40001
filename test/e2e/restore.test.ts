// `snap restore` end to end with real CRIU: a dumped and killed target comes back with its pid, its threads and its
// work going on from the dump point, in the state asked for; a restore that cannot work is refused before criu runs;
// a damaged, cut, foreign or too-new bundle restores nothing. A restored process is never the test's child: it is
// found and killed by pid.
import { execFile } from 'node:child_process';
import { appendFileSync, existsSync, readdirSync, readFileSync, readlinkSync, statSync, truncateSync, copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { MANIFEST_SCHEMA_VERSION } from '../../src/bundle/manifest.js';
import type { RestoreResult } from '../../src/pipelines/restore/index.js';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { repackBundle } from '../helpers/bundles.js';
import { runSnap, type SnapResult } from '../helpers/cli.js';
import { cleanupAllTargets, killPid, processExists, readProcStat, readThreadStates, startTarget, waitFor, type Progress, type Target } from '../helpers/target.js';

const execFileAsync = promisify(execFile);

let journalDir: string;
let dir: string;
/** Every restore extracts under here (--work-dir), so the tests can see that nothing is left behind. */
let workDir: string;
beforeAll(() => {
  journalDir = makeTempDir('snap-test-journal-');
  dir = makeTempDir('snap-test-restore-');
  workDir = makeTempDir('snap-test-restore-work-');
});
afterAll(async () => {
  await cleanupAllTargets();
  removeTempDirs();
});

function snap(args: string[]): Promise<SnapResult> {
  // Unsigned test bundles: trust has its own tests (restore-trust.test.ts).
  const extra = args[0] === 'restore' ? ['--work-dir', workDir, ...(args.includes('--key') ? [] : ['--allow-unsigned'])] : [];
  return runSnap([...args, ...extra], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
}

let bundleCount = 0;
async function dump(target: Target, extra: string[] = []): Promise<string> {
  const bundle = join(dir, `t${target.pid}-${++bundleCount}.tar.zst`);
  const run = await snap(['dump', String(target.pid), '-o', bundle, '--json', '--quiet', ...extra]);
  expect(run.exitCode, `snap dump failed:\n${run.stderr}`).toBe(0);
  return bundle;
}

function expectRestored(run: SnapResult): RestoreResult {
  expect(run.exitCode, `snap restore failed:\n${run.stderr}`).toBe(0);
  const result = JSON.parse(run.stdout) as RestoreResult;
  expect(result.states.map((s) => s.state)).toEqual(['verifying', 'extracting', 'preflight', 'restoring', 'restored']);
  // A person sees the restore as steps, each started and done in order, with what the extraction read.
  const marks = run.stderr.split('\n').map((l) => l.replace(/^\S+ /, '')).filter((l) => /^\[(start|done)\]/.test(l)).map((l) => l.replace(/ \(\d+ ms\)$/, '').slice(0, 40));
  expect(marks).toEqual([
    '[start] Verify the bundle (trust decided',
    '[done]  Verify the bundle (trust decided',
    "[start] Preflight: the images' identity,",
    "[done]  Preflight: the images' identity,",
    '[start] Restore the tree with criu resto',
    '[done]  Restore the tree with criu resto',
  ]);
  expect(run.stderr).toMatch(/\d+ images extracted, every artifact's sha256 checked/);
  expect(run.stderr).toMatch(new RegExp(`pid ${result.pid}, ${result.threads} threads?, ${result.finalState}`));
  return result;
}

/** The documented exit code and one `snap: error:` line naming every needle; progress lines may come before it. */
function expectRefused(run: SnapResult, exitCode: number, ...needles: string[]): string {
  expect(run.exitCode, `stdout:\n${run.stdout}\nstderr:\n${run.stderr}`).toBe(exitCode);
  const errors = run.stderr.split('\n').filter((l) => l.startsWith('snap: error:'));
  expect(errors, run.stderr).toHaveLength(1);
  expect(run.stderr).not.toMatch(/^\s+at /m);
  for (const needle of needles) expect(errors[0]).toContain(needle);
  return errors[0]!;
}

/** criu never ran: the progress on stderr never reached 'restoring'. */
function expectCriuNeverRan(run: SnapResult): void {
  expect(run.stderr).not.toContain('[start] Restore the tree with criu restore');
}

/** Samples ~300 ms: every thread stays T and the ticks do not move. */
async function expectFrozen(target: Target, pid: number): Promise<void> {
  const at = target.readProgress().ticks;
  for (let sample = 0; sample < 6; sample++) {
    const states = readThreadStates(pid);
    expect(states, `thread states ${states.join(',')}`).toEqual(['T', 'T', 'T', 'T']);
    expect(target.readProgress().ticks).toBe(at);
    await sleep(50);
  }
}

function expectRunning(pid: number): void {
  const states = readThreadStates(pid);
  expect(states).toHaveLength(4);
  expect(states.some((s) => s === 'T'), `thread states ${states.join(',')}`).toBe(false);
}

/**
 * The progress file still holds the killed original's last record until the restored process writes its own; the
 * restored one counts on from the dump point, so the first record below `killedAt` is its, and it must then advance.
 */
async function restoredCountsOn(target: Target, killedAt: number): Promise<Progress> {
  const first = await waitFor(() => {
    const p = target.tryReadProgress();
    return p !== undefined && p.ticks < killedAt && p;
  }, { what: `the restored process to write ticks below ${killedAt}, the last the original wrote`, detail: () => `ticks ${target.tryReadProgress()?.ticks}` });
  await waitFor(() => {
    const p = target.tryReadProgress();
    return p !== undefined && p.ticks >= first.ticks + 5 && p.ticks < killedAt && p;
  }, { what: `the restored process to tick on from ${first.ticks}`, detail: () => `ticks ${target.tryReadProgress()?.ticks}` });
  return first;
}

/** The restored incarnation is ours only if it runs the worker with this target's progress file. */
function isOurWorker(target: Target, pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(target.progressPath);
  } catch {
    return false;
  }
}

describe('a running target, dumped, killed and restored', () => {
  let target: Target;
  let bundle: string;
  let ticksBeforeDump: number;
  let ticksBeforeKill: number;
  let lastRecord: Buffer;
  let restored: number | undefined;

  beforeAll(async () => {
    // In the test's own process group, not its own: restored with --shell-job, it joins criu's group.
    target = await startTarget({ threads: 4 });
    await target.waitUntilTicksAdvance(3);
    ticksBeforeDump = target.readProgress().ticks;
    bundle = await dump(target);
    // A wide gap (1 s of ticks) between the dump point and the kill, so the restored process's records, which start
    // at the dump point, stay below the original's last one for as long as the checks below take.
    await target.waitUntilTicksAdvance(100);
    await target.kill();
    ticksBeforeKill = target.readProgress().ticks; // the original's last record, left in the file
    lastRecord = readFileSync(target.progressPath);
  });
  beforeEach(() => {
    // Each test starts from the file as the killed original left it, whatever an earlier restore wrote (in place:
    // criu refuses a file whose size changed).
    writeFileSync(target.progressPath, lastRecord);
  });
  afterEach(async () => {
    if (restored !== undefined) await killPid(restored);
    restored = undefined;
  });

  it('comes back running: same pid, all 4 threads, ticks go on from the dump point', async () => {
    const result = expectRestored(await snap(['restore', bundle, '--json']));
    restored = result.pid;
    expect(result).toMatchObject({ state: 'restored', pid: target.pid, pidInNamespace: target.pid, threads: 4, finalState: 'running', newPidns: false });
    expect(isOurWorker(target, result.pid)).toBe(true);
    expectRunning(result.pid);
    const first = await restoredCountsOn(target, ticksBeforeKill);
    expect(first.ticks).toBeGreaterThanOrEqual(ticksBeforeDump);
    expect(first.pid).toBe(target.pid);
    expect(first.counters.every((c) => c > 0)).toBe(true);
    expectRunning(result.pid);
    expect(readProcStat(result.pid)?.ppid, 'not the test\'s child').not.toBe(process.pid);
  });

  it('--leave-stopped brings a running bundle back stopped', async () => {
    const result = expectRestored(await snap(['restore', bundle, '--leave-stopped', '--json']));
    restored = result.pid;
    expect(result).toMatchObject({ pid: target.pid, threads: 4, finalState: 'stopped' });
    await expectFrozen(target, result.pid);
    expect(target.readProgress().ticks, 'it has not run at all since the restore').toBe(ticksBeforeKill);
    process.kill(result.pid, 'SIGCONT');
    const first = await restoredCountsOn(target, ticksBeforeKill);
    expect(first.ticks).toBeGreaterThanOrEqual(ticksBeforeDump);
    expectRunning(result.pid);
  });
});

describe('a Ctrl+Z-paused target (its own process group), dumped, killed and restored', () => {
  let target: Target;
  let bundle: string;
  let pausedAt: number;
  let lastRecord: Buffer;
  let restored: number | undefined;

  beforeAll(async () => {
    target = await startTarget({ threads: 4, group: 'own-pgrp' });
    await target.waitUntilTicksAdvance(3);
    await target.pauseWith('SIGTSTP');
    pausedAt = target.readProgress().ticks;
    bundle = await dump(target);
    expect(target.threadStates()).toEqual(['T', 'T', 'T', 'T']);
    await target.kill();
    lastRecord = readFileSync(target.progressPath);
  });
  beforeEach(() => {
    writeFileSync(target.progressPath, lastRecord); // as the killed original left it, whatever a restore wrote since
  });
  afterEach(async () => {
    if (restored !== undefined) await killPid(restored);
    restored = undefined;
  });

  it('comes back paused: all threads T, ticks still; SIGCONT runs it on from where it paused', async () => {
    const result = expectRestored(await snap(['restore', bundle, '--json']));
    restored = result.pid;
    expect(result).toMatchObject({ pid: target.pid, threads: 4, finalState: 'stopped' });
    expect(isOurWorker(target, result.pid)).toBe(true);
    expect(target.readProgress().ticks).toBe(pausedAt);
    await expectFrozen(target, result.pid);
    // Still paused after snap has exited (a stopped job in an orphaned group would have been sent SIGHUP by now).
    expect(processExists(result.pid)).toBe(true);
    process.kill(result.pid, 'SIGCONT');
    const progress = await target.waitUntilTicksAdvance(5);
    expect(progress.ticks).toBeLessThan(pausedAt + 1000);
    expectRunning(result.pid);
  });

  it('--resume brings a paused bundle back running', async () => {
    const result = expectRestored(await snap(['restore', bundle, '--resume', '--json']));
    restored = result.pid;
    expect(result).toMatchObject({ pid: target.pid, threads: 4, finalState: 'running' });
    expectRunning(result.pid);
    expect((await target.waitUntilTicksAdvance(5)).ticks).toBeLessThan(pausedAt + 1000); // from the pause point on
  });
});

describe('restore while the original still runs', () => {
  let target: Target;
  let bundle: string;

  beforeAll(async () => {
    target = await startTarget({ threads: 4, group: 'setsid' });
    bundle = await dump(target);
  });

  it('is refused with exit 12 naming the pid and its holder, before anything is extracted; the original is untouched', async () => {
    const before = target.stat()!;
    const run = await snap(['restore', bundle]);
    expectRefused(run, 12, `pid ${target.pid}`, `process ${target.pid} (worker)`);
    // Decided on the bundle's head: no image was written, let alone run.
    expect(run.stderr).not.toContain('[start] Preflight: the images');
    expect(readdirSync(workDir)).toEqual([]);
    expectCriuNeverRan(run);
    const after = target.stat()!;
    expect(after.startTime).toBe(before.startTime);
    expect(target.childExit).toBeUndefined();
    expectRunning(target.pid);
    await target.waitUntilTicksAdvance(5);
  });

  it('--new-pidns beside it is refused naming --isolate: a copy there would answer its clients; the original is untouched', async () => {
    const run = await snap(['restore', bundle, '--new-pidns']);
    expectRefused(run, 12, `the original, process ${target.pid} (worker), still runs`, '--isolate');
    expectCriuNeverRan(run);
    expect(readdirSync(workDir)).toEqual([]);
    expectRunning(target.pid);
    await target.waitUntilTicksAdvance(5);
  });

  it('--isolate restores a copy beside it: another host pid, the old pid inside, its work going on; `copies --end` ends it and all it had', async () => {
    const result = expectRestored(await snap(['restore', bundle, '--isolate', '--json']));
    const copy = result.pid;
    // unshare (host) -> criu (pid 1 in the new namespaces) -> the restored root.
    const criu = readProcStat(copy)?.ppid;
    const unshare = criu !== undefined ? readProcStat(criu)?.ppid : undefined;
    try {
      expect(result).toMatchObject({ newPidns: true, pidInNamespace: target.pid, threads: 4, finalState: 'running' });
      expect(result.isolated?.namespaces).toEqual(['pid', 'net', 'mount', 'ipc', 'uts']);
      expect(copy).not.toBe(target.pid);
      const nspid = /^NSpid:\s*(.*)$/m.exec(readFileSync(`/proc/${copy}/status`, 'utf8'))?.[1]?.trim().split(/\s+/).map(Number);
      expect(nspid?.[0]).toBe(copy);
      expect(nspid?.at(-1)).toBe(target.pid);
      for (const ns of ['net', 'mnt', 'ipc', 'uts', 'pid']) expect(readlinkSync(`/proc/${copy}/ns/${ns}`), ns).not.toBe(readlinkSync(`/proc/self/ns/${ns}`));
      expect(isOurWorker(target, copy)).toBe(true);
      expectRunning(copy);
      // Both write the same progress file: once the original is stopped, every new record is the copy's.
      await target.pauseWith('SIGSTOP');
      const atPause = target.readProgress().ticks;
      const copyFirst = await waitFor(() => {
        const p = target.tryReadProgress();
        return p !== undefined && p.ticks !== atPause && p;
      }, { what: 'a record written after the original stopped (the copy\'s)' });
      await waitFor(() => {
        const p = target.tryReadProgress();
        return p !== undefined && p.ticks >= copyFirst.ticks + 10 && p;
      }, { what: `the copy to tick on from ${copyFirst.ticks}`, detail: () => `ticks ${target.tryReadProgress()?.ticks}` });
      await target.resume();
      await target.waitUntilTicksAdvance(5);
      // `copies` knows it; ending it leaves none of its processes and no record.
      const listed = await snap(['copies', '--json']);
      expect(listed.exitCode, listed.stderr).toBe(0);
      expect((JSON.parse(listed.stdout) as { copies: { record: { root: { pid: number } }; alive: boolean }[] }).copies).toEqual([
        expect.objectContaining({ alive: true, record: expect.objectContaining({ root: expect.objectContaining({ pid: copy }) }) }),
      ]);
      const ended = await snap(['copies', '--end', String(copy)]);
      expect(ended.exitCode, ended.stderr).toBe(0);
      for (const pid of [copy, criu, unshare]) if (pid !== undefined) expect(processExists(pid) && !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8')), `pid ${pid}`).toBe(false);
      expect(JSON.parse((await snap(['copies', '--json'])).stdout)).toEqual({ copies: [] });
      expect(target.childExit).toBeUndefined();
      expectRunning(target.pid);
    } finally {
      await killPid(copy);
      for (const pid of [criu, unshare]) if (pid !== undefined && pid > 1) await killPid(pid);
    }
  });
  it('an isolated copy killed by hand: its forwarder follows it, and `recover` removes its cgroup and record', async () => {
    const port = 20000 + (process.pid % 20000);
    const result = expectRestored(await snap(['restore', bundle, '--isolate', '--json', '--publish', `${port}:1`, '--memory', '64M']));
    const copy = result.pid;
    try {
    expect(result.isolated?.published).toEqual([{ host: `127.0.0.1:${port}`, port: 1 }]);
    const forwarder = readdirSync('/proc').filter((n) => /^\d+$/.test(n)).map(Number).find((p) => {
      try {
        const parts = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
        return parts[1] === '-c' && parts[3] === String(port);
      } catch {
        return false;
      }
    });
    expect(forwarder).toBeDefined();
    await killPid(copy);
    // The copy's namespace holder exits with it, and the forwarder with the holder.
    await waitFor(() => !processExists(forwarder!) || /\) Z /.test(readFileSync(`/proc/${forwarder}/stat`, 'utf8')), { what: `forwarder ${forwarder} to exit` });
    const listed = JSON.parse((await snap(['copies', '--json'])).stdout) as { copies: { alive: boolean }[] };
    expect(listed.copies).toEqual([expect.objectContaining({ alive: false })]);
    const recover = await snap(['recover']);
    expect(recover.exitCode, recover.stderr).toBe(0);
    expect(recover.stdout).toContain(`isolated copy ${copy}`);
    expect(JSON.parse((await snap(['copies', '--json'])).stdout)).toEqual({ copies: [] });
    for (const base of ['/sys/fs/cgroup', '/sys/fs/cgroup/memory'])
      if (existsSync(base)) expect(readdirSync(base).filter((n) => n.startsWith(`procsnap-copy-${copy}-`))).toEqual([]);
    expectRunning(target.pid);
    } finally {
      // Whatever failed above, nothing of the copy outlives the test.
      await snap(['copies', '--end-all']);
    }
  });
});

describe('a file the process had open changed since the dump', () => {
  it('restore refuses with exit 12 before criu runs, naming the file; nothing is restored', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const bundle = await dump(target);
    await target.kill();
    appendFileSync(target.progressPath, 'x');
    const run = await snap(['restore', bundle]);
    expectRefused(run, 12, target.progressPath, 'changed size');
    expectCriuNeverRan(run);
    expect(processExists(target.pid)).toBe(false);
  });
});

describe('damaged, cut, foreign and too-new bundles restore nothing', () => {
  let target: Target;
  let bundle: string;

  beforeAll(async () => {
    target = await startTarget({ threads: 4, group: 'setsid' });
    bundle = await dump(target);
    await target.kill();
  });
  afterEach(() => {
    expect(processExists(target.pid), 'nothing was restored').toBe(false);
  });

  it('one flipped byte in the biggest criu page image: verify exits 11 naming it, restore refuses naming it', async () => {
    let flipped = '';
    const damaged = await repackBundle(bundle, join(dir, 'flipped.tar.zst'), (extracted, manifest) => {
      const pages = manifest.artifacts.filter((a) => /^criu\/pages-\d+\.img$/.test(a.path)).sort((a, b) => b.size - a.size)[0];
      expect(pages, 'a pages-N.img in the bundle').toBeDefined();
      flipped = pages!.path;
      const file = join(extracted, flipped);
      const bytes = readFileSync(file);
      const at = Math.floor(bytes.length / 2);
      bytes[at] = bytes[at]! ^ 0x01;
      writeFileSync(file, bytes);
      expect(statSync(file).size).toBe(pages!.size);
    });
    const verify = await snap(['verify', damaged]);
    expectRefused(verify, 11, flipped);
    expect(verify.stdout).toContain(`${flipped}: sha256 mismatch`);
    const restore = await snap(['restore', damaged]);
    expectRefused(restore, 11, flipped);
    expectCriuNeverRan(restore);
  });

  it('a bundle cut in half: verify and restore exit 11', async () => {
    const cut = join(dir, 'cut.tar.zst');
    copyFileSync(bundle, cut);
    truncateSync(cut, Math.floor(statSync(bundle).size / 2));
    const verify = await snap(['verify', cut]);
    expectRefused(verify, 11, cut);
    const restore = await snap(['restore', cut]);
    expectRefused(restore, 11, cut);
    expectCriuNeverRan(restore);
  });

  it('a tar that is not a snap bundle is refused with exit 11: not a snap bundle', async () => {
    const other = makeTempDir('snap-test-foreign-');
    writeFileSync(join(other, 'notes.txt'), 'not a process\n');
    const tar = join(dir, 'foreign.tar');
    await execFileAsync('tar', ['-cf', tar, '-C', other, 'notes.txt']);
    for (const command of ['verify', 'restore', 'inspect']) {
      const run = await snap([command, tar]);
      expectRefused(run, 11, 'not a snap bundle');
      expectCriuNeverRan(run);
    }
  });

  it('a random file that is not a tar is refused with exit 11: not a snap bundle', async () => {
    const random = join(dir, 'random.bin');
    writeFileSync(random, Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 131 + 7) % 251)));
    for (const command of ['verify', 'restore', 'inspect']) {
      const run = await snap([command, random]);
      expectRefused(run, 11, 'not a snap bundle');
      expectCriuNeverRan(run);
    }
  });

  it('a manifest with a schema version newer than this snap reads is refused with exit 11: a newer snap is needed', async () => {
    const next = MANIFEST_SCHEMA_VERSION + 1;
    const newer = await repackBundle(bundle, join(dir, `schema-v${next}.tar.zst`), (extracted) => {
      const path = join(extracted, 'manifest.json');
      const manifest = JSON.parse(readFileSync(path, 'utf8'));
      manifest.schemaVersion = next;
      writeFileSync(path, JSON.stringify(manifest, null, 2) + '\n');
    });
    for (const command of ['verify', 'restore', 'inspect']) {
      const run = await snap([command, newer]);
      const line = expectRefused(run, 11, `schema version ${next}`, 'newer snap');
      expect(line).toMatch(new RegExp(`reads up to ${MANIFEST_SCHEMA_VERSION}`));
      expectCriuNeverRan(run);
    }
  });

  it('no restore, refused or done, left anything in its --work-dir (no work dir, no kept log)', () => {
    expect(readdirSync(workDir)).toEqual([]);
  });
});
