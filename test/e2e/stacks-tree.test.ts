// A pool of identical workers (a python3 that forks 20 children, each with a second thread, all asleep in the same
// lines): the dump's stacks.txt shows their stacks once, with the count and their pids; stacks.json still has every
// process and every thread, each with its native and Python frames.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { repoRoot } from '../helpers/paths.js';
import { killPid, readThreadStates, waitFor } from '../helpers/target.js';
import { markedLine } from '../helpers/fixture-lines.js';
import { buildIdOf } from '../../src/analysis/runtimes/detect.js';

const WORKERS = 20;

/** The pool of identical workers (test/fixtures/pool.py). */
const POOL = join(repoRoot, 'test', 'fixtures', 'pool.py');

interface Stacks {
  pid: number;
  comm: string;
  threads: { tid: number; name?: string | null; frames: { function: string | null }[]; runtimeFrames?: { function: string | null; file?: string | null; line?: number | null }[] }[];
}

let dir: string;
let bundleBytes: number;
let entryBytes: number;
let pool: ChildProcess;
let kids: number[];
let stacksTxt: string;
let stacksJson: Stacks[];
let stacksNote: string;
let threadsOf: Map<number, number[]>;

/** Runs of consecutive pids as ranges, as people write them. */
function ranges(pids: number[]): string {
  const s = [...pids].sort((a, b) => a - b);
  const out: string[] = [];
  let start = s[0]!;
  for (let i = 1; i <= s.length; i++) {
    if (i < s.length && s[i] === s[i - 1]! + 1) continue;
    out.push(start === s[i - 1] ? `${start}` : `${start}-${s[i - 1]}`);
    start = s[i]!;
  }
  return out.join(', ');
}

