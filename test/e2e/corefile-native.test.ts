// The core written straight from a stopped process (/proc/PID/smaps, pagemap and mem, and each thread's registers
// through PTRACE_GETREGSET) against gcore's of the same stop: a real 4-thread worker, stopped once with SIGSTOP, is
// captured by gcore and by writeCoreOfStoppedProcess; gdb must show the same threads, registers, backtraces and
// globals in both, every byte gcore wrote of the worker's memory must be the same in ours (or be a page gcore wrote
// as zeros from a file or an untouched mapping), and the worker must still be stopped, as it was found.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { residentRuns, writeCoreOfStoppedProcess, type NativeCoreResult } from '../../src/corefile/native.js';
import { scanResidentRuns } from '../../src/corefile/page-scan.js';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { compareMemory, fileBackedRanges, readLoads } from '../helpers/core-compare.js';
import { fixtureBin, requireFixtureBin } from '../helpers/paths.js';
import { HAS_AVX512, kValue, VECTOR_REGS_GDB_SCRIPT, zmmValue } from '../helpers/vector-regs.js';
import { run } from '../helpers/run.js';
import { cleanupAllTargets, killPid, readProcFile, startTarget, waitFor, type Target } from '../helpers/target.js';

const WORKER = fixtureBin('worker');

afterAll(async () => {
  await cleanupAllTargets();
  removeTempDirs();
});

interface GdbView {
  lwps: number[];
  snapTicks: string;
  counters: string;
  backtraces: Map<number, string[]>;
  registers: Map<number, Map<string, string>>;
  text: string;
}

/** What gdb shows of a core: its threads, each thread's registers (general and vector) and frames, two globals. */
async function gdbView(core: string, exe = WORKER): Promise<GdbView> {
  const section = (name: string): string[] => ['-ex', `echo @@${name}\\n`];
  const result = await run('gdb', [
    '--batch', '-nx', '-iex', 'set debuginfod enabled off', '-ex', 'set pagination off', '-ex', 'set width 0',
    ...section('threads'), '-ex', 'info threads',
    ...section('ticks'), '-ex', 'print snap_ticks',
    ...section('counters'), '-ex', 'print snap_worker_counters[0]@3',
    ...section('bt'), '-ex', 'thread apply all bt',
    ...section('regs'), '-ex', 'thread apply all -- info registers',
    '-ex', 'thread apply all -- info registers ymm0 ymm1 xmm2 st0 mxcsr fctrl fstat',
    ...section('end'),
    exe, core,
  ]);
  const sections = new Map<string, string[]>();
  let current = 'head';
  for (const line of result.stdout.split('\n')) {
    const marker = /^@@(\w+)$/.exec(line);
    if (marker) current = marker[1]!;
    else sections.set(current, [...(sections.get(current) ?? []), line]);
  }
  const byThread = (name: string): Map<number, string[]> => {
    const blocks = new Map<number, string[]>();
    let lwp: number | undefined;
    for (const line of sections.get(name) ?? []) {
      const header = /^Thread \d+ .*\bLWP (\d+)\)*:$/.exec(line);
      if (header) {
        lwp = Number(header[1]);
        if (!blocks.has(lwp)) blocks.set(lwp, []);
      } else if (lwp !== undefined && line.trim()) blocks.get(lwp)!.push(line);
    }
    return blocks;
  };
  const valueOf = (name: string): string => /^\$\d+ = (.*)$/.exec((sections.get(name) ?? []).find((l) => l.startsWith('$')) ?? '')?.[1] ?? '';
  return {
    lwps: (sections.get('threads') ?? []).flatMap((line) => {
      const m = /^\*?\s+\d+\s+.*\bLWP (\d+)\)?/.exec(line);
      return m ? [Number(m[1])] : [];
    }),
    snapTicks: valueOf('ticks'),
    counters: valueOf('counters'),
    backtraces: byThread('bt'),
    registers: new Map([...byThread('regs')].map(([lwp, lines]) => [lwp, new Map(lines.flatMap((l) => {
      const m = /^(\w+)\s+(\S.*)$/.exec(l);
      return m ? [[m[1]!, m[2]!] as const] : [];
    }))])),
    text: `${result.stdout}\n${result.stderr}`,
  };
}

