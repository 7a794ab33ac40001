// What a criu killed mid-dump can leave in a thread, beyond its code (parasite-leftovers.ts) and its sockets
// (tcp-repair.ts). To run anything inside a thread, compel blocks every signal but SIGTRAP in it (PTRACE_SETSIGMASK),
// points its registers at the injected syscall or at the parasite, and puts both back when that returns. Killed in
// between, criu leaves:
// - the thread's signal mask all blocked (SigBlk fffffffffffbfeef): the process ignores SIGTERM, SIGINT, SIGHUP, and a
//   service can no longer be stopped cleanly. The mask the thread had when it was stopped is recorded before criu
//   starts, and put back here through ptrace (PTRACE_SETSIGMASK), so the process never runs with criu's;
// - the thread's registers pointing at criu's syscall (at syscall_ip, the start of the first executable mapping) or
//   inside the parasite of a thread that is not the leader: its own registers were only in criu's memory, and
//   resumed, it runs code with registers that are not its own (measured: a python server died of SIGSEGV, once
//   after it had been seen to run). Nothing can put that back: the process is left stopped, and said so;
// - the leader inside the parasite daemon: that puts itself back (its registers and mask are in the daemon's signal
//   frame, restored by its sigreturn once it finds criu gone), so it is resumed, and its mask checked afterwards;
// - a hardware breakpoint on that sigreturn (x86_64: DR0 inside the parasite, enabled in DR7), which criu sets when it
//   tells the daemon to leave: killed then, the daemon leaves without it and the process dies of SIGTRAP (measured:
//   the python server, at 2 of 108 kill points). It is taken out through ptrace before the process runs.
// Signal handlers: the parasite only reads them (criu keeps SIGTRAP unblocked for that reason: a blocked SIGTRAP would
// be reset to its default handler). What /proc shows of them (SigIgn, SigCgt) is recorded and compared all the same;
// a handler's address and flags cannot be seen from outside, so a change there would not be found.

import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { pollUntil } from '../process/poll.js'
import { readThreadStates } from '../process/proc.js'
import { queryTool } from './run.js'

const PYTHON = ['/usr/bin/python3', '/bin/python3'].find((p) => existsSync(p))

/** compel's syscall blob at syscall_ip (BUILTIN_SYSCALL_SIZE): a thread stopped with its pc in it is running criu's. */
const SYSCALL_BLOB_BYTES = 8

/** The name compel gives the memfd its parasite is mapped from (MEMFD_FNAME). */
const PARASITE_MAPPING = /\s\/memfd:CRIUMFD(?: \(deleted\))?$/

/** One thread as criu may not touch it: its blocked signals, and its process's ignored and caught ones (hex, as in
 *  /proc/PID/task/TID/status). Recorded while the thread is stopped, before criu starts. */
export interface ThreadSignalRecord {
  pid: number
  tid: number
  blocked: string
  ignored: string
  caught: string
}

function statusOf(pid: number, tid: number): Record<string, string> | undefined {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8')
  } catch {
    return undefined
  }
  const out: Record<string, string> = {}
  for (const line of text.split('\n')) {
    const i = line.indexOf(':')
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim()
  }
  return out
}

function threadsOf(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).map(Number).filter((t) => t > 0)
  } catch {
    return []
  }
}

/** Every thread of these processes, now (they are stopped): one status read each. */
export function recordThreadSignals(pids: number[]): ThreadSignalRecord[] {
  const out: ThreadSignalRecord[] = []
  for (const pid of pids)
    for (const tid of threadsOf(pid)) {
      const st = statusOf(pid, tid)
      if (st?.SigBlk && st.SigIgn && st.SigCgt) out.push({ pid, tid, blocked: st.SigBlk, ignored: st.SigIgn, caught: st.SigCgt })
    }
  return out
}

/** The address a stopped thread will run next: the last field of /proc/PID/task/TID/syscall. */
function programCounter(pid: number, tid: number): bigint | undefined {
  try {
    const last = readFileSync(`/proc/${pid}/task/${tid}/syscall`, 'utf8').trim().split(/\s+/).at(-1)
    return last?.startsWith('0x') ? BigInt(last) : undefined
  } catch {
    return undefined
  }
}

