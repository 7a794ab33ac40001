// The freeze of `snap dump --core-only` (its cores written natively from /proc, the default) against the same with
// --core gcore and against a bare `kill -STOP; criu dump; kill -CONT`, on a 64 MiB worker and on a python with 256 GiB
// reserved (MAP_NORESERVE) and 64 MiB touched; each run on a fresh target, alternating, in the same run. gcore on
// the reservation reads its whole address space: it is run once, under a --timeout, and reported as given up past it.

import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { median, until } from './common.ts'

export interface CoreOnlyRow {
  target: string
  rounds: number
  bareCriuFreezeMs: number
  nativeFreezeMs: number
  nativeTotalMs: number
  gcoreFreezeMs: number | undefined
  gcoreTotalMs: number | undefined
  /** Set when gcore did not finish within its --timeout. */
  gcoreGaveUpAfterS?: number
}

const RESERVED = `
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
addr = libc.mmap(None, 256 << 30, 3, 0x02 | 0x20 | 0x4000, -1, 0)
chunk = os.urandom(1 << 20)
for i in range(64): ctypes.memmove(addr + i * (4 << 30), chunk, 1 << 20)
open(sys.argv[1], "w").write("ready")
while True: time.sleep(1)
`

interface Options {
  snapBin: string
  worker: string
  criu: string
  baseDir: string
  rounds: number
  log: (s: string) => void
}

async function startTarget(kind: 'worker' | 'reserved', o: Options, work: string): Promise<number> {
  const ready = join(work, `ready-${Math.random().toString(16).slice(2)}`)
  const child =
    kind === 'worker'
      ? spawn(o.worker, ['--threads', '4', '--mib', '64', '--progress', ready, '--tick-ms', '1', '--setsid'], { stdio: 'ignore' })
      : spawn('/usr/bin/python3', ['-c', RESERVED, ready], { stdio: 'ignore', detached: true })
  const pid = child.pid!
  await until(() => existsSync(ready) && readFileSync(ready).length > 0 && (kind !== 'worker' || readdirSync(`/proc/${pid}/task`).length === 4), `the ${kind} target`)
  return pid
}

function bareCriuFreezeMs(pid: number, o: Options, work: string): number {
  spawnSync('sync', [], { stdio: 'ignore' })
  const d = mkdtempSync(join(work, 'bare-criu-'))
  const script = `a=$(date +%s%N); kill -STOP ${pid} && ${o.criu} dump -t ${pid} -D ${d} --leave-stopped -o dump.log >/dev/null 2>&1 && kill -CONT ${pid}; s=$?; b=$(date +%s%N); echo $(( (b - a) / 1000 )); exit $s`
  const r = spawnSync('bash', ['-c', script], { encoding: 'utf8' })
  rmSync(d, { recursive: true, force: true })
  if (r.status !== 0) throw new Error(`bare criu dump failed with ${r.status}`)
  return Number(r.stdout.trim()) / 1000
}

async function snapCoreOnly(pid: number, o: Options, work: string, extra: string[]): Promise<{ code: number | null; freezeMs: number; totalMs: number }> {
  spawnSync('sync', [], { stdio: 'ignore' })
  const out = join(work, `core-only-${Date.now()}.tar.zst`)
  const t0 = performance.now()
  const child = spawn(o.snapBin, ['dump', String(pid), '--core-only', '-o', out, '--json', '-q', ...extra], { stdio: ['ignore', 'pipe', 'ignore'] })
  let stdout = ''
  child.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
  const code = await new Promise<number | null>((r) => child.on('close', r))
  const totalMs = performance.now() - t0
  rmSync(out, { force: true })
  const freezeMs = code === 0 ? (JSON.parse(stdout) as { freezeWindowMs: number }).freezeWindowMs : NaN
  return { code, freezeMs, totalMs }
}

