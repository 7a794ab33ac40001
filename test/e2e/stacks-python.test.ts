// A Python service's stacks in Python: every thread by its threading name, each frame's function, file and line, read
// from the core by gdb with CPython's gdb extension. Recorded at the dump beside the native frames, and read again
// from the cores of a bundle written without them.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Manifest } from '../../src/bundle/manifest.js';
import { listBundle, makeTempDir, readBundleManifest, removeTempDirs, schemaProblems } from '../helpers/bundle.js';
import { markedLine } from '../helpers/fixture-lines.js';
import { repackBundle } from '../helpers/bundles.js';
import { runSnap, snapEntry } from '../helpers/cli.js';
import { nodeBin, repoRoot } from '../helpers/paths.js';
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
  const line = markedLine(path, fn);
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

/** A copy of `bundle` without its stacks (and runtime records), as a bundle written before snap recorded them. */
async function withoutStacks(bundle: string, name: string): Promise<string> {
  return repackBundle(bundle, join(dir, name), (x, m: Manifest) => {
    m.artifacts = m.artifacts.filter((a) => a.kind !== 'stacks');
    for (const p of m.processes ?? []) delete p.runtime;
    writeFileSync(join(x, 'manifest.json'), JSON.stringify(m, null, 2) + '\n');
  });
}

/** `snap ARGS` in a mount namespace of its own as on another host: no debug info, no gdb extensions, and with
 *  `hidePython` no python3.11 either (an empty file in its place). */
function snapWithoutPython(args: string[], hidePython: boolean): { status: number | null; stdout: string; stderr: string } {
  const empty = join(dir, 'empty');
  writeFileSync(empty, '');
  const script = [
    'mount -t tmpfs -o size=1m tmpfs /usr/lib/debug',
    'mount -t tmpfs -o size=1m tmpfs /usr/share/gdb/auto-load',
    ...(hidePython ? ['mount --bind "$0" /usr/bin/python3.11', 'test ! -s /usr/bin/python3.11'] : []),
    'test ! -e /usr/share/gdb/auto-load/usr/bin/python3.11-gdb.py',
    'exec "$@"',
  ].join(' && ');
  const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script, empty, nodeBin, snapEntry, ...args], {
    encoding: 'utf8',
    timeout: 180_000,
    env: { ...process.env, NO_COLOR: '1' },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
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

  it('--lang python shows the Python frames alone; --lang native the native ones alone; --lang java: no such process, exit 2', async () => {
    const l = expected['ledger-settler']!;
    const only = await runSnap(['stacks', bundle, '--lang', 'python']);
    expect(only.exitCode, only.stderr).toBe(0);
    expect(only.stdout).toContain(`python #0  settle_ledger at ${l.file}:${l.line}`);
    expect(only.stdout).not.toMatch(/#\d+ +0x[0-9a-f]+ in /);
    const native = JSON.parse((await runSnap(['stacks', bundle, '--lang', 'native', '--json'])).stdout) as Stacks;
    expect(native.processes[0]!.threads.every((t) => t.runtimeFrames === undefined && t.frames.length > 0)).toBe(true);
    const java = await runSnap(['stacks', bundle, '--lang', 'java']);
    expect(java.exitCode).toBe(2);
    expect(java.stderr).toContain(`no java process in ${bundle}`);
    expect(java.stderr).toContain(`python (${py.pid})`);
  });

  it('a bundle without stacks: the same Python frames read now from its core, rebuilt from the images', async () => {
    const older = await withoutStacks(bundle, 'older.snap.tar.zst');
    const r = await runSnap(['stacks', older, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const stacks = JSON.parse(r.stdout) as Stacks;
    expect(stacks.source).toBe('cores');
    expectPythonStacks(stacks);
  });

  it('on a host without python3.11, its debug info or its gdb extension: a bundle dumped with --include-binaries gives the same frames; one without (python3.11 there, its debug info not) says what to install', async () => {
    const carried = join(dir, 'carried.snap.tar.zst');
    const dump = await runSnap(['dump', String(py.pid), '-o', carried, '--include-binaries'], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
    expect(dump.exitCode, dump.stderr).toBe(0);
    const entries = await listBundle(carried);
    expect(entries).toContain('binaries/usr/share/gdb/auto-load/usr/bin/python3.11-gdb.py');
    expect(entries.some((e) => /^binaries\/usr\/lib\/debug\/\.build-id\/[0-9a-f]{2}\/[0-9a-f]+\.debug$/.test(e))).toBe(true);

    const r = snapWithoutPython(['stacks', await withoutStacks(carried, 'carried-older.snap.tar.zst'), '--json'], true);
    expect(r.status, r.stderr).toBe(0);
    const stacks = JSON.parse(r.stdout) as Stacks;
    expect(stacks.source).toBe('cores');
    expectPythonStacks(stacks);

    const bare = snapWithoutPython(['stacks', await withoutStacks(bundle, 'bare-older.snap.tar.zst'), '--json'], false);
    expect(bare.status, bare.stderr).toBe(0);
    const p = (JSON.parse(bare.stdout) as Stacks).processes[0]!;
    expect(p.runtime).toMatchObject({ name: 'python', version: '3.11' });
    expect(p.runtimeError).toMatch(/CPython's gdb extension for \/usr\/bin\/python3\.11 is not installed \(Debian: apt-get install python3\.11-dbg\)/);
    expect(p.threads.every((t) => t.runtimeFrames === undefined && t.frames.length > 0)).toBe(true);
    expect(bare.stderr).toMatch(/warning: no python frames for \d+: CPython's gdb extension/);
  });
});
