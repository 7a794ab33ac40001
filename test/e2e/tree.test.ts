// A target is a tree: after `snap dump` of a master, every process of its tree is back in its OWN found state
// (running ones running, a paused child still paused), each has a core, and the manifest lists the tree criu dumped.
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DumpResult } from '../../src/pipelines/dump.js';
import { extractBundle, listBundle, makeTempDir, readBundleManifest, removeTempDirs, schemaProblems } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { killPid, readProcStat, readThreadStates, waitFor } from '../helpers/target.js';

let journalDir: string;
let outDir: string;
const started: ChildProcess[] = [];
beforeAll(() => {
  journalDir = makeTempDir('snap-tree-journal-');
  outDir = makeTempDir('snap-tree-out-');
});
afterEach(async () => {
  for (const child of started.splice(0)) {
    if (child.pid === undefined) continue;
    for (const pid of descendants(child.pid)) process.kill(pid, 'SIGKILL');
    await killPid(child.pid);
  }
});
afterAll(removeTempDirs);

function descendants(pid: number): number[] {
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift()!;
    let text = '';
    try {
      text = readFileSync(`/proc/${p}/task/${p}/children`, 'utf8').trim();
    } catch {
      continue;
    }
    for (const c of text ? text.split(/\s+/).map(Number) : []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

/** A session leader of its own (as a service manager starts one), with its stdio on /dev/null. */
function startRoot(file: string, args: string[]): ChildProcess {
  const child = spawn(file, args, { detached: true, stdio: 'ignore' });
  started.push(child);
  return child;
}

const everyThread = (pid: number, test: (s: string) => boolean) => {
  const states = readThreadStates(pid);
  return states.length > 0 && states.every(test);
};

async function dumpTree(pid: number, extra: string[] = []): Promise<{ result: DumpResult; bundle: string }> {
  const bundle = join(outDir, `tree-${pid}-${Date.now()}.snap.tar.zst`);
  const run = await runSnap(['dump', String(pid), '-o', bundle, '--json', ...extra], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
  expect(run.exitCode, `snap dump failed:\n${run.stderr}`).toBe(0);
  return { result: JSON.parse(run.stdout) as DumpResult, bundle };
}

describe('snap dump of a process tree', () => {
  it("bash -c 'sleep 300 & sleep 301': every process is running after the dump, each has a core, the manifest lists all three", async () => {
    const root = startRoot('/bin/bash', ['-c', 'sleep 300 & sleep 301; wait']);
    const pids = await waitFor(() => {
      const d = descendants(root.pid!);
      return d.length === 2 && d.every((p) => readProcStat(p)?.comm === 'sleep') ? [root.pid!, ...d] : undefined;
    }, { what: 'bash and its two sleeps' });
    const { result, bundle } = await dumpTree(root.pid!);
    for (const pid of pids) {
      expect(everyThread(pid, (s) => s !== 'T' && s !== 't'), `process ${pid} is not stopped: ${readThreadStates(pid).join(',')}`).toBe(true);
    }
    expect(result.processes.map((p) => p.pid).sort()).toEqual([...pids].sort());
    expect(result.processes.every((p) => p.found === 'running' && p.left === 'running')).toBe(true);
    const manifest = await readBundleManifest(bundle);
    expect(schemaProblems(manifest)).toEqual([]);
    expect(manifest.processes?.every((p) => p.source === 'pstree.img')).toBe(true);
    // Each core is kept as a recipe over the images (each page stored once), and `snap core` gives it back.
    const entries = await listBundle(bundle);
    for (const pid of pids) expect(entries).toEqual(expect.arrayContaining([`core-recipe.${pid}.json`, `core-blob.${pid}`]));
    const extracted = await extractBundle(bundle);
    for (const pid of pids) expect(readFileSync(join(extracted, `core.${pid}`)).subarray(0, 4).toString('latin1')).toBe('\x7fELF');
  });

  it('a tree with one child paused by SIGTSTP: that child is still paused after the dump, the others run', async () => {
    // The children are put in process groups of their own inside the parent's session, and the parent stays alive:
    // a group that is not orphaned, so the kernel delivers SIGTSTP instead of discarding it.
    const script = [
      'import os, signal, time',
      'for n in (302, 303):',
      '    if os.fork() == 0:',
      '        os.setpgid(0, 0)',
      "        os.execv('/bin/sleep', ['sleep', str(n)])",
      'while True: time.sleep(1)',
    ].join('\n');
    const root = startRoot('/usr/bin/python3', ['-c', script]);
    const [paused, other] = await waitFor(() => {
      const d = descendants(root.pid!);
      return d.length === 2 && d.every((p) => readProcStat(p)?.comm === 'sleep') ? d : undefined;
    }, { what: 'python and its two sleeps' });
    process.kill(paused!, 'SIGTSTP');
    await waitFor(() => everyThread(paused!, (s) => s === 'T'), { what: 'the SIGTSTP stop' });
    const { result } = await dumpTree(root.pid!);
    expect(everyThread(paused!, (s) => s === 'T'), 'the paused child is still paused').toBe(true);
    for (const pid of [root.pid!, other!]) {
      expect(everyThread(pid, (s) => s !== 'T' && s !== 't'), `process ${pid} runs: ${readThreadStates(pid).join(',')}`).toBe(true);
    }
    const byPid = new Map(result.processes.map((p) => [p.pid, p]));
    expect(byPid.get(paused!)).toMatchObject({ found: 'stopped', left: 'stopped' });
    expect(byPid.get(other!)).toMatchObject({ found: 'running', left: 'running' });
    expect(byPid.get(root.pid!)).toMatchObject({ found: 'running', left: 'running' });
  });

  it('a parent with two children each holding a log file: one that grew blocks the restore, named, unless opened for append (criu keeps no size for those); put back, the whole tree comes back running', async () => {
    const logs = makeTempDir('snap-tree-logs-');
    // Child 1 appends (>>, O_APPEND), as a service's log does; child 2 holds its file open for plain writing (>).
    const child = (n: number, redirect: string) => `sh -c 'echo child${n} > ${logs}/c${n}.log; exec 3${redirect}${logs}/c${n}.log; exec sleep 1000' &`;
    const root = startRoot('/bin/bash', ['-c', `${child(1, '>>')} ${child(2, '<>')} wait`]);
    const pids = await waitFor(() => {
      const d = descendants(root.pid!);
      return d.length === 2 && d.every((p) => readProcStat(p)?.comm === 'sleep') ? [root.pid!, ...d] : undefined;
    }, { what: 'bash and its two children' });
    const { bundle } = await dumpTree(root.pid!);
    for (const pid of [...pids].reverse()) await killPid(pid);
    await waitFor(() => pids.every((p) => readProcStat(p) === undefined), { what: 'the tree to be gone', timeoutMs: 15_000 });
    const before = readFileSync(`${logs}/c2.log`);
    appendFileSync(`${logs}/c1.log`, 'more\n');
    appendFileSync(`${logs}/c2.log`, 'more\n');
    const refused = await runSnap(['restore', bundle, '--allow-unsigned'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(refused.exitCode, refused.stderr).toBe(12);
    expect(refused.stderr).toContain(`${logs}/c2.log that the process had open changed size`);
    writeFileSync(`${logs}/c2.log`, before);
    const restored = await runSnap(['restore', bundle, '--allow-unsigned', '--json'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(restored.exitCode, restored.stderr).toBe(0);
    try {
      for (const pid of pids) expect(everyThread(pid, (s) => s !== 'T' && s !== 't'), `restored ${pid} runs`).toBe(true);
    } finally {
      for (const pid of [...pids].reverse()) await killPid(pid);
    }
  });

  it('--core-only takes a core of every process without a checkpoint, and the tree runs on', async () => {
    const root = startRoot('/bin/bash', ['-c', 'sleep 304 & sleep 305; wait']);
    const pids = await waitFor(() => {
      const d = descendants(root.pid!);
      return d.length === 2 ? [root.pid!, ...d] : undefined;
    }, { what: 'bash and its two sleeps' });
    const { result, bundle } = await dumpTree(root.pid!, ['--core-only']);
    expect(result.mode).toBe('core-only');
    for (const pid of pids) expect(everyThread(pid, (s) => s !== 'T' && s !== 't')).toBe(true);
    const entries = await listBundle(bundle);
    expect(entries.filter((e) => e.startsWith('criu/'))).toEqual([]);
    for (const pid of pids) expect(entries).toContain(`core.${pid}`);
    const restore = await runSnap(['restore', bundle, '--allow-unsigned'], { env: { PROCSNAP_JOURNAL_DIR: journalDir } });
    expect(restore.exitCode, restore.stderr).toBe(12);
    expect(restore.stderr).toMatch(/cores only/);
  });
});
