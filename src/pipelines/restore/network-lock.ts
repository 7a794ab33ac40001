// The lock a `dump --leave killed` kept on the tree's connections (manifest networkLockKept, see kept-locks.ts): their
// peers have retransmitted into it since the dump. Once the tree is back with its sockets, the lock goes and the
// retransmissions reach it; a copy sealed off from its peers (--isolate) leaves it for the restore in place.

import { deleteSnapTable, nftSnapTables } from '../../tools/network-lock.js'
import { forgetKeptLock } from '../kept-locks.js'
import { manifestOf, warn, type RestoreRunState } from './state.js'

/** Returns what it did, for the record; nothing when the bundle kept no lock or it is gone already. */
export async function liftKeptLock(s: RestoreRunState): Promise<string | undefined> {
  const kept = manifestOf(s).networkLockKept
  if (!kept) return undefined
  if (!(await nftSnapTables()).includes(kept.table)) {
    forgetKeptLock(kept.table)
    return undefined
  }
  if (s.o.isolate) {
    warn(s, `the original's ${kept.connections} connection(s) stay locked (nftables table inet ${kept.table}) for a restore in place; \`nft delete table inet ${kept.table}\` if none will come`)
    return undefined
  }
  if (!(await deleteSnapTable(kept.table))) {
    warn(s, `could not lift the lock on the restored connections: run \`nft delete table inet ${kept.table}\``)
    return undefined
  }
  forgetKeptLock(kept.table)
  return `the lock kept since the dump on ${kept.connections} connection(s) lifted (table inet ${kept.table})`
}
