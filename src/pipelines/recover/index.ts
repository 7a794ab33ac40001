// `snap recover`: finishes what a snap that died left half done. Each journal whose snap is gone names a target and
// the state it must be left in; the target is touched only if its pid still has the recorded start time. The locks a
// dead snap held on the processes of its tree go with its journal. A journal or lock that cannot be read is reported
// and left in place: files appear whole (createExclusive), so one that cannot be read is damaged, and nothing in it
// says whether its snap is still at work. What no journal names is recovered in orphans.ts.

import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { partialPrefix, workDirPrefix } from '../../bundle/output-path.js'
import { keepEndedTree } from '../kept-locks.js'
import { checkIdentity, signalRecorded, type TargetIdentity } from '../../process/identity.js'
import { bringToFinalState } from '../../process/stop.js'
import { pollUntil } from '../../process/poll.js'
import { readStat, tracerGroup } from '../../process/proc.js'
import { listJournals, removeJournalFile, snapIsAlive, type JournalEntry } from '../journal.js'
import { locksOf } from '../locks.js'
import { Actions, removeLocks, type RecoverOptions, type RecoveryAction } from './actions.js'
import { endDeadCopies, recoverOrphanLocks, removeHalfWrittenUpdates, removeOrphanSnapTables } from './orphans.js'
import { readPstreeImage } from '../../criu-images/pstree.js'
import { removeLeftoverLock } from '../../tools/network-lock.js'
import { leaveRepairMode } from '../../tools/tcp-repair.js'
import { parasiteSyscallIps, restoreSwappedCode } from '../../tools/parasite-leftovers.js'
import { checkRegisters, putBackSignalMasks } from '../../tools/thread-leftovers.js'

export type { RecoverOptions, RecoveryAction } from './actions.js'

/**
 * A tool is the leader of its own process group. When snap dies the kernel kills the leader (setpriv --pdeathsig),
 * but whatever the tool started lives on in the group: the group is what must go. While any member is left the kernel
 * does not hand the group's id out again, so with the leader gone every member is ours. With the leader still there,
 * it is ours only if it has the recorded start time (or, for an older journal, if it is younger than snap).
 */
async function killLeftoverTool(pid: number, startTime: number | null | undefined, entry: JournalEntry, actions: Actions): Promise<void> {
  const leader = readStat(pid)
  if (leader) {
    const ours = startTime != null ? leader.startTime === startTime : leader.startTime >= entry.snapStartTime
    if (!ours) return
  }
  const members = groupMembers(pid)
  if (members.length === 0) return
  const named = members.map((m) => `${m.comm} (pid ${m.pid})`).join(', ')
  await actions.run(`kill leftover ${named}`, (killed) => (killed ? `killed leftover ${named}` : undefined), () => {
    try {
      process.kill(-pid, 'SIGKILL')
      return true
    } catch {
      return false
    }
  })
}

/** One process back in the state its journal says, the outcome said in actions; false when it could not be. */
async function putBack(id: TargetIdentity, to: 'running' | 'stopped', what: 'target' | 'process', actions: Actions): Promise<boolean> {
  try {
    await actions.run(
      `${to === 'running' ? 'resume' : 'leave stopped, as it was found,'} ${what} ${id.pid}`,
      () => `${what} ${id.pid} ${to === 'running' ? 'resumed' : 'left stopped, as it was found'}`,
      () => bringToFinalState(id, to, 5000),
    )
    return true
  } catch (e) {
    actions.note(`could not put ${what} ${id.pid} back: ${(e as Error).message}`)
    return false
  }
}

/** Removes what a dead snap wrote (partial bundle, work directory), or says it would. */
async function removePaths(paths: (string | null | undefined)[], actions: Actions): Promise<void> {
  for (const p of new Set(paths)) {
    if (p && existsSync(p)) await actions.run(`remove ${p}`, () => `removed ${p}`, () => rmSync(p, { recursive: true, force: true }))
  }
}

/**
 * What a dead restore recorded as its own (pid and start time, written as criu made each process) is killed, each only
 * while its pid still has that start time. Nothing else is signalled: a live process with a pid of the images' tree
 * that was never recorded is only named, as it may be anyone's.
 */
