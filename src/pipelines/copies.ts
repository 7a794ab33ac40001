// Isolated copies (restore --isolate) outlive the restore that made them: each is recorded beside the journals, with
// every process that belongs to it (the namespaces' holder and init, the restored root, the port forwarders) by pid and
// start time, and the cgroups made for it. `procsnap copies` lists them and ends one; `recover` ends what a dead copy
// left behind. Ending a copy signals only what its record names, each while its pid still has the recorded start time.

import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { checkIdentity, signalRecorded, type TargetIdentity } from '../process/identity.js'
import { pollUntil } from '../process/poll.js'
import { removeCopyCgroups } from '../process/cgroup-limits.js'
import { journalDir, removeJournalFile } from './journal.js'

export interface CopyRecord {
  version: 1
  bundle: string
  /** The restored root, as this host sees it. */
  root: TargetIdentity
  /** criu, the init of the copy's pid namespace: when it dies the kernel kills every process of the namespace. */
  init: TargetIdentity
  /** unshare, which made the namespaces and holds criu as its child. */
  holder: TargetIdentity
  forwarders: (TargetIdentity & { hostPort: number; port: number })[]
  cgroups: string[]
  /** The command that enters the copy's namespaces. */
  enter: string
  createdAt: string
}

export function copiesDir(): string {
  return join(journalDir(), 'copies')
}

function pathOf(r: CopyRecord): string {
  return join(copiesDir(), `copy-${r.root.pid}-${r.root.startTime}.json`)
}

/** Written whole, then renamed into place: a reader never sees half a record. */
export function writeCopyRecord(r: CopyRecord): string {
  mkdirSync(copiesDir(), { recursive: true, mode: 0o700 })
  const path = pathOf(r)
  const tmp = `${path}.${process.pid}.tmp`
  writeFileSync(tmp, JSON.stringify(r, null, 2) + '\n', { mode: 0o600 })
  renameSync(tmp, path)
  return path
}

export interface ListedCopy {
  path: string
  record: CopyRecord
  /** Whether the copy's root still runs (its pid with its recorded start time). */
  alive: boolean
}

export function listCopies(): ListedCopy[] {
  let names: string[]
  try {
    names = readdirSync(copiesDir())
  } catch {
    return []
  }
  const out: ListedCopy[] = []
  for (const name of names.filter((n) => /^copy-\d+-\d+\.json$/.test(n)).sort()) {
    const path = join(copiesDir(), name)
    try {
      const record = JSON.parse(readFileSync(path, 'utf8')) as CopyRecord
      if (record.version !== 1 || !record.root || !record.init) continue
      out.push({ path, record, alive: checkIdentity(record.root) === 'same' })
    } catch {
      // unreadable or half-written by a writer that died before its rename: not a record
    }
  }
  return out
}

export interface EndedCopy {
  root: number
  /** Processes of the copy that were signalled (init, holder, forwarders). */
  killed: number[]
  /** What could not be removed or stopped, named. */
  left: string[]
}

/**
 * Ends a copy: its namespace's init first (the kernel then kills the whole copy), its holder, its forwarders; waits
 * until none of them is left, removes its cgroups and its record.
 */
export async function endCopy(r: CopyRecord, timeoutMs = 10_000): Promise<EndedCopy> {
  const members = [r.init, r.holder, ...r.forwarders]
  const killed: number[] = []
  for (const id of members) if (signalRecorded(id, 'SIGKILL') === 'signalled') killed.push(id.pid)
  const everyone = [r.root, ...members]
  const gone = await pollUntil(() => everyone.every((id) => checkIdentity(id) !== 'same'), { timeoutMs })
  const left: string[] = []
  if (!gone) left.push(`still running: ${everyone.filter((id) => checkIdentity(id) === 'same').map((id) => id.pid).join(', ')}`)
  // A cgroup is removable once its last process has been reaped, which may trail the kill by a moment.
  let cgroupsLeft = r.cgroups
  await pollUntil(() => (cgroupsLeft = removeCopyCgroups({ dirs: cgroupsLeft })).length === 0, { timeoutMs: 5000 })
  left.push(...cgroupsLeft.map((d) => `cgroup ${d}`))
  if (left.length === 0) removeJournalFile(pathOf(r))
  return { root: r.root.pid, killed, left }
}
