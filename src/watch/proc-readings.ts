// The few /proc readings the triggers need, one small file per process per poll: stat (CPU ticks, threads), status
// (VmRSS) and the fd directory. Quiet: a process that exits between the listing and the read is left out.

import { readdirSync } from 'node:fs'
import { readDescendants } from '../process/tree.js'
import { readProcText, readStat } from '../process/proc.js'

/** The tree's pids, root first (zombies left out). */
export function treePids(root: number): number[] {
  return [root, ...readDescendants(root)]
}

/** utime + stime of a process in clock ticks (fields 14 and 15 of /proc/PID/stat), undefined when gone. */
export function cpuTicks(pid: number): number | undefined {
  let text: string | undefined
  try {
    text = readProcText(`/proc/${pid}/stat`)
  } catch {
    return undefined
  }
  if (text === undefined) return undefined
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ')
  return Number(rest[14 - 3]) + Number(rest[15 - 3])
}

export function threadCount(pid: number): number | undefined {
  return readStat(pid)?.numThreads
}

/** VmRSS in bytes (status says kB), undefined when gone; 0 for a process with no memory of its own. */
export function rssBytes(pid: number): number | undefined {
  let text: string | undefined
  try {
    text = readProcText(`/proc/${pid}/status`)
  } catch {
    return undefined
  }
  if (text === undefined) return undefined
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(text)
  return m ? Number(m[1]) * 1024 : 0
}

export function fdCount(pid: number): number | undefined {
  try {
    return readdirSync(`/proc/${pid}/fd`).length
  } catch {
    return undefined
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