function parasiteRanges(pid: number): [bigint, bigint][] {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/maps`, 'utf8')
  } catch {
    return []
  }
  return text
    .split('\n')
    .filter((l) => PARASITE_MAPPING.test(l))
    .map((l) => {
      const [a, b] = l.split(' ')[0]!.split('-')
      return [BigInt(`0x${a}`), BigInt(`0x${b}`)]
    })
}

/** A thread whose registers criu replaced and did not put back. */
export interface LostRegisters {
  pid: number
  tid: number
  /** Where it stands, for the message: "at criu's injected syscall (0x41f003)". */
  where: string
}

export interface RegisterCheck {
  lost: LostRegisters[]
  /** Leaders stopped inside the parasite daemon: resumed, it puts their registers and mask back itself. */
  selfCuring: { pid: number; tid: number }[]
  /** Threads still running when they were looked at ("pid P thread T"): where they stand is not known. */
  unchecked: string[]
}

/**
 * The threads of these processes (stopped) whose registers are criu's: pc in the syscall blob compel wrote at any
 * syscall_ip its log named, or, for a thread other than the leader, inside the parasite's memory. The leader inside
 * the parasite is its daemon, which puts its registers back itself.
 */
export async function checkRegisters(pids: number[], syscallIps: number[]): Promise<RegisterCheck> {
  const out: RegisterCheck = { lost: [], selfCuring: [], unchecked: [] }
  // A thread criu let run inside its parasite enters its group stop again as soon as criu is gone (the kernel puts a
  // detached thread back in the stop it was in): it is looked at once there.
  const stopped = (pid: number) => readThreadStates(pid).every((t) => t.state === 'T' || t.state === 't')
  await pollUntil(() => pids.every(stopped), { timeoutMs: 1000, maxIntervalMs: 10 })
  for (const pid of pids) {
    const parasite = parasiteRanges(pid)
    for (const tid of threadsOf(pid)) {
      const pc = programCounter(pid, tid)
      if (pc === undefined) {
        if (readThreadStates(pid).some((t) => t.tid === tid && t.state !== 'T' && t.state !== 't')) out.unchecked.push(`pid ${pid} thread ${tid}`)
        continue
      }
      const hex = `0x${pc.toString(16)}`
      const inParasite = parasite.some(([a, b]) => pc >= a && pc < b)
      if (syscallIps.some((ip) => pc >= BigInt(ip) && pc <= BigInt(ip) + BigInt(SYSCALL_BLOB_BYTES))) out.lost.push({ pid, tid, where: `at criu's injected syscall (${hex})` })
      else if (inParasite && tid !== pid) out.lost.push({ pid, tid, where: `inside criu's parasite (${hex})` })
      else if (inParasite) out.selfCuring.push({ pid, tid })
    }
  }
  return out
}

/** The mask compel gives a thread while criu's code runs in it: every signal blocked but SIGTRAP (SIGKILL and SIGSTOP
 *  cannot be). Seen after the resume, it is criu's, not the program's. */
export const PARASITE_MASK = 'fffffffffffbfeef'

