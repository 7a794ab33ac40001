// A process is its pid AND its start time: a pid alone can be reused by another process after the first one exits.

import { TargetChangedError, TargetNotFoundError } from '../errors.js'
import { readBootId, readStat, readStatStrict } from './proc.js'

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
