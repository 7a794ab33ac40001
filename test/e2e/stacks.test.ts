// `snap stacks BUNDLE`: every thread of every process with its backtrace, function names from the program's debug
// info. Written into the bundle at the dump (stacks.txt, stacks.json); a bundle without them (written before snap
// recorded them) is answered from its cores, unwound now.
import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import { listBundle, makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { repackBundle } from '../helpers/bundles.js';
import { runSnap } from '../helpers/cli.js';
import { cleanupAllTargets, killPid, startTarget, waitFor, type Target } from '../helpers/target.js';

interface Stacks {
  source: string;
  processes: { pid: number; threads: { tid: number; frames: { function: string | null; file: string | null }[] }[] }[];
}

let dir: string;
let bundle: string;
let target: Target;

beforeAll(async () => {
  dir = makeTempDir('snap-stacks-');
  target = await startTarget({ threads: 4, mib: 4, group: 'setsid' });
  bundle = join(dir, 'worker.snap.tar.zst');
  const dump = await runSnap(['dump', String(target.pid), '-o', bundle], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
  expect(dump.exitCode, dump.stderr).toBe(0);
}, 60_000);
afterAll(async () => {
  await cleanupAllTargets();
  removeTempDirs();
});

/** The worker's main thread sleeps in main's loop, each other thread in worker_main's: gdb must name them. */
function expectWorkerStacks(stacks: Stacks, pid: number): void {
  expect(stacks.processes.map((p) => p.pid)).toEqual([pid]);
  const threads = stacks.processes[0]!.threads;
  expect(threads).toHaveLength(4);
  const names = (t: (typeof threads)[number]) => t.frames.map((f) => f.function);
  const main = threads.find((t) => t.tid === pid)!;
  expect(names(main)).toContain('main');
  for (const t of threads.filter((t) => t.tid !== pid)) expect(names(t), `thread ${t.tid}`).toContain('worker_main');
  expect(threads.flatMap((t) => t.frames).some((f) => f.file?.endsWith('worker.c'))).toBe(true);
}

describe('snap stacks', () => {
  it('reads the stacks recorded at the dump: every thread, in the worker\'s own functions', async () => {
    expect(await listBundle(bundle)).toEqual(expect.arrayContaining(['stacks.txt', 'stacks.json']));
    const r = await runSnap(['stacks', bundle, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const stacks = JSON.parse(r.stdout) as Stacks;
    expect(stacks.source).toBe('bundle');
    expectWorkerStacks(stacks, target.pid);
    const text = await runSnap(['stacks', bundle]);
    expect(text.stdout).toMatch(new RegExp(`^process ${target.pid} \\(worker\\), 4 threads`, 'm'));
    expect(text.stdout).toMatch(/#\d+ +0x[0-9a-f]+ in worker_main \(\) at .*worker\.c:\d+/);
  });

  it('unwinds the cores of a bundle that holds no stacks, to the same function names', async () => {
    const older = await repackBundle(bundle, join(dir, 'older.snap.tar.zst'), (x, m: Manifest) => {
      m.artifacts = m.artifacts.filter((a) => a.kind !== 'stacks');
      writeManifest(x, m);
    });
    const r = await runSnap(['stacks', older, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const stacks = JSON.parse(r.stdout) as Stacks;
    expect(stacks.source).toBe('cores');
    expectWorkerStacks(stacks, target.pid);
  });

  it("snap debug -- -batch -ex 'info threads': gdb on the core with the worker's executable lists every thread", async () => {
    const r = await runSnap(['debug', bundle, '--', '-batch', '-ex', 'info threads', '-ex', 'print snap_ticks']);
    expect(r.exitCode, r.stderr).toBe(0);
    const lwps = [...r.stdout.matchAll(/\(LWP (\d+)\)/g)].map((m) => Number(m[1]));
    expect(new Set(lwps).size, r.stdout).toBe(4);
    expect(lwps).toContain(target.pid);
    expect(r.stdout).toMatch(/^\$1 = \d+$/m); // the worker's own symbol: gdb had the executable
    // Only what concerns the capture: no source file this host lacks, no declined auto-load and its advice.
    expect(r.stderr).not.toMatch(/No such file or directory|auto-load|during file-backed mapping note processing/);
  });

  it('a python3 with two threads sleeping: each thread in the interpreter (PyObject_Vectorcall) and in clock_nanosleep, the two started by pthreads', async () => {
    const script = 'import sys, threading, time\ndef nap(): time.sleep(1000)\nfor _ in range(2): threading.Thread(target=nap, daemon=True).start()\nopen(sys.argv[1], "w").write("ready")\ntime.sleep(1000)';
    const ready = join(dir, 'py-ready');
    const py = spawn('/usr/bin/python3', ['-c', script, ready], { detached: true, stdio: 'ignore' });
    try {
      await waitFor(() => existsSync(ready), { what: 'the python threads' });
      const pyBundle = join(dir, 'py.snap.tar.zst');
      const dump = await runSnap(['dump', String(py.pid), '-o', pyBundle], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
      expect(dump.exitCode, dump.stderr).toBe(0);
      const r = await runSnap(['stacks', pyBundle, '--json']);
      expect(r.exitCode, r.stderr).toBe(0);
      const threads = (JSON.parse(r.stdout) as Stacks).processes[0]!.threads;
      expect(threads).toHaveLength(3);
      for (const t of threads) {
        const names = t.frames.map((f) => f.function ?? '');
        expect(names.some((n) => n.includes('clock_nanosleep')), `thread ${t.tid}: ${names.join(' < ')}`).toBe(true);
        expect(names, `thread ${t.tid}`).toContain('PyObject_Vectorcall');
        if (t.tid !== py.pid) expect(names, `thread ${t.tid}`).toContain('start_thread');
      }
    } finally {
      await killPid(py.pid!);
    }
  });

  it('a pid that is not in the bundle: exit 2, naming the ones that are', async () => {
    const r = await runSnap(['stacks', bundle, '--pid', '999999']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain(`its processes are ${target.pid}`);
  });
});

function writeManifest(dir: string, m: Manifest): void {
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify(m, null, 2) + '\n');
}
