// What criu would fail on, decided from TreeFacts alone before any signal (pure functions: tested without a process),
// and the facts about sockets both the refusals and the criu options (criu-options.ts) read. Each rule cites the
// criu 4.2 source it follows.

import { networkLockGiven } from '../tools/network-lock.js'
import { CONNECTED_TCP_STATES, type HeldSocket } from './sockets.js'
import type { IdSet, ProcessFacts, TreeFacts } from './tree-facts.js'

export type RefusalCode =
  | 'io-uring'
  | 'sysv-shm'
  | 'capability'
  | 'nested-pidns'
  | 'not-tree-root'
  | 'tool-missing'
  | 'external-unix'
  | 'traced'

export interface Refusal {
  pid: number
  comm: string
  /** What criu cannot do with this process, in a form that follows "cannot checkpoint process PID (COMM): ". */
  cause: string
  /** The way out. */
  hint: string
  code: RefusalCode
}

export interface PlanOptions {
  /** Options the person adds with --criu-opt: `--network-lock nftables` or `skip` means no iptables tool is run. */
  criuExtraOptions?: string[]
}

const coreOnly = (facts: TreeFacts) => `snap dump --core-only ${facts.rootPid}`
export const who = (p: { pid: number; comm: string }) => `${p.pid} (${p.comm})`
export const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`

export function isTcpConnection(s: HeldSocket): boolean {
  return (s.family === 'inet' || s.family === 'inet6') && s.proto === 'tcp' && CONNECTED_TCP_STATES.has(s.state)
}

export function isTcpListener(s: HeldSocket): boolean {
  return (s.family === 'inet' || s.family === 'inet6') && s.proto === 'tcp' && s.state === 'LISTEN'
}

/** criu's dump_pstree (pstree.c) fails on a root that is not its session's leader, and tty.c on a terminal it cannot
 *  restore, unless --shell-job. The rule src/pipelines/dump.ts used: not the leader, or a controlling terminal. */
export function shellJobNeeded(root: { pid: number; session: number; ttyNr: number }): boolean {
  return root.session !== root.pid || root.ttyNr !== 0
}

export function describeSocket(s: HeldSocket): string {
  if (s.family === 'unix') return `unix ${s.proto} socket ${s.path ?? `[${s.inode}]`}${s.peerPath ? ` connected to ${s.peerPath}` : ''} (fd ${s.fd})`
  if (s.family === 'inet' || s.family === 'inet6') return `${s.proto} ${s.local}${s.remotePort ? `->${s.remote}` : ''} ${s.state} (fd ${s.fd})`
  return `socket [${s.inode}] (fd ${s.fd})`
}

/** The sockets two processes have in common: the same socket (an inherited fd), or the two ends of one unix
 *  connection (a socketpair channel). */
export function sharedSockets(upper: HeldSocket[], lower: HeldSocket[]): HeldSocket[] {
  const upperInodes = new Set(upper.map((s) => s.inode))
  const upperPeers = new Set(upper.flatMap((s) => (s.peer ? [s.peer] : [])))
  return lower.filter((s) => upperInodes.has(s.inode) || (s.peer !== undefined && s.peer !== 0 && upperInodes.has(s.peer)) || upperPeers.has(s.inode))
}

/** The ancestors the root shares sockets with, walking up while each shares one with the one below; the last is the
 *  root of the tree the root belongs to. */
export function sharingAncestors(facts: TreeFacts): { pid: number; comm: string; shared: HeldSocket[] }[] {
  const root = facts.processes[0]
  if (!root) return []
  const chain: { pid: number; comm: string; shared: HeldSocket[] }[] = []
  let below = root.sockets
  let expected = facts.rootPpid
  for (const a of facts.ancestors) {
    if (a.pid !== expected) break
    const shared = sharedSockets(a.sockets, below)
    if (shared.length === 0) break
    chain.push({ pid: a.pid, comm: a.comm, shared })
    below = a.sockets
    expected = a.ppid
  }
  return chain
}

function idsMatchSnap(ids: IdSet, snapReal: number): boolean {
  return ids.real === snapReal && ids.effective === snapReal && ids.saved === snapReal
}

function idText(kind: 'uid' | 'gid', ids: IdSet): string {
  const same = ids.real === ids.effective && ids.real === ids.saved
  return same ? `${kind} ${ids.real}` : `${kind} ${ids.real}/${ids.effective}/${ids.saved} (real/effective/saved)`
}

/** A connection criu locks with ip6tables, not iptables: IPv6 and not IPv4-mapped (netfilter.c switches those to
 *  iptables). */
function needsIp6tables(s: HeldSocket): boolean {
  return s.family === 'inet6' && !/^\[::ffff:\d+\.\d+\.\d+\.\d+\]/.test(s.remote)
}

/** The tree's root is in a network namespace other than snap's (a container's): criu locks that namespace whole. */
export function treeHasOwnNetns(facts: TreeFacts): boolean {
  const root = facts.processes[0]
  return root?.ns.net !== undefined && facts.snap.ns.net !== undefined && root.ns.net !== facts.snap.ns.net
}

/**
 * The netfilter tools criu will run, and why. criu's default network lock is iptables (cr_options.h
 * NETWORK_LOCK_DEFAULT). A tree in snap's own netns: each connection is locked with `iptables -w -I INPUT/OUTPUT ...`
 * (`ip6tables` for IPv6) through `sh -c` (netfilter.c, sk-tcp.c tcp_repair_established). A tree in a netns of its
 * own: criu locks the whole netns with iptables-restore, and ip6tables-restore when the host has IPv6 (net.c
 * iptables_network_lock_internal), whether or not it has connections. --network-lock nftables uses libnftables
 * inside criu, no program.
 */
export function netfilterToolsNeeded(facts: TreeFacts, extra: string[] = []): { tool: 'iptables' | 'ip6tables' | 'iptables-restore' | 'ip6tables-restore'; why: string; pid: number; comm: string }[] {
  // criu's default lock is iptables (cr_options.h NETWORK_LOCK_DEFAULT).
  const method = networkLockGiven(extra) ?? 'iptables'
  if (method === 'nftables' || method === 'skip') return []
  const root = facts.processes[0]
  if (!root) return []
  if (treeHasOwnNetns(facts)) {
    const why = `the tree has its own network namespace (${root.ns.net}), which criu locks whole`
    const out: ReturnType<typeof netfilterToolsNeeded> = [{ tool: 'iptables-restore', why, pid: root.pid, comm: root.comm }]
    if (facts.hostIpv6) out.push({ tool: 'ip6tables-restore', why, pid: root.pid, comm: root.comm })
    return out
  }
  if (extra.includes('--tcp-close')) return []
  const out: ReturnType<typeof netfilterToolsNeeded> = []
  for (const tool of ['iptables', 'ip6tables'] as const) {
    for (const p of facts.processes) {
      const conn = p.sockets.find((s) => isTcpConnection(s) && (tool === 'ip6tables') === needsIp6tables(s))
      if (conn) {
        out.push({ tool, why: `criu locks each TCP connection with it, e.g. ${conn.local}->${conn.remote}`, pid: p.pid, comm: p.comm })
        break
      }
    }
  }
  return out
}

function ioUringRefusal(facts: TreeFacts, p: ProcessFacts): Refusal | undefined {
  if (p.ioUringFds.length === 0) return undefined
  return {
    pid: p.pid,
    comm: p.comm,
    code: 'io-uring',
    cause:
      `it has ${plural(p.ioUringFds.length, 'io_uring instance')} open (fd ${p.ioUringFds.join(', ')}), and criu cannot checkpoint ` +
      `io_uring (files.c: an anon inode it does not know is an unsupported file); Node 24's libuv opens them even with UV_USE_IO_URING=0`,
    hint: `take cores without a checkpoint: ${coreOnly(facts)}`,
  }
}