async function killRestored(entry: JournalEntry, actions: Actions): Promise<void> {
  const recorded = entry.restored ?? []
  const live = recorded.filter((id) => checkIdentity(id) === 'same')
  for (const id of recorded) if (checkIdentity(id) === 'reused') actions.note(`pid ${id.pid} now belongs to another process; not touched`)
  if (live.length > 0) {
    const pids = live.map((id) => id.pid).join(', ')
    await actions.run(`kill partly restored ${pids}`, (killed) => (killed.length ? `killed partly restored ${killed.join(', ')}` : undefined), () =>
      live.filter((id) => signalRecorded(id, 'SIGKILL') === 'signalled').map((id) => id.pid),
    )
  }
  for (const pid of imageTaskPids(entry.workDir)) {
    const s = readStat(pid)
    if (!s || s.state === 'Z' || s.state === 'X' || recorded.some((id) => id.pid === pid)) continue
    actions.note(`${s.comm} (pid ${pid}) has a pid of the images' tree but was not recorded as restored; not touched`)
  }
}

/** The task pids of pstree.img in a restore's work directory; none when it cannot be read. */
function imageTaskPids(workDir: string | null): number[] {
  if (!workDir) return []
  try {
    return readPstreeImage(join(workDir, 'criu', 'pstree.img')).map((t) => t.pid)
  } catch {
    return []
  }
}


function groupMembers(pgid: number): { pid: number; comm: string }[] {
  let names: string[] = []
  try {
    names = readdirSync('/proc')
  } catch {
    return []
  }
  return names
    .filter((n) => /^\d+$/.test(n))
    .map((n) => readStat(Number(n)))
    .filter((s): s is NonNullable<typeof s> => !!s && s.pgrp === pgid && s.state !== 'Z')
    .map((s) => ({ pid: s.pid, comm: s.comm }))
}

/**
 * The partial bundle and the work directory carry the dead snap's pid in their names (.NAME.partial-PID-*,
 * .NAME.work-PID-*): found beside the output even when snap died between creating one and journalling it.
 */
function leftoversBesideOutput(entry: JournalEntry): string[] {
  if (!entry.output) return []
  const dir = dirname(entry.output)
  const prefixes = [partialPrefix(entry.output, entry.snapPid), workDirPrefix(entry.output, entry.snapPid)]
  try {
    return readdirSync(dir)
      .filter((n) => prefixes.some((p) => n.startsWith(p)))
      .map((n) => join(dir, n))
  } catch {
    return []
  }
}

/**
 * criu ended the tree as `dump --leave killed` asked, and snap died before the bundle was sealed: the images are all
 * there is of the process now, so the work directory holding them stays, and so does the lock on its connections
 * (recorded as kept, for their restore). Said, with how to bring the process back.
 */
function keepWhatCriuEnded(entry: JournalEntry, actions: Actions): void {
  const images = entry.killedByCriu!.images
  const lock = entry.networkLock?.method === 'snap' && entry.networkLock.table ? { table: entry.networkLock.table, connections: entry.networkLock.connections.length } : undefined
  const restore = `\`criu restore --images-dir ${images} --restore-detached\` with the dump's options in ${join(dirname(images), 'logs', 'criu-dump.log')}`
  actions.note(
    `the tree was ended by criu as --leave killed asked, before snap died and before its bundle was sealed: ${keepEndedTree({ images, restore, lock, record: !actions.dryRun })}`,
  )
}

/** The target pid a journal's file name gives (target-PID.json), whether or not it can be read. */
function pidOfJournal(path: string): number | undefined {
  const m = /target-(\d+)\.json$/.exec(path)
  return m ? Number(m[1]) : undefined
}

