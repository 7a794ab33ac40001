// Every restored process to its final state, through the same identity-checked code that puts a dumped tree back:
// the state asked for (--resume, --leave-stopped), else each its own found state as the manifest records it (a worker
// paused at the dump comes back paused). criu gives the tree back as its images say, and a tree snap dumped was
// SIGSTOP-stopped then: without this, the workers of a restored master stay frozen.

import { RestoreFailedError, RollbackIncompleteError } from '../../errors.js'
import { identifiedDescendants, type TargetIdentity } from '../../process/identity.js'
import { readStat, readThreadStates } from '../../process/proc.js'
import { innerPidOf, putTreeBack, type TreeMember } from '../../process/tree.js'
import { manifestOf, keepsHostPids, STATE_WAIT_MS, timed, warn, type RestoredProcess, type RestoreRunState } from './state.js'

export async function applyFinalState(s: RestoreRunState, root: TargetIdentity, final: 'running' | 'stopped'): Promise<RestoredProcess[]> {
  return timed(s, 'final-state', async () => {
    const manifest = manifestOf(s)
    // In a namespace of its own the manifest's pids name other processes than the host's: only the asked state counts.
    const found = new Map((s.o.newPidns || s.o.isolate ? [] : (manifest.processes ?? [])).map((p) => [p.pid, p.found]))
    const key = (pid: number) => (keepsHostPids(s) ? pid : innerPidOf(pid))
    const members = [root, ...identifiedDescendants(root)].map((id) => restoredMember(id))
    const want = (m: TreeMember): 'running' | 'stopped' => {
      const w = s.o.final ?? found.get(key(m.id.pid)) ?? final
      return w === 'running' ? 'running' : 'stopped'
    }
    let outcomes
    try {
      outcomes = await putTreeBack(members, want, STATE_WAIT_MS)
    } catch (e) {
      if (e instanceof RollbackIncompleteError) throw new RestoreFailedError(`a restored ${e.message}`)
      throw e
    }
    // The root gone is a failed restore. A child that exits once it runs (a short-lived worker, a fork that was about
    // to end) does what it did in the original: said, and not a reason to kill the rest of the tree.
    const gone = outcomes.filter((o) => o.left === 'gone')
    if (gone.some((g) => g.pid === root.pid)) throw new RestoreFailedError(`the restored root ${root.pid} exited before it was left ${final}`)
    for (const g of gone) warn(s, `restored process ${g.pid} (${g.comm}) exited as soon as it ran (${g.check === 'reused' ? 'its pid was taken again' : 'it ended'}); the rest of the tree is ${final}`)
    // Workers first, as they were resumed.
    return outcomes.filter((o) => o.left !== 'gone').map((o) => ({ pid: o.pid, left: o.left === 'running' ? 'running' : 'stopped' }) satisfies RestoredProcess).reverse()
  })
}

/** A restored process as the tree code knows a member: criu's --leave-stopped holds it, so it was found stopped. */
function restoredMember(id: TargetIdentity): TreeMember {
  const threads = readThreadStates(id.pid)
  const stat = readStat(id.pid)
  return { id, innerPid: innerPidOf(id.pid), ppid: stat?.ppid ?? 0, comm: stat?.comm ?? '?', found: 'stopped', threadsFound: threads, threadsAtStop: threads }
}