function sysvRefusal(facts: TreeFacts, root: ProcessFacts, p: ProcessFacts): Refusal | undefined {
  if (p.sysvShm.length === 0) return undefined
  const hostIpc = facts.snap.ns.ipc
  // criu dumps SysV IPC only as part of an IPC namespace it dumps whole: the root's, when it is not criu's own
  // (cr-dump.c check_sysvipc_map_dump: "doesn't live in IPC ns").
  if (hostIpc === undefined || (root.ns.ipc !== hostIpc && p.ns.ipc !== hostIpc)) return undefined
  const segments = p.sysvShm.map((l) => {
    const f = l.trim().split(/\s+/)
    return `key 0x${(f[5] ?? '').replace(/^\/SYSV/, '')} shmid ${f[4] ?? '?'}`
  })
  return {
    pid: p.pid,
    comm: p.comm,
    code: 'sysv-shm',
    cause:
      `it is attached to SysV shared memory (${[...new Set(segments)].join(', ')}) in snap's own IPC namespace (${hostIpc}), and criu dumps ` +
      `SysV IPC only with an IPC namespace it dumps whole (PostgreSQL's shared buffers are such a segment)`,
    hint: `run the service in an IPC namespace of its own (a container, or \`unshare --ipc\`), or take cores without a checkpoint: ${coreOnly(facts)}`,
  }
}

