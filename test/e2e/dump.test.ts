// `snap dump` end to end, as root: real worker processes, real gdb, real CRIU. Each test checks what the bundle holds
// AND what became of the target: running again, still paused, stopped or gone, exactly as asked.
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import type { DumpResult } from '../../src/pipelines/dump.js';
import {
  extractBundle, listBundle, makeTempDir, readBundleManifest, readExtractedManifest, readHead, removeTempDirs, schemaProblems,
  sha256OfFile,
} from '../helpers/bundle.js';
import { runSnap, type SnapResult } from '../helpers/cli.js';
import { fixtureBin } from '../helpers/paths.js';
import { cleanupAllTargets, killPid, startTarget, waitFor, type Progress, type Target } from '../helpers/target.js';

const execFileAsync = promisify(execFile);
const CRIU = '/usr/local/sbin/criu';

/** A journal directory of this file's own, so a stale journal elsewhere on the machine cannot change snap's output. */
let journalDir: string;
beforeAll(() => {
  journalDir = makeTempDir('snap-test-journal-');
});
afterAll(removeTempDirs);

async function dump(pid: number, output: string, extra: string[] = [], env: Record<string, string> = {}): Promise<SnapResult> {
  return runSnap(['dump', String(pid), '-o', output, '--json', ...extra], { env: { PROCSNAP_JOURNAL_DIR: journalDir, ...env } });
}

/** Exit 0 and stdout exactly one JSON document, the dump's result; the failure message shows snap's stderr. */
function expectDumpOk(run: SnapResult): DumpResult {
  expect(run.exitCode, `snap dump failed:\n${run.stderr}`).toBe(0);
  expect(run.stdout.trimStart().startsWith('{')).toBe(true);
  const result = JSON.parse(run.stdout) as DumpResult; // throws on two documents or on anything around the one
  expect(readdirSync(journalDir), 'the journal (per-target lock) is removed after a dump').toEqual([]);
  return result;
}

function expectAllThreadsStopped(target: Target): void {
  const states = target.threadStates();
  expect(states).toHaveLength(target.threads);
  expect(states.every((s) => s === 'T'), `thread states ${states.join(',')}`).toBe(true);
}

function expectNoThreadStopped(target: Target): void {
  const states = target.threadStates();
  expect(states).toHaveLength(target.threads);
  expect(states.some((s) => s === 'T'), `thread states ${states.join(',')}`).toBe(false);
}

/** Samples the target over ~300 ms: every thread stays T and neither the ticks nor any counter moves. */
async function expectFrozenAt(target: Target, at: Progress): Promise<void> {
  for (let sample = 0; sample < 6; sample++) {
    expectAllThreadsStopped(target);
    const now = target.readProgress();
    expect(now.ticks).toBe(at.ticks);
    expect(now.counters).toEqual(at.counters);
    await sleep(50);
  }
}

/** snap_ticks as the core recorded it: the value at the dump point. */
async function coreTicks(extracted: string, pid: number): Promise<number> {
  const { stdout } = await execFileAsync('gdb', ['--nx', '--batch', '-ex', 'print snap_ticks', fixtureBin('worker'), join(extracted, `core.${pid}`)]);
  const match = /^\$1 = (\d+)$/m.exec(stdout);
  if (!match) throw new Error(`gdb printed no snap_ticks:\n${stdout}`);
  return Number(match[1]);
}

