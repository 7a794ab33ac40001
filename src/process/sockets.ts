// The sockets a process tree holds, as the kernel describes them in /proc: which fd is which socket, its address,
// state and queue. Read-only; the decisions about them are in dump-plan.ts.

import { execFileSync } from 'node:child_process'
import { parseInetTable, parseLastColumnInodes, parseSsUnix, parseUnixTable, type InetRow, type InodeRow, type SsUnixRow, type UnixRow } from './net-tables.js'
import { listProcDir, readProcLink, readProcText } from './proc.js'

export type SocketFamily = 'inet' | 'inet6' | 'unix' | 'netlink' | 'other'

export interface HeldSocket {
  fd: number
  inode: number
  family: SocketFamily
  /** 'tcp', 'udp', 'raw' for inet; 'stream', 'dgram', 'seqpacket' for unix; the protocol number for netlink; '' when unknown. */
  proto: string
  /** TCP state names for inet (UDP uses them too: ESTABLISHED is a connected UDP socket, CLOSE an unconnected one);
   *  LISTEN, CONNECTED, UNCONNECTED, CONNECTING, DISCONNECTING for unix; '' when unknown. */
  state: string
  /** "127.0.0.1:8080", "[::1]:8080"; a unix socket's path ('@' starts an abstract name), '' when unbound. */
  local: string
  remote: string
  localPort?: number
  remotePort?: number
  /** LISTEN TCP (rx_queue) and listening unix (ss Recv-Q): connections waiting in the accept queue. */
  acceptBacklog?: number
  /** unix: the bound path, when it has one. */
  path?: string
  /** unix: the inode of the socket at the other end, from sock_diag through `ss` (absent when ss could not be asked). */
  peer?: number
  /** unix: the peer's bound path, when it has one. */
  peerPath?: string
}

export interface FdLink {
  fd: number
  link: string
}

export interface TreeSockets {
  byPid: Record<number, HeldSocket[]>
  /** fds whose link is anon_inode:[io_uring]. */
  ioUringFds: Record<number, number[]>
  /** Whether unix peers are known: /proc/net/unix does not show them, `ss` (sock_diag UNIX_DIAG_PEER) does. */
  unixPeers: 'ss' | 'unknown'
  /** What could not be read, for the person reading the plan. */
  notes: string[]
}

/**
 * Every fd and what it points to. None when the process is gone; a fd closed between the listing and the readlink is
 * left out. A fd directory or link that cannot be read throws ProcUnreadableError: "no fds" would hide every socket.
 */
export function readFdLinks(pid: number): FdLink[] {
  const out: FdLink[] = []
  for (const name of listProcDir(`/proc/${pid}/fd`) ?? []) {
    const link = readProcLink(`/proc/${pid}/fd/${name}`)
    if (link !== undefined) out.push({ fd: Number(name), link })
  }
  return out.sort((a, b) => a.fd - b.fd)
}

export function socketInodeOf(link: string): number | undefined {
  const m = /^socket:\[(\d+)\]$/.exec(link)
  return m?.[1] ? Number(m[1]) : undefined
}

export const IO_URING_LINK = 'anon_inode:[io_uring]'

/** A table that does not exist is empty (tcp6 without IPv6, packet without AF_PACKET); one that cannot be read
 *  throws ProcUnreadableError. */
function readText(path: string): string {
  return readProcText(path) ?? ''
}

interface NetnsTables {
  inet: Map<number, InetRow & { proto: string }>
  unix: Map<number, UnixRow>
  netlink: Map<number, InodeRow>
  packet: Map<number, InodeRow>
  ss?: Map<number, SsUnixRow>
}