beforeAll(async () => {
  dir = makeTempDir('snap-stacks-tree-');
  const ready = join(dir, 'ready');
  pool = spawn('/usr/bin/python3', [POOL, String(WORKERS), ready], { detached: true, stdio: 'ignore' });
  kids = await waitFor(() => existsSync(ready) && readFileSync(ready, 'utf8').trim().split(' ').map(Number), { what: 'the pool to fork', timeoutMs: 30_000 });
  await waitFor(() => kids.every((k) => existsSync(`${ready}.${k}`)), { what: 'every worker to start its thread', timeoutMs: 30_000 });
  threadsOf = new Map([pool.pid!, ...kids].map((p) => [p, readdirSync(`/proc/${p}/task`).map(Number).sort((a, b) => a - b)]));
  const bundle = join(dir, 'pool.snap.tar.zst');
  const dump = await runSnap(['dump', String(pool.pid), '-o', bundle], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal'), PROCSNAP_CACHE_DIR: join(dir, 'cache') } });
  expect(dump.exitCode, dump.stderr).toBe(0);
  const out = join(dir, 'out');
  execFileSync('mkdir', [out]);
  execFileSync('tar', ['--zstd', '-xf', bundle, '-C', out, 'stacks.txt', 'stacks.json', 'manifest.json']);
  bundleBytes = statSync(bundle).size;
  entryBytes = execFileSync('tar', ['--zstd', '-tvf', bundle], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
    .reduce((n, l) => n + Number(l.split(/\s+/)[2]), 0);
  stacksNote = (JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')) as { steps: { name: string; note?: string }[] }).steps.find((s) => s.name === 'stacks')?.note ?? '';
  stacksTxt = readFileSync(join(out, 'stacks.txt'), 'utf8');
  stacksJson = JSON.parse(readFileSync(join(out, 'stacks.json'), 'utf8')) as Stacks[];
}, 240_000);

afterAll(async () => {
  for (const k of kids ?? []) await killPid(k);
  if (pool?.pid) await killPid(pool.pid);
  removeTempDirs();
});

describe('stacks of a pool of identical workers', () => {
  it('stacks.txt shows the 20 workers once, with their count and pids, and the parent on its own', () => {
    expect(stacksTxt).toContain(`${WORKERS} processes: ${ranges(kids)} (python3), 2 threads each`);
    expect(stacksTxt).toMatch(new RegExp(`^process ${pool.pid} \\(python3\\), 1 thread`, 'm'));
    // Once: the workers' Python frame and their thread's appear in one block, not twenty.
    expect(stacksTxt.match(/python #0 {2}work at /g)).toHaveLength(1);
    expect(stacksTxt.match(/python #0 {2}nap at /g)).toHaveLength(1);
    expect(stacksTxt).toContain('thread 2 of each "napper":');
  });

  it('stacks.json has every process and every thread, each with its own frames', () => {
    expect(stacksJson.map((p) => p.pid).sort((a, b) => a - b)).toEqual([pool.pid!, ...kids].sort((a, b) => a - b));
    for (const p of stacksJson) {
      expect(p.threads.map((t) => t.tid).sort((a, b) => a - b), `threads of ${p.pid}`).toEqual(threadsOf.get(p.pid));
      for (const t of p.threads) {
        expect(t.frames.some((f) => f.function?.includes('clock_nanosleep') || f.function?.includes('wait4')), `${p.pid}/${t.tid}`).toBe(true);
        expect(t.runtimeFrames?.length, `python frames of ${p.pid}/${t.tid}`).toBeGreaterThan(0);
      }
      if (p.pid === pool.pid) continue;
      const byName = new Map(p.threads.map((t) => [t.name, t.runtimeFrames?.[0]?.function]));
      expect(byName.get('MainThread'), `${p.pid}`).toBe('work');
      expect(byName.get('napper'), `${p.pid}`).toBe('nap');
    }
  });

  it("every worker's Python frames are those of the first, each at its file's line: the innermost where it sleeps", () => {
    // Most workers' frames are read from the interpreter's structs in one piece (python.ts), the first ones through
    // CPython's gdb extension: a line or a name read wrong either way shows here.
    const workers = stacksJson.filter((p) => p.pid !== pool.pid);
    const framesOf = (p: Stacks, name: string) => p.threads.find((t) => t.name === name)?.runtimeFrames;
    const structs = Number(/; (\d+) with their Python frames read from the interpreter's structs/.exec(stacksNote)?.[1] ?? 0);
    expect(structs, stacksNote).toBeGreaterThanOrEqual(WORKERS / 2);
    for (const [name, fn] of [['MainThread', 'work'], ['napper', 'nap']] as const) {
      const first = framesOf(workers[0]!, name);
      expect(first?.[0], name).toEqual({ function: fn, file: POOL, line: markedLine(POOL, fn) });
      for (const p of workers) expect(framesOf(p, name), `${p.pid} ${name}`).toEqual(first);
    }
  });

  it("most workers' cores are read with their libraries' symbols shared (one layout), and give the frames above", () => {
    // gdb reads the libraries once for cores that map the same files at the same addresses (stacks-batch.ts); the
    // frames asserted above are what it found that way.
    const shared = Number(/; (\d+) read with their libraries' symbols shared/.exec(stacksNote)?.[1] ?? 0);
    expect(shared, stacksNote).toBeGreaterThanOrEqual(WORKERS / 2);
  });

  it("the bundle holds the workers' repeated pages once: a tenth of its entries' bytes, compressed", () => {
    // Their images and cores repeat each other a process apart, beyond zstd's usual window (compression.ts).
    expect(bundleBytes, `${bundleBytes} bytes for ${entryBytes} of entries`).toBeLessThan(entryBytes / 10);
  });

  it("gdb's index of python3's debug info is kept for the next run, by its build id, in snap's cache directory", () => {
    // /usr/bin/python3 and what it maps are root's: the index gdb made of them is kept (gdb-index-cache.ts).
    const python = realpathSync('/usr/bin/python3');
    const buildId = buildIdOf(python);
    expect(buildId, `${python}'s build id`).toBeTruthy();
    expect(readdirSync(join(dir, 'cache', 'gdb-index'))).toContain(`${buildId}.gdb-index`);
  });

  it('every process of the pool is running after the dump', () => {
    for (const p of [pool.pid!, ...kids]) expect(readThreadStates(p).every((s) => s === 'S' || s === 'R'), `${p}: ${readThreadStates(p).join(',')}`).toBe(true);
  });
});
