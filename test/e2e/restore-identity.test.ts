// Before criu runs, what the images would bring back (read from pstree.img, core-PID.img, mm-PID.img and files.img) is
// compared with the manifest: a bundle whose manifest lies about the uid, or that wraps another program's images, is
// refused naming the difference, and nothing of it runs.
import { spawn } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import { makeTempDir, readBundleManifest, removeTempDirs } from '../helpers/bundle.js';
import { repackBundle } from '../helpers/bundles.js';
import { runSnap, type SnapResult } from '../helpers/cli.js';
import { cleanupAllTargets, killPid, processExists, readProcStat, startTarget, waitFor } from '../helpers/target.js';

let dir: string;
let work: string;
let journal: string;
let workerBundle: string;
let workerManifest: Manifest;
let workerPid: number;
let pythonBundle: string;
let pythonPid: number;

function snap(args: string[]): Promise<SnapResult> {
  const extra = args[0] === 'restore' ? ['--work-dir', work, '--allow-unsigned'] : [];
  return runSnap([...args, ...extra], { env: { SNAP_JOURNAL_DIR: journal } });
}

beforeAll(async () => {
  dir = makeTempDir('snap-identity-');
  work = makeTempDir('snap-identity-work-');
  journal = makeTempDir('snap-identity-journal-');
  const worker = await startTarget({ threads: 2, group: 'setsid' });
  workerPid = worker.pid;
  workerBundle = join(dir, 'worker.tar.zst');
  expect((await snap(['dump', String(worker.pid), '-o', workerBundle, '--quiet'])).exitCode).toBe(0);
  workerManifest = await readBundleManifest(workerBundle);
  await worker.kill();
  const python = spawn('/usr/bin/python3', ['-c', 'import time\nwhile True: time.sleep(1)'], { detached: true, stdio: 'ignore' });
  pythonPid = python.pid!;
  await waitFor(() => readProcStat(pythonPid)?.state === 'S', { what: 'python to sleep' });
  pythonBundle = join(dir, 'python.tar.zst');
  expect((await snap(['dump', String(pythonPid), '-o', pythonBundle, '--quiet'])).exitCode).toBe(0);
  await killPid(pythonPid);
  await waitFor(() => !processExists(workerPid) && !processExists(pythonPid), { what: 'both originals to be gone' });
});
afterAll(async () => {
  await cleanupAllTargets();
  removeTempDirs();
});

function expectRefusedBeforeCriu(run: SnapResult, needle: RegExp, pids: number[]): void {
  expect(run.exitCode, run.stderr).toBe(12);
  const line = run.stderr.split('\n').find((l) => l.startsWith('snap: error:')) ?? '';
  expect(line).toMatch(/images do not match its manifest/);
  expect(line).toMatch(needle);
  expect(run.stderr).not.toContain('[start] Restore the tree with criu restore');
  for (const pid of pids) expect(processExists(pid), `nothing runs as pid ${pid}`).toBe(false);
  expect(readdirSync(work)).toEqual([]);
}

describe('restore checks the images against the manifest', () => {
  it('a manifest saying uid 65534 ("ci-bot") over images of a root process: refused, nothing run', async () => {
    const lie = await repackBundle(workerBundle, join(dir, 'uid-lie.tar.zst'), (extracted, manifest) => {
      manifest.target.uid = 65534;
      manifest.target.gid = 65534;
      manifest.custody.user = 'ci-bot';
      writeFileSync(join(extracted, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    });
    expectRefusedBeforeCriu(await snap(['restore', lie]), /uid 0, the manifest says uid 65534/, [workerPid]);
  });

  it("a root python's images under a manifest that claims the worker: refused naming the executable and the tree", async () => {
    const foreign = await repackBundle(pythonBundle, join(dir, 'foreign.tar.zst'), (extracted, manifest) => {
      manifest.target = { ...workerManifest.target };
      manifest.processes = workerManifest.processes;
      writeFileSync(join(extracted, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    });
    const run = await snap(['restore', foreign]);
    expectRefusedBeforeCriu(run, /executable is \/usr\/bin\/python3/, [workerPid, pythonPid]);
    expect(run.stderr).toMatch(new RegExp(`the images hold processes ${pythonPid}, the manifest lists ${workerPid}`));
  });

  it('the honest bundle restores (the check refuses only what differs)', async () => {
    const run = await snap(['restore', workerBundle, '--json']);
    expect(run.exitCode, run.stderr).toBe(0);
    await killPid((JSON.parse(run.stdout) as { pid: number }).pid);
  });
});