const HELPER = `
import ctypes, json, os, sys
PTRACE_PEEKUSER, PTRACE_POKEUSER, PTRACE_DETACH = 3, 6, 17
PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_GETSIGMASK, PTRACE_SETSIGMASK = 0x4206, 0x4207, 0x420a, 0x420b
WALL = 0x40000000
DR0, DR7 = 848, 848 + 7 * 8  # offsetof(struct user, u_debugreg[0]) and [7] on x86_64
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long
def call(req, tid, addr, data, what):
    ctypes.set_errno(0)
    r = libc.ptrace(req, tid, addr, data)
    if r == -1 and ctypes.get_errno() != 0:
        raise OSError(ctypes.get_errno(), what + ": " + os.strerror(ctypes.get_errno()))
    return r & 0xffffffffffffffff
out = []
for arg in sys.argv[1:]:
    tid, want, ranges = arg.split(":")
    tid = int(tid)
    r = {"tid": tid}
    try:
        call(PTRACE_SEIZE, tid, None, None, "PTRACE_SEIZE")
    except OSError as e:
        r["error"] = e.strerror; out.append(r); continue
    try:
        call(PTRACE_INTERRUPT, tid, None, None, "PTRACE_INTERRUPT")
        os.waitpid(tid, WALL)
        if want != "-":
            mask = ctypes.c_uint64(int(want, 16))
            call(PTRACE_SETSIGMASK, tid, ctypes.c_void_p(8), ctypes.byref(mask), "PTRACE_SETSIGMASK")
            got = ctypes.c_uint64(0)
            call(PTRACE_GETSIGMASK, tid, ctypes.c_void_p(8), ctypes.byref(got), "PTRACE_GETSIGMASK")
            r["mask"] = "%016x" % got.value
        if ranges != "-":
            dr7 = call(PTRACE_PEEKUSER, tid, ctypes.c_void_p(DR7), None, "PTRACE_PEEKUSER")
            dr0 = call(PTRACE_PEEKUSER, tid, ctypes.c_void_p(DR0), None, "PTRACE_PEEKUSER")
            inside = any(int(lo, 16) <= dr0 < int(hi, 16) for lo, hi in (x.split("-") for x in ranges.split(",")))
            if dr7 & 3 and inside:
                call(PTRACE_POKEUSER, tid, ctypes.c_void_p(DR7), ctypes.c_void_p(dr7 & ~3), "PTRACE_POKEUSER")
                r["breakpoint"] = "%x" % dr0
                r["cleared"] = call(PTRACE_PEEKUSER, tid, ctypes.c_void_p(DR7), None, "PTRACE_PEEKUSER") & 3 == 0
    except OSError as e:
        r["error"] = e.strerror
    finally:
        # A thread in a group stop stays in it when it is let go: the tree is resumed by the caller, not here.
        if libc.ptrace(PTRACE_DETACH, tid, None, None) != 0:
            r["detach"] = os.strerror(ctypes.get_errno())
    out.append(r)
print(json.dumps(out))
`

export interface MaskResult {
  /** "pid P thread T (fffffffffffbfeef -> 0000000000000000)", one per mask put back. */
  restored: string[]
  /** What is still not as recorded, each naming the process, the thread and what is wrong. */
  problems: string[]
}

/** The threads still there whose mask, ignored or caught signals differ from their record. */
export function changedSignals(records: ThreadSignalRecord[], pids: number[]): { record: ThreadSignalRecord; now: Record<string, string> }[] {
  const out: { record: ThreadSignalRecord; now: Record<string, string> }[] = []
  for (const r of records) {
    if (!pids.includes(r.pid)) continue
    const now = statusOf(r.pid, r.tid)
    if (!now?.SigBlk) continue // the thread is gone: the survival check judges the process
    if (now.SigBlk !== r.blocked || now.SigIgn !== r.ignored || now.SigCgt !== r.caught) out.push({ record: r, now })
  }
  return out
}

interface HelperAnswer {
  tid: number
  mask?: string
  breakpoint?: string
  cleared?: boolean
  error?: string
  detach?: string
}

/**
 * Puts back, in these processes (stopped, and left so), each recorded thread's signal mask where it differs now, and
 * takes out the hardware breakpoint criu sets on its daemon's way out (DR0 inside the parasite, enabled in DR7: on
 * x86_64, compel_stop_pie): left enabled, the process dies of SIGTRAP as the daemon leaves. Says what is still not as
 * recorded: a mask ptrace could not set, ignored or caught signals that changed (nothing from outside can set a
 * handler back). `skip`: threads whose mask is not to be touched now.
 */
