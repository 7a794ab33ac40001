// Did a resumed process survive its resume? A tool that dies while it holds a process (criu killed mid-dump, its
// parasite code still inside) leaves it alive and stopped: it looks fine until it runs again, then dies on its first
// instruction (measured: SIGSEGV or SIGTRAP at once after SIGCONT). So "resumed" is only said of a process each of
// whose threads has been on a CPU since the resume, and which is still there afterwards.

import { readFileSync } from 'node:fs'
import { checkIdentity, type TargetIdentity } from './identity.js'
import { listThreadIds, readStat } from './proc.js'
import { pollUntil } from './poll.js'

/** How many times a thread has been put on a CPU: schedstat's third field; the sum of its context switches without
 *  it. Undefined when the thread is gone. */
export function threadRunCount(pid: number, tid: number): number | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').trim().split(/\s+/)
    const n = Number(fields[2])
    if (Number.isFinite(n)) return n
  } catch {
    // no schedstat (CONFIG_SCHED_INFO off), or the thread is gone: the status counters say the same
  }
  try {
    const text = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8')
    const v = /^voluntary_ctxt_switches:\s*(\d+)/m.exec(text)?.[1]
    const nv = /^nonvoluntary_ctxt_switches:\s*(\d+)/m.exec(text)?.[1]
    return v !== undefined && nv !== undefined ? Number(v) + Number(nv) : undefined
  } catch {
    return undefined
  }
}

export type RunCounts = Map<number, number>

/** Each thread's run count now: taken while the process is stopped, before it is resumed. */
export function runCountsOf(pid: number): RunCounts {
  const out: RunCounts = new Map()
  let tids: number[] = []
  try {
    tids = listThreadIds(pid)
  } catch {
    return out
  }
  for (const tid of tids) {
    const n = threadRunCount(pid, tid)
    if (n !== undefined) out.set(tid, n)
  }
  return out
}

/**
 * Every thread counted before has had a whole turn on a CPU since: put on a CPU and then off it again (sleeping, or
 * put on a CPU a second time). A thread seen only running its first turn may be dying in it; a thread that is gone
 * may be one a fatal signal took first (the others go as the process exits), so it confirms nothing.
 */
function everyThreadRan(pid: number, before: RunCounts): boolean {
  for (const [tid, n] of before) {
    const now = threadRunCount(pid, tid)
    if (now === undefined || now <= n) return false
    if (now === n + 1 && readStat(pid, tid)?.state === 'R') return false
  }
  return true
}

/** Gone, or on its way out: a process writing its core after a fatal signal (CoreDumping: 1) is still in /proc for as
 *  long as that takes, its other threads already gone. */
function dying(id: TargetIdentity): boolean {
  if (checkIdentity(id) !== 'same') return true
  try {
    return /^CoreDumping:\s*1/m.test(readFileSync(`/proc/${id.pid}/status`, 'utf8'))
  } catch {
    return true
  }
}

export type Survival = 'survived' | 'died' | 'unconfirmed'

/**
 * Waits until the process has run since its resume (then it survived, if it is still there) or is gone (it died),
 * within timeoutMs. 'unconfirmed': alive, but not every thread got a CPU in time (a very busy host).
 */
export async function confirmSurvival(id: TargetIdentity, before: RunCounts, timeoutMs: number): Promise<Survival> {
  const settled = await pollUntil(() => (dying(id) ? 'died' : everyThreadRan(id.pid, before) ? 'ran' : undefined), { timeoutMs, maxIntervalMs: 10 })
  if (settled === 'died' || dying(id)) return 'died'
  return settled === 'ran' ? 'survived' : 'unconfirmed'
}

/** Signals a fault raises in the thread that faulted (a breakpoint a tool left, a bad address): fatal unless caught. */
const FAULT_SIGNALS: [name: string, signo: number][] = [
  ['SIGILL', 4],
  ['SIGTRAP', 5],
  ['SIGBUS', 7],
  ['SIGFPE', 8],
  ['SIGSEGV', 11],
]

function maskHas(hex: string | undefined, signo: number): boolean {
  return hex !== undefined && ((BigInt(`0x${hex}`) >> BigInt(signo - 1)) & 1n) === 1n
}

/**
 * A fault signal pending for a stopped thread and not caught by the process: it is delivered as soon as the thread
 * runs, and the process dies of it. Seen after criu was killed inside its parasite code (a SIGTRAP from the parasite's
 * breakpoint): the process looks whole while stopped. Returns the signal's name, or undefined.
 */
export function pendingFault(pid: number): string | undefined {
  let tids: number[] = []
  try {
    tids = listThreadIds(pid)
  } catch {
    return undefined
  }
  for (const tid of tids) {
    let text: string
    try {
      text = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8')
    } catch {
      continue
    }
    const field = (k: string) => new RegExp(`^${k}:\\s*([0-9a-f]+)`, 'm').exec(text)?.[1]
    for (const [name, signo] of FAULT_SIGNALS)
      if ((maskHas(field('SigPnd'), signo) || maskHas(field('ShdPnd'), signo)) && !maskHas(field('SigCgt'), signo)) return name
  }
  return undefined
}
