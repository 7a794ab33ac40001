// A copy is not the original. `restore --isolate` brings the tree back inside new pid, network, mount, IPC and UTS
// namespaces: loopback up and the addresses it listened on present, its connections closed (criu --tcp-close), no
// route out. The engineer reaches it through --publish (a host 127.0.0.1 port forwarded in) and enters it with the
// nsenter command the result prints; --cpu and --memory cap it through a cgroup. Without --isolate, a restore beside a
// running original (its root alive, or a port or unix socket path it listened on held) is refused: a copy there would
// answer the original's clients and reconnect to its peers. Unix sockets, found through the file system the copy
// shares with the host, have their own module (isolate-unix.ts).

import { existsSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import type { Manifest } from '../../bundle/manifest.js'
import { RestoreRefusedError } from '../../errors.js'
import { identifiedDescendants, type TargetIdentity } from '../../process/identity.js'
import { makeCopyCgroups, moveIntoCgroups, type CopyCgroups } from '../../process/cgroup-limits.js'
import { readBootId, readChildren, readLink, readStat, readTextFile } from '../../process/proc.js'
import { parseInetTable, parseUnixTable } from '../../process/net-tables.js'
import { startForwarder, type Forwarder } from '../../tools/port-forward.js'
import { shellQuote } from '../../tools/run.js'
import { writeCopyRecord, type CopyRecord } from '../copies.js'
import { listenedSocketPaths, unixSocketSetup } from './isolate-unix.js'
import { timed, type RestoreRunState } from './state.js'

export interface IsolationOptions {
  /** Host 127.0.0.1 ports forwarded to ports inside the copy. */
  publish: { hostPort: number; port: number }[]
  cpus?: number
  memoryBytes?: number
}

/** What the result says of an isolated copy: how to reach it, enter it and end it. */
export interface IsolatedCopy {
  namespaces: string[]
  /** "127.0.0.1:HOSTPORT -> PORT" pairs. */
  published: { host: string; port: number }[]
  limits: { cpus?: number; memoryBytes?: number }
  /** The command that enters the copy's namespaces. */
  enter: string
  /** The command that ends the copy and everything made for it. */
  end: string
}

export const ISOLATION_NAMESPACES = ['--pid', '--net', '--mount', '--ipc', '--uts']
const IP = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((p) => existsSync(p))

interface ListenAddress {
  family: 'inet' | 'inet6'
  address: string
  port: number
}

/** The TCP addresses the tree listened on, as the manifest recorded them before the freeze. */
export function listenAddresses(manifest: Manifest): ListenAddress[] {
  const out: ListenAddress[] = []
  for (const p of manifest.processes ?? [])
    for (const k of p.sockets ?? []) {
      if (k.state !== 'LISTEN' || !/^inet6?\/tcp$/.test(k.proto)) continue
      const m = /^\[?(.*?)\]?:(\d+)$/.exec(k.local)
      if (m) out.push({ family: k.proto.startsWith('inet6') ? 'inet6' : 'inet', address: m[1]!, port: Number(m[2]) })
    }
  return out
}

const WILDCARD = new Set(['0.0.0.0', '::'])

/**
 * The shell run inside the new namespaces before criu: loopback up (in a new network namespace it is down, and a
 * bind to 127.0.0.1 fails), and each other address the tree listened on added to it, so its listening sockets come
 * back. Nothing else: no other interface, no route, so nothing the copy sends can leave.
 */
export function isolationSetup(manifest: Manifest, privateFiles: { path: string; size: number }[], dir: string, warn: (line: string) => void = () => {}): string {
  if (!IP) throw new RestoreRefusedError('--isolate needs the ip command (iproute2), which is not installed', 'install iproute2')
  // The tree's own socket paths first: a private file below one of those directories is bound over the overlay.
  const sockets = unixSocketSetup(manifest, dir, join(dir, 'criu'))
  for (const w of sockets.warnings) warn(w)
  const lines = [`${IP} link set lo up`, ...sockets.lines]
  // In the copy's own mount namespace (private propagation: nothing reaches the host's), each file the original
  // changed since the dump is replaced by a copy of it cut back to its size then: criu finds what it recorded, and the
  // copy never writes into the original's files. The copies are removed with the work directory; the mounts keep them
  // for as long as the copy lives.
  privateFiles.forEach((f, i) => {
    const copy = shellQuote(join(dir, `private-${i}`))
    lines.push(`cp --sparse=always --preserve=mode,ownership,timestamps -- ${shellQuote(f.path)} ${copy} && truncate -s ${f.size} -- ${copy} && mount --bind -- ${copy} ${shellQuote(f.path)}`)
  })
  const seen = new Set<string>()
  for (const a of listenAddresses(manifest)) {
    if (WILDCARD.has(a.address) || a.address.startsWith('127.') || a.address === '::1' || seen.has(a.address)) continue
    if (!/^[0-9a-fA-F:.]+$/.test(a.address)) continue
    seen.add(a.address)
    lines.push(`${IP} addr add ${a.address}/${a.family === 'inet' ? 32 : 128} dev lo`)
  }
  return lines.join(' && ')
}

/** At most this much of the original's changed files is copied for an isolated copy; past it, a refusal. */
const PRIVATE_FILES_MAX = 256 * 1024 * 1024

/** Takes a changed file for a private copy, within PRIVATE_FILES_MAX in all; false when it does not fit. */
export function takePrivateCopy(s: RestoreRunState, f: { path: string; size: number }): boolean {
  const used = s.privateFiles.reduce((n, p) => n + p.size, 0)
  if (used + f.size > PRIVATE_FILES_MAX) return false
  if (!s.privateFiles.some((p) => p.path === f.path)) {
    s.privateFiles.push({ path: f.path, size: f.size })
    // Printed with the preflight's other warnings.
    s.warnings.push(`file ${f.path} changed since the dump: the copy gets a private copy of it as it was then, and never writes to the original's`)
  }
  return true
}

/**
 * Refuses a restore that is not isolated while the original still runs here (same boot, its root's pid with its
 * recorded start time) or while any TCP port the tree listened on is held on this host.
 */
export function checkOriginalAbsent(manifest: Manifest, newPidns: boolean): void {
  if (manifest.container) return
  const t = manifest.target
  const st = manifest.host.bootId === readBootId() ? readStat(t.pid) : undefined
  const original = st && st.startTime === t.startTime && st.state !== 'Z' && st.state !== 'X' ? `the original, process ${t.pid} (${st.comm}), still runs and holds pid ${t.pid}` : undefined
  const held = [...heldPorts(manifest), ...heldSocketPaths(manifest)]
  if (!original && held.length === 0) return
  const ports = held.length ? `${original ? '; ' : ''}${held.join(', ')} ${held.length === 1 ? 'is' : 'are'} held on this host` : ''
  throw new RestoreRefusedError(
    `${original ?? ''}${ports}: a copy ${newPidns ? 'in a new pid namespace ' : ''}beside it would answer its clients and reach its peers`,
    'restore with --isolate (a copy sealed off in namespaces of its own, reached with --publish HOSTPORT:PORT), or stop the original first',
  )
}

/** "127.0.0.1:8080 (by process 42 (python3))" for each port the tree listened on that something here listens on. */
function heldPorts(manifest: Manifest): string[] {
  const wanted = listenAddresses(manifest)
  if (wanted.length === 0) return []
  const rows = ['tcp', 'tcp6'].flatMap((t) => parseInetTable(readTextFile(`/proc/self/net/${t}`) ?? '')).filter((r) => r.state === 'LISTEN')
  const out: string[] = []
  for (const w of wanted) {
    const row = rows.find((r) => r.localPort === w.port && (r.localAddress === w.address || WILDCARD.has(r.localAddress) || WILDCARD.has(w.address)))
    if (!row) continue
    const holder = holderOfInode(row.inode)
    out.push(`${w.family === 'inet6' ? `[${w.address}]` : w.address}:${w.port}${holder ? ` (by process ${holder})` : ''}`)
  }
  return [...new Set(out)]
}

/** "unix socket /run/app.sock (by process 42 (python3))" for each path the tree listened on that a socket here listens
 *  on now: criu would unlink it and bind its own, and that socket's clients would reach the copy. */
function heldSocketPaths(manifest: Manifest): string[] {
  const wanted = new Set(listenedSocketPaths(manifest))
  if (wanted.size === 0) return []
  const rows = parseUnixTable(readTextFile('/proc/self/net/unix') ?? '').filter((r) => r.listening && r.path !== undefined && wanted.has(r.path))
  const held = rows.map((r) => {
    const holder = holderOfInode(r.inode)
    return `unix socket ${r.path}${holder ? ` (by process ${holder})` : ''}`
  })
  return [...new Set(held)]
}

/** "PID (COMM)" of a process with the socket inode open, looked for only once a port is known to be held. */
function holderOfInode(inode: number): string | undefined {
  const want = `socket:[${inode}]`
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    let fds: string[]
    try {
      fds = readdirSync(`/proc/${name}/fd`)
    } catch {
      continue
    }
    if (fds.some((fd) => readLink(`/proc/${name}/fd/${fd}`) === want)) return `${name} (${readStat(Number(name))?.comm ?? '?'})`
  }
  return undefined
}

