// What a dead snap left that no journal names: half-written journal and lock files, locks whose journal is gone,
// snap's own nftables lock tables, and what was made for an isolated copy whose root is gone.

import { readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { readStat } from '../../process/proc.js'
import { deleteSnapTable, nftSnapTables, snapTableOwner } from '../../tools/network-lock.js'
import { keptLocks } from '../kept-locks.js'
import { endCopy, listCopies } from '../copies.js'
import { journalDirs, listJournals, removeJournalFile } from '../journal.js'
import { listLockFiles, lockOwnerAlive, readLock, type LockEntry } from '../locks.js'
import { Actions, removeLocks, type RecoverOptions, type RecoveryAction } from './actions.js'

/**
 * A journal update is written to target-PID.json.tmp-SNAPPID, then renamed; a new journal or lock is written to
 * NAME.tmp-SNAPPID-RANDOM, then linked into place: a snap killed in between leaves the temporary file.
 */
export async function removeHalfWrittenUpdates(out: RecoveryAction[], o: RecoverOptions): Promise<void> {
  for (const dir of journalDirs()) await removeHalfWrittenIn(dir, out, o)
}

async function removeHalfWrittenIn(dir: string, out: RecoveryAction[], o: RecoverOptions): Promise<void> {
  let names: string[] = []
  try {
    names = readdirSync(dir)
  } catch {
    return
  }
  for (const name of names) {
    const m = /^(?:target-(\d+)\.json|(pid-\d+(?:-\d+)?\.lock))\.tmp-(\d+)(?:-[0-9a-f]+)?$/.exec(name)
    if (!m || readStat(Number(m[3]))) continue
    const path = join(dir, name)
    const lock = m[2] !== undefined ? readLock(path) : undefined
    const targetPid = m[1] !== undefined ? Number(m[1]) : lock && lock !== 'unreadable' ? lock.targetPid : null
    if (o.pid !== undefined && targetPid !== o.pid) continue
    const what = m[1] !== undefined ? 'a half-written journal update' : 'a half-written lock'
    const actions = new Actions(o.dryRun ?? false)
    await actions.run(`remove ${what}`, () => `removed ${what}`, () => removeJournalFile(path))
    out.push({ journal: path, targetPid, snapPid: Number(m[3]), outcome: 'unreadable', actions: actions.list })
  }
}

/**
 * Locks whose snap is dead and whose journal is gone (a snap killed while it let go of them, say): removed. Unreadable
 * ones are reported and left in place. Locks of a journal still there are that journal's (left with it when its
 * recovery failed).
 */
export async function recoverOrphanLocks(out: RecoveryAction[], o: RecoverOptions): Promise<void> {
  const journals = listJournals().flatMap((j) => (j.entry ? [j.entry] : []))
  const owners = new Map<string, { path: string; lock: LockEntry }[]>()
  for (const { path } of journalDirs().flatMap((dir) => listLockFiles(dir))) {
    const lock = readLock(path)
    if (lock === undefined) continue
    if (lock === 'unreadable') {
      if (o.pid !== undefined) continue
      out.push({
        journal: path,
        targetPid: null,
        snapPid: null,
        outcome: 'unreadable',
        actions: [`left in place: the lock ${path} cannot be read; if no snap is running, remove it`],
      })
      continue
    }
    if (o.pid !== undefined && lock.targetPid !== o.pid) continue
    if (lockOwnerAlive(lock) || journals.some((j) => j.snapPid === lock.snapPid && j.snapStartTime === lock.snapStartTime)) continue
    const key = `${lock.snapPid}:${lock.snapStartTime}:${lock.targetPid}`
    owners.set(key, [...(owners.get(key) ?? []), { path, lock }])
  }
  for (const locks of owners.values()) {
    const { snapPid, targetPid } = locks[0]!.lock
    const actions = new Actions(o.dryRun ?? false)
    actions.note(`snap ${snapPid} is gone and left no journal`)
    await removeLocks(locks, actions)
    out.push({ journal: join(dirname(locks[0]!.path), `target-${targetPid}.json`), targetPid, snapPid, outcome: 'recovered', actions: actions.list })
  }
}

/** snap's own lock tables whose snap is gone (its journal already handled, or lost): nothing else will remove them. */
export async function removeOrphanSnapTables(out: RecoveryAction[], o: RecoverOptions): Promise<void> {
  // A lock kept for a restore (dump --leave killed) outlives its snap on purpose: the restore lifts it.
  const kept = keptLocks()
  for (const table of await nftSnapTables()) {
    const owner = snapTableOwner(table)
    if (!owner || readStat(owner.pid)?.startTime === owner.startTime || kept.has(table)) continue
    const actions = new Actions(o.dryRun ?? false)
    await actions.run(`remove nftables table inet ${table} (the network lock of snap ${owner.pid}, which is gone)`, (ok) => (ok ? `removed nftables table inet ${table}` : undefined), () => deleteSnapTable(table))
    out.push({ journal: table, targetPid: null, snapPid: owner.pid, outcome: 'recovered', actions: actions.list })
  }
}

/**
 * Isolated copies whose restored root is gone (it exited, or the host's copy was killed by hand): what was made for
 * them (port forwarders, cgroups, the record) ends with them. A copy that still runs was asked for, and is left alone:
 * `copies --end` ends it.
 */
export async function endDeadCopies(out: RecoveryAction[], o: RecoverOptions): Promise<void> {
  for (const c of listCopies()) {
    if (c.alive) continue
    const actions = new Actions(o.dryRun ?? false)
    await actions.run(
      `end what is left of the isolated copy ${c.record.root.pid} (its root is gone): its forwarders, its namespaces' holder, its cgroups, its record`,
      (r) => (r.left.length === 0 ? `ended what was left of the isolated copy ${c.record.root.pid}${r.killed.length ? ` (killed ${r.killed.join(', ')})` : ''}` : `could not end all of the copy ${c.record.root.pid}: ${r.left.join('; ')}`),
      () => endCopy(c.record),
    )
    out.push({ journal: c.path, targetPid: c.record.root.pid, snapPid: null, outcome: 'recovered', actions: actions.list })
  }
}