/** Each range gcore wrote that ours leaves out lies in a file mapping, is the vsyscall page, or is zeros in gcore's core
 *  (an untouched page gdb read as zeros). */
function expectLeftOutIsFileOrZeros(gcoreFile: string, notInOurs: [number, number][], maps: string): void {
  const files = fileBackedRanges(maps);
  const vsyscall = 0xffffffffff600000;
  const gcoreLoads = readLoads(gcoreFile);
  const fd = openSync(gcoreFile, 'r');
  try {
    for (const [from, to] of notInOurs) {
      if (from === vsyscall || files.some(([start, end]) => start <= from && to <= end)) continue;
      const load = gcoreLoads.find((l) => l.vaddr <= from && to <= l.vaddr + l.filesz)!;
      const bytes = Buffer.alloc(to - from);
      readSync(fd, bytes, 0, bytes.length, load.offset + (from - load.vaddr));
      expect(bytes.every((x) => x === 0), `0x${from.toString(16)}-0x${to.toString(16)}: not a file mapping, not zeros in gcore's core`).toBe(true);
    }
  } finally {
    closeSync(fd);
  }
}

/** gdb 13 reads no AVX-512 state on a CPU whose XSAVE layout is not Intel's (it shows k0-k7 as 0 there, live or in
 *  its gcore), while ours carries the kernel's: those registers are not compared with gcore's. */
const NOT_COMPARED = /^k[0-7]$/;

describe('a core written from a stopped process, against gcore of the same stop', () => {
  let target: Target;
  let dir: string;
  let gcoreFile: string;
  let ourFile: string;
  let result: NativeCoreResult;
  let ours: GdbView;
  let theirs: GdbView;
  let mapsAtStop: string;
  let tidsAtStop: number[];
  let scanned: [number, number][][] | undefined;
  let read: [number, number][][];

  beforeAll(async () => {
    target = await startTarget({ threads: 4, mib: 64, group: 'setsid' });
    dir = makeTempDir('snap-native-core-');
    await waitFor(() => target.readProgress().counters.every((c) => c > 0), { what: 'every worker thread to count' });
    await target.pauseWith('SIGSTOP');
    mapsAtStop = readFileSync(`/proc/${target.pid}/maps`, 'utf8');
    tidsAtStop = readdirSync(`/proc/${target.pid}/task`).map(Number);
    const ticks = target.readProgress().ticks;
    const gcore = await run('gcore', ['-o', join(dir, 'gcore'), String(target.pid)], 600_000);
    gcoreFile = join(dir, `gcore.${target.pid}`);
    expect(existsSync(gcoreFile), gcore.stderr).toBe(true);
    // Both ways of finding the resident pages, at the same stop, over every writable anonymous mapping.
    const anonymous = mapsAtStop.split('\n').flatMap((line) => {
      const m = /^([0-9a-f]+)-([0-9a-f]+) rw.p \S+ \S+ 0\s*(\[heap\]|\[stack\])?$/.exec(line);
      return m ? [[parseInt(m[1]!, 16), parseInt(m[2]!, 16)] as [number, number]] : [];
    });
    scanned = await scanResidentRuns(target.pid, anonymous);
    const pagemap = openSync(`/proc/${target.pid}/pagemap`, 'r');
    read = anonymous.map(([from, to]) => residentRuns(pagemap, from, to));
    closeSync(pagemap);
    ourFile = join(dir, 'native.core');
    result = await writeCoreOfStoppedProcess({ pid: target.pid, output: ourFile });
    expect(target.threadStates()).toEqual(['T', 'T', 'T', 'T']);
    expect(target.readProgress().ticks, 'nothing ran between gcore and the native core').toBe(ticks);
    [ours, theirs] = await Promise.all([gdbView(ourFile), gdbView(gcoreFile)]);
  }, 120_000);

  it('leaves the process stopped, as it was found, and writes every thread', async () => {
    expect(result.threads).toBe(4);
    expect(target.threadStates()).toEqual(['T', 'T', 'T', 'T']);
    expect(readFileSync(ourFile).subarray(0, 4).toString('latin1')).toBe('\x7fELF');
    await target.resume();
    await target.waitUntilTicksAdvance(2);
  });

  it('finds the same present and swapped pages with PAGEMAP_SCAN as by reading pagemap', () => {
    expect(scanned, 'PAGEMAP_SCAN on this kernel').toBeDefined();
    expect(read.flat().length).toBeGreaterThan(0);
    expect(scanned).toEqual(read);
  });

  it('opens in gdb with every thread, the main thread first, and the globals gcore shows', () => {
    expect(ours.lwps[0]).toBe(target.pid);
    expect([...ours.lwps].sort()).toEqual(tidsAtStop.sort());
    expect([...ours.lwps].sort()).toEqual([...theirs.lwps].sort());
    expect(ours.text).not.toMatch(/corrupt|too small|Cannot access memory/);
    expect(ours.snapTicks).not.toBe('');
    expect(ours.snapTicks).toBe(theirs.snapTicks);
    expect(ours.counters).toBe(theirs.counters);
  });

  it('shows every thread\'s registers (general, x87, SSE, AVX) and frames as gcore\'s core does', () => {
    expect(ours.registers.size).toBe(4);
    for (const [lwp, regs] of theirs.registers) {
      const mine = ours.registers.get(lwp);
      expect(mine, `LWP ${lwp}`).toBeDefined();
      const compared = [...regs].filter(([name]) => !NOT_COMPARED.test(name));
      expect(compared.length, `LWP ${lwp}`).toBeGreaterThan(25);
      for (const [name, value] of compared) expect(mine!.get(name), `LWP ${lwp} ${name}`).toBe(value);
      for (const name of ['rip', 'rsp', 'eflags', 'ymm1', 'xmm2', 'st0', 'mxcsr']) expect(mine!.has(name), `LWP ${lwp} ${name}`).toBe(true);
      expect(ours.backtraces.get(lwp), `LWP ${lwp}`).toEqual(theirs.backtraces.get(lwp));
    }
  });

  it('holds every byte of memory gcore wrote, but pages gcore wrote as zeros from a file or an untouched mapping', () => {
    const { compared, differing, notInOurs } = compareMemory(gcoreFile, ourFile);
    expect(differing.map((a) => `0x${a.toString(16)}`)).toEqual([]);
    expect(compared).toBeGreaterThan(64 << 20);
    expectLeftOutIsFileOrZeros(gcoreFile, notInOurs, mapsAtStop);
  });
});

