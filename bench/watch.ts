// The watcher's own CPU at 1 s polling: `snap watch` with --cpu, --rss, --threads and --fds (thresholds no process
// reaches, so it only polls) on a tree of 1 and of 100 sleeping python3 processes the bench starts and stops; the
// watcher's utime + stime from /proc/PID/stat over a measured stretch, as % of one CPU. Alternating sizes per round.

import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { median, until } from './common.ts'

export interface WatchCpuRow {
  processes: number
  rounds: number
  seconds: number
  /** Median over the rounds, % of one CPU. */
  cpuPercent: number
  all: number[]
}

interface Options {
  snapBin: string
  baseDir: string
  rounds: number
  /** Seconds measured per run, after the watch has polled a few times. */
  seconds: number
  sizes: number[]
  log: (s: string) => void
}

// A tree of N: the root forks N - 1 children; every one sleeps.
const TREE = `
import os, sys, time
for _ in range(int(sys.argv[2]) - 1):
    if os.fork() == 0:
        while True: time.sleep(1e6)
open(sys.argv[1], "w").write("ready")
while True: time.sleep(1e6)
`

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))
/** utime + stime of pid, in clock ticks (fields 14 and 15 of its stat). */
function cpuTicks(pid: number): number {
  const t = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const rest = t.slice(t.lastIndexOf(')') + 2).split(' ')
  return Number(rest[11]) + Number(rest[12])
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
  } catch {
    return []
  }
}

async function oneRun(o: Options, processes: number, work: string, ticksPerSecond: number): Promise<number> {
  const ready = join(work, `ready-${processes}-${Math.random().toString(16).slice(2)}`)
  const tree = spawn('/usr/bin/python3', ['-c', TREE, ready, String(processes)], { stdio: 'ignore', detached: true })
  let watcher: ChildProcess | undefined
  try {
    await until(() => existsSync(ready) && childrenOf(tree.pid!).length === processes - 1, `a tree of ${processes}`)
    watcher = spawn(o.snapBin, ['watch', String(tree.pid), '--cpu', '100000', '--rss', '1T', '--threads', '1000000', '--fds', '1000000', '--json', '-q'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    })
    let out = ''
    watcher.stdout!.on('data', (c: Buffer) => (out += c.toString()))
    await until(() => out.includes('"event":"watching"'), 'the watch to start')
    // Its start (loading the CLI) is not part of polling: a few polls first.
    await sleep(3000)
    const t0 = performance.now()
    const before = cpuTicks(watcher.pid!)
    await sleep(o.seconds * 1000)
    const after = cpuTicks(watcher.pid!)
    const wallS = (performance.now() - t0) / 1000
    if (!existsSync(`/proc/${watcher.pid}`) || out.includes('"event":"fired"')) throw new Error(`the watch did not only poll: ${out}`)
    return ((after - before) / ticksPerSecond / wallS) * 100
  } finally {
    if (watcher?.pid) {
      watcher.kill('SIGTERM')
      await new Promise((r) => (watcher!.exitCode !== null ? r(undefined) : watcher!.once('exit', r)))
    }
    // The tree is its own session and process group: all of it at once, by its group id.
    process.kill(-tree.pid!, 'SIGKILL')
  }
}

export async function watchCpuBench(o: Options): Promise<WatchCpuRow[]> {
  if (o.sizes.length === 0) return []
  const ticksPerSecond = 100 // USER_HZ: what /proc/PID/stat counts in on Linux
  const work = mkdtempSync(join(o.baseDir, 'snap-bench-watch-'))
  const runs = new Map<number, number[]>(o.sizes.map((n) => [n, []]))
  try {
    for (let r = 0; r < o.rounds; r++) {
      for (const n of r % 2 ? [...o.sizes].reverse() : o.sizes) {
        const pct = await oneRun(o, n, work, ticksPerSecond)
        runs.get(n)!.push(pct)
        o.log(`watch of ${n} process(es), round ${r + 1}: ${pct.toFixed(2)}% of one CPU over ${o.seconds} s`)
      }
    }
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
  return o.sizes.map((n) => ({ processes: n, rounds: o.rounds, seconds: o.seconds, cpuPercent: median(runs.get(n)!), all: runs.get(n)! }))
}

export function watchCpuTable(rows: WatchCpuRow[]): string[] {
  if (rows.length === 0) return []
  return [
    `| watched tree | watcher CPU at 1 s polling (% of one CPU) | runs |`,
    `| --- | --- | --- |`,
    ...rows.map((r) => `| ${r.processes} process${r.processes === 1 ? '' : 'es'} | ${r.cpuPercent.toFixed(2)}% | ${r.all.map((x) => x.toFixed(2)).join(', ')} (${r.seconds} s each) |`),
    '',
  ]
}
