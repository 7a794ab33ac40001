// Locks on processes, one file each in the journal directory, so that two snaps whose trees share a process (a dump of
// a master and one of its workers, a dump and a restore) never work on it at once: each would take the other's stop
// for the process's own and leave it frozen. The mechanism lives here; the journal (journal.ts) takes the locks of its
// operation, words the refusals and releases them with itself.
//
// A process is its pid and its start time: pids are reused. A dump's lock is named by both (pid-N-START.lock), so a
// lock left on a process that is gone never stands in the way of a later process with the same pid, and no lock file
// is ever replaced in place (replacing one safely would need a second lock). A restore claims pids that do not exist
// yet (pid-N.lock): a dump takes its lock and then looks for a claim, a restore takes its claim and then looks for a
// live dump lock, so of two that overlap at least one sees the other.

import { randomBytes } from 'node:crypto'
import { closeSync, constants, linkSync, openSync, readdirSync, readFileSync, unlinkSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { readBootId, readStat } from '../process/proc.js'

export interface LockEntry {
  version: 1
  pid: number
  /** The locked process's start time; null in a restore's claim on a pid it is to create (no process has it yet). */
  startTime: number | null
  bootId: string
  operation: 'dump' | 'restore'
  /** The snap that holds the lock, named by its pid and start time. */
  snapPid: number
  snapStartTime: number
  /** The owner's target (the root of its tree): what a refused snap names. */
  targetPid: number
  createdAt: string
}

export type LockOwner = Pick<LockEntry, 'operation' | 'snapPid' | 'snapStartTime' | 'targetPid'>

/** Why a lock could not be taken: a live snap holds it, a dead one left it, or the file cannot be read. */
export type LockConflict = { why: 'held' | 'dead'; path: string; lock: LockEntry } | { why: 'unreadable'; path: string }

export type LockResult = { taken: string } | { ours: string } | { gone: true } | { conflict: LockConflict }

const LOCK_FILE = /^pid-(\d+)(?:-(\d+))?\.lock$/

export function processLockName(pid: number, startTime: number): string {
  return `pid-${pid}-${startTime}.lock`
}

export function pidClaimName(pid: number): string {
  return `pid-${pid}.lock`
}

/**
 * Creates path holding text, or returns false if it exists. The text is written whole under a temporary name in the
 * same directory and linked into place: link() fails with EEXIST when the name is taken, which makes it the exclusive
 * create, and a reader never sees the file empty or half written. The temporary name carries snap's pid, so `snap
 * recover` can tell a leftover of a dead snap from one being written.
 */
export function createExclusive(path: string, text: string): boolean {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
  try {
    writeSync(fd, text)
  } finally {
    closeSync(fd)
  }
  try {
    linkSync(tmp, path)
    return true
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false
    throw e
  } finally {
    removeFile(tmp)
  }
}

export function removeFile(path: string): void {
  try {
    unlinkSync(path)
  } catch {
    // already gone
  }
}

/** The lock in path; undefined when it is gone, 'unreadable' when it is there but not a lock. */
export function readLock(path: string): LockEntry | 'unreadable' | undefined {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT' ? undefined : 'unreadable'
  }
  try {
    const l = JSON.parse(text) as LockEntry
    const ints = [l.pid, l.snapPid, l.snapStartTime, l.targetPid]
    if (!ints.every((n) => Number.isInteger(n)) || (l.startTime !== null && !Number.isInteger(l.startTime))) return 'unreadable'
    if (l.operation !== 'dump' && l.operation !== 'restore') return 'unreadable'
    return l
  } catch {
    return 'unreadable'
  }
}

/** The owner is this very process: a pid locked twice by one snap is simply held. */
function isMine(l: LockOwner): boolean {
  return l.snapPid === process.pid && l.snapStartTime === readStat(process.pid)?.startTime
}

/** The snap that took the lock is still running (same boot, same pid, same start time, not a zombie). */
export function lockOwnerAlive(l: LockEntry): boolean {
  if (l.bootId !== readBootId()) return false
  const s = readStat(l.snapPid)
  return !!s && s.startTime === l.snapStartTime && s.state !== 'Z' && s.state !== 'X'
}