/**
 * While criu's --leave-stopped still holds the copy: its processes into the capped cgroup, the published ports
 * forwarded in, and the record `procsnap copies` and `recover` know it by.
 */
export async function sealOffCopy(s: RestoreRunState, root: TargetIdentity): Promise<IsolatedCopy> {
  return timed(s, 'isolate', async () => {
    const iso = s.o.isolate!
    const holderPid = s.holderPid!
    const holderStat = readStat(holderPid)
    const initPid = readChildren(holderPid)[0]
    const initStat = initPid !== undefined ? readStat(initPid) : undefined
    if (!holderStat || initPid === undefined || !initStat) throw new RestoreRefusedError('the copy\'s namespaces ended before it could be sealed off')
    const bootId = readBootId()
    const id = `procsnap-copy-${root.pid}-${root.startTime}`
    const record: CopyRecord = {
      version: 1,
      bundle: s.o.bundle,
      root,
      init: { pid: initPid, startTime: initStat.startTime, bootId },
      holder: { pid: holderPid, startTime: holderStat.startTime, bootId },
      forwarders: [],
      cgroups: [],
      enter: `nsenter --target ${root.pid} --pid --net --mount --ipc --uts`,
      createdAt: new Date().toISOString(),
    }
    // Recorded before anything is made for it, and again as each thing is: a snap killed now leaves a record to end.
    s.copy = record
    writeCopyRecord(record)
    if (iso.cpus !== undefined || iso.memoryBytes !== undefined) {
      const cg: CopyCgroups = makeCopyCgroups(id, { cpus: iso.cpus, memoryBytes: iso.memoryBytes })
      record.cgroups = cg.dirs
      writeCopyRecord(record)
      moveIntoCgroups(cg, [root.pid, ...identifiedDescendants(root).map((d) => d.pid)])
    }
    const forwarders: Forwarder[] = []
    for (const p of iso.publish) {
      const f = await startForwarder(p.hostPort, root.pid, p.port, holderPid, s.budget.remainingMs(10_000))
      forwarders.push(f)
      const fs = readStat(f.pid)
      if (fs) record.forwarders.push({ pid: f.pid, startTime: fs.startTime, bootId, hostPort: f.hostPort, port: f.port })
      writeCopyRecord(record)
    }
    return {
      namespaces: ISOLATION_NAMESPACES.map((n) => n.replace(/^--/, '')),
      published: forwarders.map((f) => ({ host: `127.0.0.1:${f.hostPort}`, port: f.port })),
      limits: { ...(iso.cpus !== undefined ? { cpus: iso.cpus } : {}), ...(iso.memoryBytes !== undefined ? { memoryBytes: iso.memoryBytes } : {}) },
      enter: record.enter,
      end: `procsnap copies --end ${root.pid}`,
    }
  })
}
