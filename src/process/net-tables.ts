// The kernel's socket tables, parsed: /proc/net/tcp{,6}, udp and raw (addresses in the kernel's byte order), /proc/net/unix,
// the inode column of netlink and packet, and `ss -x` for unix peers. Pure text in, rows out: what a tree holds is
// read in sockets.ts.

import { endianness } from 'node:os'
// include/net/tcp_states.h
const TCP_STATES: Record<number, string> = {
  0x01: 'ESTABLISHED',
  0x02: 'SYN_SENT',
  0x03: 'SYN_RECV',
  0x04: 'FIN_WAIT1',
  0x05: 'FIN_WAIT2',
  0x06: 'TIME_WAIT',
  0x07: 'CLOSE',
  0x08: 'CLOSE_WAIT',
  0x09: 'LAST_ACK',
  0x0a: 'LISTEN',
  0x0b: 'CLOSING',
  0x0c: 'NEW_SYN_RECV',
}

export function tcpStateName(hex: string): string {
  return TCP_STATES[parseInt(hex, 16)] ?? `UNKNOWN(${hex})`
}

export interface InetRow {
  family: 'inet' | 'inet6'
  local: string
  remote: string
  localAddress: string
  localPort: number
  remoteAddress: string
  remotePort: number
  stateHex: string
  state: string
  txQueue: number
  rxQueue: number
  uid: number
  inode: number
}

/** The kernel prints each 32-bit word of the address in host order (%08X): on a little-endian CPU its bytes are
 *  reversed from the network order. */
function addressBytes(hex: string, littleEndian: boolean): number[] {
  const bytes: number[] = []
  for (let w = 0; w < hex.length; w += 8) {
    const word = hex.slice(w, w + 8)
    const wb = [0, 2, 4, 6].map((i) => parseInt(word.slice(i, i + 2), 16))
    bytes.push(...(littleEndian ? wb.reverse() : wb))
  }
  return bytes
}

