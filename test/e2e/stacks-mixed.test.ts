// One bundle of a tree that mixes runtimes: a python parent (test/fixtures/python-threads/supervisor.py) waiting on a
// JVM child (test/fixtures/jvm-threads): the stacks give the parent's Python frames and the child's Java threads.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, readBundleManifest, removeTempDirs } from '../helpers/bundle.js';
import { markedLine } from '../helpers/fixture-lines.js';
import { runSnap } from '../helpers/cli.js';
import { repoRoot } from '../helpers/paths.js';
import { killPid, waitFor } from '../helpers/target.js';

const execFileAsync = promisify(execFile);

interface Frame {
  function: string | null;
  file: string | null;
  line: number | null;
}
interface Stacks {
  processes: {
    pid: number;
    runtime?: { name: string };
    runtimeError?: string;
    threads: { tid: number; name?: string | null; runtimeFrames?: Frame[] }[];
  }[];
}

const supervisor = join(repoRoot, 'test', 'fixtures', 'python-threads', 'supervisor.py');
const settler = join(repoRoot, 'test', 'fixtures', 'jvm-threads', 'Settler.java');

let dir: string;
let parent: ChildProcess;
let bundle: string;

beforeAll(async () => {
  dir = makeTempDir('snap-stacks-mixed-');
  await execFileAsync('javac', ['-J-XX:-UsePerfData', '-d', dir, settler], { timeout: 120_000, killSignal: 'SIGKILL' });
  const ready = join(dir, 'ready');
  parent = spawn('/usr/bin/python3', [supervisor, 'java', '-XX:-UsePerfData', '-Xmx64m', '-cp', dir, 'Settler', ready], { detached: true, stdio: 'ignore' });
  await waitFor(() => existsSync(ready), { what: 'the JVM child to start its threads', timeoutMs: 30_000 });
  bundle = join(dir, 'mixed.snap.tar.zst');
  const dump = await runSnap(['dump', String(parent.pid), '-o', bundle], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
  expect(dump.exitCode, dump.stderr).toBe(0);
}, 240_000);
afterAll(async () => {
  // The JVM dies with its group.
  if (parent?.pid) {
    try {
      process.kill(-parent.pid, 'SIGKILL');
    } catch {
      // gone already
    }
    await killPid(parent.pid);
  }
  removeTempDirs();
});

describe('a tree of two runtimes', () => {
  it('the python parent in supervise, the JVM child with settler-1 in awaitSettlement, from one bundle', async () => {
    const manifest = await readBundleManifest(bundle);
    expect(manifest.processes?.map((p) => p.runtime?.name)).toEqual(['python', 'java']);
    const r = await runSnap(['stacks', bundle, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const [py, jvm] = (JSON.parse(r.stdout) as Stacks).processes;
    expect(py!.pid).toBe(parent.pid);
    expect(py!.runtimeError).toBeUndefined();
    const main = py!.threads.find((t) => t.tid === parent.pid)!;
    expect(main.name).toBe('MainThread');
    expect(main.runtimeFrames?.some((f) => f.function === 'supervise' && f.file === supervisor && f.line === markedLine(supervisor, 'supervise'))).toBe(true);
    expect(jvm!.runtime?.name).toBe('java');
    expect(jvm!.runtimeError).toBeUndefined();
    const s = jvm!.threads.find((t) => t.name === 'settler-1');
    expect(s?.runtimeFrames).toContainEqual({ function: 'Settler.awaitSettlement', file: null, line: markedLine(settler, 'awaitSettlement') });
  });
});
