// The AVX-512 state in a core built from CRIU's images: every thread of every process of a 3-process tree loaded
// known values into k0-k7 and zmm0-zmm31 (test/fixtures/vector-regs.c), and gdb must show exactly those from the
// core snap built, with the gdb snap installs (>= 14) and with the system's, whichever are here.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractBundle, makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { requireFixtureBin } from '../helpers/paths.js';
import { HAS_AVX512, kValue, VECTOR_REGS_GDB_SCRIPT, zmmValue } from '../helpers/vector-regs.js';
import { killPid, readProcFile, waitFor } from '../helpers/target.js';
import { run } from '../helpers/run.js';

const THREADS = 3;
const CHILDREN = 2;


interface Gdb {
  path: string;
  major: number;
}

async function gdbVersion(path: string): Promise<Gdb | undefined> {
  if (path.startsWith('/') && !existsSync(path)) return undefined;
  const r = await run(path, ['--version']).catch(() => undefined);
  const m = r && /GNU gdb .*?(\d+)\.(\d+)/.exec(r.stdout);
  return m ? { path, major: Number(m[1]) } : undefined;
}

let out: string;
let child: ChildProcess | undefined;
let lines: { pid: number; tid: number; index: number }[] = [];
let cores: Map<number, string>;
let gdbs: Gdb[] = [];

beforeAll(async () => {
  if (!HAS_AVX512) return;
  out = makeTempDir('snap-xstate-');
  const found = await Promise.all(['/opt/procsnap/bin/gdb', 'gdb'].map(gdbVersion));
  gdbs = found.filter((g): g is Gdb => g !== undefined);
  const ready = join(out, 'ready');
  child = spawn(requireFixtureBin('vector-regs'), [String(THREADS), ready, String(CHILDREN)], { detached: true, stdio: 'ignore' });
  lines = await waitFor(() => {
    const files = readdirSync(out).filter((f) => /^ready\.\d+$/.test(f));
    if (files.length !== CHILDREN + 1) return undefined;
    const all = files.flatMap((f) => readFileSync(join(out, f), 'utf8').trim().split('\n').map((l) => l.split(' ').map(Number)));
    // Every thread is in the pause(2) loop, past its last instruction that could touch a vector register.
    const parked = all.every(([pid, tid]) => readProcFile(`/proc/${pid}/task/${tid}/syscall`)?.startsWith('34 '));
    return parked ? all.map(([pid, tid, index]) => ({ pid: pid!, tid: tid!, index: index! })) : undefined;
  }, { what: 'every thread of vector-regs to load its registers', timeoutMs: 10_000 });

  const bundle = join(out, 'xstate.snap.tar.zst');
  const dump = await runSnap(['dump', String(child.pid), '-o', bundle, '--json'], { env: { PROCSNAP_JOURNAL_DIR: join(out, 'journal') } });
  expect(dump.exitCode, `snap dump failed:\n${dump.stderr}`).toBe(0);
  const dir = await extractBundle(bundle);
  cores = new Map(readdirSync(dir).filter((f) => /^core\.\d+$/.test(f)).map((f) => [Number(f.slice(5)), join(dir, f)]));
}, 120_000);

afterAll(async () => {
  if (child?.pid) {
    // The root first: its children (zombies until their parent reaps them) then go to init, which reaps them.
    await killPid(child.pid);
    for (const pid of new Set(lines.map((l) => l.pid))) await killPid(pid, { timeoutMs: 30_000 });
  }
  removeTempDirs();
});

describe.skipIf(!HAS_AVX512)('AVX-512 registers in a core built from the images (the default)', () => {
  it('a gdb >= 14 is here to read them (npm run setup installs one)', () => {
    expect(gdbs.map((g) => g.major).some((m) => m >= 14), `gdbs found: ${JSON.stringify(gdbs)}`).toBe(true);
  });

  it('every process of the tree has a core, and gdb shows every thread with the k0-k7 and zmm0-zmm31 it loaded', async () => {
    const pids = [...new Set(lines.map((l) => l.pid))];
    expect(pids).toHaveLength(CHILDREN + 1);
    expect([...cores.keys()].sort()).toEqual([...pids].sort());
    const script = join(out, 'regs.py');
    writeFileSync(script, VECTOR_REGS_GDB_SCRIPT);
    for (const gdb of gdbs) {
      for (const pid of pids) {
        const r = await run(gdb.path, ['--batch', '-nx', '-iex', 'set debuginfod enabled off', '-x', script, requireFixtureBin('vector-regs'), cores.get(pid)!]);
        const json = /^@@JSON (.*)$/m.exec(r.stdout)?.[1];
        expect(json, `gdb ${gdb.major} on core.${pid}: ${r.stderr}`).toBeDefined();
        const seen = JSON.parse(json!) as Record<string, Record<string, string | string[]>>;
        const threads = lines.filter((l) => l.pid === pid);
        expect(Object.keys(seen).map(Number).sort(), `gdb ${gdb.major}, process ${pid}: the threads`).toEqual(threads.map((t) => t.tid).sort());
        for (const { tid, index } of threads) {
          const regs = seen[String(tid)]!;
          const where = `gdb ${gdb.major}, process ${pid}, thread ${tid}`;
          for (let r = 0; r < 8; r++) expect(BigInt(regs[`k${r}`] as string), `${where} k${r}`).toBe(kValue(index, r));
          for (let r = 0; r < 32; r++) {
            const quads = (regs[`zmm${r}`] as string[]).map(BigInt);
            expect(quads, `${where} zmm${r}`).toEqual([...Array(8).keys()].map((q) => zmmValue(index, r, q)));
          }
        }
      }
    }
  });
});
