// `snap recover`: finishes what a snap that died left half done. Each journal whose snap is gone names a target and
// the state it must be left in; the target is touched only if its pid still has the recorded start time.

import { readdirSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { partialPrefix, workDirPrefix } from '../bundle/output-path.js'
import { checkIdentity, type TargetIdentity } from '../process/identity.js'
import { bringToFinalState } from '../process/stop.js'
import { pollUntil } from '../process/poll.js'
import { readStat, tracerGroup } from '../process/proc.js'
import { journalDir, listJournals, removeJournalFile, snapIsAlive, type JournalEntry } from './journal.js'
import { pstreeIds } from '../tools/criu-pstree.js'

export interface RecoveryAction {
  journal: string
  targetPid: number | null
  snapPid: number | null
  outcome: 'recovered' | 'target-gone' | 'in-progress' | 'unreadable' | 'failed'
  actions: string[]
}

/**
 * A tool is the leader of its own process group. When snap dies the kernel kills the leader (setpriv --pdeathsig),
 * but whatever the tool started lives on in the group: the group is what must go. While any member is left the kernel
 * does not hand the group's id out again, so with the leader gone every member is ours. With the leader still there,
 * it is ours only if it has the recorded start time (or, for an older journal, if it is younger than snap).
 */
function killLeftoverTool(pid: number, startTime: number | null | undefined, entry: JournalEntry, actions: string[]): void {
  const leader = readStat(pid)
  if (leader) {
    const ours = startTime != null ? leader.startTime === startTime : leader.startTime >= entry.snapStartTime
    if (!ours) return
  }
  const members = groupMembers(pid)
  if (members.length === 0) return
  try {
    process.kill(-pid, 'SIGKILL')
  } catch {
    return
  }
  actions.push(`killed leftover ${members.map((m) => `${m.comm} (pid ${m.pid})`).join(', ')}`)
}

/** One process back in the state its journal says, the outcome said in actions; false when it could not be. */
async function putBack(id: TargetIdentity, to: 'running' | 'stopped', what: 'target' | 'process', actions: string[]): Promise<boolean> {
  try {
    await bringToFinalState(id, to, 5000)
    actions.push(`${what} ${id.pid} ${to === 'running' ? 'resumed' : 'left stopped, as it was found'}`)
    return true
  } catch (e) {
    actions.push(`could not put ${what} ${id.pid} back: ${(e as Error).message}`)
    return false
  }
}

/** Processes of the images' tree (pstree.img in the restore's work directory) born after the restoring snap. */
function partlyRestored(entry: JournalEntry): number[] {
  if (!entry.workDir) return []
  return pstreeIds(join(entry.workDir, 'criu')).filter((pid) => {
    const s = readStat(pid)
    return !!s && s.state !== 'Z' && s.startTime >= entry.snapStartTime
  })
}


function groupMembers(pgid: number): { pid: number; comm: string }[] {
  let names: string[] = []
  try {
    names = readdirSync('/proc')
  } catch {
    return []
  }
  return names
    .filter((n) => /^\d+$/.test(n))
    .map((n) => readStat(Number(n)))
    .filter((s): s is NonNullable<typeof s> => !!s && s.pgrp === pgid && s.state !== 'Z')
    .map((s) => ({ pid: s.pid, comm: s.comm }))
}

/**
 * The partial bundle and the work directory carry the dead snap's pid in their names (.NAME.partial-PID-*,
 * .NAME.work-PID-*): found beside the output even when snap died between creating one and journalling it.
 */
function leftoversBesideOutput(entry: JournalEntry): string[] {
  if (!entry.output) return []
  const dir = dirname(entry.output)
  const prefixes = [partialPrefix(entry.output, entry.snapPid), workDirPrefix(entry.output, entry.snapPid)]
  try {
    return readdirSync(dir)
      .filter((n) => prefixes.some((p) => n.startsWith(p)))
      .map((n) => join(dir, n))
  } catch {
    return []
  }
}

/** A journal update is written to target-PID.json.tmp-SNAPPID, then renamed: a snap killed in between leaves it. */
function removeHalfWrittenUpdates(out: RecoveryAction[]): void {
  let names: string[] = []
  try {
    names = readdirSync(journalDir())
  } catch {
    return
  }
  for (const name of names) {
    const m = /^target-(\d+)\.json\.tmp-(\d+)$/.exec(name)
    if (!m || readStat(Number(m[2]))) continue
    removeJournalFile(join(journalDir(), name))
    out.push({ journal: join(journalDir(), name), targetPid: Number(m[1]), snapPid: Number(m[2]), outcome: 'unreadable', actions: ['removed a half-written journal update'] })
  }
}

export async function recoverAll(): Promise<RecoveryAction[]> {
  const out: RecoveryAction[] = []
  removeHalfWrittenUpdates(out)
  for (const { path, entry } of listJournals()) {
    if (!entry) {
      removeJournalFile(path)
      out.push({ journal: path, targetPid: null, snapPid: null, outcome: 'unreadable', actions: ['removed unreadable journal'] })
      continue
    }
    const actions: string[] = []
    if (snapIsAlive(entry)) {
      out.push({ journal: path, targetPid: entry.target.pid, snapPid: entry.snapPid, outcome: 'in-progress', actions: [`snap ${entry.snapPid} is still running; left alone`] })
      continue
    }
    // A criu still holding the target is let finish first: killed then, it can take the target down (see checkpoint()
    // in dump.ts). It lets go at the end of its memory dump, normally seconds; one that does not is killed all the same.
    if (checkIdentity(entry.target) === 'same') {
      const holder = entry.toolPids.find((pid) => tracerGroup(entry.target.pid) === pid)
      if (holder !== undefined) {
        const t0 = performance.now()
        const released = await pollUntil(() => tracerGroup(entry.target.pid) !== holder, { timeoutMs: 60_000, maxIntervalMs: 50 })
        actions.push(`${released ? 'waited' : 'gave up after'} ${Math.round(performance.now() - t0)} ms for ${readStat(holder)?.comm ?? 'the tool'} (pid ${holder}) to let go of the target`)
      }
    }
    entry.toolPids.forEach((pid, i) => killLeftoverTool(pid, entry.toolStartTimes?.[i], entry, actions))
    if (entry.operation === 'restore') {
      // A restore that died: what criu had restored of the images' tree (their pids, started after that snap) goes;
      // nothing else is touched, and there is no original to put back.
      const partly = partlyRestored(entry)
      for (const pid of partly) {
        try {
          process.kill(pid, 'SIGKILL')
        } catch {
          // gone
        }
      }
      if (partly.length > 0) actions.push(`killed partly restored ${partly.join(', ')}`)
      for (const p of new Set([entry.workDir, ...leftoversBesideOutput(entry)])) {
        if (p) {
          rmSync(p, { recursive: true, force: true })
          actions.push(`removed ${p}`)
        }
      }
      removeJournalFile(path)
      out.push({ journal: path, targetPid: entry.target.pid, snapPid: entry.snapPid, outcome: 'recovered', actions: actions.length ? actions : ['nothing was left of the restore'] })
      continue
    }
    // A tracer that is still dying holds the target in a trace stop, where SIGCONT would not resume it.
    await pollUntil(() => entry.toolPids.every((pid) => groupMembers(pid).length === 0), { timeoutMs: 2000, maxIntervalMs: 20 })
    let outcome: RecoveryAction['outcome'] = 'recovered'
    const check = checkIdentity(entry.target)
    if (check !== 'same') {
      outcome = 'target-gone'
      actions.push(check === 'gone' ? `target ${entry.target.pid} has exited` : `pid ${entry.target.pid} now belongs to another process; not touched`)
    } else if (entry.touched) {
      if (!(await putBack(entry.target, entry.restoreTo, 'target', actions))) outcome = 'failed'
    } else {
      actions.push(`target ${entry.target.pid} was never signalled`)
    }
    // The rest of the tree: each process back to its own found state. One that is gone is said to be gone (a tool that
    // died holding it may have taken it down), never counted as put back.
    if (entry.touched) {
      for (const m of (entry.members ?? []).filter((x) => x.id.pid !== entry.target.pid)) {
        const mcheck = checkIdentity(m.id)
        if (mcheck !== 'same') {
          outcome = outcome === 'recovered' ? 'target-gone' : outcome
          actions.push(mcheck === 'gone' ? `process ${m.id.pid} of the tree has exited (it may have been damaged while snap's tools held it)` : `pid ${m.id.pid} now belongs to another process; not touched`)
          continue
        }
        if (!(await putBack(m.id, m.restoreTo, 'process', actions))) outcome = 'failed'
      }
    }
    for (const p of new Set([entry.partialPath, entry.workDir, ...leftoversBesideOutput(entry)])) {
      if (p) {
        rmSync(p, { recursive: true, force: true })
        actions.push(`removed ${p}`)
      }
    }
    if (outcome !== 'failed') removeJournalFile(path)
    out.push({ journal: path, targetPid: entry.target.pid, snapPid: entry.snapPid, outcome, actions })
  }
  return out
}
