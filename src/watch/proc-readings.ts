// The few /proc readings the triggers need, each file read at most once per poll and shared by every trigger: the
// tree from the children files, /proc/PID/stat (state, CPU ticks, threads), statm (resident pages) and the fd
// directory. Quiet: a process that exits between the listing and the read is left out. At 1 s polling this is the
// watcher's whole cost, so it reads no more than it must (statm, not the much longer status, for the resident size).

import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'

interface StatFields {
  state: string
  /** utime + stime, in clock ticks (fields 14 and 15). */
  ticks: number
  threads: number
}

let pageSize: number | undefined
/** The kernel's page size, once: statm counts in pages (4096 on x86_64, 16 or 64 KiB on some arm64 kernels). */
function pageBytes(): number {
  if (pageSize === undefined) {
    try {
      pageSize = Number(execFileSync('getconf', ['PAGESIZE'], { encoding: 'utf8', timeout: 2000 }).trim()) || 4096
    } catch {
      pageSize = 4096
    }
  }
  return pageSize
}

function readQuietly(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return undefined
  }
}

/** One poll's readings: made fresh each poll, so nothing read is older than the poll. */
export class PollReadings {
  private readonly stats = new Map<number, StatFields | undefined>()

  stat(pid: number): StatFields | undefined {
    if (this.stats.has(pid)) return this.stats.get(pid)
    const text = readQuietly(`/proc/${pid}/stat`)
    let fields: StatFields | undefined
    if (text !== undefined) {
      const rest = text.slice(text.lastIndexOf(')') + 2).split(' ')
      fields = { state: rest[0]!, ticks: Number(rest[14 - 3]) + Number(rest[15 - 3]), threads: Number(rest[20 - 3]) }
    }
    this.stats.set(pid, fields)
    return fields
  }

  /** The tree's pids, root first, breadth first; zombies left out (they have nothing to watch). */
  tree(root: number): number[] {
    const out = [root]
    const seen = new Set(out)
    for (let i = 0; i < out.length; i++) {
      let tids: string[]
      try {
        tids = readdirSync(`/proc/${out[i]}/task`)
      } catch {
        continue
      }
      for (const tid of tids) {
        for (const child of (readQuietly(`/proc/${out[i]}/task/${tid}/children`) ?? '').split(' ')) {
          const pid = Number(child)
          if (!child || !Number.isInteger(pid) || seen.has(pid)) continue
          seen.add(pid)
          const state = this.stat(pid)?.state
          if (state !== undefined && state !== 'Z' && state !== 'X') out.push(pid)
        }
      }
    }
    return out
  }

  cpuTicks(pid: number): number | undefined {
    return this.stat(pid)?.ticks
  }

  threadCount(pid: number): number | undefined {
    return this.stat(pid)?.threads
  }

  /** Resident bytes (statm's second field, in pages). */
  rssBytes(pid: number): number | undefined {
    const text = readQuietly(`/proc/${pid}/statm`)
    if (text === undefined) return undefined
    return Number(text.split(' ')[1]) * pageBytes()
  }

  fdCount(pid: number): number | undefined {
    try {
      return readdirSync(`/proc/${pid}/fd`).length
    } catch {
      return undefined
    }
  }
}

/** The largest reading over the tree (undefined readings left out); null when none could be read. */
export function largest(pids: number[], read: (pid: number) => number | undefined): number | null {
  let best: number | null = null
  for (const pid of pids) {
    const v = read(pid)
    if (v !== undefined && (best === null || v > best)) best = v
  }
  return best
}

export function total(pids: number[], read: (pid: number) => number | undefined): number | null {
  let sum: number | null = null
  for (const pid of pids) {
    const v = read(pid)
    if (v !== undefined) sum = (sum ?? 0) + v
  }
  return sum
}