/** One netns's tables, read through a process in it: /proc/PID/net is the net namespace of PID, not of the reader. */
function readNetnsTables(pid: number): NetnsTables {
  const inet = new Map<number, InetRow & { proto: string }>()
  for (const proto of ['tcp', 'udp', 'raw']) {
    for (const table of [proto, `${proto}6`]) {
      for (const row of parseInetTable(readText(`/proc/${pid}/net/${table}`))) {
        // A TCP socket in its accept queue or in TIME_WAIT has inode 0: it belongs to no fd.
        if (row.inode !== 0) inet.set(row.inode, { ...row, proto })
      }
    }
  }
  const unix = new Map(parseUnixTable(readText(`/proc/${pid}/net/unix`)).filter((r) => r.inode !== 0).map((r) => [r.inode, r]))
  const netlink = new Map(parseLastColumnInodes(readText(`/proc/${pid}/net/netlink`), 1).map((r) => [r.inode, r]))
  const packet = new Map(parseLastColumnInodes(readText(`/proc/${pid}/net/packet`), 3).map((r) => [r.inode, r]))
  return { inet, unix, netlink, packet }
}

/** Where `ss` and `nsenter` are; by default found on PATH when run. */
export interface PeerTools {
  ss?: string
  nsenter?: string
}

/**
 * The unix peers of one netns from `ss -xan` (sock_diag UNIX_DIAG_PEER): /proc shows no peers. A netns other than
 * snap's own is entered with nsenter, which needs CAP_SYS_ADMIN (snap runs as root for criu anyway). Undefined when
 * neither can be run.
 */
function readSsPeers(pid: number, ownNetns: boolean, tools: PeerTools): Map<number, SsUnixRow> | undefined {
  const ss = tools.ss ?? 'ss'
  const [command, args] = ownNetns ? [ss, ['-xan']] : [tools.nsenter ?? 'nsenter', [`--net=/proc/${pid}/ns/net`, '--', ss, '-xan']]
  try {
    const out = execFileSync(command, args, { encoding: 'utf8', timeout: 10_000, maxBuffer: 256 << 20, stdio: ['ignore', 'pipe', 'ignore'] })
    return new Map(parseSsUnix(out).map((r) => [r.inode, r]))
  } catch {
    return undefined
  }
}

function describeSocket(fd: number, inode: number, t: NetnsTables): HeldSocket {
  const inet = t.inet.get(inode)
  if (inet) {
    const s: HeldSocket = {
      fd,
      inode,
      family: inet.family,
      proto: inet.proto,
      state: inet.state,
      local: inet.local,
      remote: inet.remote,
      localPort: inet.localPort,
      remotePort: inet.remotePort,
    }
    // For a LISTEN socket the kernel reports sk_ack_backlog, the accept queue's length, as rx_queue.
    if (inet.proto === 'tcp' && inet.state === 'LISTEN') s.acceptBacklog = inet.rxQueue
    return s
  }
  const unix = t.unix.get(inode)
  if (unix) {
    const s: HeldSocket = { fd, inode, family: 'unix', proto: unix.type, state: unix.state, local: unix.path ?? '', remote: '' }
    if (unix.path !== undefined) s.path = unix.path
    const ss = t.ss?.get(inode)
    if (ss) {
      s.peer = ss.peer
      const peerPath = ss.peer !== 0 ? (t.unix.get(ss.peer)?.path ?? (ss.peerName !== '*' ? ss.peerName : undefined)) : undefined
      if (peerPath !== undefined) {
        s.peerPath = peerPath
        s.remote = peerPath
      }
      if (unix.listening) s.acceptBacklog = ss.recvQ
    }
    return s
  }
  const nl = t.netlink.get(inode)
  if (nl) return { fd, inode, family: 'netlink', proto: String(nl.protocol), state: '', local: '', remote: '' }
  const packet = t.packet.get(inode)
  if (packet) return { fd, inode, family: 'other', proto: 'packet', state: '', local: '', remote: '' }
  return { fd, inode, family: 'other', proto: '', state: '', local: '', remote: '' }
}

/** What is known of one netns so far: its tables, and whether `ss` was asked for its unix peers yet. */
interface NetnsState {
  tables: NetnsTables
  ssTried: boolean
  /** The tables were read again, once, for a socket they did not list (made after the first read). */
  refreshed: boolean
}

function isListed(t: NetnsTables, inode: number): boolean {
  return t.inet.has(inode) || t.unix.has(inode) || t.netlink.has(inode) || t.packet.has(inode)
}

