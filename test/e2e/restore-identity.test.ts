// Before criu runs, what the images would bring back (read from pstree.img, core-PID.img, mm-PID.img and files.img) is
// compared with the manifest: a bundle whose manifest lies about the uid, or that wraps another program's images, is
// refused naming the difference, and nothing of it runs. Every thread is checked, not only the root's main thread:
// criu gives each thread the credentials of its own core image.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import { makeTempDir, readBundleManifest, removeTempDirs } from '../helpers/bundle.js';
import { repackBundle } from '../helpers/bundles.js';
import { image, imageMessages, message, replaceField } from '../helpers/criu-image-writer.js';
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
  return runSnap([...args, ...extra], { env: { PROCSNAP_JOURNAL_DIR: journal } });
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

type Creds = NonNullable<NonNullable<NonNullable<Manifest['processes']>[number]['threadCreds']>[number]['creds']>;

const NOBODY: Creds = {
  uid: 65534, gid: 65534, euid: 65534, egid: 65534, suid: 65534, sgid: 65534, fsuid: 65534, fsgid: 65534, groups: [],
  capInh: '0000000000000000', capPrm: '0000000000000000', capEff: '0000000000000000', capBnd: '000001ffffffffff', capAmb: '0000000000000000',
  secbits: 0, noNewPrivs: 0, seccompMode: 0,
};
const ROOT_ALL_CAPS: Creds = {
  ...NOBODY, uid: 0, gid: 0, euid: 0, egid: 0, suid: 0, sgid: 0, fsuid: 0, fsgid: 0,
  capPrm: '000001fffeffffff', capEff: '000001fffeffffff',
};

/** images/creds.proto, capability sets as u32 words, low first. */
function credsMessage(c: Creds): Buffer {
  const words = (hex: string) => [Number(BigInt(`0x${hex}`) & 0xffffffffn), Number(BigInt(`0x${hex}`) >> 32n)];
  return message('creds_entry', {
    uid: c.uid, gid: c.gid, euid: c.euid, egid: c.egid, suid: c.suid, sgid: c.sgid, fsuid: c.fsuid, fsgid: c.fsgid,
    cap_inh: words(c.capInh), cap_prm: words(c.capPrm), cap_eff: words(c.capEff), cap_bnd: words(c.capBnd), secbits: c.secbits,
    groups: c.groups, no_new_privs: c.noNewPrivs, cap_amb: words(c.capAmb),
  });
}

/** Rewrites core-TID.img's core_entry.thread_core.creds in an extracted bundle, and its artifact record. */
function forgeThreadCreds(extracted: string, manifest: Manifest, tid: number, creds: Creds): void {
  const path = `criu/core-${tid}.img`;
  const { magic, entries } = imageMessages(readFileSync(join(extracted, path)));
  const forged = image(magic, [replaceField(entries[0]!, 'core_entry', 'thread_core', (tc) => replaceField(tc, 'thread_core_entry', 'creds', () => credsMessage(creds))), ...entries.slice(1)]);
  writeFileSync(join(extracted, path), forged);
  const artifact = manifest.artifacts.find((a) => a.path === path)!;
  artifact.size = forged.length;
  artifact.sha256 = createHash('sha256').update(forged).digest('hex');
}

describe('restore checks every thread of the images against the manifest', () => {
  it("the dump records every thread's credentials (manifest v4)", () => {
    expect(workerManifest.schemaVersion).toBeGreaterThanOrEqual(4);
    const root = workerManifest.processes![0]!;
    expect(root.tids.length).toBe(2);
    expect(root.threadCreds?.map((t) => t.tid)).toEqual(root.tids);
    for (const t of root.threadCreds!) expect(t.creds).toMatchObject({ uid: 0, fsuid: 0, seccompMode: 0, capEff: expect.stringMatching(/^[0-9a-f]{16}$/) });
  });

  it('a second thread as uid 0 with every capability under a main thread and a manifest of uid 65534: refused naming the thread', async () => {
    const [main, second] = workerManifest.processes![0]!.tids as [number, number];
    const forged = await repackBundle(workerBundle, join(dir, 'thread-root.tar.zst'), (extracted, manifest) => {
      manifest.target.uid = 65534;
      manifest.target.gid = 65534;
      for (const p of manifest.processes!) p.threadCreds = p.tids.map((tid) => ({ tid, creds: NOBODY }));
      forgeThreadCreds(extracted, manifest, main, NOBODY);
      forgeThreadCreds(extracted, manifest, second, ROOT_ALL_CAPS);
      writeFileSync(join(extracted, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    });
    const run = await snap(['restore', forged]);
    expectRefusedBeforeCriu(run, new RegExp(`process ${workerPid} thread ${second}: uid 0 in the images, 65534 in the manifest`), [workerPid]);
    expect(run.stderr).toMatch(new RegExp(`thread ${second}: [^;]*capEff 000001fffeffffff in the images`));
    expect(run.stderr).toMatch(new RegExp(`thread ${second}: fsuid 0 in the images`));
    expect(run.stderr).not.toMatch(new RegExp(`thread ${main}:`));
  });

  it('an older manifest (v3, no thread records): a thread unlike its main thread is refused', async () => {
    const [main, second] = workerManifest.processes![0]!.tids as [number, number];
    const forged = await repackBundle(workerBundle, join(dir, 'thread-root-v3.tar.zst'), (extracted, manifest) => {
      manifest.schemaVersion = 3;
      manifest.target.uid = 65534;
      manifest.target.gid = 65534;
      for (const p of manifest.processes!) delete p.threadCreds;
      forgeThreadCreds(extracted, manifest, main, NOBODY);
      forgeThreadCreds(extracted, manifest, second, ROOT_ALL_CAPS);
      writeFileSync(join(extracted, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    });
    const run = await snap(['restore', forged]);
    expectRefusedBeforeCriu(run, new RegExp(`process ${workerPid} thread ${second}: uid 0 in the images, 65534 in its main thread`), [workerPid]);
  });
});

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
      // The stacks name python's pid, which a bundle's reading refuses on its own: left out, so the images are judged.
      manifest.artifacts = manifest.artifacts.filter((a) => a.kind !== 'stacks');
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