function capabilityRefusal(facts: TreeFacts, p: ProcessFacts): Refusal | undefined {
  // kernel/sys.c check_prlimit_permission: the caller's real uid must equal the task's real, effective and saved
  // uid, and its real gid the task's three gids, or the caller needs CAP_SYS_RESOURCE. criu's dump_task_rlimits calls
  // prlimit64 on every task.
  const snap = facts.snap
  if (snap.capSysResource) return undefined
  const uidOk = idsMatchSnap(p.uid, snap.uid.real)
  const gidOk = idsMatchSnap(p.gid, snap.gid.real)
  if (uidOk && gidOk) return undefined
  const uids = [p.uid.real, p.uid.effective, p.uid.saved].filter((u) => u !== snap.uid.real)
  const name = uids.map((u) => facts.userNames[u]).find((n) => n !== undefined)
  const theirs = [
    ...(uidOk ? [] : [`${idText('uid', p.uid)}${name ? ` (${name})` : ''}`]),
    ...(gidOk ? [] : [idText('gid', p.gid)]),
  ].join(' and ')
  return {
    pid: p.pid,
    comm: p.comm,
    code: 'capability',
    cause:
      `it runs as ${theirs}, not snap's uid ${snap.uid.real} gid ${snap.gid.real}, and snap lacks CAP_SYS_RESOURCE: criu reads every task's ` +
      `rlimits with prlimit, which the kernel allows only for matching ids or with that capability (criu fails with ` +
      `"Can't get rlimit 0: Operation not permitted")`,
    hint: `run the service's workers as snap's user (uid ${snap.uid.real}), run snap on a host that grants it CAP_SYS_RESOURCE, or take cores without a checkpoint: ${coreOnly(facts)}`,
  }
}

/** A task another tracer holds stops in ptrace-stop (`t`) for that tracer, never in the group stop snap's SIGSTOP asks
 *  for: snap could not verify the stop, and its signals would reach the tracer, not the task. The root is refused the
 *  same way before this (access.ts); this is for every other process of the tree. */
function tracedRefusal(p: ProcessFacts): Refusal | undefined {
  if (!p.tracer) return undefined
  return {
    pid: p.pid,
    comm: p.comm,
    code: 'traced',
    cause: `it is traced by pid ${p.tracer.pid} (${p.tracer.comm}), and a traced process stops for its tracer, not for SIGSTOP: snap could neither stop it nor put it back`,
    hint: 'detach that tracer (a debugger, strace) first, then dump again',
  }
}

function nestedPidnsRefusal(facts: TreeFacts, root: ProcessFacts, p: ProcessFacts): Refusal | undefined {
  if (p.nsPid.length <= root.nsPid.length) return undefined
  // The init of the deeper namespace, when it is in the tree: pid 1 there, at the same depth.
  const init = facts.processes.find((q) => q.nsPid.length === p.nsPid.length && q.nsPid.at(-1) === 1 && q.ns.pid === p.ns.pid)
  return {
    pid: p.pid,
    comm: p.comm,
    code: 'nested-pidns',
    cause:
      `it is in a PID namespace nested below the root's (NSpid ${p.nsPid.join(' ')}; the root's: ${root.nsPid.join(' ')}), and criu can dump ` +
      `only the root's own PID namespace, not one nested inside it`,
    hint:
      (init && init.pid !== p.pid ? `dump that namespace's init on its own (snap dump ${init.pid}), ` : '') +
      `or take cores without a checkpoint: ${coreOnly(facts)}`,
  }
}