describe('a running 4-thread target, dumped once', () => {
  const secret = `not-for-the-manifest-${process.pid}-${Date.now()}`;
  let target: Target;
  let bundle: string;
  let run: SnapResult;
  let ticksBeforeDump: number;
  let extracted: string;
  let manifest: Manifest;

  beforeAll(async () => {
    target = await startTarget({ threads: 4, group: 'setsid', env: { PROCSNAP_TEST_SECRET: secret } });
    bundle = join(makeTempDir('snap-test-out-'), 'x.tar.zst');
    ticksBeforeDump = target.readProgress().ticks;
    run = await dump(target.pid, bundle);
    if (run.exitCode === 0) {
      extracted = await extractBundle(bundle);
      manifest = readExtractedManifest(extracted);
    }
  });
  afterAll(cleanupAllTargets);

  it('a running 4-thread target runs again after dump and its work continues', async () => {
    const result = expectDumpOk(run);
    expectNoThreadStopped(target);
    await target.waitUntilTicksAdvance(5);
    expect(result).toMatchObject({ bundle, pid: target.pid, originalState: 'running', finalState: 'running' });
    expect(result.normalization.action).toBe('sigstop');
    // Progress and warnings are snap's own: nothing from the runtime underneath (a Node warning is a leak).
    expect(run.stderr).not.toMatch(/\(node:\d+\)|Warning:/);
    // By default the tree is frozen only for the checkpoint: put back first, then the core is built from the images.
    expect(result.steps.map((s) => s.name)).toEqual(['preflight', 'criu-ready', 'stop', 'checkpoint', 'final-state', 'core', 'stacks', 'seal']);
    expect(result.steps.every((s) => s.status === 'ok')).toBe(true);
    expect(result.bundleSize).toBe(statSync(bundle).size);

    // The schema and the TypeScript type must agree: a manifest the code filled in validates against the schema.
    expect(schemaProblems(manifest)).toEqual([]);
    expect((await listBundle(bundle))[0]).toBe('manifest.json');
    expect(manifest.target.pid).toBe(target.pid);
    expect(manifest.target.threads).toBe(4);
    expect(manifest.target.threadIds).toHaveLength(4);
    expect(manifest.target.exe).toBe(fixtureBin('worker'));
    expect(manifest.target.exeSha256).toBe(sha256OfFile(fixtureBin('worker')));
    expect(manifest.originalState.state).toBe('running');
    expect(manifest.originalState.threads).toHaveLength(4);
    expect(manifest.finalState).toBe('running');
    expect(manifest.normalization.action).toBe('sigstop');
    expect(manifest.steps.map((s) => s.name)).toEqual(['preflight', 'criu-ready', 'stop', 'checkpoint', 'final-state', 'core', 'stacks']);
    expect(manifest.mode, 'cores built from the CRIU images').toBe('short-freeze');
    expect(manifest.freezeWindowMs).toBe(result.freezeWindowMs);
    expect(manifest.freezeWindowMs).toBeGreaterThan(0);
    expect(manifest.tools.criu!.options).not.toContain('--shell-job'); // a session leader with no terminal
    expect(manifest.signed).toBe(false);

    // Every artifact is in the bundle with the sha256 and size the manifest declares, and nothing else is.
    const entries = (await listBundle(bundle)).filter((e) => !e.endsWith('/'));
    expect(entries.sort()).toEqual(['manifest.json', ...manifest.artifacts.map((a) => a.path)].sort());
    expect(manifest.artifacts.map((a) => a.path)).toEqual(
      expect.arrayContaining([`core-recipe.${target.pid}.json`, `core-blob.${target.pid}`, 'criu/inventory.img', 'criu/pstree.img', `criu/core-${target.pid}.img`]),
    );
    // Each page of memory once: the core is not stored beside the images it was built from, but kept as a recipe
    // over them, and what the recipe adds of its own (the ELF head and notes, pages from mapped files) is small.
    expect(manifest.artifacts.filter((a) => a.kind === 'core')).toEqual([]);
    const root = manifest.processes!.find((p) => p.pid === target.pid)!;
    expect(root).toMatchObject({ core: `core.${target.pid}`, coreStored: false });
    expect(sha256OfFile(join(extracted, `core.${target.pid}`))).toBe(root.coreSha256);
    const blob = manifest.artifacts.find((a) => a.path === `core-blob.${target.pid}`)!;
    const pages = manifest.artifacts.filter((a) => /^criu\/pages-\d+\.img$/.test(a.path)).reduce((sum, a) => sum + a.size, 0);
    expect(blob.size * 10, `a ${blob.size}-byte blob beside ${pages} bytes of pages`).toBeLessThan(pages);
    for (const artifact of manifest.artifacts) {
      const file = join(extracted, artifact.path);
      expect(statSync(file).size, artifact.path).toBe(artifact.size);
      expect(sha256OfFile(file), artifact.path).toBe(artifact.sha256);
    }

    // Environment: the names are recorded, the values are not (they hold secrets).
    expect(manifest.target.envNames).toContain('PROCSNAP_TEST_SECRET');
    expect(manifest.target.env).toBeUndefined();
    expect(readFileSync(join(extracted, 'manifest.json'), 'utf8')).not.toContain(secret);
  });

  it('the bundle\'s core opens in gdb with all 4 threads', async () => {
    expect(run.exitCode, run.stderr).toBe(0);
    const core = join(extracted, `core.${target.pid}`);
    const { stdout } = await execFileAsync('gdb', ['--nx', '--batch', '-ex', 'info threads', '-ex', 'print snap_ticks', fixtureBin('worker'), core]);
    const threadLines = stdout.split('\n').filter((line) => /^\*?\s+\d+\s+Thread 0x[0-9a-f]+ \(LWP \d+\)/.test(line));
    expect(threadLines, stdout).toHaveLength(4);
    for (const tid of manifest.target.threadIds) expect(stdout).toContain(`(LWP ${tid})`);
    const ticks = await coreTicks(extracted, target.pid);
    // The dump point lies between the last tick seen before the dump and the ticks after it.
    expect(ticks).toBeGreaterThanOrEqual(ticksBeforeDump);
    expect(ticks).toBeLessThanOrEqual(target.readProgress().ticks);
    expectNoThreadStopped(target);
  });

  it('the bundle\'s CRIU images restore after the original is killed and the work continues from the dump point', async () => {
    expect(run.exitCode, run.stderr).toBe(0);
    const dumpTicks = await coreTicks(extracted, target.pid);
    await waitFor(() => target.readProgress().ticks >= dumpTicks + 20, { what: 'the original to run 20 ticks past the dump point' });
    // SIGKILL, reaped, and no zombie left holding the pid: CRIU needs the pid free ("Can't fork for N: File exists").
    await target.kill();
    const ticksAtKill = target.readProgress().ticks; // the original's last record stays in the file
    expect(ticksAtKill).toBeGreaterThanOrEqual(dumpTicks + 20);
    expect(existsSync(`/proc/${target.pid}`)).toBe(false);

    const work = makeTempDir('snap-test-restore-');
    const pidfile = join(work, 'restored.pid');
    const log = join(work, 'restore.log');
    const repeated = manifest.tools.criu!.options.filter((o) => o === '--shell-job');
    const restore = await execFileAsync(CRIU, [
      'restore', '-D', join(extracted, 'criu'), '--restore-detached', '--pidfile', pidfile, '-v4', '-o', log, ...repeated,
    ]).catch((error: Error) => error);
    if (restore instanceof Error) throw new Error(`criu restore failed: ${restore.message}\n${readFileSync(log, 'utf8').split('\n').slice(-15).join('\n')}`);
    const restoredPid = Number(readFileSync(pidfile, 'utf8').trim());
    try {
      expect(restoredPid).toBe(target.pid);
      expect(readdirSync(`/proc/${restoredPid}/task`)).toHaveLength(4);
      expect(target.isAlive()).toBe(true); // the pid runs the worker with this target's own progress file
      // It was SIGSTOP-stopped at the dump point, and comes back stopped: nothing written yet. criu resumes a restored
      // task with the SIGSTOP pending, and it is taken on the way back to user space: a busy host can show the threads
      // runnable (R) for a moment before that, never running a step of their own.
      await waitFor(() => target.threadStates().every((st) => st === 'T'), { what: 'the restored threads to take their SIGSTOP', detail: () => target.threadStates().join(',') });
      expectAllThreadsStopped(target);
      expect(target.readProgress().ticks).toBe(ticksAtKill);

      process.kill(restoredPid, 'SIGCONT');
      const first = await waitFor(
        () => {
          const p = target.tryReadProgress();
          return p !== undefined && p.ticks !== ticksAtKill && p;
        },
        { what: 'the restored worker to write its first record' },
      );
      // Back at the dump point: past the core's snap_ticks, before where the original had got to.
      expect(first.ticks).toBeGreaterThanOrEqual(dumpTicks);
      expect(first.ticks).toBeLessThan(ticksAtKill);
      expect(first.pid).toBe(target.pid);
      await target.waitUntilTicksAdvance(10);
      expectNoThreadStopped(target);
    } finally {
      await killPid(restoredPid);
    }
    expect(existsSync(`/proc/${restoredPid}`)).toBe(false);
  });
});

