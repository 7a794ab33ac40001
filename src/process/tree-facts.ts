// Everything a dump must decide before its first signal, read from /proc for every process of the tree, its
// ancestors and snap itself. Only reading here; dump-plan.ts decides from these facts with pure functions.

import { readFileSync, statSync } from 'node:fs'
import { delimiter, join } from 'node:path'
import { TargetNotFoundError } from '../errors.js'
import { readFdLinks, readTreeSockets, IO_URING_LINK, type FdLink, type HeldSocket } from './sockets.js'
import { CAP_SYS_RESOURCE, hasCap, procRead, readNamespaces, readProcText, readStatStrict, readStatusStrict } from './proc.js'
import { EXTRA_DIRS, isExecutableFile } from '../tools/locate.js'

/** Real, effective and saved ids, as in the status Uid: and Gid: lines (the fourth, filesystem id, is not used). */
export interface IdSet {
  real: number
  effective: number
  saved: number
}

/** The /proc/PID/ns links criu compares with its own, e.g. ipc -> "ipc:[4026531839]". */
export interface NamespaceLinks {
  pid?: string
  ipc?: string
  net?: string
  mnt?: string
  user?: string
}

export interface HeldLock {
  /** POSIX, FLOCK, OFDLCK, LEASE as /proc/locks names them. */
  kind: string
  /** ADVISORY, MANDATORY; for a lease ACTIVE, BREAKING, BREAKER. */
  mode: string
  /** READ, WRITE, UNLCK. */
  type: string
  /** The pid column: the owner for POSIX, the creator for FLOCK, -1 for OFD locks (they belong to an open file). */
  pid: number
  /** "fe:00", as the kernel prints major:minor in hex. */
  device: string
  inode: number
  start: string
  end: string
  /** The fd it was seen on, when read from /proc/PID/fdinfo. */
  fd?: number
}

export interface ProcessFacts {
  pid: number
  ppid: number
  comm: string
  session: number
  ttyNr: number
  uid: IdSet
  gid: IdSet
  /** The pid in each PID namespace from the reader's down to the process's own. */
  nsPid: number[]
  ns: NamespaceLinks
  /** Lines of /proc/PID/maps that map SysV shared memory (/SYSV...). */
  sysvShm: string[]
  ioUringFds: number[]
  sockets: HeldSocket[]
  locks: HeldLock[]
  /** Its tracer (TracerPid), when something ptraces it: a traced task stops for its tracer, not for SIGSTOP. */
  tracer?: { pid: number; comm: string }
}

/** A process above the root: only what the shared-socket walk needs. */
export interface AncestorFacts {
  pid: number
  ppid: number
  comm: string
  sockets: HeldSocket[]
}

export interface SnapFacts {
  pid: number
  uid: IdSet
  gid: IdSet
  /** CapEff as the kernel prints it (hex), so the facts stay plain JSON. */
  capEff: string
  capSysResource: boolean
  ns: NamespaceLinks
}

export interface FoundTool {
  path: string
  /** Found through PATH itself, not only in the sbin directories added to it: criu runs it through `sh -c` and
   *  execvp, with snap's PATH. */
  onPath: boolean
}

export const NETFILTER_TOOLS = ['iptables', 'ip6tables', 'iptables-restore', 'ip6tables-restore', 'nft'] as const
export type NetfilterTool = (typeof NETFILTER_TOOLS)[number]

export interface TreeFacts {
  rootPid: number
  /** Root first, then the rest in the order given. A process gone by the time it is read is left out. */
  processes: ProcessFacts[]
  snap: SnapFacts
  rootPpid: number
  /** The root's parent, its parent, ... up to (not including) pid 1. */
  ancestors: AncestorFacts[]
  /** Whether each unix socket's peer is known (from `ss`) or not. */
  unixPeers: 'ss' | 'unknown'
  tools: Record<NetfilterTool, FoundTool | null>
  /** IPv6 is configured on this host (criu then locks a dumped netns with ip6tables-restore too). */
  hostIpv6: boolean
  /** User names from /etc/passwd for the uids of the tree that are not snap's. */
  userNames: Record<number, string>
  /** What could not be read. */
  notes: string[]
}

/** prlimit(2) on another user's task needs it (kernel/sys.c check_prlimit_permission). */

/** "33\t33\t33\t33" -> real, effective, saved. */
export function parseIdLine(line: string | undefined): IdSet {
  const [real = NaN, effective = NaN, saved = NaN] = (line ?? '').trim().split(/\s+/).map(Number)
  return { real, effective, saved }
}