/**
 * The sockets (and io_uring instances) each pid holds. The tables are read once per network namespace, through the
 * first pid seen in it (again, once, if a later pid holds a socket they do not list). fdLinks, when the caller already
 * read them, saves reading every fd link twice.
 */
export function readTreeSockets(pids: number[], fdLinks?: Map<number, FdLink[]>, tools: PeerTools = {}): TreeSockets {
  const result: TreeSockets = { byPid: {}, ioUringFds: {}, unixPeers: 'ss', notes: [] }
  const ownNetns = readLinkOrEmpty('/proc/self/ns/net')
  const byNetns = new Map<string, NetnsState>()
  for (const pid of pids) {
    const links = fdLinks?.get(pid) ?? readFdLinks(pid)
    const sockets = links.flatMap((l) => {
      const inode = socketInodeOf(l.link)
      return inode === undefined ? [] : [{ fd: l.fd, inode }]
    })
    result.ioUringFds[pid] = links.filter((l) => l.link === IO_URING_LINK).map((l) => l.fd)
    result.byPid[pid] = []
    if (sockets.length === 0) continue
    const netns = readLinkOrEmpty(`/proc/${pid}/ns/net`) || `pid ${pid}`
    let state = byNetns.get(netns)
    if (!state) {
      state = { tables: readNetnsTables(pid), ssTried: false, refreshed: false }
      byNetns.set(netns, state)
    } else if (!state.refreshed && sockets.some((s) => !isListed(state!.tables, s.inode))) {
      // Peers are asked again too, if needed: the new socket's would not be in the first answer.
      state = { tables: readNetnsTables(pid), ssTried: false, refreshed: true }
      byNetns.set(netns, state)
    }
    const tables = state.tables
    if (!state.ssTried && sockets.some((s) => tables.unix.has(s.inode))) {
      state.ssTried = true
      const ss = readSsPeers(pid, netns === ownNetns, tools)
      if (ss) tables.ss = ss
      else {
        result.unixPeers = 'unknown'
        result.notes.push(`unix socket peers in ${netns} unknown: \`ss -xan\`${netns === ownNetns ? '' : ' through nsenter'} could not be run`)
      }
    }
    result.byPid[pid] = sockets.map((s) => describeSocket(s.fd, s.inode, tables))
  }
  return result
}

function readLinkOrEmpty(path: string): string {
  return readProcLink(path) ?? ''
}

/** A TCP connection of the tree, as its network lock names it. */
export interface TreeConnection {
  family: 'inet' | 'inet6'
  localAddress: string
  localPort: number
  remoteAddress: string
  remotePort: number
}

/** criu's can_dump_inet_sk (sk-inet.c): a TCP socket in one of these states is a connection, dumped in repair mode
 *  and only with --tcp-established (SYN_SENT too: libsoccr restores it). LISTEN and CLOSE need nothing. */
export const CONNECTED_TCP_STATES = new Set(['ESTABLISHED', 'SYN_SENT', 'FIN_WAIT1', 'FIN_WAIT2', 'CLOSE_WAIT', 'LAST_ACK', 'CLOSING'])

/**
 * Every TCP connection the tree's processes hold now, read once the tree is stopped (nothing can accept or close one
 * then): each process's socket inodes, found in the TCP tables of the root's network namespace.
 */
export function readTreeConnections(pids: number[]): TreeConnection[] {
  const root = pids[0]
  if (root === undefined) return []
  const inodes = new Set<number>()
  for (const pid of pids)
    for (const l of readFdLinks(pid)) {
      const inode = socketInodeOf(l.link)
      if (inode !== undefined) inodes.add(inode)
    }
  const out: TreeConnection[] = []
  for (const table of ['tcp', 'tcp6'])
    for (const row of parseInetTable(readProcText(`/proc/${root}/net/${table}`) ?? ''))
      if (inodes.has(row.inode) && CONNECTED_TCP_STATES.has(row.state))
        out.push({ family: row.family, localAddress: row.localAddress, localPort: row.localPort, remoteAddress: row.remoteAddress, remotePort: row.remotePort })
  return out
}
