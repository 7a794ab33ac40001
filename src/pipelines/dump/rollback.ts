// The failure path of every stage, as cr_dump_finish undoes criu's: tools stopped, every process of the tree in its
// own found state (or the final one, if that was reached), partial files removed, and each undo said out loud.

import { rmSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { RollbackIncompleteError } from '../../errors.js'
import { checkIdentity } from '../../process/identity.js'
import { putTreeBack } from '../../process/tree.js'
import { stopAllTools } from '../../tools/run.js'
import { STOP_TIMEOUT_MS, type DumpState } from './state.js'

export function cleanupWorkDir(s: DumpState): void {
  if (s.workDir) rmSync(s.workDir, { recursive: true, force: true })
  s.workDir = undefined
}

/** A bundle being written beside the cores (startSeal) is told to give up, and given a moment to close its file. */
async function abandonSeal(s: DumpState, cause: unknown): Promise<void> {
  if (!s.sealing) return
  if (!s.sealing.abandoned) s.sealing.abandon(cause instanceof Error ? cause : new Error(String(cause)))
  await Promise.race([s.sealing.writing.catch(() => undefined), sleep(STOP_TIMEOUT_MS, undefined, { ref: false })])
}

/** A second signal during this does not interrupt it. Throws RollbackIncompleteError when a process could not be put back. */
export async function rollback(s: DumpState, cause: unknown): Promise<void> {
  const actions: string[] = []
  await stopAllTools()
  await abandonSeal(s, cause)
  let failure: RollbackIncompleteError | undefined
  if (s.touched && s.members.length > 0) {
    const present = s.members.filter((m) => checkIdentity(m.id) === 'same')
    const gone = s.members.filter((m) => !present.includes(m))
    const want = (m: (typeof s.members)[number]) => (s.released ? s.leaveFor(m) : m.found)
    try {
      const outcomes = await putTreeBack(present, want, STOP_TIMEOUT_MS)
      const root = outcomes.find((x) => x.pid === s.o.pid)
      if (root && root.left !== 'gone') actions.push(`target ${root.pid} ${root.left === 'running' ? 'resumed' : 'left stopped'} as it was`)
      const others = outcomes.filter((x) => x.pid !== s.o.pid)
      const resumed = others.filter((x) => x.left === 'running').length
      const stopped = others.filter((x) => x.left === 'stopped').length
      if (resumed > 0) actions.push(`${resumed} other process(es) of the tree resumed`)
      if (stopped > 0) actions.push(`${stopped} other process(es) of the tree left stopped as found`)
      const vanished = outcomes.filter((x) => x.left === 'gone')
      gone.push(...s.members.filter((m) => vanished.some((v) => v.pid === m.id.pid)))
    } catch (e) {
      s.progress.warn(`rollback could not put the tree of ${s.o.pid} back: ${(e as Error).message}`)
      failure = new RollbackIncompleteError(
        `the tree of ${s.o.pid} could not be put back in its found state after: ${(cause as Error).message}`,
        `run \`kill -CONT ${present.filter((m) => m.found === 'running').map((m) => m.id.pid).join(' ')}\` for the processes that were running`,
      )
    }
    // A process that is gone was not put back, whatever else was: never counted as resumed.
    for (const m of gone) {
      const what = m.id.pid === s.o.pid ? 'target' : 'process'
      actions.push(`${what} ${m.id.pid} is gone (${checkIdentity(m.id)}); nothing sent to it`)
    }
  }
  if (s.partial) {
    rmSync(s.partial, { force: true })
    actions.push('partial bundle removed')
    s.partial = undefined
  }
  if (s.workDir) {
    cleanupWorkDir(s)
    actions.push('work directory removed')
  }
  if (!failure) s.journal?.remove()
  if (actions.length > 0) s.progress.note(`rolled back: ${actions.join('; ')}`)
  if (failure) throw failure
}
