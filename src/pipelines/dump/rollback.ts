// The failure path of every stage, as cr_dump_finish undoes criu's: tools stopped, every process of the tree in its
// own found state (or the final one, if that was reached), partial files removed, and each undo said out loud.

import { readFileSync, rmSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { isSnapError, RollbackIncompleteError } from '../../errors.js'
import { checkIdentity } from '../../process/identity.js'
import { confirmSurvival, pendingFault, runCountsOf, type RunCounts } from '../../process/survival.js'
import { putTreeBack, type TreeMember } from '../../process/tree.js'
import { removeLeftoverLock } from '../../tools/network-lock.js'
import { keepEndedTree } from '../kept-locks.js'
import { leaveRepairMode } from '../../tools/tcp-repair.js'
import { parasiteSyscallIps, restoreSwappedCode } from '../../tools/parasite-leftovers.js'
import { checkRegisters, PARASITE_MASK, changedSignals, parasiteRemains, putBackSignalMasks, type LostRegisters, type RegisterCheck } from '../../tools/thread-leftovers.js'
import { stopAllTools } from '../../tools/run.js'
import { exitText, STOP_TIMEOUT_MS, type DumpState } from './state.js'

/** How long a resumed process gets to show it survived its resume (every thread a turn on a CPU). */
const SURVIVAL_TIMEOUT_MS = 2000

/**
 * What a criu that did not finish may have left, undone while the tree is still stopped, each undo named: its syscall
 * code in the processes' text (they die of SIGTRAP when they run it), threads' signal masks (all blocked: the process
 * ignores SIGTERM), sockets in TCP repair mode (resumed so, a process gets EPERM from them and drops the connection),
 * and the network lock, under which the live connections hang. snap's own lock is there from the moment it was set
 * until unlockConnections removed it, whatever criu did. Only what this run owns is touched. Returns the threads
 * whose registers criu took and did not give back (their processes must not run again), and the leaders in criu's
 * parasite daemon, which put themselves back once resumed.
 */
async function undoWhatCriuLeft(s: DumpState, actions: string[], problems: string[]): Promise<RegisterCheck> {
  const criuUnfinished = s.criuOpened && s.criuResult?.exitCode !== 0
  const lock = s.networkLock
  const lockMayBeOn = lock !== undefined && (lock.method === 'snap' ? s.lockSet : criuUnfinished)
  const none: RegisterCheck = { lost: [], selfCuring: [], unchecked: [] }
  if (!criuUnfinished && !lockMayBeOn) return none
  let log: string | undefined
  try {
    log = s.criuRun ? readFileSync(s.criuRun.logFile, 'utf8') : undefined
  } catch {
    log = undefined // criu wrote no log: it never reached a process
  }
  const pids = s.members.filter((m) => checkIdentity(m.id) === 'same').map((m) => m.id.pid)
  if (criuUnfinished && log) {
    const r = restoreSwappedCode(pids, log)
    if (r.repaired.length > 0) actions.push(`code criu left in ${r.repaired.length} process(es) put back from their files (${r.repaired.join(', ')})`)
    for (const p of r.problems) s.progress.warn(`criu's code may be left in ${p}: the process can die when it runs that code`)
  }
  const regs = criuUnfinished ? await checkRegisters(pids, log ? parasiteSyscallIps(log) : []) : none
  // Not stopped a second after criu ended: something else resumed it, and where it stands cannot be read.
  problems.push(...regs.unchecked.map((t) => `${t}: running when criu had just let go, so whether its registers are its own could not be checked`))
  if (criuUnfinished && s.threadSignals) {
    // A leader in criu's daemon gets its mask back from the daemon's sigreturn: it is checked once it has run
    // (checkMasksAfterResume); the breakpoint criu may have set on that sigreturn is taken out now. A thread whose
    // registers are lost gets its mask back too: it is left stopped, but whoever resumes it gets what can be given.
    const r = await putBackSignalMasks(s.threadSignals, pids, regs.selfCuring)
    if (r.restored.length > 0) actions.push(`what criu left in threads put back: ${r.restored.join(', ')}`)
    problems.push(...r.problems)
  }
  if (criuUnfinished) for (const w of parasiteRemains(pids)) s.progress.warn(`${w} (harmless; freed when the process exits)`)
  if (criuUnfinished && lock) {
    const r = await leaveRepairMode(pids)
    if (r.repaired.length > 0) actions.push(`${r.repaired.length} socket(s) criu left in TCP repair mode taken out of it (${r.repaired.join(', ')})`)
    for (const p of r.problems) s.progress.warn(`TCP repair mode: ${p}; the connection may not work`)
  }
  if (!lock || !lockMayBeOn) return regs
  try {
    const removed = await removeLeftoverLock(lock, log)
    if (lock.method === 'snap') s.lockSet = false
    if (removed.length > 0) actions.push(`${lock.method === 'snap' ? "the connections' network lock" : "criu's network lock"} removed (${removed.join('; ')})`)
  } catch (e) {
    s.progress.warn(`could not check for criu's network lock: ${(e as Error).message}; run \`snap doctor\` to find it`)
  }
  return regs
}

/**
 * Once resumed, a leader that was in criu's parasite daemon has put its own registers and mask back (the daemon's
 * sigreturn). One still holding criu's mask is given its recorded one; any other difference is the program's own.
 */
async function checkMasksAfterResume(s: DumpState, selfCuring: RegisterCheck['selfCuring'], running: number[], actions: string[], problems: string[]): Promise<void> {
  if (!s.threadSignals || selfCuring.length === 0) return
  const mine = s.threadSignals.filter((r) => selfCuring.some((t) => t.pid === r.pid && t.tid === r.tid) && running.includes(r.pid))
  const stuck = changedSignals(mine, running).filter((c) => c.now.SigBlk === PARASITE_MASK)
  if (stuck.length === 0) return
  const r = await putBackSignalMasks(
    stuck.map((c) => c.record),
    running,
  )
  if (r.restored.length > 0) actions.push(`what criu's daemon left in threads put back: ${r.restored.join(', ')}`)
  problems.push(...r.problems)
}

/** "thread 12 of process 12 (python3) at criu's injected syscall (0x41f003)", for the message. */
function lostText(l: LostRegisters, s: DumpState): string {
  const comm = s.members.find((m) => m.id.pid === l.pid)?.comm ?? '?'
  return `thread ${l.tid} of process ${l.pid} (${comm}) ${l.where}`
}

/** What happened to criu, for the message about a process that died: the tool that held it is the likely cause. */
function toolStory(s: DumpState): string {
  const r = s.criuResult
  if (r && r.exitCode !== 0) return ` after criu dump ended (${exitText(r)}) while it held the tree`
  return s.toolHolds ? ` while ${s.toolHolds} held the tree` : ''
}

export function cleanupWorkDir(s: DumpState): void {
  if (s.workDir) rmSync(s.workDir, { recursive: true, force: true })
  s.workDir = undefined
}

/** A bundle being written beside the cores (startSeal) is told to give up, and given a moment to close its file. */
async function abandonSeal(s: DumpState, cause: unknown): Promise<void> {
  if (!s.sealing) return
  if (!s.sealing.abandoned) s.sealing.abandon(cause instanceof Error ? cause : new Error(String(cause)))
  // A ref'd timer: with the writer stuck, an unref'd one would let Node exit (13) in the middle of the rollback.
  const timer = new AbortController()
  await Promise.race([s.sealing.writing.catch(() => undefined), sleep(STOP_TIMEOUT_MS, undefined, { signal: timer.signal }).catch(() => undefined)])
  timer.abort()
}

/** A second signal during this does not interrupt it. Throws RollbackIncompleteError when a process could not be put back. */
export async function rollback(s: DumpState, cause: unknown): Promise<void> {
  const actions: string[] = []
  await stopAllTools()
  await abandonSeal(s, cause)
  // A core's recipe still reading it (cores.ts) writes its blob into the work directory: done before that goes.
  await Promise.allSettled(s.recipesUnderWay.values())
  if (s.killedByCriu) return keepWhatCriuLeft(s)
  const damaged: string[] = []
  const regs = await undoWhatCriuLeft(s, actions, damaged)
  // Their own registers are gone with criu: resumed, they would run code on registers that are not theirs.
  const lostPids = new Set(regs.lost.map((l) => l.pid))
  let failure: RollbackIncompleteError | undefined
  const died: string[] = []
  const doomedBy = new Map<number, string>()
  if (s.touched && s.members.length > 0) {
    const present = s.members.filter((m) => checkIdentity(m.id) === 'same')
    const gone = s.members.filter((m) => !present.includes(m))
    const want = (m: TreeMember) => (lostPids.has(m.id.pid) ? 'stopped' : s.released ? s.leaveFor(m) : m.found)
    // Taken while they are stopped: after the resume, each must be seen to run before it is called resumed.
    const runCounts = new Map<number, RunCounts>(present.filter((m) => want(m) === 'running').map((m) => [m.id.pid, runCountsOf(m.id.pid)]))
    // A fault signal pending now (a tool's breakpoint left inside) kills the process the moment it runs again.
    for (const m of present) {
      const fault = pendingFault(m.id.pid)
      if (fault) doomedBy.set(m.id.pid, fault)
    }
    try {
      const outcomes = await putTreeBack(present, want, STOP_TIMEOUT_MS)
      await Promise.all(
        outcomes
          .filter((x) => x.left === 'running' && runCounts.has(x.pid))
          .map(async (x) => {
            const m = present.find((p) => p.id.pid === x.pid)!
            const survival = await confirmSurvival(m.id, runCounts.get(x.pid)!, SURVIVAL_TIMEOUT_MS)
            if (survival === 'died' || doomedBy.has(x.pid)) {
              x.left = 'gone'
              died.push(`${m.id.pid} (${m.comm})`)
            }
          }),
      )
      await checkMasksAfterResume(s, regs.selfCuring, outcomes.filter((x) => x.left === 'running').map((x) => x.pid), actions, damaged)
      const root = outcomes.find((x) => x.pid === s.o.pid)
      if (root && lostPids.has(root.pid)) actions.push(`target ${root.pid} left stopped: criu did not give its registers back`)
      else if (root && root.left !== 'gone') actions.push(`target ${root.pid} ${root.left === 'running' ? 'resumed' : 'left stopped'} as it was`)
      const others = outcomes.filter((x) => x.pid !== s.o.pid)
      const resumed = others.filter((x) => x.left === 'running').length
      const stopped = others.filter((x) => x.left === 'stopped' && !lostPids.has(x.pid)).length
      const held = others.filter((x) => x.left === 'stopped' && lostPids.has(x.pid)).length
      if (resumed > 0) actions.push(`${resumed} other process(es) of the tree resumed`)
      if (stopped > 0) actions.push(`${stopped} other process(es) of the tree left stopped as found`)
      if (held > 0) actions.push(`${held} other process(es) of the tree left stopped: criu did not give their registers back`)
      const vanished = outcomes.filter((x) => x.left === 'gone')
      gone.push(...s.members.filter((m) => vanished.some((v) => v.pid === m.id.pid)))
    } catch (e) {
      s.progress.warn(`rollback could not put the tree of ${s.o.pid} back: ${(e as Error).message}`)
      failure = new RollbackIncompleteError(
        `the tree of ${s.o.pid} could not be put back in its found state after: ${(cause as Error).message}`,
        `run \`kill -CONT ${present.filter((m) => m.found === 'running').map((m) => m.id.pid).join(' ')}\` for the processes that were running`,
      )
    }
    // A process that is gone was not put back, whatever else was: never counted as resumed.
    for (const m of gone) {
      const what = m.id.pid === s.o.pid ? 'target' : 'process'
      if (died.includes(`${m.id.pid} (${m.comm})`))
        actions.push(`${what} ${m.id.pid} died as soon as it was resumed${doomedBy.has(m.id.pid) ? ` (a ${doomedBy.get(m.id.pid)} was pending for it)` : ''}`)
      else {
        actions.push(`${what} ${m.id.pid} is gone (${checkIdentity(m.id)}); nothing sent to it`)
        if (checkIdentity(m.id) === 'gone') died.push(`${m.id.pid} (${m.comm})`)
      }
    }
  }
  // A death is never reported as a rollback: whatever failed first, the story is now that processes are gone. A
  // failure that already says so (a process gone while a tool held it, a pid reused) keeps its own words.
  const alreadyTold = isSnapError(cause) && (cause.kind === 'rollbackIncomplete' || cause.kind === 'targetChanged')
  // What criu left that could not be undone, in processes that are still there.
  const lost = regs.lost.filter((l) => s.members.some((m) => m.id.pid === l.pid && checkIdentity(m.id) === 'same'))
  const harm = [
    ...lost.map((l) => `${lostText(l, s)}: its own registers are lost, so it was left stopped`),
    ...damaged.map((d) => `${d}${/signal mask/.test(d) ? ': the process does not act on the signals it blocks (SIGTERM among them)' : ''}`),
  ]
  if (harm.length > 0 && alreadyTold) for (const h of harm) s.progress.warn(`criu left ${h}`)
  const lostHint = lost.length > 0 ? `take a core if one is needed (\`gcore ${lost[0]!.pid}\`), then end ${[...new Set(lost.map((l) => l.pid))].join(', ')} (\`kill -KILL\`) and restart the service` : undefined
  const deaths =
    died.length > 0 && !alreadyTold
      ? new RollbackIncompleteError(
          `process${died.length === 1 ? '' : 'es'} ${died.join(', ')} died during the dump${toolStory(s)}: the capture may have damaged the service, and ${died.length === 1 ? 'it was' : 'they were'} not put back${harm.length > 0 ? `; criu also left ${harm.join('; ')}` : ''} (the dump had failed: ${(cause as Error).message})`,
          lostHint ? `check the service now and restart what is missing; ${lostHint}` : 'check the service now and restart what is missing',
        )
      : harm.length > 0 && !alreadyTold
        ? new RollbackIncompleteError(
            `${s.criuResult ? `criu dump, ended (${exitText(s.criuResult)}) while it held the tree,` : 'criu'} left what could not be put back: ${harm.join('; ')} (the dump had failed: ${(cause as Error).message})`,
            lostHint ?? 'restart the service so that it acts on its signals again',
          )
        : undefined
  if (s.partial) {
    rmSync(s.partial, { force: true })
    actions.push('partial bundle removed')
    s.partial = undefined
  }
  if (s.workDir) {
    cleanupWorkDir(s)
    actions.push('work directory removed')
  }
  if (!failure) s.journal?.remove()
  if (actions.length > 0) s.progress.note(`rolled back: ${actions.join('; ')}`)
  if (failure) throw failure
  if (deaths) throw deaths
}

/**
 * criu ended the tree as --leave killed asked, and the bundle then failed: the images are all there is of the
 * process now, so they are kept where they are and named, never removed; so is the lock on its connections, whose
 * peers wait for a restore. Only the partial bundle goes.
 */
function keepWhatCriuLeft(s: DumpState): void {
  if (s.partial) rmSync(s.partial, { force: true })
  s.partial = undefined
  const images = s.imagesDir
  const kept = s.networkLockKept
  s.workDir = undefined
  s.journal?.remove()
  const restore = `\`criu restore --images-dir ${images} --restore-detached${s.criuOptions.length > 0 ? ` ${s.criuOptions.join(' ')}` : ''}\``
  s.progress.warn(`the tree of ${s.o.pid} was ended by criu as --leave killed asked, before the bundle failed: ${keepEndedTree({ images, restore, lock: kept })}`)
}