/** A gdb that reads AVX-512 state on any CPU (14 and later); the one setup installs. */
const GDB16 = '/opt/procsnap/bin/gdb';

describe.skipIf(!HAS_AVX512 || !existsSync(GDB16))('AVX-512 registers in a core written from a stopped process', () => {
  it('gdb shows every thread with the k0-k7 and zmm0-zmm31 it loaded, as the kernel keeps them', async () => {
    const out = makeTempDir('snap-native-xstate-');
    const ready = join(out, 'ready');
    const child = spawn(requireFixtureBin('vector-regs'), ['3', ready], { detached: true, stdio: 'ignore' });
    try {
      const threads = await waitFor(() => {
        const files = readdirSync(out).filter((f) => /^ready\.\d+$/.test(f));
        if (files.length !== 1) return undefined;
        const all = readFileSync(join(out, files[0]!), 'utf8').trim().split('\n').map((l) => l.split(' ').map(Number));
        // Every thread in its pause(2) loop, past its last instruction that could touch a vector register.
        const parked = all.every(([pid, tid]) => readProcFile(`/proc/${pid}/task/${tid}/syscall`)?.startsWith('34 '));
        return parked ? all.map(([, tid, index]) => ({ tid: tid!, index: index! })) : undefined;
      }, { what: 'every thread of vector-regs to load its registers', timeoutMs: 10_000 });
      process.kill(child.pid!, 'SIGSTOP');
      await waitFor(() => readdirSync(`/proc/${child.pid}/task`).every((t) => readProcFile(`/proc/${child.pid}/task/${t}/stat`)?.split(') ')[1]?.startsWith('T')), { what: 'vector-regs to stop' });
      const core = join(out, 'native.core');
      const result = await writeCoreOfStoppedProcess({ pid: child.pid!, output: core });
      expect(result.threads).toBe(3);
      const script = join(out, 'regs.py');
      writeFileSync(script, VECTOR_REGS_GDB_SCRIPT);
      const r = await run(GDB16, ['--batch', '-nx', '-iex', 'set debuginfod enabled off', '-x', script, requireFixtureBin('vector-regs'), core]);
      const json = /^@@JSON (.*)$/m.exec(r.stdout)?.[1];
      expect(json, r.stderr).toBeDefined();
      const seen = JSON.parse(json!) as Record<string, Record<string, string | string[]>>;
      expect(Object.keys(seen).map(Number).sort()).toEqual(threads.map((t) => t.tid).sort());
      for (const { tid, index } of threads) {
        const regs = seen[String(tid)]!;
        for (let k = 0; k < 8; k++) expect(BigInt(regs[`k${k}`] as string), `thread ${tid} k${k}`).toBe(kValue(index, k));
        for (let z = 0; z < 32; z++)
          expect((regs[`zmm${z}`] as string[]).map(BigInt), `thread ${tid} zmm${z}`).toEqual([...Array(8).keys()].map((q) => zmmValue(index, z, q)));
      }
    } finally {
      await killPid(child.pid!);
    }
  });
});

