// Reads what the kernel says about a process in /proc. Plain functions over one pid; nothing here sends signals.
//
// A read that fails because the process (or thread, or fd) is gone answers "nothing": that is the truth. Any other
// failure (EACCES from hidepid or an LSM, EIO, ENOTDIR or EISDIR from a mount over the file) hides something that
// exists, and answering "nothing" there would let a dump decide from a tree it did not see: what the plan reads
// throws ProcUnreadableError instead. A few readers stay quiet on purpose, for callers that must finish whatever
// /proc says (an identity check during a rollback, the bookkeeping of tools, a scan of every pid); each says so.

import { readFileSync, readdirSync, readlinkSync } from 'node:fs'
import { ProcUnreadableError } from '../errors.js'

/** ENOENT: the process's (or thread's, or fd's) entry no longer exists. ESRCH: it exited while its file was read. */
const GONE_CODES = new Set(['ENOENT', 'ESRCH'])

function errnoCode(e: unknown): string | undefined {
  const code = (e as NodeJS.ErrnoException | null | undefined)?.code
  return typeof code === 'string' ? code : undefined
}

/** Whether a failed read means that what it described is gone (and "nothing" is the right answer). */
export function isGoneError(e: unknown): boolean {
  const code = errnoCode(e)
  return code !== undefined && GONE_CODES.has(code)
}

/**
 * One read of a /proc path: its result; undefined when what it describes is gone; for any other errno a
 * ProcUnreadableError naming the path and the code. An error without an errno (a bug in `read`) is passed on as is.
 */
export function procRead<T>(path: string, read: (path: string) => T): T | undefined {
  try {
    return read(path)
  } catch (e) {
    if (isGoneError(e)) return undefined
    const code = errnoCode(e)
    if (code === undefined) throw e
    // Node words it "EACCES: permission denied, open '/proc/...'": the part between the code and the comma.
    const reason = /^[A-Z0-9_]+: ([^,]+)/.exec((e as Error).message ?? '')?.[1]
    throw new ProcUnreadableError(path, code, reason)
  }
}

export const readProcText = (path: string): string | undefined => procRead(path, (p) => readFileSync(p, 'utf8'))
export const listProcDir = (path: string): string[] | undefined => procRead(path, (p) => readdirSync(p))
export const readProcLink = (path: string): string | undefined => procRead(path, (p) => readlinkSync(p))

/** For the readers that must not throw: a file that cannot be read answers as a gone process does. */
function quietly<T>(read: () => T): T | undefined {
  try {
    return read()
  } catch (e) {
    if (e instanceof ProcUnreadableError) return undefined
    throw e
  }
}

/** One-letter scheduler state from /proc/PID/stat (R, S, D, T, t, Z, X, I, ...). */
export type ThreadState = string

export interface ProcStat {
  pid: number
  comm: string
  state: ThreadState
  ppid: number
  pgrp: number
  session: number
  ttyNr: number
  numThreads: number
  /** Field 22: start time in clock ticks after boot. With the pid it names one process for all time (until reboot). */
  startTime: number
  /** Field 52: the wait status of a process that has exited (a zombie): the exit status in bits 8-15, or the killing
   *  signal in bits 0-6. Undefined where the kernel hides it (no ptrace access) or prints none (before Linux 3.5). */
  exitCode?: number
}

