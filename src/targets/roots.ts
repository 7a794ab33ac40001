// From a set of matching processes to the roots of their trees. A dump takes a whole tree, so a match below another
// match (a worker under its master, a thread pool's helper under its server) is part of that match's tree, not a
// second target; only matches with no matching ancestor are roots.

import type { ProcessEntry } from './naming.js'

/** The matches that have no matching ancestor, in pid order. `table` gives the parents (it may hold more than the
 *  matches); an ancestor loop (a pid reused while the table was read) ends the walk. */
export function treeRoots(matches: ProcessEntry[], table: ProcessEntry[]): ProcessEntry[] {
  const byPid = new Map(table.map((p) => [p.pid, p]))
  for (const m of matches) byPid.set(m.pid, m)
  const matching = new Set(matches.map((m) => m.pid))
  const roots = matches.filter((m) => {
    const seen = new Set([m.pid])
    for (let pid = m.ppid; pid > 0 && !seen.has(pid); pid = byPid.get(pid)?.ppid ?? 0) {
      if (matching.has(pid)) return false
      seen.add(pid)
    }
    return true
  })
  return roots.sort((a, b) => a.pid - b.pid)
}