describe('a python3 with threads, against gcore of the same stop', () => {
  it('opens in gdb with every thread, each with gcore\'s registers and frames', async () => {
    const dir = makeTempDir('snap-native-python-');
    const ready = join(dir, 'ready');
    const script = [
      'import sys, threading, time',
      'def spin(n):',
      '    while True: time.sleep(0.01 * n)',
      'for n in range(1, 4): threading.Thread(target=spin, args=(n,), daemon=True).start()',
      'open(sys.argv[1], "w").write("ready")',
      'while True: time.sleep(0.05)',
    ].join('\n');
    const child = spawn('/usr/bin/python3', ['-c', script, ready], { detached: true, stdio: 'ignore' });
    const pid = child.pid!;
    try {
      await waitFor(() => existsSync(ready) && readdirSync(`/proc/${pid}/task`).length === 4, { what: 'the python and its 3 threads' });
      const exe = readlinkSync(`/proc/${pid}/exe`);
      process.kill(pid, 'SIGSTOP');
      const stopped = () => readdirSync(`/proc/${pid}/task`).every((t) => readProcFile(`/proc/${pid}/task/${t}/stat`)?.split(') ')[1]?.startsWith('T'));
      await waitFor(stopped, { what: 'the python to stop' });
      const gcore = await run('gcore', ['-o', join(dir, 'gcore'), String(pid)], 600_000);
      expect(existsSync(join(dir, `gcore.${pid}`)), gcore.stderr).toBe(true);
      const result = await writeCoreOfStoppedProcess({ pid, output: join(dir, 'native.core') });
      expect(result.threads).toBe(4);
      expect(stopped()).toBe(true);
      const [ours, theirs] = await Promise.all([gdbView(join(dir, 'native.core'), exe), gdbView(join(dir, `gcore.${pid}`), exe)]);
      expect(ours.lwps[0]).toBe(pid);
      expect([...ours.lwps].sort()).toEqual([...theirs.lwps].sort());
      expect(ours.lwps).toHaveLength(4);
      for (const [lwp, regs] of theirs.registers) {
        const compared = [...regs].filter(([name]) => !NOT_COMPARED.test(name));
        expect(compared.length, `LWP ${lwp}`).toBeGreaterThan(25);
        for (const [name, value] of compared) expect(ours.registers.get(lwp)?.get(name), `LWP ${lwp} ${name}`).toBe(value);
        expect(ours.backtraces.get(lwp)!.length, `LWP ${lwp}`).toBeGreaterThan(0);
        expect(ours.backtraces.get(lwp), `LWP ${lwp}`).toEqual(theirs.backtraces.get(lwp));
      }
    } finally {
      await killPid(pid);
    }
  });
});

