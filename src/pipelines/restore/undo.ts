// The failure path, as cr-restore.c's: kill what this restore recorded as its own, each only while its pid still has
// the recorded start time, end what --isolate set up, and say what was undone. Nothing else is signalled: not a pid of
// the images' tree that something else has taken, whenever it started.

import { signalRecorded } from '../../process/identity.js'
import { stopAllTools, stopProcessGroup } from '../../tools/run.js'
import { recordTree } from './criu.js'
import { endCopy } from '../copies.js'
import { enter, type RestoreRunState } from './state.js'

export async function undoRestore(s: RestoreRunState, _cause: unknown): Promise<void> {
  await stopAllTools()
  // What the roots started since they were last looked at (once the final state let them run) is theirs too.
  recordTree(s)
  const killed: number[] = []
  const reused: number[] = []
  for (const id of s.journal?.current.restored ?? []) {
    const sent = signalRecorded(id, 'SIGKILL')
    if (sent === 'signalled') killed.push(id.pid)
    else if (sent === 'reused') reused.push(id.pid)
  }
  if (s.holderPid !== undefined) await stopProcessGroup(s.holderPid, 500)
  if (s.copy) await endCopy(s.copy)
  enter(s, 'failed')
  // The error itself is the command's last line (with what to do): said there once, not here again.
  const undone = [
    killed.length ? `killed partly restored ${killed.join(', ')}` : '',
    reused.length ? `left ${reused.join(', ')} alone (the pid now belongs to another process)` : '',
  ].filter(Boolean)
  if (undone.length > 0) s.progress.note(`restore undone: ${undone.join('; ')}`)
}
