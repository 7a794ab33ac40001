// The few /proc readings the triggers need, each file read at most once per poll and shared by every trigger: the
// tree from the children files, /proc/PID/stat (state, CPU ticks, threads), statm (resident pages) and the fd
// directory. Quiet: a process that exits between the listing and the read is left out. At 1 s polling this is the
// watcher's whole cost, so it reads no more than it must (statm, not the much longer status, for the resident size:
// stat's own resident count is the kernel's per-CPU estimate, off by up to a batch of pages per CPU on a large host),
// with as few system calls and as little garbage as it can: each file read into one reused buffer and its numbers
// parsed from the bytes (no string per field), the task directory listed only for a process with more than one
// thread, the descriptors counted by one stat of the fd directory where the kernel says.

import { execFileSync } from 'node:child_process'
import { closeSync, openSync, readdirSync, readSync, statSync } from 'node:fs'

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

/** One buffer for every read of a poll: readFileSync would stat each file (a /proc file's size is 0 anyway) and
 *  allocate for it. Grown when a file (a long children list) fills it. */
let buffer = Buffer.allocUnsafe(4096)

/** Reads a /proc file into the buffer; its length, or -1 when it cannot be read (the process is gone). */
function readBytes(path: string): number {
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch {
    return -1
  }
  try {
    let got = 0
    for (;;) {
      const n = readSync(fd, buffer, got, buffer.length - got, null)
      if (n === 0) return got
      got += n
      if (got === buffer.length) {
        const bigger = Buffer.allocUnsafe(buffer.length * 2)
        buffer.copy(bigger, 0, 0, got)
        buffer = bigger
      }
    }
  } catch {
    return -1
  } finally {
    closeSync(fd)
  }
}

const SPACE = 0x20

/** The unsigned whole number at buffer[at] (digits up to the next non-digit), and where it ends. */
function numberAt(at: number, end: number): [value: number, next: number] {
  let v = 0
  let q = at
  for (; q < end; q++) {
    const c = buffer[q]! - 48
    if (c < 0 || c > 9) break
    v = v * 10 + c
  }
  return [v, q]
}

/** stat's fields 3 (state), 14 + 15 (utime + stime) and 20 (threads), counted from after the LAST ')': comm may
 *  hold spaces and parentheses. */
function parseStat(len: number): StatFields | undefined {
  const close = buffer.lastIndexOf(0x29, len - 1)
  if (close < 0 || close + 2 >= len) return undefined
  const state = String.fromCharCode(buffer[close + 2]!)
  let ticks = 0
  let p = close + 2
  for (let field = 3; p < len; field++) {
    if (field === 14 || field === 15) ticks += numberAt(p, len)[0]
    else if (field === 20) return { state, ticks, threads: numberAt(p, len)[0] }
    const next = buffer.indexOf(SPACE, p)
    if (next < 0 || next >= len) break
    p = next + 1
  }
  return undefined
}

/** One poll's readings: made fresh each poll, so nothing read is older than the poll. */
export class PollReadings {
  private readonly stats = new Map<number, StatFields | undefined>()

  stat(pid: number): StatFields | undefined {
    if (this.stats.has(pid)) return this.stats.get(pid)
    const len = readBytes(`/proc/${pid}/stat`)
    const fields = len < 0 ? undefined : parseStat(len)
    this.stats.set(pid, fields)
    return fields
  }

  /** The tree's pids, root first, breadth first; zombies left out (they have nothing to watch). */
  tree(root: number): number[] {
    const out = [root]
    const seen = new Set(out)
    for (let i = 0; i < out.length; i++) {
      // A child may be the child of any thread: the task directory is listed only when there is more than one.
      let tids: string[]
      if (this.stat(out[i]!)?.threads === 1) tids = [String(out[i])]
      else
        try {
          tids = readdirSync(`/proc/${out[i]}/task`)
        } catch {
          continue
        }
      for (const tid of tids) {
        // "PID PID ... ": read whole before any stat below reuses the buffer.
        const len = readBytes(`/proc/${out[i]}/task/${tid}/children`)
        const children: number[] = []
        for (let p = 0; p < len; ) {
          const [pid, next] = numberAt(p, len)
          if (next > p) children.push(pid)
          p = next + 1
        }
        for (const pid of children) {
          if (seen.has(pid)) continue
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
    const len = readBytes(`/proc/${pid}/statm`)
    const space = len < 0 ? -1 : buffer.indexOf(SPACE)
    if (space < 0 || space >= len) return undefined
    return numberAt(space + 1, len)[0] * pageBytes()
  }

  /** Since Linux 6.2 the fd directory's size is its number of entries: one stat instead of reading the directory.
   *  Before, it is 0, and the directory is read (a process with no descriptor reads 0 either way). */
  fdCount(pid: number): number | undefined {
    try {
      const size = statSync(`/proc/${pid}/fd`).size
      return size > 0 ? size : readdirSync(`/proc/${pid}/fd`).length
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
