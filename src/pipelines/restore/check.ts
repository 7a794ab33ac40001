// The restored tree must be the one dumped, checked while criu's --leave-stopped holds it still: the root runs the
// recorded exe and cmdline, and every process of the images' tree is there with each of its threads (the same tids,
// where the pids are the host's), a dumped zombie a zombie again.

import { join } from 'node:path'
import { RestoreFailedError } from '../../errors.js'
import { pollUntil } from '../../process/poll.js'
import { readChildren, readCmdline, readLink, readStat, readThreadStates } from '../../process/proc.js'
import { innerPidOf, readDescendants } from '../../process/tree.js'
import { exeOfProcess } from '../../criu-images/identity.js'
import { keepsHostPids, manifestOf, STATE_WAIT_MS, timed, type RestoreRunState } from './state.js'

/** Returns the root's thread count. */
export async function checkRestored(s: RestoreRunState, pid: number): Promise<number> {
  return timed(s, 'check', async () => {
    const manifest = manifestOf(s)
    const t = manifest.target
    const tree = s.imageTree ?? [{ pid: t.pid, ppid: 0, pgid: 0, sid: 0, threads: t.threadIds }]
    // Inside a pid namespace of its own or a container's the images' pids are the inner ones.
    const samePids = keepsHostPids(s)
    const restoredAs = (): Map<number, number> => {
      const m = new Map<number, number>()
      for (const p of [pid, ...readDescendants(pid)]) m.set(samePids ? p : innerPidOf(p), p)
      // readDescendants leaves zombies out; a task dumped as one is looked for among the zombies of the tree.
      for (const p of restoredZombies(pid)) m.set(samePids ? p : innerPidOf(p), p)
      m.set(tree[0]!.pid, pid)
      return m
    }
    const complete = (m: Map<number, number>) =>
      tree.every((task) => {
        const host = m.get(task.pid)
        if (host === undefined) return false
        return task.exited ? readStat(host)?.state === 'Z' : readThreadStates(host).length >= task.threads.length
      })
    const seen =
      (await pollUntil(() => {
        const m = restoredAs()
        return complete(m) ? m : undefined
      }, { timeoutMs: STATE_WAIT_MS })) ?? restoredAs()
    const problems: string[] = []
    if (!readStat(pid)) problems.push(`restored pid ${pid} does not exist`)
    const exe = readLink(`/proc/${pid}/exe`)
    if (exe !== t.exe) problems.push(`exe is ${exe ?? 'unknown'}, expected ${t.exe}`)
    const cmd = readCmdline(pid)
    if (JSON.stringify(cmd) !== JSON.stringify(t.cmdline)) problems.push(`cmdline differs`)
    for (const task of tree) {
      const host = seen.get(task.pid)
      const name = task.pid === tree[0]!.pid ? 'the root' : `process ${task.pid}`
      const state = host === undefined ? undefined : readStat(host)?.state
      if (host === undefined || state === undefined) {
        problems.push(`${name} was not restored`)
        continue
      }
      // criu makes a dumped zombie again as a zombie: it has no threads and no executable left to compare.
      if (task.exited) {
        if (state !== 'Z') problems.push(`${name} was a zombie when dumped and is ${state} now`)
        continue
      }
      if (state === 'Z') {
        problems.push(`${name} was restored but has exited`)
        continue
      }
      const tids = readThreadStates(host).map((x) => x.tid)
      if (tids.length !== task.threads.length) problems.push(`${name} has ${tids.length} threads, the images ${task.threads.length}`)
      else if (samePids && !task.threads.every((tid) => tids.includes(tid))) problems.push(`${name}'s thread ids differ from the images'`)
      // Each child runs the executable its images name (the root's was checked against the manifest above). A
      // container's paths are inside its own root, where this view of /proc/PID/exe does not compare.
      if (task.pid !== tree[0]!.pid && !manifest.container) {
        const want = exeOfProcess(join(s.workDir!, 'criu'), task.pid)
        const got = readLink(`/proc/${host}/exe`)
        if (want && !want.endsWith(' (deleted)') && got !== want) problems.push(`${name} runs ${got ?? 'nothing readable'}, its images ${want}`)
      }
    }
    if (problems.length > 0) throw new RestoreFailedError(`the restored process does not match the bundle: ${problems.join('; ')}`)
    return readThreadStates(pid).length
  })
}

/** The zombies under pid, at any depth (readDescendants lists only the live processes, and walks through these). */
function restoredZombies(pid: number): number[] {
  const zombies: number[] = []
  for (const p of [pid, ...readDescendants(pid)]) {
    for (const child of readChildren(p)) if (readStat(child)?.state === 'Z') zombies.push(child)
  }
  return zombies
}
