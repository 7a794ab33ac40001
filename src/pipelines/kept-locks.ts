// A network lock kept on purpose: `dump --leave killed` ends the tree with its TCP connections locked, so that their
// peers see neither a reset nor a close and retransmit into the lock until `snap restore` brings the sockets back and
// lifts it (criu's migration). Such a table outlives the snap that set it, so `recover` and `doctor` would take it for
// an orphan: a record beside the journals says which bundle it waits for. /run is emptied at boot, as the tables are.

import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
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
const TABLE = /^procsnap-\d+-\d+$/

export function recordKeptLock(lock: KeptLock): void {
  if (!TABLE.test(lock.table)) return
  mkdirSync(dir(), { recursive: true, mode: 0o700 })
  writeFileSync(join(dir(), `${lock.table}.json`), JSON.stringify(lock) + '\n', { mode: 0o600 })
}

export function forgetKeptLock(table: string): void {
  if (TABLE.test(table)) rmSync(join(dir(), `${table}.json`), { force: true })
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
    if (!TABLE.test(table)) continue
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