export async function recoverAll(o: RecoverOptions = {}): Promise<RecoveryAction[]> {
  const out: RecoveryAction[] = []
  await removeHalfWrittenUpdates(out, o)
  for (const { path, entry } of listJournals()) {
    if (o.pid !== undefined && (entry?.target.pid ?? pidOfJournal(path)) !== o.pid) continue
    const actions = new Actions(o.dryRun ?? false)
    if (!entry) {
      const target = pidOfJournal(path)
      actions.note(`left in place: the journal cannot be read; if no snap is working on target ${target ?? '?'}, remove ${path}`)
      out.push({ journal: path, targetPid: target ?? null, snapPid: null, outcome: 'unreadable', actions: actions.list })
      continue
    }
    if (snapIsAlive(entry)) {
      out.push({ journal: path, targetPid: entry.target.pid, snapPid: entry.snapPid, outcome: 'in-progress', actions: [`snap ${entry.snapPid} is still running; left alone`] })
      continue
    }
    // A criu still holding the target is let finish first: killed then, it can take the target down (see checkpoint()
    // in dump.ts). It lets go at the end of its memory dump, normally seconds; one that does not is killed all the same.
    if (checkIdentity(entry.target) === 'same') {
      const holder = entry.toolPids.find((pid) => tracerGroup(entry.target.pid) === pid)
      if (holder !== undefined) {
        const tool = `${readStat(holder)?.comm ?? 'the tool'} (pid ${holder})`
        const t0 = performance.now()
        await actions.run(
          `wait for ${tool} to let go of the target`,
          (released) => `${released ? 'waited' : 'gave up after'} ${Math.round(performance.now() - t0)} ms for ${tool} to let go of the target`,
          () => pollUntil(() => tracerGroup(entry.target.pid) !== holder, { timeoutMs: 60_000, maxIntervalMs: 50 }),
        )
      }
    }
    for (const [i, pid] of entry.toolPids.entries()) await killLeftoverTool(pid, entry.toolStartTimes?.[i], entry, actions)
    if (entry.operation === 'restore') {
      // A restore that died: what it recorded as restored goes; there is no original to put back.
      await killRestored(entry, actions)
      await removePaths([entry.workDir, ...leftoversBesideOutput(entry)], actions)
      if (actions.list.length === 0) actions.note('nothing was left of the restore')
      await removeLocks(locksOf(dirname(path), entry), actions)
      await actions.run('remove the journal', () => undefined, () => removeJournalFile(path))
      out.push({ journal: path, targetPid: entry.target.pid, snapPid: entry.snapPid, outcome: 'recovered', actions: actions.list })
      continue
    }
    if (entry.killedByCriu) {
      keepWhatCriuEnded(entry, actions)
      await removePaths([entry.partialPath], actions)
      await removeLocks(locksOf(dirname(path), entry), actions)
      await actions.run('remove the journal', () => undefined, () => removeJournalFile(path))
      out.push({ journal: path, targetPid: entry.target.pid, snapPid: entry.snapPid, outcome: 'target-gone', actions: actions.list })
      continue
    }
    // A tracer that is still dying holds the target in a trace stop, where SIGCONT would not resume it.
    if (!actions.dryRun) await pollUntil(() => entry.toolPids.every((pid) => groupMembers(pid).length === 0), { timeoutMs: 2000, maxIntervalMs: 20 })
    const criuLeft = entry.touched ? await undoWhatCriuLeft(entry, actions) : { lost: new Set<number>(), harmed: false }
    // A process whose registers criu kept is left stopped: resumed, it would run on registers that are not its own.
    const to = (id: TargetIdentity, found: 'running' | 'stopped') => (criuLeft.lost.has(id.pid) ? 'stopped' : found)
    let outcome: RecoveryAction['outcome'] = 'recovered'
    const check = checkIdentity(entry.target)
    if (check !== 'same') {
      outcome = 'target-gone'
      actions.note(check === 'gone' ? `target ${entry.target.pid} has exited` : `pid ${entry.target.pid} now belongs to another process; not touched`)
    } else if (entry.touched) {
      if (!(await putBack(entry.target, to(entry.target, entry.restoreTo), 'target', actions))) outcome = 'failed'
    } else {
      actions.note(`target ${entry.target.pid} was never signalled`)
    }
    // The rest of the tree: each process back to its own found state. One that is gone is said to be gone (a tool that
    // died holding it may have taken it down), never counted as put back.
    if (entry.touched) {
      for (const m of (entry.members ?? []).filter((x) => x.id.pid !== entry.target.pid)) {
        const mcheck = checkIdentity(m.id)
        if (mcheck !== 'same') {
          outcome = outcome === 'recovered' ? 'target-gone' : outcome
          actions.note(mcheck === 'gone' ? `process ${m.id.pid} of the tree has exited (it may have been damaged while snap's tools held it)` : `pid ${m.id.pid} now belongs to another process; not touched`)
          continue
        }
        if (!(await putBack(m.id, to(m.id, m.restoreTo), 'process', actions))) outcome = 'failed'
      }
    }
    // What criu left that could not be undone is a failure to report (exit 15), but nothing a later recover could do.
    const putBackFailed = outcome === 'failed'
    if (criuLeft.harmed) outcome = 'failed'
    await removePaths([entry.partialPath, entry.workDir, ...leftoversBesideOutput(entry)], actions)
    if (!putBackFailed) {
      await removeLocks(locksOf(dirname(path), entry), actions)
      await actions.run('remove the journal', () => undefined, () => removeJournalFile(path))
    }
    out.push({ journal: path, targetPid: entry.target.pid, snapPid: entry.snapPid, outcome, actions: actions.list })
  }
  await recoverOrphanLocks(out, o)
  if (o.pid === undefined) await removeOrphanSnapTables(out, o)
  if (o.pid === undefined) await endDeadCopies(out, o)
  return out
}

