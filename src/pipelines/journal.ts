// The journal: a small file per target, written before the first signal and updated at each step, so that if snap
// dies a later `snap recover` knows what to put back. Creating it exclusively is also the per-target lock; the locks
// on every other process of the tree (locks.ts) are taken through it and released with it.

import type { NetworkLockRecord } from '../tools/network-lock.js'
import type { ThreadSignalRecord } from '../tools/thread-leftovers.js'
import { mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync, unlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { configValue } from '../environment.js'
import { LockedError } from '../errors.js'
import type { TargetIdentity } from '../process/identity.js'
import { readStat } from '../process/proc.js'
import { claimPid, createExclusive, lockProcess, removeFile, type LockConflict, type LockOwner, type LockResult } from './locks.js'

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
  /** The network lock the dump's connections are held by while criu dumps them: what recover removes if snap died
   *  with it on the host (see src/tools/network-lock.ts). */
  networkLock?: NetworkLockRecord
  /** Each thread's signals as the tree was stopped, before criu ran: what recover puts back where a criu killed
   *  inside a thread left its own (see src/tools/thread-leftovers.ts). */
  threadSignals?: ThreadSignalRecord[]
  /** `dump --leave killed`: criu ended the tree at the end of its dump, and its images are all there is of the process
   *  until the bundle is sealed. A snap that dies then leaves them, and the lock on the connections, for a restore. */
  killedByCriu?: { images: string }
  /** A restore's own processes, each recorded with its start time (field 22 of /proc/PID/stat) the moment criu's
   *  pidfile or /proc showed it: all that a failed restore, or `snap recover` after one, ever signals. */
  restored?: TargetIdentity[]
  startedAt: string
  updatedAt: string
}

export function journalDir(): string {
  return configValue('JOURNAL_DIR') ?? defaultJournalDir('procsnap')
}

/** /run/procsnap for root, else the user's runtime directory; `name` is what earlier versions called it (`snap`). */
function defaultJournalDir(name: string): string {
  const isRoot = process.getuid?.() === 0
  if (isRoot) return join('/run', name)
  if (process.env.XDG_RUNTIME_DIR) return join(process.env.XDG_RUNTIME_DIR, name)
  return join(tmpdir(), `${name}-${process.getuid?.() ?? 'user'}`)
}

/**
 * Where versions before the rename kept their journals (/run/snap: snapd's namespace). A journal an older snap left
 * there when it died is still found, listed and recovered, and still holds its target; new ones are never written
 * there. None when the journal directory is set explicitly: then that directory is the only one.
 */
export function legacyJournalDir(): string | undefined {
  if (configValue('JOURNAL_DIR') !== undefined) return undefined
  const dir = defaultJournalDir('snap')
  return dir === journalDir() ? undefined : dir
}

/** Every directory journals are read from: the journal directory, then the legacy one. */
export function journalDirs(): string[] {
  const legacy = legacyJournalDir()
  return legacy ? [journalDir(), legacy] : [journalDir()]
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
  return journalDirs().flatMap((dir) => {
    let names: string[] = []
    try {
      names = readdirSync(dir)
    } catch {
      return []
    }
    return names
      .filter((n) => /^target-\d+\.json$/.test(n))
      .map((n) => join(dir, n))
      .map((path) => ({ path, entry: readJournal(path) }))
  })
}

/** Journals whose snap is gone: work for `snap recover`. */
export function staleJournals(): { path: string; entry: JournalEntry }[] {
  return listJournals().filter((j): j is { path: string; entry: JournalEntry } => !!j.entry && !snapIsAlive(j.entry))
}

/**
 * The stale journals this user can act on, for the warning every command prints: root can recover any; anyone else
 * only a journal that is their own file, about a target that is gone or theirs (another user's process cannot be put
 * back by them, and a warning about it is noise they cannot silence).
 */
export function actionableStaleJournals(euid = process.geteuid?.() ?? 0): { path: string; entry: JournalEntry }[] {
  return staleJournals().filter((j) => canActOn(j, euid))
}

export function canActOn(j: { path: string; entry: JournalEntry }, euid: number): boolean {
  if (euid === 0) return true
  try {
    if (statSync(j.path).uid !== euid) return false
  } catch {
    return false
  }
  const owner = processOwner(j.entry.target.pid)
  return owner === undefined || owner === euid
}

/** The real uid of a live process (from /proc/PID/status), or undefined when it is gone. */
function processOwner(pid: number): number | undefined {
  try {
    const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) : undefined
  } catch {
    return undefined
  }
}

export class Journal {
  readonly path: string
  private entry: JournalEntry

  private constructor(path: string, entry: JournalEntry) {
    this.path = path
    this.entry = entry
  }

