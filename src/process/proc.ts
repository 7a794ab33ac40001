// Reads what the kernel says about a process in /proc. Plain functions over one pid; nothing here sends signals.

import { readFileSync, readdirSync, readlinkSync } from 'node:fs'

/** One-letter scheduler state from /proc/PID/stat (R, S, D, T, t, Z, X, I, ...). */
export type ThreadState = string

export interface ProcStat {
  pid: number
  comm: string
  state: ThreadState
  ppid: number
  pgrp: number
  session: number
  ttyNr: number
  numThreads: number
  /** Field 22: start time in clock ticks after boot. With the pid it names one process for all time (until reboot). */
  startTime: number
}

/** Returns undefined when the process (or thread) does not exist. */
export function readStat(pid: number, tid?: number): ProcStat | undefined {
  const path = tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch {
    return undefined
  }
  return parseStat(text)
}

/** comm may hold spaces and parentheses, so split on the LAST ')'. */
export function parseStat(text: string): ProcStat {
  const open = text.indexOf('(')
  const close = text.lastIndexOf(')')
  if (open < 0 || close < open) throw new Error(`unparseable stat line: ${text.slice(0, 80)}`)
  const pid = Number(text.slice(0, open).trim())
  const comm = text.slice(open + 1, close)
  // Fields after comm start at field 3 (state).
  const rest = text.slice(close + 2).trim().split(/\s+/)
  const field = (n: number): string => rest[n - 3] ?? ''
  return {
    pid,
    comm,
    state: field(3),
    ppid: Number(field(4)),
    pgrp: Number(field(5)),
    session: Number(field(6)),
    ttyNr: Number(field(7)),
    numThreads: Number(field(20)),
    startTime: Number(field(22)),
  }
}

export function processExists(pid: number): boolean {
  return readStat(pid) !== undefined
}

export function listThreadIds(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).map(Number).filter(Number.isInteger).sort((a, b) => a - b)
  } catch {
    return []
  }
}

export interface ThreadSnapshot {
  tid: number
  state: ThreadState
}

/** The state of every thread right now. A thread that exits between listing and reading is left out. */
export function readThreadStates(pid: number): ThreadSnapshot[] {
  const out: ThreadSnapshot[] = []
  for (const tid of listThreadIds(pid)) {
    const s = readStat(pid, tid)
    if (s) out.push({ tid, state: s.state })
  }
  return out
}

/** /proc/PID/status as key -> value. */
export function readStatus(pid: number): Record<string, string> | undefined {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8')
  } catch {
    return undefined
  }
  const out: Record<string, string> = {}
  for (const line of text.split('\n')) {
    const i = line.indexOf(':')
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim()
  }
  return out
}

export function readCmdline(pid: number): string[] {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    const parts = raw.split('\0')
    if (parts.at(-1) === '') parts.pop()
    return parts
  } catch {
    return []
  }
}

/** Only the NAMES: values can hold secrets. */
export function readEnvironNames(pid: number): string[] {
  return readEnviron(pid).map(([k]) => k)
}

export function readEnviron(pid: number): [string, string][] {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'utf8')
      .split('\0')
      .filter((e) => e.length > 0)
      .map((e) => {
        const i = e.indexOf('=')
        return i < 0 ? [e, ''] : [e.slice(0, i), e.slice(i + 1)]
      })
  } catch {
    return []
  }
}

export function readLink(path: string): string | undefined {
  try {
    return readlinkSync(path)
  } catch {
    return undefined
  }
}

export function readNamespaces(pid: number): Record<string, string> {
  const out: Record<string, string> = {}
  let names: string[] = []
  try {
    names = readdirSync(`/proc/${pid}/ns`)
  } catch {
    return out
  }
  for (const n of names) {
    const target = readLink(`/proc/${pid}/ns/${n}`)
    if (target) out[n] = target
  }
  return out
}

export function readCgroup(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim()
  } catch {
    return ''
  }
}

export interface OpenFile {
  fd: number
  path: string
}

/** Regular files (absolute paths) behind the process's file descriptors. */
export function readOpenFiles(pid: number): OpenFile[] {
  let fds: string[] = []
  try {
    fds = readdirSync(`/proc/${pid}/fd`)
  } catch {
    return []
  }
  const out: OpenFile[] = []
  for (const fd of fds) {
    const path = readLink(`/proc/${pid}/fd/${fd}`)
    if (path && path.startsWith('/') && !path.startsWith('/dev/') && !path.startsWith('/proc/')) out.push({ fd: Number(fd), path })
  }
  return out.sort((a, b) => a.fd - b.fd)
}

/** Files mapped into memory (executable, libraries, mapped data files), without duplicates. */
export function readMappedFiles(pid: number): string[] {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/maps`, 'utf8')
  } catch {
    return []
  }
  const seen = new Set<string>()
  for (const line of text.split('\n')) {
    const m = /^\S+\s+\S+\s+\S+\s+\S+\s+\d+\s+(\/.*)$/.exec(line)
    const path = m?.[1]
    if (path && !path.endsWith(' (deleted)') && !path.startsWith('/dev/') && !path.startsWith('/memfd:')) seen.add(path)
  }
  return [...seen].sort()
}

/** Children of pid, from /proc/PID/task/TID/children (needs CONFIG_PROC_CHILDREN; empty when absent). */
export function readChildren(pid: number): number[] {
  const out: number[] = []
  for (const tid of listThreadIds(pid)) {
    try {
      const text = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim()
      if (text) out.push(...text.split(/\s+/).map(Number))
    } catch {
      // the thread went away; its children are reparented and will be seen elsewhere
    }
  }
  return out
}

/** The whole tree rooted at pid, root first. */
export function readProcessTree(pid: number): number[] {
  const out: number[] = []
  const queue = [pid]
  while (queue.length > 0) {
    const p = queue.shift()!
    if (out.includes(p)) continue
    out.push(p)
    queue.push(...readChildren(p))
  }
  return out
}

let cachedBootId: string | undefined
export function readBootId(): string {
  cachedBootId ??= readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
  return cachedBootId
}

export function readPtraceScope(): number | undefined {
  try {
    return Number(readFileSync('/proc/sys/kernel/yama/ptrace_scope', 'utf8').trim())
  } catch {
    return undefined
  }
}

/** Effective capabilities of a process as a bigint mask (from CapEff in status). */
export function readEffectiveCaps(pid: number | 'self'): bigint {
  try {
    const text = readFileSync(`/proc/${pid}/status`, 'utf8')
    const m = /^CapEff:\s*([0-9a-f]+)/m.exec(text)
    return m?.[1] ? BigInt('0x' + m[1]) : 0n
  } catch {
    return 0n
  }
}

/** The process group of a process's tracer (a tool leads its own group: criu's pid, for criu), or undefined while
 *  nothing traces it. */
export function tracerGroup(pid: number): number | undefined {
  const tracer = Number(readStatus(pid)?.['TracerPid'] ?? 0)
  return tracer > 0 ? readStat(tracer)?.pgrp : undefined
}

/** A small text file (a status, a pidfile), or undefined when it cannot be read. */
export function readTextFile(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return undefined
  }
}

export const CAP_SYS_PTRACE = 19n
export const CAP_SYS_ADMIN = 21n
/** criu reads another uid's rlimits with prlimit, which needs it. */
export const CAP_SYS_RESOURCE = 24n
export const CAP_CHECKPOINT_RESTORE = 40n

export function hasCap(mask: bigint, cap: bigint): boolean {
  return ((mask >> cap) & 1n) === 1n
}