describe('dumping single targets', () => {
  afterEach(cleanupAllTargets);

  it('a target paused with SIGTSTP (Ctrl+Z) is still paused after dump and its work did not advance a single step', async () => {
    const target = await startTarget({ threads: 4, group: 'own-pgrp' });
    await target.pauseWith('SIGTSTP');
    const paused = target.readProgress();
    const bundle = join(makeTempDir('snap-test-out-'), 'x.tar.zst');

    const result = expectDumpOk(await dump(target.pid, bundle));

    await expectFrozenAt(target, paused);
    expect(result).toMatchObject({ originalState: 'stopped', finalState: 'stopped' });
    const manifest = await readBundleManifest(bundle);
    expect(manifest.normalization.action).toBe('converted');
    expect(manifest.tools.criu!.options).toContain('--shell-job'); // a job in our session, not a session leader
    expect(manifest.originalState.state).toBe('stopped');
    expect(manifest.warnings, manifest.warnings.join('\n')).toEqual([]);

    await target.resume();
    await target.waitUntilTicksAdvance(5);
    expectNoThreadStopped(target);
  });

  it('a target paused with SIGSTOP is still paused after dump', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    await target.pauseWith('SIGSTOP');
    const paused = target.readProgress();
    const bundle = join(makeTempDir('snap-test-out-'), 'x.tar.zst');

    const result = expectDumpOk(await dump(target.pid, bundle));

    await expectFrozenAt(target, paused);
    expect(result).toMatchObject({ originalState: 'stopped', finalState: 'stopped' });
    expect((await readBundleManifest(bundle)).finalState).toBe('stopped');
    await target.resume();
    await target.waitUntilTicksAdvance(5);
  });

  it('--leave stopped leaves a running target stopped', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const bundle = join(makeTempDir('snap-test-out-'), 'x.tar.zst');

    const result = expectDumpOk(await dump(target.pid, bundle, ['--leave', 'stopped']));

    expect(result).toMatchObject({ originalState: 'running', finalState: 'stopped' });
    await expectFrozenAt(target, target.readProgress());
    expect((await readBundleManifest(bundle)).finalState).toBe('stopped');
    await target.resume();
    await target.waitUntilTicksAdvance(5);
  });

  it('--leave killed: criu ends the tree at the end of its dump, and the bundle is whole', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const bundle = join(makeTempDir('snap-test-out-'), 'x.tar.zst');

    const result = expectDumpOk(await dump(target.pid, bundle, ['--leave', 'killed']));

    expect(result).toMatchObject({ originalState: 'running', finalState: 'killed' });
    await waitFor(() => target.childExit, { what: 'the target to be reaped' });
    expect(target.childExit).toEqual({ code: null, signal: 'SIGKILL' });
    const manifest = await readBundleManifest(bundle);
    expect(manifest.finalState).toBe('killed');
    expect(manifest.steps.find((s) => s.name === 'final-state')?.note).toMatch(/ended by criu at the end of its dump/);
    // criu ran without --leave-running: its own kill, not snap's.
    expect(manifest.steps.find((s) => s.name === 'checkpoint')?.command).not.toContain('--leave-running');
    expect(manifest.processes?.every((p) => p.left === 'killed')).toBe(true);
    const extracted = await extractBundle(bundle);
    for (const artifact of manifest.artifacts) expect(sha256OfFile(join(extracted, artifact.path)), artifact.path).toBe(artifact.sha256);
  });

  it('--leave killed with --core gcore kills it only after the bundle is written', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    let diedAt: number | undefined;
    target.child.once('exit', () => {
      diedAt = Date.now();
    });
    const bundle = join(makeTempDir('snap-test-out-'), 'x.tar.zst');

    const result = expectDumpOk(await dump(target.pid, bundle, ['--leave', 'killed', '--core', 'gcore']));

    expect(result).toMatchObject({ originalState: 'running', finalState: 'killed' });
    await waitFor(() => target.childExit, { what: 'the target to be reaped' });
    expect(target.childExit).toEqual({ code: null, signal: 'SIGKILL' });
    expect(target.isAlive()).toBe(false);
    // The bundle is whole and was complete before the target died: gdb needed the live tree after criu.
    const manifest = await readBundleManifest(bundle);
    expect(manifest.finalState).toBe('killed');
    expect(manifest.steps.find((s) => s.name === 'final-state')?.note).toMatch(/to be killed after sealing/);
    expect(diedAt).toBeGreaterThanOrEqual(Math.floor(statSync(bundle).mtimeMs));
    const extracted = await extractBundle(bundle);
    for (const artifact of manifest.artifacts) expect(sha256OfFile(join(extracted, artifact.path)), artifact.path).toBe(artifact.sha256);
  });

  it('--compression gzip and none produce readable bundles', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const dir = makeTempDir('snap-test-out-');
    for (const [compression, name] of [['gzip', 'x.tar.gz'], ['none', 'x.tar']] as const) {
      const bundle = join(dir, name);
      const result = expectDumpOk(await dump(target.pid, bundle, ['--compression', compression]));
      expect(result.finalState).toBe('running');
      const head = readHead(bundle);
      if (compression === 'gzip') expect(head.subarray(0, 2).toString('hex')).toBe('1f8b');
      else expect(head.subarray(257, 262).toString('latin1')).toBe('ustar');
      expect((await listBundle(bundle))[0]).toBe('manifest.json');
      const extracted = await extractBundle(bundle);
      const manifest = readExtractedManifest(extracted);
      expect(schemaProblems(manifest)).toEqual([]);
      for (const artifact of manifest.artifacts) expect(sha256OfFile(join(extracted, artifact.path)), artifact.path).toBe(artifact.sha256);
      expectNoThreadStopped(target);
      await target.waitUntilTicksAdvance(3);
    }
    expect(readdirSync(dir).sort()).toEqual(['x.tar', 'x.tar.gz']);
  });

  it('without the zstd program a bundle is written and read all the same (Node decodes it frame by frame)', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const dir = makeTempDir('snap-test-out-');
    const withProgram = join(dir, 'program.tar.zst');
    const withoutProgram = join(dir, 'node.tar.zst');
    expectDumpOk(await dump(target.pid, withProgram));
    expectDumpOk(await dump(target.pid, withoutProgram, [], { PROCSNAP_ZSTD: 'none' }));
    for (const bundle of [withProgram, withoutProgram]) {
      expect(readHead(bundle).subarray(0, 4).toString('hex'), bundle).toBe('28b52ffd');
      for (const env of [{}, { PROCSNAP_ZSTD: 'none' }]) {
        const verify = await runSnap(['verify', bundle], { env });
        expect(verify.exitCode, `${bundle} ${JSON.stringify(env)}: ${verify.stderr}`).toBe(0);
        const inspect = await runSnap(['inspect', bundle, '--json'], { env });
        expect(inspect.exitCode, inspect.stderr).toBe(0);
      }
    }
    const core = join(dir, 'core');
    const exported = await runSnap(['core', withProgram, '-o', core], { env: { PROCSNAP_ZSTD: 'none' } });
    expect(exported.exitCode, exported.stderr).toBe(0);
    expect(readHead(core).subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    expectNoThreadStopped(target);
  });

  it('the bundle is mode 0600 and no work directory or partial file is left beside it', async () => {
    const target = await startTarget({ threads: 4, group: 'setsid' });
    const dir = makeTempDir('snap-test-out-');
    const bundle = join(dir, 'x.tar.zst');

    expectDumpOk(await dump(target.pid, bundle));

    expect(statSync(bundle).mode & 0o7777).toBe(0o600);
    expect(readdirSync(dir)).toEqual(['x.tar.zst']);
    expectNoThreadStopped(target);
    await target.waitUntilTicksAdvance(3);
  });
});