  /**
   * Takes the per-target lock by creating the journal exclusively (written whole, then linked into place: see
   * createExclusive). If a journal exists, its snap is either alive (another dump is running: refuse) or dead (it
   * needs `snap recover` first: refuse, and say so).
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
    // A journal an older snap left in the legacy directory holds its target as one here would.
    const legacy = legacyJournalDir()
    const legacyPath = legacy === undefined ? undefined : join(legacy, `target-${init.target.pid}.json`)
    // A journal removed between our create and our read (its snap just finished) is tried again.
    for (let attempt = 0; attempt < 20; attempt++) {
      let text: string
      let held = path
      try {
        text = readFileSync(legacyPath ?? '', 'utf8')
        held = legacyPath!
      } catch {
        if (createExclusive(path, JSON.stringify(entry, null, 2))) return new Journal(path, entry)
        try {
          text = readFileSync(path, 'utf8')
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ENOENT') continue
          throw e
        }
      }
      let other: JournalEntry | undefined
      try {
        other = JSON.parse(text) as JournalEntry
      } catch {
        // Journals appear whole, so this one is damaged, not being written: say so, and never guess whose it is.
        throw new LockedError(`the journal ${held} of target ${init.target.pid} cannot be read`, `if no snap is working on target ${init.target.pid}, remove it and try again`)
      }
      if (snapIsAlive(other))
        throw new LockedError(
          `another snap (pid ${other.snapPid}) is already working on target ${init.target.pid} (step: ${other.step})`,
          'wait for it to finish',
        )
      throw new LockedError(`a previous snap (pid ${other.snapPid}) died while working on target ${init.target.pid}`, 'run `snap recover` first')
    }
    throw new LockedError(`the journal ${path} of target ${init.target.pid} keeps appearing and disappearing`, 'try again')
  }

  private readonly locks: string[] = []

  private get owner(): LockOwner {
    return { operation: this.entry.operation, snapPid: this.entry.snapPid, snapStartTime: this.entry.snapStartTime, targetPid: this.entry.target.pid }
  }

  /**
   * A dump's lock on each process of its tree (the root too), before any signal. All or none: on a refusal the locks
   * this call took are let go, and the LockedError names the snap that holds the process and its target. A process
   * that exited meanwhile is not locked (there is nothing to lock; the stop finds it gone).
   */
  lockProcesses(ids: { pid: number; startTime: number }[]): void {
    this.takeAll(ids.map((id) => ({ pid: id.pid, take: () => lockProcess(journalDir(), this.owner, id) })))
  }

  /** A restore's claim on each pid it is to create: two restores, or a restore and a dump, never share one. */
  claimPids(pids: number[]): void {
    this.takeAll(pids.map((pid) => ({ pid, take: () => claimPid(journalDir(), this.owner, pid) })))
  }

  private takeAll(wanted: { pid: number; take: () => LockResult }[]): void {
    const taken: string[] = []
    for (const w of wanted) {
      const r = w.take()
      if ('taken' in r) taken.push(r.taken)
      else if ('conflict' in r) {
        for (const p of taken) removeFile(p)
        throw this.refusal(r.conflict, w.pid)
      }
    }
    this.locks.push(...taken)
  }

  /** One line naming who holds the process, as the journal's own refusal does for a target. */
  private refusal(c: LockConflict, pid: number): LockedError {
    const mine = pid === this.entry.target.pid ? `target ${pid}` : `process ${pid} of this tree`
    if (c.why === 'unreadable') return new LockedError(`the lock ${c.path} on ${mine} cannot be read`, `if no snap is working on process ${pid}, remove it and try again`)
    const l = c.lock
    const theirs = l.targetPid !== pid ? `in the tree of its target ${l.targetPid}` : pid !== this.entry.target.pid ? 'its target' : ''
    if (c.why === 'dead') return new LockedError(`a previous snap (pid ${l.snapPid}) died while working on ${mine}${theirs ? ` (${theirs})` : ''}`, 'run `snap recover` first')
    const journal = readJournal(pathFor(l.targetPid))
    const step = journal && journal.snapPid === l.snapPid && journal.snapStartTime === l.snapStartTime ? `step: ${journal.step}` : ''
    const detail = [theirs, step].filter(Boolean).join('; ')
    return new LockedError(
      `another snap (pid ${l.snapPid}) is already ${l.operation === 'restore' ? 'restoring' : 'working on'} ${mine}${detail ? ` (${detail})` : ''}`,
      'wait for it to finish',
    )
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

  /** Adds processes to `restored` and writes the journal at once, before anything could signal them; a process
   *  recorded already (same pid and start time) is not written again. */
  recordRestored(ids: TargetIdentity[]): void {
    const known = this.entry.restored ?? []
    const fresh = ids.filter((id, i) => !known.some((k) => sameProcess(k, id)) && ids.findIndex((o) => sameProcess(o, id)) === i)
    if (fresh.length > 0) this.update({ restored: [...known, ...fresh] })
  }

  update(patch: Partial<JournalEntry>): void {
    this.entry = { ...this.entry, ...this.withStartTimes(patch), updatedAt: new Date().toISOString() }
    // Write-then-rename so a crash mid-write never leaves a half journal.
    const tmp = `${this.path}.tmp-${process.pid}`
    writeFileSync(tmp, JSON.stringify(this.entry, null, 2), { mode: 0o600 })
    renameSync(tmp, this.path)
  }

  /** Lets go of every lock, then of the journal: a snap that dies in between leaves a journal, which recover reads,
   *  rather than locks no journal explains. */
  remove(): void {
    for (const p of this.locks.splice(0)) removeFile(p)
    removeFile(this.path)
  }
}

function sameProcess(a: TargetIdentity, b: TargetIdentity): boolean {
  return a.pid === b.pid && a.startTime === b.startTime && a.bootId === b.bootId
}

export function removeJournalFile(path: string): void {
  try {
    unlinkSync(path)
  } catch {
    // already gone
  }
}