export async function coreOnlyBench(o: Options): Promise<CoreOnlyRow[]> {
  const rows: CoreOnlyRow[] = []
  const rounds = Math.max(o.rounds, 3)
  const gcoreTimeoutS = 30
  for (const [kind, target] of [['worker', '64 MiB worker, 4 threads'], ['reserved', '256 GiB reserved, 64 MiB touched']] as const) {
    const work = mkdtempSync(join(o.baseDir, 'snap-bench-core-only-'))
    const bare: number[] = []
    const native: { freezeMs: number; totalMs: number }[] = []
    const gcore: { freezeMs: number; totalMs: number }[] = []
    let gaveUp = false
    try {
      for (let r = 0; r < rounds; r++) {
        for (const which of r % 2 ? (['gcore', 'native', 'bare'] as const) : (['bare', 'native', 'gcore'] as const)) {
          // gcore reads the reservation's whole address space: once, under a deadline.
          if (which === 'gcore' && kind === 'reserved' && (r > 0 || gaveUp)) continue
          const pid = await startTarget(kind, o, work)
          try {
            if (which === 'bare') {
              bare.push(bareCriuFreezeMs(pid, o, work))
              o.log(`${target} round ${r + 1}: bare criu freeze ${Math.round(bare.at(-1)!)} ms`)
              continue
            }
            const extra = which === 'gcore' ? ['--core', 'gcore', ...(kind === 'reserved' ? ['--timeout', String(gcoreTimeoutS)] : [])] : []
            const run = await snapCoreOnly(pid, o, work, extra)
            if (run.code !== 0) {
              if (which === 'gcore' && kind === 'reserved') {
                gaveUp = true
                o.log(`${target} round ${r + 1}: --core gcore gave up at --timeout ${gcoreTimeoutS} (exit ${run.code})`)
                continue
              }
              throw new Error(`snap dump --core-only ${extra.join(' ')} of the ${target} failed with ${run.code}`)
            }
            ;(which === 'gcore' ? gcore : native).push(run)
            o.log(`${target} round ${r + 1}: ${which} freeze ${Math.round(run.freezeMs)} ms, total ${Math.round(run.totalMs)} ms`)
          } finally {
            try {
              process.kill(pid, 'SIGKILL')
            } catch {
              // gone
            }
          }
        }
      }
    } finally {
      rmSync(work, { recursive: true, force: true })
    }
    rows.push({
      target,
      rounds,
      bareCriuFreezeMs: median(bare),
      nativeFreezeMs: median(native.map((x) => x.freezeMs)),
      nativeTotalMs: median(native.map((x) => x.totalMs)),
      gcoreFreezeMs: gcore.length ? median(gcore.map((x) => x.freezeMs)) : undefined,
      gcoreTotalMs: gcore.length ? median(gcore.map((x) => x.totalMs)) : undefined,
      ...(gaveUp ? { gcoreGaveUpAfterS: gcoreTimeoutS } : {}),
    })
  }
  return rows
}

export function coreOnlyTable(rows: CoreOnlyRow[]): string[] {
  if (rows.length === 0) return []
  const f = (ms: number | undefined) => (ms === undefined ? '-' : `${Math.round(ms)} ms`)
  return [
    `| target | freeze: bare criu dump | freeze: --core-only (native) | ratio to bare criu | freeze: --core-only --core gcore | native to gcore | total: native | total: gcore |`,
    `| --- | --- | --- | --- | --- | --- | --- | --- |`,
    ...rows.map((r) => {
      const gcore = r.gcoreGaveUpAfterS !== undefined ? `gave up at --timeout ${r.gcoreGaveUpAfterS} s` : f(r.gcoreFreezeMs)
      const vsGcore = r.gcoreFreezeMs !== undefined ? `${(r.nativeFreezeMs / r.gcoreFreezeMs).toFixed(2)}x` : '-'
      return `| ${r.target} | ${f(r.bareCriuFreezeMs)} | ${f(r.nativeFreezeMs)} | ${(r.nativeFreezeMs / r.bareCriuFreezeMs).toFixed(2)}x | ${gcore} | ${vsGcore} | ${f(r.nativeTotalMs)} | ${f(r.gcoreTotalMs)} |`
    }),
    '',
    `--core-only: snap's own freeze window (the manifest's), each run on a fresh target, medians of ${rows[0]!.rounds} rounds, alternating.`,
    '',
  ]
}