describe('a tree of 3 processes, stopped once, against gcore of the same stop', () => {
  it('each process\'s core opens in gdb with its threads, gcore\'s registers, and every byte of memory gcore wrote', async () => {
    const dir = makeTempDir('snap-native-tree-');
    // A python3 that forks two children; each of the three fills 4 MiB of its own with random bytes (so no process's
    // memory can stand in for another's) and runs a second thread.
    const script = [
      'import os, sys, threading, time',
      'def spin(n):',
      '    while True: time.sleep(0.01 * n)',
      'def live():',
      '    data = bytearray(os.urandom(1 << 20)) * 4',
      '    threading.Thread(target=spin, args=(2,), daemon=True).start()',
      '    open(os.path.join(sys.argv[1], "ready.%d" % os.getpid()), "w").write("ready")',
      '    while True: time.sleep(0.05)',
      'for n in range(2):',
      '    if os.fork() == 0: live()',
      'live()',
    ].join('\n');
    const child = spawn('/usr/bin/python3', ['-c', script, dir], { detached: true, stdio: 'ignore' });
    const root = child.pid!;
    let pids: number[] = [root];
    try {
      pids = await waitFor(() => {
        const ready = readdirSync(dir).filter((f) => /^ready\.\d+$/.test(f)).map((f) => Number(f.slice(6)));
        if (ready.length !== 3 || !ready.every((p) => readdirSync(`/proc/${p}/task`).length === 2)) return undefined;
        return [root, ...ready.filter((p) => p !== root).sort((a, b) => a - b)];
      }, { what: 'the python, its 2 children and a second thread in each' });
      expect(pids.slice(1).map((p) => readProcFile(`/proc/${p}/stat`)?.split(') ')[1]?.split(' ')[1])).toEqual([String(root), String(root)]);
      const exe = readlinkSync(`/proc/${root}/exe`);
      process.kill(-root, 'SIGSTOP'); // the process group: the tree stops once
      const stopped = (pid: number) => readdirSync(`/proc/${pid}/task`).every((t) => readProcFile(`/proc/${pid}/task/${t}/stat`)?.split(') ')[1]?.startsWith('T'));
      await waitFor(() => pids.every(stopped), { what: 'the tree to stop' });
      const atStop = new Map(pids.map((pid) => [pid, { maps: readFileSync(`/proc/${pid}/maps`, 'utf8'), tids: readdirSync(`/proc/${pid}/task`).map(Number) }]));
      for (const pid of pids) {
        const gcore = await run('gcore', ['-o', join(dir, 'gcore'), String(pid)], 600_000);
        expect(existsSync(join(dir, `gcore.${pid}`)), gcore.stderr).toBe(true);
        const result = await writeCoreOfStoppedProcess({ pid, output: join(dir, `native.${pid}`) });
        expect(result.threads).toBe(2);
      }
      expect(pids.every(stopped), 'the tree is still stopped, as it was found').toBe(true);

      for (const pid of pids) {
        const ourFile = join(dir, `native.${pid}`);
        const gcoreFile = join(dir, `gcore.${pid}`);
        const [ours, theirs] = await Promise.all([gdbView(ourFile, exe), gdbView(gcoreFile, exe)]);
        expect(ours.lwps[0], `process ${pid}`).toBe(pid);
        expect([...ours.lwps].sort(), `process ${pid}`).toEqual([...atStop.get(pid)!.tids].sort());
        expect([...ours.lwps].sort(), `process ${pid}`).toEqual([...theirs.lwps].sort());
        expect(ours.text).not.toMatch(/corrupt|too small|Cannot access memory/);
        expect(ours.registers.size, `process ${pid}`).toBe(2);
        for (const [lwp, regs] of theirs.registers) {
          const compared = [...regs].filter(([name]) => !NOT_COMPARED.test(name));
          expect(compared.length, `process ${pid} LWP ${lwp}`).toBeGreaterThan(25);
          for (const [name, value] of compared) expect(ours.registers.get(lwp)?.get(name), `process ${pid} LWP ${lwp} ${name}`).toBe(value);
          expect(ours.backtraces.get(lwp), `process ${pid} LWP ${lwp}`).toEqual(theirs.backtraces.get(lwp));
        }
        const { compared, differing, notInOurs } = compareMemory(gcoreFile, ourFile);
        expect(differing.map((a) => `0x${a.toString(16)}`), `process ${pid}`).toEqual([]);
        expect(compared, `process ${pid}`).toBeGreaterThan(4 << 20);
        expectLeftOutIsFileOrZeros(gcoreFile, notInOurs, atStop.get(pid)!.maps);
      }
    } finally {
      // The root first: its children, once orphaned, are reaped by whoever adopts them when they are killed.
      for (const pid of pids) await killPid(pid);
    }
  });
});