export function parseNsPid(line: string | undefined): number[] {
  return (line ?? '').trim().split(/\s+/).filter(Boolean).map(Number)
}

/**
 * /proc/locks lines, and the "lock:" lines of /proc/PID/fdinfo/FD (the same format after the label):
 * "1: POSIX  ADVISORY  WRITE 8597 fe:00:2148220 0 EOF". A line with "->" is a process waiting for the lock, not
 * holding it, and is left out.
 */
export function parseLocks(text: string): HeldLock[] {
  const out: HeldLock[] = []
  for (const raw of text.split('\n')) {
    const line = raw.replace(/^lock:\s*/, '')
    const m = /^\s*\d+:\s+(\S+)\s+(\S+)\s+(\S+)\s+(-?\d+)\s+([0-9a-fA-F]+:[0-9a-fA-F]+):(\d+)\s+(\d+)\s+(\S+)/.exec(line)
    if (!m) continue
    out.push({ kind: m[1]!, mode: m[2]!, type: m[3]!, pid: Number(m[4]), device: m[5]!.toLowerCase(), inode: Number(m[6]), start: m[7]!, end: m[8]! })
  }
  return out
}

/** Maps of SysV shared memory: the kernel names them "/SYSV" and the key in hex (the inode column is the shmid). */
export function sysvShmMaps(mapsText: string): string[] {
  return mapsText.split('\n').filter((l) => /\s\/SYSV[0-9a-fA-F]{8}/.test(l))
}

/** uid -> name from /etc/passwd text. */
export function parsePasswd(text: string): Map<number, string> {
  const out = new Map<number, string>()
  for (const line of text.split('\n')) {
    const [name, , uid] = line.split(':')
    if (name && uid && /^\d+$/.test(uid) && !out.has(Number(uid))) out.set(Number(uid), name)
  }
  return out
}

/** A /proc file: empty when what it describes is gone (a fd closed since the listing), ProcUnreadableError when it
 *  exists but cannot be read (a lock or a SysV segment there would go unseen). */
function readText(path: string): string {
  return readProcText(path) ?? ''
}

/** User names only label the plan's messages: a missing or unreadable passwd leaves uids as numbers. */
function readPasswd(): string {
  try {
    return readFileSync('/etc/passwd', 'utf8')
  } catch {
    return ''
  }
}

function pickNamespaces(all: Record<string, string>): NamespaceLinks {
  const ns: NamespaceLinks = {}
  for (const k of ['pid', 'ipc', 'net', 'mnt', 'user'] as const) if (all[k]) ns[k] = all[k]
  return ns
}

/** fds that can carry a lock: not sockets, pipes or anon inodes (their fdinfo would be read for nothing). */
function lockableFd(link: string): boolean {
  return !/^(socket|pipe|anon_inode):/.test(link)
}

/**
 * The locks a process holds: the "lock:" lines of its fds' fdinfo (what criu reads on kernels that have them, and the
 * only way to tie an OFD lock, pid -1 in /proc/locks, to a process), and the /proc/locks lines with its pid.
 */
function readLocks(pid: number, links: FdLink[], procLocks: HeldLock[]): HeldLock[] {
  const out: HeldLock[] = []
  const key = (l: HeldLock) => `${l.kind} ${l.device}:${l.inode} ${l.start}-${l.end}`
  const seen = new Set<string>()
  for (const { fd, link } of links) {
    if (!lockableFd(link)) continue
    for (const lock of parseLocks(readText(`/proc/${pid}/fdinfo/${fd}`).split('\n').filter((l) => l.startsWith('lock:')).join('\n'))) {
      if (seen.has(key(lock))) continue
      seen.add(key(lock))
      out.push({ ...lock, fd })
    }
  }
  for (const lock of procLocks) {
    if (lock.pid !== pid || seen.has(key(lock))) continue
    seen.add(key(lock))
    out.push(lock)
  }
  return out
}

/** On PATH first, then in the sbin directories a root shell has (PATH under sudo or cron may lack them). */
export function findTool(name: string, path = process.env.PATH ?? ''): FoundTool | null {
  const pathDirs = path.split(delimiter).filter(Boolean)
  for (const dir of pathDirs) if (isExecutableFile(join(dir, name))) return { path: join(dir, name), onPath: true }
  for (const dir of EXTRA_DIRS) if (isExecutableFile(join(dir, name))) return { path: join(dir, name), onPath: false }
  return null
}