/**
 * A dump's lock whose process is gone (its pid free, or now another process's): it stands in no one's way. A claim
 * names no process, and a lock of another boot is judged by its owner (dead), never by a process of this boot that
 * happens to have the same pid and start time.
 */
function lockedProcessGone(l: LockEntry): boolean {
  if (l.startTime === null || l.bootId !== readBootId()) return false
  const s = readStat(l.pid)
  return !s || s.startTime !== l.startTime || s.state === 'Z' || s.state === 'X'
}

function judge(path: string, l: LockEntry | 'unreadable'): LockConflict | undefined {
  if (l === 'unreadable') return { why: 'unreadable', path }
  if (isMine(l) || lockedProcessGone(l)) return undefined
  return { why: lockOwnerAlive(l) ? 'held' : 'dead', path, lock: l }
}

function entryFor(owner: LockOwner, pid: number, startTime: number | null): string {
  const entry: LockEntry = { version: 1, pid, startTime, bootId: readBootId(), ...owner, createdAt: new Date().toISOString() }
  return JSON.stringify(entry, null, 2)
}

/** Takes path, or says who has it. A lock let go between our create and our read is tried again. */
function take(path: string, text: string, onExisting: (l: LockEntry | 'unreadable') => LockResult, after: () => LockConflict | undefined): LockResult {
  for (let attempt = 0; attempt < 20; attempt++) {
    if (createExclusive(path, text)) {
      const conflict = after()
      if (!conflict) return { taken: path }
      removeFile(path)
      return { conflict }
    }
    const existing = readLock(path)
    if (existing !== undefined) return onExisting(existing)
  }
  return { conflict: { why: 'unreadable', path } }
}

/** A dump's lock on one process (pid and start time). */
export function lockProcess(dir: string, owner: LockOwner, id: { pid: number; startTime: number }): LockResult {
  const path = join(dir, processLockName(id.pid, id.startTime))
  return take(
    path,
    entryFor(owner, id.pid, id.startTime),
    (l) => {
      if (l !== 'unreadable' && isMine(l)) return { ours: path }
      // Held by a snap whose process has exited since: there is nothing left to fight over; the caller finds it gone.
      if (l !== 'unreadable' && lockedProcessGone(l)) return { gone: true }
      return { conflict: judge(path, l)! }
    },
    () => {
      // A restore that claimed this pid may have made this very process: it is the restore's until it ends.
      const claim = join(dir, pidClaimName(id.pid))
      const l = readLock(claim)
      return l === undefined ? undefined : judge(claim, l)
    },
  )
}

/** A restore's claim on a pid it is to create. */
export function claimPid(dir: string, owner: LockOwner, pid: number): LockResult {
  const path = join(dir, pidClaimName(pid))
  return take(
    path,
    entryFor(owner, pid, null),
    (l) => (l !== 'unreadable' && isMine(l) ? { ours: path } : { conflict: judge(path, l) ?? { why: 'unreadable', path } }),
    () => {
      // A dump's lock on the process that has this pid now: only a live one is in the way.
      for (const { path: other, pid: p, startTime } of listLockFiles(dir)) {
        if (p !== pid || startTime === null) continue
        const l = readLock(other)
        const conflict = l === undefined ? undefined : judge(other, l)
        if (conflict) return conflict
      }
      return undefined
    },
  )
}

/** Every lock file of the directory, with the pid (and start time) its name gives. */
export function listLockFiles(dir: string): { path: string; pid: number; startTime: number | null }[] {
  let names: string[] = []
  try {
    names = readdirSync(dir)
  } catch {
    return []
  }
  return names.flatMap((n) => {
    const m = LOCK_FILE.exec(n)
    return m ? [{ path: join(dir, n), pid: Number(m[1]), startTime: m[2] === undefined ? null : Number(m[2]) }] : []
  })
}

/** The lock files (read) a given snap holds. */
export function locksOf(dir: string, snap: { snapPid: number; snapStartTime: number }): { path: string; lock: LockEntry }[] {
  return listLockFiles(dir).flatMap(({ path }) => {
    const l = readLock(path)
    return l && l !== 'unreadable' && l.snapPid === snap.snapPid && l.snapStartTime === snap.snapStartTime ? [{ path, lock: l }] : []
  })
}
