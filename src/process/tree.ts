// A target is a tree: a master and its workers. Every process of it is stopped, verified, and put back to its own
// original state; one left frozen is an outage snap caused. Every transition is confirmed in /proc, per process.

import { RollbackIncompleteError, StepTimeoutError, TargetChangedError, TargetNotFoundError } from '../errors.js'
import { captureIdentity, checkIdentity, type IdentityCheck, type TargetIdentity } from './identity.js'
import { pollUntil } from './poll.js'
import { readChildren, readChildrenStrict, readStat, readStatStrict, readStatus, readStatusStrict, readThreadStates, type ThreadSnapshot } from './proc.js'
import { allStopped, isStopped, noneStopped, observeRunState, type RunState } from './stop.js'

export interface TreeMember {
  id: TargetIdentity
  /** Its pid in its own PID namespace (the last of NSpid): how criu's images name it when the root is a
   *  namespace's init (a container's), and the host pid otherwise. */
  innerPid: number
  ppid: number
  comm: string
  /** The state it was found in, observed before any signal (or, for a process born during the stop, running). */
  found: RunState
  /** For one found stopped: the signal that stopped it (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU), when it is known. */
  stopSignal?: number
  /** Threads as found, before any signal. */
  threadsFound: ThreadSnapshot[]
  /** Threads seen at the verified stop. */
  threadsAtStop: ThreadSnapshot[]
}

export type LeftState = RunState | 'gone'

export interface MemberOutcome {
  pid: number
  comm: string
  found: RunState
  left: LeftState
  /** How the identity check saw it when it was not put back. */
  check?: IdentityCheck
}

/** The last NSpid entry: the pid as the process's own PID namespace sees it. The status is read quietly unless the
 *  caller read it already (the preflight reads it strictly). */
export function innerPidOf(pid: number, status = readStatus(pid)): number {
  const nspid = status?.['NSpid']?.trim().split(/\s+/)
  const last = Number(nspid?.at(-1))
  return Number.isInteger(last) && last > 0 ? last : pid
}

const isZombie = (pid: number) => {
  const s = readStat(pid)?.state
  return s === 'Z' || s === 'X'
}

/**
 * The descendants of pid (not pid itself), breadth first, zombies left out: they have nothing to stop or resume.
 * Children are read quietly by default (the freeze's second look, a restore); the preflight passes readChildrenStrict.
 */
export function readDescendants(pid: number, childrenOf: (pid: number) => number[] = readChildren): number[] {
  const out: number[] = []
  const seen = new Set([pid])
  const queue = [pid]
  while (queue.length > 0) {
    for (const child of childrenOf(queue.shift()!)) {
      if (seen.has(child)) continue
      seen.add(child)
      queue.push(child)
      if (!isZombie(child)) out.push(child)
    }
  }
  return out
}

/**
 * Every live process of the tree rooted at root, root first, each with the state it is in now. Read before any
 * signal: a /proc file of the tree that exists but cannot be read throws ProcUnreadableError, so a tree is never
 * planned without a part of it.
 */
export async function discoverTree(root: TargetIdentity): Promise<TreeMember[]> {
  const members: TreeMember[] = []
  for (const pid of [root.pid, ...readDescendants(root.pid, readChildrenStrict)]) {
    let id: TargetIdentity
    try {
      id = pid === root.pid ? root : captureIdentity(pid)
    } catch (e) {
      if (e instanceof TargetNotFoundError) continue // exited between the listing and the look: not part of the tree any more
      throw e
    }
    const stat = readStatStrict(pid)
    if (!stat) continue
    let observed: Awaited<ReturnType<typeof observeRunState>>
    try {
      observed = await observeRunState(id)
    } catch (e) {
      // A child that exits while it is looked at (a short-lived worker) is not part of the tree any more; the root is.
      if (e instanceof TargetChangedError && pid !== root.pid && checkIdentity(id) !== 'same') continue
      throw e
    }
    members.push({ id, innerPid: innerPidOf(pid, readStatusStrict(pid)), ppid: stat.ppid, comm: stat.comm, found: observed.state, threadsFound: observed.threads, threadsAtStop: [] })
  }
  return members
}

export interface TreeStopResult {
  members: TreeMember[]
  settleMs: number
  /** Processes born between the look and the stop, stopped as they were found. */
  bornDuringStop: number[]
}

/**
 * SIGSTOP every running process of the tree, then wait until every thread of every process shows T. A process can
 * fork while its siblings are being stopped, so the tree is read again once all are stopped, until a reading finds
 * no one new: a stopped process cannot fork, so this ends. Processes found stopped are sent nothing: they may be in a
 * job-control stop (Ctrl+Z), which only SIGCONT ends, and a thread woken by it runs before a SIGSTOP sent right after
 * can stop it. Their stop is converted while criu holds every thread (stopConversionScript in tools/criu.ts).
 * `admit` sees the processes born meanwhile before any signal goes to them (the dump locks them there); if it throws,
 * they are not stopped and not made members.
 */
