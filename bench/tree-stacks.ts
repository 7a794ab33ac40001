// A tree of identical workers (a python3 that forks BENCH_TREE_WORKERS children, 100 by default, each with a second
// thread): snap dump's time to a finished bundle and its stacks stage against a bare `criu dump --leave-running` of
// the same tree, in the same run; the stacks read by one gdb per executable's batch of cores (the default) and, once,
// by one gdb per process (PROCSNAP_BENCH_STACKS_ONE_GDB_PER_PROCESS=1, the way they were read before).

import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { median } from './common.ts'

export interface TreeStacksRow {
  processes: number
  rounds: number
  bareCriuMs: number
  snapTotalMs: number
  snapStacksMs: number
  /** Its cores built from the images, for where the rest of the time goes. */
  snapCoresMs: number
  /** One gdb per process: measured once (it is the slow one), when not skipped. */
  perProcessTotalMs?: number
  perProcessStacksMs?: number
}

// The pool of identical workers the stacks tests dump too.
const POOL = new URL('../test/fixtures/pool.py', import.meta.url).pathname

interface Options {
  snapBin: string
  criu: string
  baseDir: string
  rounds: number
  log: (s: string) => void
}

async function startPool(workers: number, work: string): Promise<{ root: number; kids: number[] }> {
  const ready = join(work, `ready-${Math.random().toString(16).slice(2)}`)
  const child = spawn('/usr/bin/python3', [POOL, String(workers), ready], { detached: true, stdio: 'ignore' })
  child.unref()
  const end = performance.now() + 120_000
  for (;;) {
    if (existsSync(ready)) {
      const kids = readFileSync(ready, 'utf8').trim().split(' ').map(Number)
      if (kids.every((k) => existsSync(`${ready}.${k}`))) return { root: child.pid!, kids }
    }
    if (performance.now() > end) throw new Error('timed out waiting for the pool to start')
    await new Promise((r) => setTimeout(r, 20))
  }
}

function snapDump(o: Options, root: number, out: string, env: Record<string, string>): { totalMs: number; stacksMs: number; coresMs: number } {
  const t0 = performance.now()
  const run = spawnSync(o.snapBin, ['dump', String(root), '-o', out, '--json'], { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 64 << 20 })
  const totalMs = performance.now() - t0
  if (run.status !== 0) throw new Error(`snap dump of the tree failed with ${run.status}: ${run.stderr.split('\n').slice(-4).join(' | ')}`)
  const steps = (JSON.parse(run.stdout) as { steps: { name: string; durationMs: number }[] }).steps
  const step = (name: string) => steps.find((s) => s.name === name)?.durationMs ?? NaN
  return { totalMs, stacksMs: step('stacks'), coresMs: step('core') }
}

export async function treeStacksBench(o: Options & { workers: number; perProcess: boolean }): Promise<TreeStacksRow> {
  const work = mkdtempSync(join(o.baseDir, 'snap-bench-tree-'))
  const bare: number[] = []
  const snap: ReturnType<typeof snapDump>[] = []
  let old: ReturnType<typeof snapDump> | undefined
  try {
    for (let r = 0; r < o.rounds; r++) {
      const pool = await startPool(o.workers, work)
      try {
        const img = join(work, `img-${r}`)
        mkdirSync(img)
        spawnSync('sync')
        const t0 = performance.now()
        const criu = spawnSync(o.criu, ['dump', '-t', String(pool.root), '-D', img, '--leave-running', '-o', 'dump.log'], { stdio: 'ignore' })
        bare.push(performance.now() - t0)
        if (criu.status !== 0) throw new Error(`bare criu dump of the tree failed with ${criu.status} (its log: ${img}/dump.log)`)
        rmSync(img, { recursive: true, force: true })
        spawnSync('sync')
        const s = snapDump(o, pool.root, join(work, `tree-${r}.snap.tar.zst`), {})
        snap.push(s)
        rmSync(join(work, `tree-${r}.snap.tar.zst`), { force: true })
        o.log(`tree of ${o.workers + 1} round ${r + 1}: bare criu ${Math.round(bare.at(-1)!)} ms, snap ${Math.round(s.totalMs)} ms (stacks ${Math.round(s.stacksMs)} ms, cores ${Math.round(s.coresMs)} ms)`)
        if (o.perProcess && !old) {
          spawnSync('sync')
          old = snapDump(o, pool.root, join(work, `tree-old-${r}.snap.tar.zst`), { PROCSNAP_BENCH_STACKS_ONE_GDB_PER_PROCESS: '1' })
          rmSync(join(work, `tree-old-${r}.snap.tar.zst`), { force: true })
          o.log(`tree of ${o.workers + 1}: one gdb per process, snap ${Math.round(old.totalMs)} ms (stacks ${Math.round(old.stacksMs)} ms)`)
        }
      } finally {
        for (const pid of [...pool.kids, pool.root]) {
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
  return {
    processes: o.workers + 1,
    rounds: o.rounds,
    bareCriuMs: median(bare),
    snapTotalMs: median(snap.map((s) => s.totalMs)),
    snapStacksMs: median(snap.map((s) => s.stacksMs)),
    snapCoresMs: median(snap.map((s) => s.coresMs)),
    ...(old ? { perProcessTotalMs: old.totalMs, perProcessStacksMs: old.stacksMs } : {}),
  }
}

export function treeStacksTable(row: TreeStacksRow | undefined): string[] {
  if (!row) return []
  const f = (ms: number | undefined) => (ms === undefined ? '-' : `${Math.round(ms)} ms`)
  const x = (ms: number | undefined) => (ms === undefined ? '-' : `${(ms / row.bareCriuMs).toFixed(2)}x`)
  return [
    `| tree | bare criu dump | snap: finished bundle | ratio | snap: stacks | ratio | snap: cores | ratio | one gdb per process: bundle | ratio | one gdb per process: stacks | ratio |`,
    `| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |`,
    `| ${row.processes} python3 processes (${row.processes - 1} identical workers, 2 threads each) | ${f(row.bareCriuMs)} | ${f(row.snapTotalMs)} | ${x(row.snapTotalMs)} | ${f(row.snapStacksMs)} | ${x(row.snapStacksMs)} | ${f(row.snapCoresMs)} | ${x(row.snapCoresMs)} | ${f(row.perProcessTotalMs)} | ${x(row.perProcessTotalMs)} | ${f(row.perProcessStacksMs)} | ${x(row.perProcessStacksMs)} |`,
    '',
    `Tree: ratios to a bare \`criu dump --leave-running\` of the same tree in the same run; medians of ${row.rounds} rounds, one gdb per process measured once.`,
    '',
  ]
}
