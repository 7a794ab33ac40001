// A process is its pid AND its start time: a pid alone can be reused by another process after the first one exits.

import { TargetChangedError, TargetNotFoundError } from '../errors.js'
import { readBootId, readChildren, readStat, readStatStrict } from './proc.js'

export interface TargetIdentity {
  pid: number
  /** Field 22 of /proc/PID/stat, in clock ticks since boot. */
  startTime: number
  bootId: string
}

/** TargetNotFoundError when the process is gone; ProcUnreadableError when its stat cannot be read. */
export function captureIdentity(pid: number): TargetIdentity {
  const stat = readStatStrict(pid)
  if (!stat) throw new TargetNotFoundError(pid)
  return { pid, startTime: stat.startTime, bootId: readBootId() }
}

export type IdentityCheck = 'same' | 'gone' | 'reused'

/** Never throws on a read: the rollback asks it of every process, and must finish. A stat that cannot be read answers
 *  'gone' (nothing is sent to a process snap cannot identify). */
export function checkIdentity(id: TargetIdentity): IdentityCheck {
  if (id.bootId !== readBootId()) return 'reused'
  const stat = readStat(id.pid)
  if (!stat || stat.state === 'Z' || stat.state === 'X') return 'gone'
  return stat.startTime === id.startTime ? 'same' : 'reused'
}

export function assertSameProcess(id: TargetIdentity, during: string): void {
  const check = checkIdentity(id)
  if (check === 'gone') throw new TargetChangedError(`target ${id.pid} exited during ${during}`)
  if (check === 'reused')
    throw new TargetChangedError(`pid ${id.pid} now belongs to another process (start time changed) during ${during}; nothing was sent to it`)
}

/**
 * Sends a signal only if the pid still names the same process. The check and the kill are two syscalls, so a
 * reuse in between is possible in principle; the pid would have to exit, be reaped and be handed out again within
 * microseconds, which the kernel's pid allocation (cycling through the whole pid space) makes vanishingly unlikely.
 */
export function signalTarget(id: TargetIdentity, signal: NodeJS.Signals, during: string): void {
  assertSameProcess(id, during)
  process.kill(id.pid, signal)
}

export type RecordedSignal = 'signalled' | IdentityCheck

/**
 * Signals a process snap recorded (pid and start time) only while that pid still names it: 'reused' when the pid now
 * has another start time (or the host was rebooted), 'gone' when it has exited (ESRCH included). Nothing else is ever
 * sent.
 *
 * No pidfd: Node has none, and a python3 helper (os.pidfd_open, signal.pidfd_send_signal) would cost a process
 * start per signal and a dependency, to close the microseconds between this check and kill(2). To hit that gap the
 * process would have to exit and be reaped, and its pid be handed out again, which the kernel does only after
 * cycling through every other free pid.
 */
export function signalRecorded(id: TargetIdentity, signal: NodeJS.Signals): RecordedSignal {
  const check = checkIdentity(id)
  if (check !== 'same') return check
  try {
    process.kill(id.pid, signal)
    return 'signalled'
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ESRCH') return 'gone'
    throw e
  }
}

/**
 * Every process under root, each with its start time, if root still is the process recorded. A child counts only if
 * its stat names the process it was found under as its parent and it started no earlier than that parent: a pid
 * handed out again between reading the children and reading the stat fails both.
 */
export function identifiedDescendants(root: TargetIdentity): TargetIdentity[] {
  if (checkIdentity(root) !== 'same') return []
  const out: TargetIdentity[] = []
  const queue = [root]
  while (queue.length > 0) {
    const parent = queue.shift()!
    for (const pid of readChildren(parent.pid)) {
      const s = readStat(pid)
      if (!s || s.ppid !== parent.pid || s.startTime < parent.startTime || s.state === 'Z' || s.state === 'X') continue
      if (out.some((o) => o.pid === pid)) continue
      const id = { pid, startTime: s.startTime, bootId: root.bootId }
      out.push(id)
      queue.push(id)
    }
  }
  return out
}
