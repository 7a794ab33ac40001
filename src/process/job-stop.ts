// A process stopped by SIGTTIN or SIGTTOU (a background job that read from or wrote to its terminal) is in a
// job-control stop that criu cannot seize: compel takes only SIGSTOP and SIGTSTP stops ("SEIZE PID: unsupported stop
// signal 21"). Such a stop is turned into a SIGSTOP stop the way criu's post-dump script turns a SIGTSTP stop into
// one (stopConversionScript): every thread held under ptrace, SIGCONT (which wakes no traced thread) then SIGSTOP,
// and the threads let go, each taking the SIGSTOP before it returns to user space. No thread of the process runs.
// Node has no ptrace: a small python3 helper holds the threads, as the kernel copy does in src/corefile/copy.ts.

import { readFileSync } from 'node:fs'
import { execa } from 'execa'
import { PYTHON } from '../corefile/copy.js'

export const SIGSTOP = 19
export const SIGTSTP = 20
export const SIGTTIN = 21
export const SIGTTOU = 22

/** The stops criu seizes (compel's SUPPORTED_STOP_MASK); any other stop must be converted first. */
export const CRIU_SEIZABLE_STOPS = new Set([SIGSTOP, SIGTSTP])

const NAMES: Record<number, string> = { [SIGSTOP]: 'SIGSTOP', [SIGTSTP]: 'SIGTSTP', [SIGTTIN]: 'SIGTTIN', [SIGTTOU]: 'SIGTTOU' }

export function stopSignalName(signo: number): string {
  return NAMES[signo] ?? `signal ${signo}`
}

/**
 * The signal a stopped process was stopped by, as /proc/PID/stat's exit_code (field 52) reports the group's stop on
 * recent kernels (measured on 6.18; older ones show the thread's own, often 0); undefined when it says nothing or the
 * process is gone.
 */
export function stopSignalOf(pid: number): number | undefined {
  let text: string
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return undefined
  }
  const fields = text.slice(text.lastIndexOf(')') + 2).trim().split(/\s+/)
  if (fields[0] !== 'T') return undefined
  const code = Number(fields[52 - 3])
  return Number.isInteger(code) && code > 0 && code < 65 ? code : undefined
}

/**
 * Seizes every thread of every pid given (each already in a group stop: seizing a stopped thread traps it at once,
 * the kernel waits for that), reads the stop's signal as criu will (PTRACE_GETSIGINFO), and for a stop criu cannot
 * seize sends SIGCONT then SIGSTOP while every thread is held. Nothing is sent unless every thread of every process
 * is held. One line per pid on stdout: "PID SIGNO converted" or "PID SIGNO kept" (a SIGSTOP or SIGTSTP stop, left to
 * criu). Exit 1 with the reason on stderr when it sent nothing because it could not hold a thread.
 */
const CONVERT_SCRIPT = `
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long
PTRACE_GETSIGINFO, PTRACE_SEIZE, PTRACE_DETACH = 0x4202, 0x4206, 17
SEIZABLE = (signal.SIGSTOP, signal.SIGTSTP)
# Ctrl+C reaches this helper with snap's process group: stopped between SIGCONT and SIGSTOP, it would let the
# threads go running. It finishes instead, in milliseconds.
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(s, signal.SIG_IGN)
held = []
def let_go():
    for tid in held:
        libc.ptrace(PTRACE_DETACH, tid, None, None)
def fail(why):
    let_go()
    sys.exit(why)
def stop_signal(tid):
    info = ctypes.create_string_buffer(128)
    if libc.ptrace(PTRACE_GETSIGINFO, tid, None, info) != 0:
        return None
    return int.from_bytes(info.raw[0:4], "little", signed=True)
signos = {}
for pid in map(int, sys.argv[1:]):
    tids = sorted(map(int, os.listdir("/proc/%d/task" % pid)))
    seen = set()
    for tid in tids:
        if libc.ptrace(PTRACE_SEIZE, tid, None, None) != 0:
            fail("cannot seize thread %d of %d: %s" % (tid, pid, os.strerror(ctypes.get_errno())))
        held.append(tid)
        signo = stop_signal(tid)
        if signo is None:
            fail("thread %d of %d is not stopped" % (tid, pid))
        seen.add(signo)
    if len(seen) != 1:
        fail("the threads of %d are not in one stop (%s)" % (pid, sorted(seen)))
    signos[pid] = seen.pop()
# Every thread held: SIGCONT ends the group stop but wakes none of them, and the SIGSTOP waits for them.
convert = [pid for pid, signo in signos.items() if signo not in SEIZABLE]
for pid in convert:
    os.kill(pid, signal.SIGCONT)
for pid in convert:
    os.kill(pid, signal.SIGSTOP)
for pid, signo in signos.items():
    print(pid, signo, "converted" if pid in convert else "kept", flush=True)
let_go()
`

export interface StopConversion {
  pid: number
  /** The signal of the stop found: SIGTTIN, SIGTTOU, ... */
  signo: number
  converted: boolean
}

/**
 * Turns the job-control stops of these stopped processes that criu cannot seize into SIGSTOP stops, without letting a
 * thread run. Throws when it could not (no python3, a thread it could not hold): nothing was sent then.
 */
export async function convertUnseizableStops(pids: number[], timeoutMs = 10_000): Promise<StopConversion[]> {
  if (pids.length === 0) return []
  let stdout: string
  try {
    ;({ stdout } = await execa(PYTHON, ['-c', CONVERT_SCRIPT, ...pids.map(String)], { timeout: timeoutMs, stdin: 'ignore' }))
  } catch (error) {
    const e = error as { code?: string; stderr?: string; stdout?: string; message: string }
    if (e.code === 'ENOENT') throw new Error(`${PYTHON} not found: it holds the threads while the stop is converted`)
    // The helper prints a pid's line only after both signals went out: one printed means its stop was converted.
    if (e.stdout?.trim()) return parseLines(e.stdout)
    throw new Error(e.stderr?.trim().split('\n').at(-1) || e.message)
  }
  return parseLines(stdout)
}

function parseLines(stdout: string): StopConversion[] {
  return stdout
    .trim()
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f.length === 3)
    .map(([pid, signo, what]) => ({ pid: Number(pid), signo: Number(signo), converted: what === 'converted' }))
}
