// What one recovery did (or, in a dry run, would do), as `recover` reports it: each side effect runs and is said in the
// past tense, or only said. Shared by the recovery of journals (index.ts) and of what no journal names (orphans.ts).

import { removeFile, type LockEntry } from '../locks.js'

export interface RecoveryAction {
  journal: string
  targetPid: number | null
  snapPid: number | null
  /** With --dry-run, what the outcome would be. */
  outcome: 'recovered' | 'target-gone' | 'in-progress' | 'unreadable' | 'failed'
  /** What was done, in order; with --dry-run, what would be done ("would ..."). */
  actions: string[]
}

export interface RecoverOptions {
  /** Only the journal of this target (its pid as the journal names it). */
  pid?: number
  /** Say what would be done, and do nothing. */
  dryRun?: boolean
}

/** The actions of one journal: each side effect runs and is said in the past tense, or in a dry run only said. */
export class Actions {
  readonly list: string[] = []
  constructor(readonly dryRun: boolean) {}

  /** A fact found, not an action. */
  note(text: string): void {
    this.list.push(text)
  }

  /** Runs `act` unless this is a dry run; records `done`, or `would` in a dry run. */
  async run<T>(would: string, done: (result: T) => string | undefined, act: () => T | Promise<T>): Promise<T | undefined> {
    if (this.dryRun) {
      this.list.push(`would ${would}`)
      return undefined
    }
    const result = await act()
    const text = done(result)
    if (text) this.list.push(text)
    return result
  }
}

/** Removes the locks a dead snap held, or says it would. */
export async function removeLocks(locks: { path: string; lock: LockEntry }[], actions: Actions): Promise<void> {
  if (locks.length === 0) return
  const pids = [...new Set(locks.map((l) => l.lock.pid))].sort((a, b) => a - b).join(', ')
  const what = `the lock${locks.length === 1 ? '' : 's'} on ${locks.length === 1 ? 'process' : 'processes'} ${pids}`
  await actions.run(`remove ${what}`, () => `removed ${what}`, () => {
    for (const l of locks) removeFile(l.path)
  })
}
