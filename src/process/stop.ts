// One process's run state: observed (its threads settled), and brought to a final state, each confirmed in /proc.
// Stopping and resuming a whole tree, built on these predicates, is tree.ts.

import { RollbackIncompleteError, StepTimeoutError, TargetChangedError } from '../errors.js'
import { assertSameProcess, checkIdentity, signalTarget, type TargetIdentity } from './identity.js'
import { pollUntil } from './poll.js'
import { readThreadStates, readThreadStatesStrict, type ThreadSnapshot } from './proc.js'

export type RunState = 'running' | 'stopped'

export interface ObservedState {
  state: RunState
  threads: ThreadSnapshot[]
}

export const isStopped = (t: ThreadSnapshot) => t.state === 'T'
export const allStopped = (ts: ThreadSnapshot[]) => ts.length > 0 && ts.every(isStopped)
export const noneStopped = (ts: ThreadSnapshot[]) => ts.length > 0 && !ts.some(isStopped)

/**
 * Stopped means every thread is in group stop ('T'). A group stop reaches threads one by one, so a mix of T and
 * other states is a stop (or a continue) in progress: wait briefly for it to settle before deciding. Read before any
 * signal, so a thread whose state cannot be read throws ProcUnreadableError rather than being left out.
 */
export async function observeRunState(id: TargetIdentity, settleMs = 200): Promise<ObservedState> {
  assertSameProcess(id, 'reading the original state')
  const settled = await pollUntil(
    () => {
      const ts = readThreadStatesStrict(id.pid)
      return allStopped(ts) || noneStopped(ts) ? ts : undefined
    },
    { timeoutMs: settleMs },
  )
  const threads = settled ?? readThreadStatesStrict(id.pid)
  if (threads.length === 0) assertSameProcess(id, 'reading the original state')
  return { state: allStopped(threads) ? 'stopped' : 'running', threads }
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