export async function putBackSignalMasks(records: ThreadSignalRecord[], pids: number[], skip: { pid: number; tid: number }[] = []): Promise<MaskResult> {
  const result: MaskResult = { restored: [], problems: [] }
  const changed = changedSignals(records, pids).filter((c) => !skip.some((s) => s.pid === c.record.pid && s.tid === c.record.tid))
  const masks = changed.filter((c) => c.now.SigBlk !== c.record.blocked)
  // The breakpoint is looked for only where criu's parasite is still mapped, and only where compel sets it this way.
  const withParasite = process.arch === 'x64' ? pids.map((pid) => ({ pid, ranges: parasiteRanges(pid) })).filter((p) => p.ranges.length > 0) : []
  const work = new Map<number, { pid: number; mask: string; ranges: string }>()
  for (const c of masks) work.set(c.record.tid, { pid: c.record.pid, mask: c.record.blocked, ranges: '-' })
  for (const p of withParasite)
    for (const tid of threadsOf(p.pid)) {
      const ranges = p.ranges.map(([a, b]) => `${a.toString(16)}-${b.toString(16)}`).join(',')
      work.set(tid, { pid: p.pid, mask: work.get(tid)?.mask ?? '-', ranges })
    }
  let answers: HelperAnswer[] = []
  if (work.size > 0 && !PYTHON) result.problems.push(`pid ${[...new Set([...work.values()].map((w) => w.pid))].join(', ')}: no python3 to check what criu left in their threads`)
  else if (work.size > 0) {
    const r = await queryTool(PYTHON!, ['-c', HELPER, ...[...work].map(([tid, w]) => `${tid}:${w.mask}:${w.ranges}`)], 30_000)
    try {
      answers = JSON.parse(r.output.trim().split('\n').at(-1) ?? '')
    } catch {
      result.problems.push(`the check of what criu left in the threads of ${[...new Set([...work.values()].map((w) => w.pid))].join(', ')} failed (${r.output.trim().split('\n').at(-1) ?? 'no output'})`)
    }
  }
  for (const c of masks) {
    const { pid, tid, blocked } = c.record
    const a = answers.find((x) => x.tid === tid)
    const now = statusOf(pid, tid)?.SigBlk
    if (now === blocked) result.restored.push(`pid ${pid} thread ${tid} signal mask (${c.now.SigBlk} -> ${blocked})`)
    else result.problems.push(`pid ${pid} thread ${tid}: signal mask ${now ?? c.now.SigBlk} (was ${blocked}) could not be put back${a?.error ? `: ${a.error}` : ''}`)
  }
  for (const a of answers) {
    const pid = work.get(a.tid)!.pid
    if (a.breakpoint && a.cleared) result.restored.push(`pid ${pid} thread ${a.tid} breakpoint at 0x${a.breakpoint} taken out`)
    else if (a.breakpoint) result.problems.push(`pid ${pid} thread ${a.tid}: criu's breakpoint at 0x${a.breakpoint} could not be taken out (it dies of SIGTRAP when it gets there)`)
    else if (a.error && work.get(a.tid)!.mask === '-') result.problems.push(`pid ${pid} thread ${a.tid}: could not be checked for criu's breakpoint: ${a.error}`)
    if (a.detach) result.problems.push(`pid ${pid} thread ${a.tid}: ptrace could not let go of it (${a.detach})`)
  }
  for (const c of changed) {
    if (c.now.SigIgn !== c.record.ignored) result.problems.push(`pid ${c.record.pid}: ignored signals ${c.now.SigIgn} (were ${c.record.ignored})`)
    if (c.now.SigCgt !== c.record.caught) result.problems.push(`pid ${c.record.pid}: caught signals ${c.now.SigCgt} (were ${c.record.caught})`)
  }
  return { restored: result.restored, problems: [...new Set(result.problems)] }
}

/**
 * What a killed criu leaves that nothing from outside can take back, and that does no harm: the parasite's memory
 * still mapped (freed when the process exits) and the memfd it came from still open, if criu died between opening and
 * closing it. Said per process ("pid P: 236 KiB of criu's parasite memory still mapped"), so it is not a surprise.
 */
export function parasiteRemains(pids: number[]): string[] {
  const out: string[] = []
  for (const pid of pids) {
    const kib = parasiteRanges(pid).reduce((n, [a, b]) => n + Number((b - a) / 1024n), 0)
    let fds = 0
    try {
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        try {
          if (/^\/memfd:CRIUMFD/.test(readlinkSync(`/proc/${pid}/fd/${fd}`))) fds++
        } catch {
          // closed meanwhile
        }
      }
    } catch {
      // gone: nothing of it remains
    }
    const parts = [kib > 0 ? `${kib} KiB of criu's parasite memory still mapped` : '', fds > 0 ? `${fds} fd(s) of criu's memfd still open` : ''].filter(Boolean)
    if (parts.length > 0) out.push(`pid ${pid}: ${parts.join(', ')}`)
  }
  return out
}
