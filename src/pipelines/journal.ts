// The journal: a small file per target, written before the first signal and updated at each step, so that if snap
// dies a later `snap recover` knows what to put back. Creating it with O_EXCL is also the per-target lock.

import { closeSync, constants, mkdirSync, openSync, readdirSync, readFileSync, renameSync, writeFileSync, writeSync, unlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LockedError } from '../errors.js'
import type { TargetIdentity } from '../process/identity.js'
import { readStat } from '../process/proc.js'

export interface JournalEntry {
  version: 1
  operation: 'dump' | 'restore'
  snapPid: number
  snapStartTime: number
  target: TargetIdentity
  originalState: 'running' | 'stopped'
  /** What the target should be left as if snap dies now. */
  restoreTo: 'running' | 'stopped'
  /** Every process of the tree (the root too) and what each should be left as if snap dies now. */
  members?: { id: TargetIdentity; restoreTo: 'running' | 'stopped' }[]
  step: string
  /** True once a signal has been sent to the target. */
  touched: boolean
  output: string | null
  partialPath: string | null
  workDir: string | null
  toolPids: number[]
  /** Start time of each of toolPids (same order), so `snap recover` never kills a later process that got the pid. */
  toolStartTimes?: (number | null)[]
  startedAt: string
  updatedAt: string
}

export function journalDir(): string {
  if (process.env.SNAP_JOURNAL_DIR) return process.env.SNAP_JOURNAL_DIR
  const isRoot = process.getuid?.() === 0
  if (isRoot) return '/run/snap'
  if (process.env.XDG_RUNTIME_DIR) return join(process.env.XDG_RUNTIME_DIR, 'snap')
  return join(tmpdir(), `snap-${process.getuid?.() ?? 'user'}`)
}

function pathFor(pid: number): string {
  return join(journalDir(), `target-${pid}.json`)
}

export function snapIsAlive(e: Pick<JournalEntry, 'snapPid' | 'snapStartTime'>): boolean {
  const s = readStat(e.snapPid)
  return !!s && s.startTime === e.snapStartTime && s.state !== 'Z'
}

export function readJournal(path: string): JournalEntry | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as JournalEntry
  } catch {
    return undefined
  }
}

export function listJournals(): { path: string; entry: JournalEntry | undefined }[] {
  let names: string[] = []
  try {
    names = readdirSync(journalDir())
  } catch {
    return []
  }
  return names
    .filter((n) => /^target-\d+\.json$/.test(n))
    .map((n) => join(journalDir(), n))
    .map((path) => ({ path, entry: readJournal(path) }))
}

/** Journals whose snap is gone: work for `snap recover`. */
export function staleJournals(): { path: string; entry: JournalEntry }[] {
  return listJournals().filter((j): j is { path: string; entry: JournalEntry } => !!j.entry && !snapIsAlive(j.entry))
}

export class Journal {
  readonly path: string
  private entry: JournalEntry

  private constructor(path: string, entry: JournalEntry) {
    this.path = path
    this.entry = entry
  }

  /**
   * Takes the per-target lock by creating the journal exclusively. If a journal exists, its snap is either alive
   * (another dump is running: refuse) or dead (it needs `snap recover` first: refuse, and say so).
   */
  static open(init: Omit<JournalEntry, 'version' | 'snapPid' | 'snapStartTime' | 'startedAt' | 'updatedAt' | 'toolPids'>): Journal {
    mkdirSync(journalDir(), { recursive: true, mode: 0o700 })
    const path = pathFor(init.target.pid)
    const now = new Date().toISOString()
    const entry: JournalEntry = {
      version: 1,
      snapPid: process.pid,
      snapStartTime: readStat(process.pid)?.startTime ?? 0,
      toolPids: [],
      startedAt: now,
      updatedAt: now,
      ...init,
    }
    let fd: number
    try {
      fd = openSync(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e
      const other = readJournal(path)
      if (other && snapIsAlive(other))
        throw new LockedError(
          `another snap (pid ${other.snapPid}) is already working on target ${init.target.pid} (step: ${other.step})`,
          'wait for it to finish',
        )
      throw new LockedError(
        `a previous snap${other ? ` (pid ${other.snapPid})` : ''} died while working on target ${init.target.pid}`,
        'run `snap recover` first',
      )
    }
    try {
      writeSync(fd, JSON.stringify(entry, null, 2))
    } finally {
      closeSync(fd)
    }
    return new Journal(path, entry)
  }

  get current(): Readonly<JournalEntry> {
    return this.entry
  }

  /**
   * Takes the patch in without writing it: the next update() writes it with its own. For a tool that has exited while
   * the tree is frozen: each write is part of the freeze.
   */
  note(patch: Partial<JournalEntry>): void {
    this.entry = { ...this.entry, ...this.withStartTimes(patch) }
  }

  /** toolPids and toolStartTimes go together, index by index: each pid keeps the start time recorded with it, a new
   *  one gets its own from /proc. */
  private withStartTimes(patch: Partial<JournalEntry>): Partial<JournalEntry> {
    if (!patch.toolPids) return patch
    const known = new Map((this.entry.toolPids ?? []).map((pid, i) => [pid, this.entry.toolStartTimes?.[i] ?? null]))
    return { ...patch, toolStartTimes: patch.toolPids.map((pid) => (known.has(pid) ? known.get(pid)! : (readStat(pid)?.startTime ?? null))) }
  }

  update(patch: Partial<JournalEntry>): void {
    this.entry = { ...this.entry, ...this.withStartTimes(patch), updatedAt: new Date().toISOString() }
    // Write-then-rename so a crash mid-write never leaves a half journal.
    const tmp = `${this.path}.tmp-${process.pid}`
    writeFileSync(tmp, JSON.stringify(this.entry, null, 2), { mode: 0o600 })
    renameSync(tmp, this.path)
  }

  remove(): void {
    try {
      unlinkSync(this.path)
    } catch {
      // already gone
    }
  }
}

export function removeJournalFile(path: string): void {
  try {
    unlinkSync(path)
  } catch {
    // already gone
  }
}