/** Undefined when the process (or thread) is gone; throws ProcUnreadableError when its stat exists but cannot be read. */
export function readStatStrict(pid: number, tid?: number): ProcStat | undefined {
  const text = readProcText(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`)
  return text === undefined ? undefined : parseStat(text)
}

/**
 * Never throws on a read: undefined when the process is gone or its stat cannot be read. For what must finish
 * whatever /proc says: the identity check of a rollback, tool and journal bookkeeping, scans of every pid. What a
 * dump decides from before its first signal uses readStatStrict.
 */
export function readStat(pid: number, tid?: number): ProcStat | undefined {
  return quietly(() => readStatStrict(pid, tid))
}

/** comm may hold spaces and parentheses, so split on the LAST ')'. */
export function parseStat(text: string): ProcStat {
  const open = text.indexOf('(')
  const close = text.lastIndexOf(')')
  if (open < 0 || close < open) throw new Error(`unparseable stat line: ${text.slice(0, 80)}`)
  const pid = Number(text.slice(0, open).trim())
  const comm = text.slice(open + 1, close)
  // Fields after comm start at field 3 (state).
  const rest = text.slice(close + 2).trim().split(/\s+/)
  const field = (n: number): string => rest[n - 3] ?? ''
  return {
    pid,
    comm,
    state: field(3),
    ppid: Number(field(4)),
    pgrp: Number(field(5)),
    session: Number(field(6)),
    ttyNr: Number(field(7)),
    numThreads: Number(field(20)),
    startTime: Number(field(22)),
    ...(field(52) !== '' ? { exitCode: Number(field(52)) } : {}),
  }
}

export function processExists(pid: number): boolean {
  return readStat(pid) !== undefined
}

/** Empty when the process is gone; throws ProcUnreadableError when its task directory cannot be read. */
export function listThreadIds(pid: number): number[] {
  return (listProcDir(`/proc/${pid}/task`) ?? []).map(Number).filter(Number.isInteger).sort((a, b) => a - b)
}

export interface ThreadSnapshot {
  tid: number
  state: ThreadState
}

/**
 * The state of every thread right now, for the found state, which is read before any signal: a thread that exits
 * between listing and reading is left out; one whose stat cannot be read throws ProcUnreadableError.
 */
export function readThreadStatesStrict(pid: number): ThreadSnapshot[] {
  const out: ThreadSnapshot[] = []
  for (const tid of listThreadIds(pid)) {
    const s = readStatStrict(pid, tid)
    if (s) out.push({ tid, state: s.state })
  }
  return out
}

/**
 * The state of every thread right now; never throws on a read. The freeze and the rollback poll it to the end: a
 * thread that is gone or cannot be read is left out (an empty answer is neither all stopped nor none stopped).
 */
export function readThreadStates(pid: number): ThreadSnapshot[] {
  const out: ThreadSnapshot[] = []
  for (const tid of quietly(() => listThreadIds(pid)) ?? []) {
    const s = readStat(pid, tid)
    if (s) out.push({ tid, state: s.state })
  }
  return out
}

function parseStatus(text: string): Record<string, string> {
  const out: Record<string, string> = {}
  for (const line of text.split('\n')) {
    const i = line.indexOf(':')
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1).trim()
  }
  return out
}

/** /proc/PID/status as key -> value; undefined when the process is gone, ProcUnreadableError when it cannot be read. */
export function readStatusStrict(pid: number | 'self'): Record<string, string> | undefined {
  const text = readProcText(`/proc/${pid}/status`)
  return text === undefined ? undefined : parseStatus(text)
}

/** /proc/PID/status as key -> value; never throws on a read (undefined when gone or unreadable), for the freeze's
 *  bookkeeping (a tracer's group, a resident size for a note). What decides a dump uses readStatusStrict. */
export function readStatus(pid: number): Record<string, string> | undefined {
  return quietly(() => readStatusStrict(pid))
}

/** Never throws on a read: a restore compares a restored process's cmdline with the manifest's, and an unreadable one
 *  there is a mismatch to report, not a refusal. */
export function readCmdline(pid: number): string[] {
  const raw = quietly(() => readProcText(`/proc/${pid}/cmdline`)) ?? ''
  const parts = raw.split('\0')
  if (parts.at(-1) === '') parts.pop()
  return parts
}

/** Only the NAMES: values can hold secrets. */
export function readEnvironNames(pid: number): string[] {
  return readEnviron(pid).map(([k]) => k)
}

/** Empty when the process is gone; ProcUnreadableError when its environ cannot be read. */
export function readEnviron(pid: number): [string, string][] {
  return (readProcText(`/proc/${pid}/environ`) ?? '')
    .split('\0')
    .filter((e) => e.length > 0)
    .map((e) => {
      const i = e.indexOf('=')
      return i < 0 ? [e, ''] : [e.slice(0, i), e.slice(i + 1)]
    })
}

/** Any symlink, undefined when it cannot be read for whatever reason: for links that are only a record (an exe, a
 *  cwd) or that are looked for outside /proc. What decides a dump reads links with readProcLink. */
export function readLink(path: string): string | undefined {
  try {
    return readlinkSync(path)
  } catch {
    return undefined
  }
}

/** Empty when the process is gone; ProcUnreadableError when its ns directory or a link in it cannot be read. */
export function readNamespaces(pid: number): Record<string, string> {
  const out: Record<string, string> = {}
  for (const n of listProcDir(`/proc/${pid}/ns`) ?? []) {
    const target = readProcLink(`/proc/${pid}/ns/${n}`)
    if (target) out[n] = target
  }
  return out
}

export function readCgroup(pid: number): string {
  return (readProcText(`/proc/${pid}/cgroup`) ?? '').trim()
}

export interface OpenFile {
  fd: number
  path: string
}

/** Regular files (absolute paths) behind the process's file descriptors. */
export function readOpenFiles(pid: number): OpenFile[] {
  const out: OpenFile[] = []
  for (const fd of listProcDir(`/proc/${pid}/fd`) ?? []) {
    // ENOENT here is a fd closed since the listing.
    const path = readProcLink(`/proc/${pid}/fd/${fd}`)
    if (path && path.startsWith('/') && !path.startsWith('/dev/') && !path.startsWith('/proc/')) out.push({ fd: Number(fd), path })
  }
  return out.sort((a, b) => a.fd - b.fd)
}

/** Files mapped into memory (executable, libraries, mapped data files), without duplicates. */
export function readMappedFiles(pid: number): string[] {
  const text = readProcText(`/proc/${pid}/maps`) ?? ''
  const seen = new Set<string>()
  for (const line of text.split('\n')) {
    const m = /^\S+\s+\S+\s+\S+\s+\S+\s+\d+\s+(\/.*)$/.exec(line)
    const path = m?.[1]
    if (path && !path.endsWith(' (deleted)') && !path.startsWith('/dev/') && !path.startsWith('/memfd:')) seen.add(path)
  }
  return [...seen].sort()
}

function parseChildren(text: string | undefined): number[] {
  const t = (text ?? '').trim()
  return t ? t.split(/\s+/).map(Number) : []
}

/**
 * Children of pid, from /proc/PID/task/TID/children (needs CONFIG_PROC_CHILDREN; empty when absent). A thread gone
 * meanwhile is skipped: its children are reparented and seen elsewhere. A file that exists but cannot be read throws
 * ProcUnreadableError: a tree without its children would be dumped in part.
 */
export function readChildrenStrict(pid: number): number[] {
  return listThreadIds(pid).flatMap((tid) => parseChildren(readProcText(`/proc/${pid}/task/${tid}/children`)))
}

/** Children of pid; never throws on a read (what cannot be read is left out). For the freeze's second look, which a
 *  tree already read whole in the preflight, and for a restore watching what criu made. */
export function readChildren(pid: number): number[] {
  return (quietly(() => listThreadIds(pid)) ?? []).flatMap((tid) => parseChildren(quietly(() => readProcText(`/proc/${pid}/task/${tid}/children`))))
}

/** The whole tree rooted at pid, root first; ProcUnreadableError when a children file cannot be read. */
export function readProcessTree(pid: number): number[] {
  const out: number[] = []
  const queue = [pid]
  while (queue.length > 0) {
    const p = queue.shift()!
    if (out.includes(p)) continue
    out.push(p)
    queue.push(...readChildrenStrict(p))
  }
  return out
}

let cachedBootId: string | undefined
export function readBootId(): string {
  cachedBootId ??= readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
  return cachedBootId
}

/** Undefined on a kernel without Yama (no such file); ProcUnreadableError when the file is there but unreadable:
 *  who may trace is not decided blind. */
export function readPtraceScope(): number | undefined {
  const text = readProcText('/proc/sys/kernel/yama/ptrace_scope')
  return text === undefined ? undefined : Number(text.trim())
}

/** Effective capabilities of a process as a bigint mask (from CapEff in status): none when it is gone,
 *  ProcUnreadableError when its status cannot be read. */
export function readEffectiveCaps(pid: number | 'self'): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)/m.exec(readProcText(`/proc/${pid}/status`) ?? '')
  return m?.[1] ? BigInt('0x' + m[1]) : 0n
}

/** The process group of a process's tracer (a tool leads its own group: criu's pid, for criu), or undefined while
 *  nothing traces it. */
export function tracerGroup(pid: number): number | undefined {
  const tracer = Number(readStatus(pid)?.['TracerPid'] ?? 0)
  return tracer > 0 ? readStat(tracer)?.pgrp : undefined
}

/** A small text file (a pidfile, a file of a work directory), or undefined when it cannot be read for whatever
 *  reason. A /proc file the plan decides from is read with readProcText. */
export function readTextFile(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8')
  } catch {
    return undefined
  }
}

export const CAP_SYS_PTRACE = 19n
export const CAP_SYS_ADMIN = 21n
/** criu reads another uid's rlimits with prlimit, which needs it. */
export const CAP_SYS_RESOURCE = 24n
export const CAP_CHECKPOINT_RESTORE = 40n

export function hasCap(mask: bigint, cap: bigint): boolean {
  return ((mask >> cap) & 1n) === 1n
}