function readProcessFacts(pid: number, links: FdLink[], sockets: HeldSocket[], procLocks: HeldLock[]): ProcessFacts | undefined {
  const stat = readStatStrict(pid)
  const status = readStatusStrict(pid)
  if (!stat || !status) return undefined
  return {
    pid,
    ppid: stat.ppid,
    comm: stat.comm,
    session: stat.session,
    ttyNr: stat.ttyNr,
    uid: parseIdLine(status['Uid']),
    gid: parseIdLine(status['Gid']),
    nsPid: parseNsPid(status['NSpid'] ?? String(pid)),
    ns: pickNamespaces(readNamespaces(pid)),
    sysvShm: sysvShmMaps(readText(`/proc/${pid}/maps`)),
    ioUringFds: links.filter((l) => l.link === IO_URING_LINK).map((l) => l.fd),
    sockets,
    locks: readLocks(pid, links, procLocks),
    ...tracerOf(status),
  }
}

function tracerOf(status: Record<string, string>): { tracer?: { pid: number; comm: string } } {
  const pid = Number(status['TracerPid'] ?? 0)
  return pid > 0 ? { tracer: { pid, comm: readStatStrict(pid)?.comm ?? 'unknown' } } : {}
}

function readSnapFacts(): SnapFacts {
  const status = readStatusStrict(process.pid) ?? {}
  const capEff = (status['CapEff'] ?? '0').trim()
  return {
    pid: process.pid,
    uid: parseIdLine(status['Uid']),
    gid: parseIdLine(status['Gid']),
    capEff,
    capSysResource: /^[0-9a-fA-F]+$/.test(capEff) && hasCap(BigInt('0x' + capEff), CAP_SYS_RESOURCE),
    ns: pickNamespaces(readNamespaces(process.pid)),
  }
}

/** The root's parent, grandparent, ... below pid 1, which snap never dumps. Bounded: a loop would be a kernel bug. */
function readAncestorPids(rootPpid: number): number[] {
  const out: number[] = []
  for (let pid = rootPpid; pid > 1 && out.length < 64 && !out.includes(pid); ) {
    const stat = readStatStrict(pid)
    if (!stat) break
    out.push(pid)
    pid = stat.ppid
  }
  return out
}

/** Reads the facts of the tree rooted at rootPid whose processes are pids (the root among them or not). */
export function readTreeFacts(rootPid: number, pids: number[]): TreeFacts {
  const rootStat = readStatStrict(rootPid)
  if (!rootStat) throw new TargetNotFoundError(rootPid)
  const treePids = [rootPid, ...pids.filter((p) => p !== rootPid)]
  const ancestorPids = readAncestorPids(rootStat.ppid).filter((p) => !treePids.includes(p))
  const links = new Map<number, FdLink[]>()
  for (const pid of [...treePids, ...ancestorPids]) links.set(pid, readFdLinks(pid))
  // One pass over all of them: the tables of a network namespace, and `ss` for its unix peers, are read once.
  const sockets = readTreeSockets([...treePids, ...ancestorPids], links)
  const procLocks = parseLocks(readText('/proc/locks'))
  const notes = [...sockets.notes]

  const processes: ProcessFacts[] = []
  for (const pid of treePids) {
    const facts = readProcessFacts(pid, links.get(pid) ?? [], sockets.byPid[pid] ?? [], procLocks)
    if (facts) processes.push(facts)
    else notes.push(`pid ${pid} exited before its facts were read`)
  }
  if (processes[0]?.pid !== rootPid) throw new TargetNotFoundError(rootPid)

  const ancestors: AncestorFacts[] = []
  for (const pid of ancestorPids) {
    const stat = readStatStrict(pid)
    if (!stat) break
    ancestors.push({ pid, ppid: stat.ppid, comm: stat.comm, sockets: sockets.byPid[pid] ?? [] })
  }

  const snap = readSnapFacts()
  const tools = Object.fromEntries(NETFILTER_TOOLS.map((t) => [t, findTool(t)])) as Record<NetfilterTool, FoundTool | null>

  const passwd = parsePasswd(readPasswd())
  const userNames: Record<number, string> = {}
  for (const p of processes) {
    for (const uid of [p.uid.real, p.uid.effective, p.uid.saved]) {
      const name = passwd.get(uid)
      if (name !== undefined && uid !== snap.uid.real) userNames[uid] = name
    }
  }

  return {
    rootPid,
    processes,
    snap,
    rootPpid: rootStat.ppid,
    ancestors,
    unixPeers: sockets.unixPeers,
    tools,
    // Absent without IPv6; unreadable is not "absent": criu's need for ip6tables-restore is decided from it.
    hostIpv6: procRead('/proc/net/if_inet6', statSync) !== undefined,
    userNames,
    notes,
  }
}
