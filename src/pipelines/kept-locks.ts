// A network lock kept on purpose: `dump --leave killed` ends the tree with its TCP connections locked, so that their
// peers see neither a reset nor a close and retransmit into the lock until `snap restore` brings the sockets back and
// lifts it (criu's migration). Such a table outlives the snap that set it, so `recover` and `doctor` would take it for
// an orphan: a record beside the journals says which bundle it waits for. /run is emptied at boot, as the tables are.

import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { snapTableOwner } from '../tools/network-lock.js'
import { journalDir } from './journal.js'

export interface KeptLock {
  /** snap's nftables table (inet family). */
  table: string
  /** The bundle whose restore lifts it. */
  bundle: string
  connections: number
  keptAt: string
}

const dir = () => join(journalDir(), 'kept-locks')

export function recordKeptLock(lock: KeptLock): void {
  if (!snapTableOwner(lock.table)) return
  mkdirSync(dir(), { recursive: true, mode: 0o700 })
  writeFileSync(join(dir(), `${lock.table}.json`), JSON.stringify(lock) + '\n', { mode: 0o600 })
}

export function forgetKeptLock(table: string): void {
  if (snapTableOwner(table)) rmSync(join(dir(), `${table}.json`), { force: true })
}

/** The kept locks by table. A record that cannot be read is no record: its table is then treated as any other. */
export function keptLocks(): Map<string, KeptLock> {
  const out = new Map<string, KeptLock>()
  let names: string[]
  try {
    names = readdirSync(dir())
  } catch {
    return out
  }
  for (const name of names) {
    const table = name.replace(/\.json$/, '')
    if (!snapTableOwner(table)) continue
    try {
      const path = join(dir(), name)
      // Root's own directory, as the journals are; a record is a few hundred bytes.
      if (statSync(path).size > 64 * 1024) continue
      const record = JSON.parse(readFileSync(path, 'utf8')) as Partial<KeptLock> | null
      if (record && record.table === table && typeof record.bundle === 'string') out.set(table, record as KeptLock)
    } catch {
      continue
    }
  }
  return out
}

/**
 * What `--leave killed` keeps when no bundle holds the process (the seal failed, or snap died before it): the images
 * where they are, and the lock on the connections, recorded as kept so that their restore finds it. Returns what to
 * tell the engineer: where the images are, the restore that brings the process back (`restore`), the lock's table.
 */
export function keepEndedTree(o: { images: string; restore: string; lock?: { table: string; connections: number }; record?: boolean }): string {
  if (o.lock && o.record !== false) recordKeptLock({ table: o.lock.table, bundle: o.images, connections: o.lock.connections, keptAt: new Date().toISOString() })
  return (
    `its images are kept in ${o.images} (${o.restore} brings it back)` +
    (o.lock ? `; its connections stay locked for that restore (\`nft delete table inet ${o.lock.table}\` once it is restored or given up)` : '')
  )
}
