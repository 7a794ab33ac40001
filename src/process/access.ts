// Can snap touch this process at all? Answered from /proc before any signal, so a refusal leaves the target as it was.

import { PermissionDeniedError, UsageError, TargetNotFoundError, TargetRefusedError } from '../errors.js'
import {
  CAP_CHECKPOINT_RESTORE, CAP_SYS_ADMIN, CAP_SYS_PTRACE, hasCap, readEffectiveCaps, readProcText, readPtraceScope, readStat, readStatStrict,
  readStatusStrict,
} from './proc.js'

const PF_KTHREAD = 0x00200000

/** 0 when the process is gone (the checks after it say so); ProcUnreadableError when its stat cannot be read: a
 *  kernel thread must not pass for a process. */
function readFlags(pid: number): number {
  const text = readProcText(`/proc/${pid}/stat`)
  if (text === undefined) return 0
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ')
  return Number(rest[9 - 3])
}

export function parsePid(raw: string): number {
  if (!/^\d+$/.test(raw.trim())) throw new UsageError(`'${raw}' is not a pid`, 'give the numeric process id, e.g. from `pgrep NAME`')
  const pid = Number(raw.trim())
  if (!Number.isSafeInteger(pid) || pid <= 0) throw new UsageError(`'${raw}' is not a valid pid`)
  return pid
}

/** Refuses what snap must never stop: init, itself, the kernel's own threads, zombies, traced processes. */
export function checkTargetAllowed(pid: number, ownPids: number[] = []): void {
  if (pid === 1) throw new TargetRefusedError('refusing to stop pid 1 (init): stopping it would hang the whole system')
  if (pid === process.pid || ownPids.includes(pid)) throw new TargetRefusedError(`refusing to dump snap itself (pid ${pid})`)
  const stat = readStatStrict(pid)
  if (!stat) throw new TargetNotFoundError(pid)
  if (pid === process.ppid) throw new TargetRefusedError(`refusing to stop snap's own parent (pid ${pid}): it waits for snap, and snap would wait for it`)
  if ((readFlags(pid) & PF_KTHREAD) !== 0) throw new TargetRefusedError(`pid ${pid} (${stat.comm}) is a kernel thread; there is nothing to dump`)
  if (stat.state === 'Z' || stat.state === 'X') throw new TargetRefusedError(`pid ${pid} (${stat.comm}) is a zombie; it has already exited`)
  const status = readStatusStrict(pid)
  const tracer = Number(status?.['TracerPid'] ?? 0)
  if (tracer !== 0) {
    // Only a name for the message: the refusal stands whether or not the tracer's stat can be read.
    const tracerComm = readStat(tracer)?.comm ?? 'unknown'
    throw new TargetRefusedError(
      `pid ${pid} is already traced by pid ${tracer} (${tracerComm})`,
      'detach that debugger first; two tracers cannot attach at once',
    )
  }
  if (sessionLeaderHidden(status?.['NSsid']))
    throw new TargetRefusedError(
      `pid ${pid} (${stat.comm}) is in a session whose leader is outside its PID namespace (session id 0 there); criu cannot checkpoint it`,
      'start the process in a session of its own (setsid), as a service manager or an interactive shell does',
    )
}

/** NSsid lists the session id as seen from each PID namespace down to the task's own; the last is what the task
 *  itself sees. It is 0 when the session leader lives in an outer namespace (a process started by a container
 *  runtime's exec without a terminal, say), and criu refuses such a task outright, after it has already frozen it. */
export function sessionLeaderHidden(nssid: string | undefined): boolean {
  if (nssid === undefined) return false // a kernel without the field: let criu be the judge
  const ids = nssid.trim().split(/\s+/)
  return ids.at(-1) === '0'
}

/** Refuses, with the reason, when this user could not ptrace the target or run criu. */
export function checkPrivileges(pid: number): void {
  const caps = readEffectiveCaps('self')
  const uid = process.geteuid?.() ?? 0
  const status = readStatusStrict(pid)
  const targetUid = Number((status?.['Uid'] ?? '0').split(/\s+/)[1] ?? 0)
  const ptrace = hasCap(caps, CAP_SYS_PTRACE)
  if (!hasCap(caps, CAP_SYS_ADMIN) && !hasCap(caps, CAP_CHECKPOINT_RESTORE))
    throw new PermissionDeniedError(
      'criu needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE, which this snap does not have',
      'run snap as root (sudo)',
    )
  if (targetUid !== uid && !ptrace)
    throw new PermissionDeniedError(`pid ${pid} belongs to uid ${targetUid}, snap runs as uid ${uid} without CAP_SYS_PTRACE`, 'run snap as root')
  const scope = readPtraceScope()
  if (scope === 3) throw new PermissionDeniedError('kernel.yama.ptrace_scope is 3: no process may be traced until reboot')
  if (scope === 2 && !ptrace) throw new PermissionDeniedError('kernel.yama.ptrace_scope is 2: only CAP_SYS_PTRACE may trace', 'run snap as root')
  if (scope === 1 && !ptrace)
    throw new PermissionDeniedError('kernel.yama.ptrace_scope is 1: only a parent may trace its children', 'run snap as root, or set kernel.yama.ptrace_scope=0')
}