export async function stopTree(
  members: TreeMember[],
  timeoutMs: number,
  cancelled: () => boolean = () => false,
  admit: (fresh: TreeMember[]) => void = () => undefined,
): Promise<TreeStopResult> {
  const started = performance.now()
  const deadline = started + timeoutMs
  const root = members[0]!
  const bornDuringStop: number[] = []
  let pending = members
  for (;;) {
    for (const m of pending) {
      if (m.found !== 'running') continue
      const check = checkIdentity(m.id)
      if (check !== 'same') {
        if (m === root) throw new TargetChangedError(`target ${m.id.pid} ${check === 'gone' ? 'exited' : 'pid was reused'} while the tree was being stopped`)
        continue // a worker that exited before we reached it is no longer part of the tree
      }
      process.kill(m.id.pid, 'SIGSTOP')
    }
    for (const m of pending) m.threadsAtStop = await waitMemberStopped(m, Math.max(1, deadline - performance.now()))
    if (cancelled()) return { members, settleMs: performance.now() - started, bornDuringStop }
    const known = new Set(members.map((m) => m.id.pid))
    const fresh: TreeMember[] = []
    for (const pid of readDescendants(root.id.pid)) {
      if (known.has(pid)) continue
      try {
        const id = captureIdentity(pid)
        const stat = readStat(pid)
        if (!stat) continue
        // Born after the look: it was running, whatever it shows now (a fork of a stopping parent can start stopped).
        fresh.push({ id, innerPid: innerPidOf(pid), ppid: stat.ppid, comm: stat.comm, found: 'running', threadsFound: [], threadsAtStop: [] })
      } catch {
        // gone already
      }
    }
    if (fresh.length === 0) break
    admit(fresh)
    members.push(...fresh)
    bornDuringStop.push(...fresh.map((m) => m.id.pid))
    pending = fresh
  }
  // A member that exited during the stop is dropped: criu dumps what exists.
  const alive = members.filter((m, i) => i === 0 || checkIdentity(m.id) === 'same')
  members.splice(0, members.length, ...alive)
  return { members, settleMs: performance.now() - started, bornDuringStop }
}

async function waitMemberStopped(m: TreeMember, timeoutMs: number): Promise<ThreadSnapshot[]> {
  const ts = await pollUntil(() => {
    const now = readThreadStates(m.id.pid)
    return allStopped(now) ? now : checkIdentity(m.id) === 'same' ? undefined : []
  }, { timeoutMs, spinMs: 2 })
  if (ts) return ts
  const now = readThreadStates(m.id.pid)
  const late = now.filter((t) => !isStopped(t)).map((t) => `${t.tid}:${t.state}`)
  throw new StepTimeoutError(
    `process ${m.id.pid} (${m.comm}) did not stop within ${Math.round(timeoutMs)} ms (threads not stopped: ${late.join(', ')})`,
    now.some((t) => t.state === 'D') ? 'a thread is in uninterruptible sleep (D), usually blocked on I/O; retry when it is not' : undefined,
  )
}

/** The processes of the tree with a thread that is not stopped (after a tool detached, say). */
export function membersNotStopped(members: TreeMember[]): { member: TreeMember; threads: ThreadSnapshot[] }[] {
  const out: { member: TreeMember; threads: ThreadSnapshot[] }[] = []
  for (const m of members) {
    if (checkIdentity(m.id) !== 'same') continue
    const late = readThreadStates(m.id.pid).filter((t) => !isStopped(t))
    if (late.length > 0) out.push({ member: m, threads: late })
  }
  return out
}

/** Stops again, and waits for, the members a tool left running. */
export async function restopMembers(members: TreeMember[], timeoutMs: number): Promise<void> {
  for (const m of members) if (checkIdentity(m.id) === 'same') process.kill(m.id.pid, 'SIGSTOP')
  for (const m of members) await waitMemberStopped(m, timeoutMs)
}

/**
 * Puts every member in the state `want` says (its found state, unless the person asked for another) and confirms each
 * in /proc. Workers are resumed before the master, so a master that wakes finds its workers already answering.
 * A member that is gone is reported, never counted as put back; the caller decides what that means.
 */
export async function putTreeBack(
  members: TreeMember[],
  want: (m: TreeMember) => RunState,
  timeoutMs: number,
): Promise<MemberOutcome[]> {
  const outcomes = new Map<number, MemberOutcome>()
  const ordered = [...members].reverse()
  for (const m of ordered) {
    const check = checkIdentity(m.id)
    if (check !== 'same') {
      outcomes.set(m.id.pid, { pid: m.id.pid, comm: m.comm, found: m.found, left: 'gone', check })
      continue
    }
    process.kill(m.id.pid, want(m) === 'running' ? 'SIGCONT' : 'SIGSTOP')
  }
  const deadline = performance.now() + timeoutMs
  for (const m of ordered) {
    if (outcomes.has(m.id.pid)) continue
    const target = want(m)
    const ok = await pollUntil(() => {
      const ts = readThreadStates(m.id.pid)
      return target === 'running' ? noneStopped(ts) : allStopped(ts)
    }, { timeoutMs: Math.max(1, deadline - performance.now()) })
    const check = checkIdentity(m.id)
    if (check !== 'same') outcomes.set(m.id.pid, { pid: m.id.pid, comm: m.comm, found: m.found, left: 'gone', check })
    else if (!ok)
      throw new RollbackIncompleteError(
        `process ${m.id.pid} (${m.comm}) did not become ${target} within ${timeoutMs} ms`,
        target === 'running' ? `run \`kill -CONT ${m.id.pid}\` and check its state` : undefined,
      )
    else outcomes.set(m.id.pid, { pid: m.id.pid, comm: m.comm, found: m.found, left: target })
  }
  return members.map((m) => outcomes.get(m.id.pid)!)
}

/** SIGKILL every member (the whole tree), and wait until none is left with its start time. */
export async function killTree(members: TreeMember[], timeoutMs: number): Promise<void> {
  for (const m of members) if (checkIdentity(m.id) === 'same') process.kill(m.id.pid, 'SIGKILL')
  const gone = await pollUntil(() => members.every((m) => checkIdentity(m.id) !== 'same'), { timeoutMs })
  if (!gone) throw new RollbackIncompleteError(`the tree of ${members[0]?.id.pid} did not exit within ${timeoutMs} ms of SIGKILL`)
}
