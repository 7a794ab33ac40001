// A Python service's stacks in Python: every thread by its threading name, each frame's function, file and line, read
// from the core by gdb with CPython's gdb extension. Recorded at the dump beside the native frames, and read again
// from the cores of a bundle written without them.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import { makeTempDir, readBundleManifest, removeTempDirs, schemaProblems } from '../helpers/bundle.js';
import { repackBundle } from '../helpers/bundles.js';
import { runSnap } from '../helpers/cli.js';
import { repoRoot } from '../helpers/paths.js';
import { killPid, readProcStat, waitFor } from '../helpers/target.js';

interface Frame {
  function: string | null;
  file: string | null;
  line: number | null;
}
interface Stacks {
  source: string;
  processes: {
    pid: number;
    runtime?: { name: string; version: string | null; file: string };
    runtimeError?: string;
    threads: { tid: number; name?: string | null; runtimeFrames?: Frame[]; frames: { function: string | null }[] }[];
  }[];
}

const fixture = join(repoRoot, 'test', 'fixtures', 'python-threads');

/** Where a function of the fixture blocks: its file and the line marked "NAME blocks here". */
function blockingLine(file: string, fn: string): Frame {
  const path = join(fixture, file);
  const line = readFileSync(path, 'utf8').split('\n').findIndex((l) => l.includes(`# ${fn} blocks here`)) + 1;
  expect(line, `${fn}'s marked line in ${file}`).toBeGreaterThan(0);
  return { function: fn, file: path, line };
}

/** Each thread's name, and the innermost Python frame it must be blocked in. */
const expected: Record<string, Frame> = {
  MainThread: blockingLine('main.py', 'serve_forever'),
  'ledger-settler': blockingLine('ledger.py', 'settle_ledger'),
  'outbox-drainer': blockingLine('mailer.py', 'drain_outbox'),
};

let dir: string;
let py: ChildProcess;
let bundle: string;
let dumpStderr: string;

beforeAll(async () => {
  dir = makeTempDir('snap-stacks-python-');
  const ready = join(dir, 'ready');
  py = spawn('/usr/bin/python3', [join(fixture, 'main.py'), ready], { detached: true, stdio: 'ignore' });
  await waitFor(() => existsSync(ready), { what: 'the python fixture to start its threads', timeoutMs: 15_000 });
  bundle = join(dir, 'py.snap.tar.zst');
  const dump = await runSnap(['dump', String(py.pid), '-o', bundle], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
  expect(dump.exitCode, dump.stderr).toBe(0);
  dumpStderr = dump.stderr;
}, 120_000);
afterAll(async () => {
  if (py?.pid) await killPid(py.pid);
  removeTempDirs();
});

function expectPythonStacks(stacks: Stacks): void {
  expect(stacks.processes.map((p) => p.pid)).toEqual([py.pid]);
  const p = stacks.processes[0]!;
  expect(p.runtimeError).toBeUndefined();
  expect(p.runtime).toMatchObject({ name: 'python', version: '3.11' });
  expect(p.threads).toHaveLength(3);
  expect(p.threads.map((t) => t.name).sort()).toEqual(Object.keys(expected).sort());
  for (const t of p.threads) {
    const want = expected[t.name!]!;
    expect(t.runtimeFrames?.[0], `thread ${t.tid} (${t.name})`).toEqual(want);
    // The native frames are still there, under the Python ones.
    expect(t.frames.map((f) => f.function)).toContain('_PyEval_EvalFrameDefault');
  }
  const main = p.threads.find((t) => t.tid === py.pid)!;
  expect(main.name).toBe('MainThread');
  expect(main.runtimeFrames?.[1]).toMatchObject({ function: '<module>', file: join(fixture, 'main.py') });
  // The other threads were started by threading: their outer frames are its bootstrap.
  for (const t of p.threads.filter((t) => t !== main)) expect(t.runtimeFrames!.map((f) => f.function)).toContain('_bootstrap');
}

describe('Python stacks', () => {
  it('the dump records each thread by name, its innermost Python frame its own function, file and line; the python left running', async () => {
    expect(dumpStderr).not.toMatch(/no python frames/);
    expect(readProcStat(py.pid!)?.state).toMatch(/^[SR]$/);
    const manifest = await readBundleManifest(bundle);
    expect(schemaProblems(manifest)).toEqual([]);
    expect(manifest.processes?.[0]?.runtime).toEqual({ name: 'python', version: '3.11', file: '/usr/bin/python3.11' });
    const r = await runSnap(['stacks', bundle, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const stacks = JSON.parse(r.stdout) as Stacks;
    expect(stacks.source).toBe('bundle');
    expectPythonStacks(stacks);
  });

  it('the text shows the thread names and the Python frames before the native ones', async () => {
    const r = await runSnap(['stacks', bundle]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^ {2}runtime python 3\.11 \(\/usr\/bin\/python3\.11\)$/m);
    const l = expected['ledger-settler']!;
    expect(r.stdout).toMatch(new RegExp(`^ {2}thread \\d+ "ledger-settler":\\n {4}python #0 {2}settle_ledger at ${l.file}:${l.line}$`, 'm'));
  });

  it('a bundle without stacks: the same Python frames read now from its core, rebuilt from the images', async () => {
    const older = await repackBundle(bundle, join(dir, 'older.snap.tar.zst'), (x, m: Manifest) => {
      m.artifacts = m.artifacts.filter((a) => a.kind !== 'stacks');
      for (const p of m.processes ?? []) delete p.runtime;
      writeFileSync(join(x, 'manifest.json'), JSON.stringify(m, null, 2) + '\n');
    });
    const r = await runSnap(['stacks', older, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const stacks = JSON.parse(r.stdout) as Stacks;
    expect(stacks.source).toBe('cores');
    expectPythonStacks(stacks);
  });
});
