// Every process on the host, read once from /proc, for the resolvers that choose among them (by name, by cgroup).
// A scan of every pid: a process that exits or cannot be read while it is scanned is left out.

import { readdirSync } from 'node:fs'
import { readCmdline, readStat } from '../process/proc.js'
import type { ProcessEntry } from './naming.js'

export function readProcessEntry(pid: number): ProcessEntry | undefined {
  const s = readStat(pid)
  if (!s) return undefined
  return { pid, ppid: s.ppid, comm: s.comm, cmdline: readCmdline(pid).join(' '), state: s.state, startTime: s.startTime }
}

export function readProcessTable(): ProcessEntry[] {
  const out: ProcessEntry[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const entry = readProcessEntry(Number(name))
    if (entry) out.push(entry)
  }
  return out
}

/** This process and every ancestor of it: a name given on snap's own command line matches snap, and the shell or
 *  service manager that started it; none of them is ever the target. */
export function ownLineage(table: ProcessEntry[], self = process.pid): Set<number> {
  const byPid = new Map(table.map((p) => [p.pid, p]))
  const out = new Set<number>()
  for (let pid: number | undefined = self; pid !== undefined && pid > 0 && !out.has(pid); pid = byPid.get(pid)?.ppid) out.add(pid)
  return out
}
