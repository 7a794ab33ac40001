// TCP repair mode left on a live process's sockets. criu dumps an established connection by putting the socket in
// repair mode (TCP_REPAIR) from inside the process, and takes it out when it lets go. A criu killed in between leaves
// the socket in repair mode: the process, once resumed, gets EPERM from recv() on it (measured: a python server's
// connection thread died of it; nginx logs `recv() failed (1: Operation not permitted)`). So before a tree is resumed
// after such a death, each of its sockets is checked and taken out of repair mode: the process never sees it.
//
// Node has no pidfd_getfd nor setsockopt(TCP_REPAIR), so a small python3 helper does it: it takes a copy of each
// socket from the process (pidfd_getfd, Linux 5.6; root with ptrace rights over the process), reads TCP_REPAIR, and
// sets it to 0 where it is on. Without python3 the check cannot be made, and the caller says so.

import { existsSync, readdirSync, readlinkSync } from 'node:fs'
import { queryTool } from './run.js'

const PYTHON = ['/usr/bin/python3', '/bin/python3'].find((p) => existsSync(p))

const HELPER = `
import ctypes, json, os, socket, sys
SOL_TCP, TCP_REPAIR, SYS_pidfd_getfd = 6, 19, 438
libc = ctypes.CDLL(None, use_errno=True)
out = []
try:
    pidfd = os.pidfd_open(int(sys.argv[1]))
except OSError as e:
    print(json.dumps({"error": e.strerror})); sys.exit(0)
for fd in map(int, sys.argv[2:]):
    copy = libc.syscall(SYS_pidfd_getfd, pidfd, fd, 0)
    if copy < 0:
        continue  # closed since it was listed
    s = socket.socket(fileno=copy)
    try:
        if s.getsockopt(SOL_TCP, TCP_REPAIR):
            s.setsockopt(SOL_TCP, TCP_REPAIR, 0)
            out.append({"fd": fd, "fixed": s.getsockopt(SOL_TCP, TCP_REPAIR) == 0})
    except OSError:
        pass  # not a TCP socket
    finally:
        s.detach(); os.close(copy)
print(json.dumps({"repaired": out}))
`

/** The fds of a process that are sockets, from /proc (empty when it is gone). */
function socketFds(pid: number): number[] {
  let names: string[] = []
  try {
    names = readdirSync(`/proc/${pid}/fd`)
  } catch {
    return []
  }
  return names.map(Number).filter((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:[')
    } catch {
      return false
    }
  })
}

export interface RepairResult {
  /** "pid 1234 fd 7", one per socket that was in repair mode and is out of it now. */
  repaired: string[]
  /** What could not be checked or fixed, each with the reason. */
  problems: string[]
}

/** Takes every socket of these processes out of TCP repair mode, and says which were in it. */
export async function leaveRepairMode(pids: number[]): Promise<RepairResult> {
  const result: RepairResult = { repaired: [], problems: [] }
  for (const pid of pids) {
    const fds = socketFds(pid)
    if (fds.length === 0) continue
    if (!PYTHON) {
      result.problems.push(`pid ${pid}: no python3 to check its sockets for TCP repair mode`)
      continue
    }
    const r = await queryTool(PYTHON, ['-c', HELPER, String(pid), ...fds.map(String)], 30_000)
    let parsed: { repaired?: { fd: number; fixed: boolean }[]; error?: string }
    try {
      parsed = JSON.parse(r.output.trim().split('\n').at(-1) ?? '')
    } catch {
      result.problems.push(`pid ${pid}: the repair-mode check failed (${r.output.trim().split('\n').at(-1) ?? 'no output'})`)
      continue
    }
    if (parsed.error) result.problems.push(`pid ${pid}: ${parsed.error}`)
    for (const s of parsed.repaired ?? []) {
      if (s.fixed) result.repaired.push(`pid ${pid} fd ${s.fd}`)
      else result.problems.push(`pid ${pid} fd ${s.fd}: still in TCP repair mode`)
    }
  }
  return result
}
