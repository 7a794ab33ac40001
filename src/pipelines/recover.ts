// `snap recover`: finishes what a snap that died left half done. Each journal whose snap is gone names a target and
// the state it must be left in; the target is touched only if its pid still has the recorded start time.

import { rmSync } from 'node:fs'
import { checkIdentity } from '../target/identity.js'
import { bringToFinalState } from '../target/stop.js'
import { readStat } from '../target/proc.js'
import { listJournals, removeJournalFile, snapIsAlive, type JournalEntry } from './journal.js'

export interface RecoveryAction {
  journal: string
  targetPid: number | null
  snapPid: number | null
  outcome: 'recovered' | 'target-gone' | 'in-progress' | 'unreadable' | 'failed'
  actions: string[]
}

function killLeftoverTool(pid: number, entry: JournalEntry, actions: string[]): void {
  const s = readStat(pid)
  // A tool snap started is younger than snap itself; an older process with that pid is not ours.
  if (!s || s.startTime < entry.snapStartTime) return
  try {
    process.kill(-pid, 'SIGKILL')
  } catch {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      return
    }
  }
  actions.push(`killed leftover ${s.comm} (pid ${pid})`)
}

export async function recoverAll(): Promise<RecoveryAction[]> {
  const out: RecoveryAction[] = []
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
    for (const pid of entry.toolPids) killLeftoverTool(pid, entry, actions)
    let outcome: RecoveryAction['outcome'] = 'recovered'
    const check = checkIdentity(entry.target)
    if (check !== 'same') {
      outcome = 'target-gone'
      actions.push(check === 'gone' ? `target ${entry.target.pid} has exited` : `pid ${entry.target.pid} now belongs to another process; not touched`)
    } else if (entry.touched) {
      try {
        await bringToFinalState(entry.target, entry.restoreTo, 5000)
        actions.push(`target ${entry.target.pid} ${entry.restoreTo === 'running' ? 'resumed' : 'left stopped, as it was found'}`)
      } catch (e) {
        outcome = 'failed'
        actions.push(`could not put target ${entry.target.pid} back: ${(e as Error).message}`)
      }
    } else {
      actions.push(`target ${entry.target.pid} was never signalled`)
    }
    for (const p of [entry.partialPath, entry.workDir]) {
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
