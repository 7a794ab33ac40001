// How a stage judges what a tool left behind: a process that died while criu or gdb held it was damaged by the
// tool, and is reported as such (never "put back"); a tool stopped by a signal or its deadline says which.

import { InterruptedError, RollbackIncompleteError, StepTimeoutError, TargetChangedError, type InterruptSignal } from '../../errors.js'
import { constants } from 'node:os'
import { checkIdentity } from '../../process/identity.js'
import { readStat } from '../../process/proc.js'
import type { TreeMember } from '../../process/tree.js'
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

/** How a process that is no longer there ended, as far as /proc still says. */
type Ending = { how: 'exited'; status: number } | { how: 'signalled'; signal: number } | { how: 'unknown' }

/** A zombie still shows its wait status (stat field 52) until its parent reaps it; after that nothing does. */
function endingOf(m: TreeMember): Ending {
  const stat = readStat(m.id.pid)
  if (!stat || stat.startTime !== m.id.startTime || (stat.state !== 'Z' && stat.state !== 'X') || stat.exitCode === undefined) return { how: 'unknown' }
  const signal = stat.exitCode & 0x7f
  return signal === 0 ? { how: 'exited', status: (stat.exitCode >> 8) & 0xff } : { how: 'signalled', signal }
}

/**
 * Every process of the tree still there? Which ends are damage, and which are a service's own life:
 *  - the root gone is always the story (exit 15; its pid now another process's: exit 9);
 *  - a process that exited by itself (its zombie shows an exit status, not a signal) is not damage, whenever it
 *    happened: a tool holding a process never makes it call exit, and a tree that forks short-lived children has one
 *    finish now and then;
 *  - one killed by a signal is damage (exit 15), whenever it happened;
 *  - one gone without a trace (its parent reaped it, or the pid is another process's now) while the tree was held
 *    stopped (`resumed` false: by SIGSTOP, criu or gdb) is damage: a stopped process under ptrace cannot end on its
 *    own, only a kill or the tool can end it;
 *  - one gone without a trace that criu did not dump alive is not in the bundle: named in a warning;
 *  - one gone without a trace after it was resumed ran its own code again, and its end cannot be told from /proc any
 *    more: it was dumped alive and is in the bundle, so it is named in a warning, not counted as damage.
 */
export function assertTreeIntact(s: DumpState, during: string, resumed = false): void {
  const gone: string[] = []
  const unknown: string[] = []
  const exited: string[] = []
  const dumped = s.dumped && new Set(s.dumped.filter((t) => !t.exited).map((t) => t.pid))
  for (const [i, m] of s.members.entries()) {
    if (s.endedByThemselves.has(m.id.pid)) continue
    const check = checkIdentity(m.id)
    if (check === 'same') continue
    if (i === 0 && check === 'reused')
      throw new TargetChangedError(`pid ${m.id.pid} now belongs to another process (start time changed) during ${during}; nothing was sent to it`)
    const end = endingOf(m)
    const name = `${m.id.pid} (${m.comm})`
    if (i === 0) gone.push(end.how === 'signalled' ? `${name}, killed by ${signalName(end.signal)},` : name)
    else if (end.how === 'exited') exited.push(`${name} with status ${end.status}`)
    else if (end.how === 'signalled') gone.push(`${name}, killed by ${signalName(end.signal)},`)
    else if (resumed || (dumped && !dumped.has(s.container ? m.innerPid : m.id.pid))) unknown.push(name)
    else gone.push(name)
    if (end.how !== 'signalled' && i > 0) s.endedByThemselves.add(m.id.pid)
  }
  if (exited.length > 0) s.warn(`process${exited.length === 1 ? '' : 'es'} ${exited.join(', ')} exited by itself during ${during}: the bundle holds ${exited.length === 1 ? 'it' : 'them'} as dumped`)
  if (unknown.length > 0)
    s.warn(`process${unknown.length === 1 ? '' : 'es'} ${unknown.join(', ')} ended after ${unknown.length === 1 ? 'it was' : 'they were'} resumed, reaped before snap could read how; if ${unknown.length === 1 ? 'it was' : 'they were'} not meant to exit, check the service`)
  if (gone.length === 0) return
  const holder = s.toolHolds ? ` while ${s.toolHolds} held the tree` : ''
  throw new RollbackIncompleteError(
    `process${gone.length === 1 ? '' : 'es'} ${gone.join(', ')} exited during ${during}${holder}: the capture may have damaged the service, and ${gone.length === 1 ? 'it was' : 'they were'} not put back`,
    'check the service now and restart what is missing',
  )
}

function signalName(signo: number): string {
  const name = Object.entries(constants.signals).find(([, n]) => n === signo)?.[0]
  return name ?? `signal ${signo}`
}
