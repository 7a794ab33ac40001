// How a stage judges what a tool left behind: a process that died while criu or gdb held it was damaged by the
// tool, and is reported as such (never "put back"); a tool stopped by a signal or its deadline says which.

import { InterruptedError, RollbackIncompleteError, StepTimeoutError, TargetChangedError, type InterruptSignal } from '../../errors.js'
import { checkIdentity } from '../../process/identity.js'
import { keepLog } from '../../tools/kept-log.js'
import type { ToolRun } from '../../tools/run.js'
import type { DumpState } from './state.js'

/** The rollback removes the work directory: the failed tool's log is kept elsewhere and named. */
export function keptHint(logFile: string, label: string, outcome = 'the tree was put back'): string {
  const kept = keepLog(logFile, label)
  return kept ? `${outcome}; the tool's log: ${kept}` : outcome
}

export function throwIfToolStopped(s: DumpState, run: ToolRun, what: string): void {
  if (run.cancelled) throw new InterruptedError(s.o.cancel.reason as InterruptSignal, what)
  if (run.timedOut) throw new StepTimeoutError(`${what} did not finish in time; it was killed`, 'raise --timeout if the target is large')
}

/**
 * Every process of the tree still there? One that is gone after a tool held it was killed or damaged by that tool
 * (or by someone while it was frozen): exit 15, naming it. A root whose pid now names another process: exit 9.
 */
export function assertTreeIntact(s: DumpState, during: string): void {
  const gone: string[] = []
  for (const m of s.members) {
    const check = checkIdentity(m.id)
    if (check === 'same') continue
    if (m.id.pid === s.identity.pid && check === 'reused')
      throw new TargetChangedError(`pid ${m.id.pid} now belongs to another process (start time changed) during ${during}; nothing was sent to it`)
    gone.push(`${m.id.pid} (${m.comm})`)
  }
  if (gone.length === 0) return
  const holder = s.toolHolds ? ` while ${s.toolHolds} held the tree` : ''
  throw new RollbackIncompleteError(
    `process${gone.length === 1 ? '' : 'es'} ${gone.join(', ')} exited during ${during}${holder}: the capture may have damaged the service, and ${gone.length === 1 ? 'it was' : 'they were'} not put back`,
    'check the service now and restart what is missing',
  )
}