function notTreeRootRefusal(facts: TreeFacts, root: ProcessFacts): Refusal | undefined {
  const chain = sharingAncestors(facts)
  const top = chain.at(-1)
  const parent = chain[0]
  if (!top || !parent) return undefined
  const what = parent.shared.slice(0, 2).map(describeSocket).join(', ') + (parent.shared.length > 2 ? `, and ${parent.shared.length - 2} more` : '')
  return {
    pid: root.pid,
    comm: root.comm,
    code: 'not-tree-root',
    cause:
      `it is not the root of its tree: its parent ${who(parent)} shares ${what} with it, and criu cannot dump one end of a socket ` +
      `without the process at the other (it fails with "External socket is used")` +
      (top.pid !== parent.pid ? `; the sharing goes up to ${who(top)}` : ''),
    hint: `dump the whole tree from its root: snap dump ${top.pid} (${top.comm}); or take cores of this one without a checkpoint: ${coreOnly(facts)}`,
  }
}

/** Unix sockets connected to a socket outside the tree that criu cannot dump even with --ext-unix-sk: it only
 *  handles a DGRAM peer with a name (sk-unix.c __dump_external_socket). */
function externalUnixRefusal(facts: TreeFacts, p: ProcessFacts, treeInodes: Set<number>, coveredInodes: Set<number>): Refusal | undefined {
  const bad = p.sockets.filter(
    (s) =>
      s.family === 'unix' && s.peer !== undefined && s.peer !== 0 && !treeInodes.has(s.peer) && !coveredInodes.has(s.peer) &&
      (s.proto !== 'dgram' || s.peerPath === undefined),
  )
  const first = bad[0]
  if (!first) return undefined
  const stream = first.proto !== 'dgram'
  return {
    pid: p.pid,
    comm: p.comm,
    code: 'external-unix',
    cause:
      `its ${describeSocket(first)} is connected to socket [${first.peer}] outside the tree` +
      (bad.length > 1 ? ` (and ${plural(bad.length - 1, 'more socket')})` : '') +
      (stream
        ? `, and criu cannot dump one half of a ${first.proto} unix connection ("Can't dump half of stream unix connection"); a systemd service's stdout to the journal is one`
        : `, a peer without a name, which criu cannot reconnect ("Can't dump name-less external socket")`),
    hint: `take cores without a checkpoint: ${coreOnly(facts)}${stream ? `; or dump the process at the other end in the same tree` : ''}`,
  }
}

function toolRefusals(facts: TreeFacts, extra: string[]): Refusal[] {
  const out: Refusal[] = []
  for (const need of netfilterToolsNeeded(facts, extra)) {
    const found = facts.tools[need.tool]
    if (found?.onPath) continue
    const cause = found
      ? `criu needs ${need.tool} (${need.why}), and it is at ${found.path} but not on snap's PATH, which criu searches`
      : `criu needs ${need.tool} (${need.why}), and it is not installed (not on PATH nor in /usr/sbin, /sbin)`
    const hint = found
      ? `add ${found.path.slice(0, found.path.lastIndexOf('/'))} to PATH, or take cores without a checkpoint: ${coreOnly(facts)}`
      : `install iptables (\`apt-get install iptables\`), pass --criu-opt=--network-lock=nftables if this criu is built with nftables, or take cores without a checkpoint: ${coreOnly(facts)}`
    out.push({ pid: need.pid, comm: need.comm, code: 'tool-missing', cause, hint })
  }
  return out
}

/** What criu could not dump, found before any signal. Empty: nothing known stands in the way. */
export function findRefusals(facts: TreeFacts, options: PlanOptions = {}): Refusal[] {
  const root = facts.processes[0]
  if (!root) return []
  const out: Refusal[] = []
  const notRoot = notTreeRootRefusal(facts, root)
  if (notRoot) out.push(notRoot)
  const treeInodes = new Set(facts.processes.flatMap((p) => p.sockets.map((s) => s.inode)))
  // Sockets shared with the ancestors named above are that refusal's business, not a second one.
  const coveredInodes = new Set(sharingAncestors(facts).flatMap((a) => facts.ancestors.find((x) => x.pid === a.pid)?.sockets.map((s) => s.inode) ?? []))
  for (const p of facts.processes) {
    for (const r of [
      ioUringRefusal(facts, p),
      sysvRefusal(facts, root, p),
      capabilityRefusal(facts, p),
      nestedPidnsRefusal(facts, root, p),
      tracedRefusal(p),
      externalUnixRefusal(facts, p, treeInodes, coveredInodes),
    ])
      if (r) out.push(r)
  }
  out.push(...toolRefusals(facts, options.criuExtraOptions ?? []))
  return out
}