/**
 * What a dump's criu may have left when the snap that ran it died, undone before the tree is resumed: its syscall code
 * in the processes' text (see parasite-leftovers.ts), when its log does not say it finished; and, for a dump with
 * connections, sockets in TCP repair mode (resumed in it, a process drops them), then the network lock (snap's
 * table, or what criu's lock left); threads' signal masks and criu's breakpoint (see thread-leftovers.ts). Returns the
 * processes whose registers criu kept, and whether anything could not be undone.
 */
async function undoWhatCriuLeft(entry: JournalEntry, actions: Actions): Promise<{ lost: Set<number>; harmed: boolean }> {
  const lock = entry.networkLock
  let log: string | undefined
  try {
    log = readFileSync(lock?.criuLog || join(entry.workDir ?? '', 'logs', 'criu-dump.log'), 'utf8')
  } catch {
    log = undefined
  }
  const pids = [...new Set([entry.target, ...(entry.members ?? []).map((m) => m.id)].filter((id) => checkIdentity(id) === 'same').map((id) => id.pid))]
  const lost = new Set<number>()
  let harmed = false
  if (log !== undefined && !/Dumping finished successfully/.test(log)) {
    const text = log
    await actions.run(
      'put back any code criu left in the processes from their files',
      (r) => [r.repaired.length > 0 ? `put back the code criu left at ${r.repaired.join(', ')}` : '', ...r.problems.map((p) => `criu's code may be left in ${p}`)].filter(Boolean).join('; ') || undefined,
      () => restoreSwappedCode(pids, text),
    )
    const regs = await checkRegisters(pids, parasiteSyscallIps(text))
    for (const l of regs.lost) {
      lost.add(l.pid)
      actions.note(`thread ${l.tid} of process ${l.pid} is ${l.where}: its own registers are lost, so it is left stopped; take a core if one is needed, then end it and restart the service`)
    }
    // A leader inside criu's daemon gets its mask back from the daemon itself, once resumed.
    const masks = await actions.run(
      'put back the signal masks and the breakpoint criu may have left in threads',
      (r) => [r.restored.length > 0 ? `put back what criu left in threads: ${r.restored.join(', ')}` : '', ...r.problems.map((p) => `criu left ${p}`)].filter(Boolean).join('; ') || undefined,
      () => putBackSignalMasks(entry.threadSignals ?? [], pids, regs.selfCuring),
    )
    harmed = regs.lost.length > 0 || (masks?.problems.length ?? 0) > 0
  }
  if (!lock) return { lost, harmed }
  await actions.run(
    `take the sockets of ${pids.join(', ')} out of TCP repair mode, if criu left any in it`,
    (r) => [r.repaired.length > 0 ? `took ${r.repaired.join(', ')} out of TCP repair mode` : '', ...r.problems.map((p) => `TCP repair mode: ${p}`)].filter(Boolean).join('; ') || undefined,
    () => leaveRepairMode(pids),
  )
  await actions.run(
    `remove the network lock (${lock.method === 'snap' ? `nftables table inet ${lock.table}` : `criu's ${lock.method} lock`}) if it is still there`,
    (removed) => (removed.length > 0 ? `removed the network lock: ${removed.join('; ')}` : undefined),
    () => removeLeftoverLock(lock, log),
  )
  return { lost, harmed }
}

export interface JournalListing {
  journal: string
  targetPid: number | null
  operation: JournalEntry['operation'] | null
  /** The step the snap that wrote it was at. */
  step: string | null
  snapPid: number | null
  /** 'running': its snap is still at work; 'left': its snap died, `snap recover` acts on it; 'unreadable'. */
  status: 'running' | 'left' | 'unreadable'
  touched: boolean | null
  updatedAt: string | null
}

/** Every journal of this host, whoever's: what `snap recover --list` shows. */
export function listRecoverable(): JournalListing[] {
  return listJournals().map(({ path, entry }) =>
    entry
      ? {
          journal: path,
          targetPid: entry.target.pid,
          operation: entry.operation,
          step: entry.step,
          snapPid: entry.snapPid,
          status: snapIsAlive(entry) ? 'running' : 'left',
          touched: entry.touched,
          updatedAt: entry.updatedAt,
        }
      : { journal: path, targetPid: pidOfJournal(path) ?? null, operation: null, step: null, snapPid: null, status: 'unreadable', touched: null, updatedAt: null },
  )
}