/** RFC 5952 text: the longest run of zero groups (two or more) becomes '::'; an IPv4-mapped address ends dotted. */
export function formatIpv6(bytes: number[]): string {
  const groups: number[] = []
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0))
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) return `::ffff:${bytes.slice(12).join('.')}`
  let bestStart = -1
  let bestLen = 0
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen) {
      bestStart = i
      bestLen = j - i
    }
    i = j
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(':')
  if (bestLen < 2) return hex(groups)
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`
}

function decodeEndpoint(text: string, littleEndian: boolean): { family: 'inet' | 'inet6'; address: string; port: number; shown: string } {
  const [hex = '', portHex = '0'] = text.split(':')
  const port = parseInt(portHex, 16)
  const bytes = addressBytes(hex, littleEndian)
  if (hex.length === 8) {
    const address = bytes.join('.')
    return { family: 'inet', address, port, shown: `${address}:${port}` }
  }
  const address = formatIpv6(bytes)
  return { family: 'inet6', address, port, shown: `[${address}]:${port}` }
}

/**
 * /proc/net/{tcp,tcp6,udp,udp6,raw,raw6}: one socket a line, "sl local rem st tx_queue:rx_queue tr:when retrnsmt uid
 * timeout inode ...". The family follows from the address width (8 hex digits or 32).
 */
export function parseInetTable(text: string, littleEndian = endianness() === 'LE'): InetRow[] {
  const rows: InetRow[] = []
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/)
    if (f.length < 10 || !/^\d+:$/.test(f[0] ?? '')) continue
    const local = decodeEndpoint(f[1]!, littleEndian)
    const remote = decodeEndpoint(f[2]!, littleEndian)
    const [tx = '0', rx = '0'] = (f[4] ?? '').split(':')
    rows.push({
      family: local.family,
      local: local.shown,
      remote: remote.shown,
      localAddress: local.address,
      localPort: local.port,
      remoteAddress: remote.address,
      remotePort: remote.port,
      stateHex: f[3]!.toUpperCase(),
      state: tcpStateName(f[3]!),
      txQueue: parseInt(tx, 16),
      rxQueue: parseInt(rx, 16),
      uid: Number(f[7]),
      inode: Number(f[9]),
    })
  }
  return rows
}

/** The TCP tables are the inet format; the name says which table the caller reads. */
export const parseTcpTable = parseInetTable

export interface UnixRow {
  inode: number
  refCount: number
  flags: number
  type: string
  state: string
  /** __SO_ACCEPTCON in Flags: the socket called listen(). */
  listening: boolean
  path?: string
}

// include/linux/net.h: socket types and socket_state.
const UNIX_TYPES: Record<number, string> = { 1: 'stream', 2: 'dgram', 3: 'raw', 4: 'rdm', 5: 'seqpacket' }
const SOCKET_STATES: Record<number, string> = { 0: 'FREE', 1: 'UNCONNECTED', 2: 'CONNECTING', 3: 'CONNECTED', 4: 'DISCONNECTING' }
const SO_ACCEPTCON = 0x10000

/** /proc/net/unix: "Num RefCount Protocol Flags Type St Inode Path". The path is the rest of the line (it may hold
 *  spaces); an abstract name starts with '@'. It shows no peer. An embryo waiting in an accept queue has inode 0. */
export function parseUnixTable(text: string): UnixRow[] {
  const rows: UnixRow[] = []
  for (const line of text.split('\n')) {
    const m = /^\s*[0-9a-fA-F]+:\s+([0-9a-fA-F]+)\s+[0-9a-fA-F]+\s+([0-9a-fA-F]+)\s+([0-9a-fA-F]+)\s+([0-9a-fA-F]+)\s+(\d+)(?: (.*))?$/.exec(line)
    if (!m) continue
    const flags = parseInt(m[2]!, 16)
    const listening = (flags & SO_ACCEPTCON) !== 0
    const type = parseInt(m[3]!, 16)
    const st = parseInt(m[4]!, 16)
    const row: UnixRow = {
      inode: Number(m[5]),
      refCount: parseInt(m[1]!, 16),
      flags,
      type: UNIX_TYPES[type] ?? `type${type}`,
      state: listening ? 'LISTEN' : (SOCKET_STATES[st] ?? `state${st}`),
      listening,
    }
    if (m[6] !== undefined && m[6].length > 0) row.path = m[6]
    rows.push(row)
  }
  return rows
}

export interface InodeRow {
  inode: number
  protocol: number
}

/** /proc/net/netlink ("sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode") and /proc/net/packet ("sk RefCnt Type
 *  Proto Iface R Rmem User Inode"): the inode is the last column. An unbound netlink socket is not listed. */
export function parseLastColumnInodes(text: string, protocolColumn: number): InodeRow[] {
  const rows: InodeRow[] = []
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/)
    if (f.length < 2) continue
    const inode = Number(f.at(-1))
    if (Number.isInteger(inode)) rows.push({ inode, protocol: parseInt(f[protocolColumn] ?? '0', 16) })
  }
  return rows
}

export interface SsUnixRow {
  netid: string
  state: string
  recvQ: number
  sendQ: number
  local: string
  inode: number
  peerName: string
  peer: number
}

/**
 * `ss -xan` (iproute2): "Netid State Recv-Q Send-Q Local-Address Port Peer-Address Port", where the unix "port" is the
 * inode and a missing name is '*'. For a listening socket Recv-Q is the accept backlog. A name with spaces is taken
 * whole: the two inodes are the last numbers before an optional users:(...) column.
 */
export function parseSsUnix(text: string): SsUnixRow[] {
  const rows: SsUnixRow[] = []
  for (const line of text.split('\n')) {
    const m = /^(u_\w+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(.*?)\s+(\d+)\s+(.*?)\s+(\d+)(?:\s+users:.*)?\s*$/.exec(line)
    if (!m) continue
    rows.push({
      netid: m[1]!,
      state: m[2]!,
      recvQ: Number(m[3]),
      sendQ: Number(m[4]),
      local: m[5]!,
      inode: Number(m[6]),
      peerName: m[7]!,
      peer: Number(m[8]),
    })
  }
  return rows
}
