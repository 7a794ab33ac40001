// Bringing a target to a verified SIGSTOP stop and back. Every transition is confirmed in /proc before we go on.

import { RollbackIncompleteError, StepTimeoutError, TargetChangedError } from '../errors.js'
import { assertSameProcess, checkIdentity, signalTarget, type TargetIdentity } from './identity.js'
import { pollUntil } from './poll.js'
import { readThreadStates, type ThreadSnapshot } from './proc.js'

export type RunState = 'running' | 'stopped'

export interface ObservedState {
  state: RunState
  threads: ThreadSnapshot[]
}

const isStopped = (t: ThreadSnapshot) => t.state === 'T'
const allStopped = (ts: ThreadSnapshot[]) => ts.length > 0 && ts.every(isStopped)
const noneStopped = (ts: ThreadSnapshot[]) => ts.length > 0 && !ts.some(isStopped)

/**
 * Stopped means every thread is in group stop ('T'). A group stop reaches threads one by one, so a mix of T and
 * other states is a stop (or a continue) in progress: wait briefly for it to settle before deciding.
 */
export async function observeRunState(id: TargetIdentity, settleMs = 200): Promise<ObservedState> {
  assertSameProcess(id, 'reading the original state')
  const settled = await pollUntil(
    () => {
      const ts = readThreadStates(id.pid)
      return allStopped(ts) || noneStopped(ts) ? ts : undefined
    },
    { timeoutMs: settleMs },
  )
  const threads = settled ?? readThreadStates(id.pid)
  if (threads.length === 0) assertSameProcess(id, 'reading the original state')
  return { state: allStopped(threads) ? 'stopped' : 'running', threads }
}

export interface StopResult {
  /** What we did: 'sigstop' for a running target, 'converted' for one already stopped by an unknown stop signal. */
  action: 'sigstop' | 'converted'
  /** Milliseconds from the first signal (or, for a stopped target, from the first look) until every thread was seen stopped. */
  settleMs: number
  threads: ThreadSnapshot[]
}

/**
 * A running target gets SIGSTOP, and we wait until every thread shows T.
 *
 * A stopped target may have been stopped by SIGTSTP (Ctrl+Z), SIGTTIN or SIGTTOU; /proc does not say which, and gdb
 * resumes such a process when it detaches. Only SIGCONT ends a job-control stop, and a thread woken by it runs
 * (a sleep whose deadline passed while stopped returns at once) before a SIGSTOP sent right after can stop it again:
 * sent back to back from here, the pair let the worker fixture advance a step in most runs. So nothing is sent to a
 * stopped target here; the stop is converted during the checkpoint, while criu holds every thread under ptrace and no
 * thread can run (see stopConversionScript in tools/criu.ts).
 */
export async function bringToSigstopStop(id: TargetIdentity, original: RunState, timeoutMs: number): Promise<StopResult> {
  const started = performance.now()
  if (original === 'running') signalTarget(id, 'SIGSTOP', 'stopping the target')
  else assertSameProcess(id, 'checking the stop')
  const threads = await waitUntilAllStopped(id, timeoutMs, 'stopping the target')
  return { action: original === 'running' ? 'sigstop' : 'converted', settleMs: performance.now() - started, threads }
}

export async function waitUntilAllStopped(id: TargetIdentity, timeoutMs: number, during: string): Promise<ThreadSnapshot[]> {
  const ts = await pollUntil(() => {
    const now = readThreadStates(id.pid)
    return allStopped(now) ? now : undefined
  }, { timeoutMs })
  if (ts) return ts
  assertSameProcess(id, during)
  const now = readThreadStates(id.pid)
  const late = now.filter((t) => !isStopped(t)).map((t) => `${t.tid}:${t.state}`)
  const uninterruptible = now.some((t) => t.state === 'D')
  throw new StepTimeoutError(
    `target ${id.pid} did not stop within ${timeoutMs} ms (threads not stopped: ${late.join(', ')})`,
    uninterruptible ? 'a thread is in uninterruptible sleep (D), usually blocked on I/O; retry when it is not' : undefined,
  )
}

/** Every thread still stopped? Returns the threads that are not. */
export function threadsNotStopped(id: TargetIdentity): ThreadSnapshot[] {
  return readThreadStates(id.pid).filter((t) => !isStopped(t))
}

export type FinalState = 'running' | 'stopped' | 'killed'

/** Puts the target in its final state and confirms it in /proc. */
export async function bringToFinalState(id: TargetIdentity, final: FinalState, timeoutMs: number): Promise<void> {
  if (final === 'running') {
    signalTarget(id, 'SIGCONT', 'resuming the target')
    const ok = await pollUntil(() => noneStopped(readThreadStates(id.pid)), { timeoutMs })
    if (!ok) {
      assertSameProcess(id, 'resuming the target')
      throw new RollbackIncompleteError(
        `target ${id.pid} did not resume within ${timeoutMs} ms`,
        `run \`kill -CONT ${id.pid}\` and check its state`,
      )
    }
  } else if (final === 'stopped') {
    const check = checkIdentity(id)
    if (check !== 'same') throw new TargetChangedError(`target ${id.pid} is gone`)
    if (!allStopped(readThreadStates(id.pid))) {
      process.kill(id.pid, 'SIGSTOP')
      await waitUntilAllStopped(id, timeoutMs, 'leaving the target stopped')
    }
  } else {
    signalTarget(id, 'SIGKILL', 'killing the target')
    const gone = await pollUntil(() => checkIdentity(id) !== 'same', { timeoutMs })
    if (!gone) throw new RollbackIncompleteError(`target ${id.pid} did not exit within ${timeoutMs} ms of SIGKILL`)
  }
}
