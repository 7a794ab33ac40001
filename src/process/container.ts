// A process in a container (runc, and so Docker and Kubernetes): its own root filesystem and mount namespace, with
// mounts bound in from the host (cgroup hierarchies, volumes). criu must be told about those the way runc tells it
// (`--external mnt[...]`), or it fails with "doesn't have a proper root mount". A file the container's processes hold
// open on a mount the container does not see (stdio a runtime gave as a host file or terminal) criu cannot look up at
// all: found here, before any signal, so the dump is refused instead of failing after the freeze. Found from /proc,
// decided here.

import { listProcDir, readLink as readLinkQuietly, readProcLink, readProcText, readProcessTree, readTextFile } from './proc.js'
import { join } from 'node:path'

export interface MountInfo {
  id: number
  parent: number
  /** major:minor of the filesystem. */
  dev: string
  /** The path inside the filesystem that is mounted here ("/" for its root, "/rc1" for a cgroup sub-hierarchy). */
  root: string
  mountPoint: string
  fstype: string
}

/** /proc/PID/mountinfo (proc(5)): fields up to the optional ones, then "-", fstype, source, super options. */
export function parseMountInfo(text: string): MountInfo[] {
  const out: MountInfo[] = []
  for (const line of text.split('\n')) {
    if (!line.trim()) continue
    const [left, right] = line.split(' - ')
    if (!left || !right) continue
    const f = left.split(' ')
    if (f.length < 5) continue
    out.push({
      id: Number(f[0]),
      parent: Number(f[1]),
      dev: f[2]!,
      root: unescapeMount(f[3]!),
      mountPoint: unescapeMount(f[4]!),
      fstype: right.split(' ')[0] ?? '',
    })
  }
  return out
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
}

export interface ExternalMount {
  /** The mount point inside the container: criu's key for it. */
  key: string
  /** Where the same directory is on the host: what restore binds there. */
  hostPath: string
  fstype: string
}

export interface ContainerPlan {
  /** The container's root directory as the host sees it: criu restore's --root. */
  rootfs: string
  externalMounts: ExternalMount[]
  /** What could not be placed on the host (a mount from a filesystem the host does not show). */
  problems: string[]
}

/** Where a container's mount (a filesystem and a path in it) is on the host: the host mount of that filesystem whose
 *  root contains the path, the deepest one. */
function hostPathOf(m: MountInfo, host: MountInfo[]): string | undefined {
  let best: MountInfo | undefined
  for (const h of host) {
    if (h.dev !== m.dev) continue
    const inside = h.root === '/' || m.root === h.root || m.root.startsWith(`${h.root}/`)
    if (inside && (!best || h.root.length > best.root.length)) best = h
  }
  if (!best) return undefined
  const rest = best.root === '/' ? m.root : m.root.slice(best.root.length)
  return rest === '/' || rest === '' ? best.mountPoint : join(best.mountPoint, rest)
}

/**
 * A mount is external when its filesystem is not mounted whole anywhere in the container: a bind of a host directory
 * (a volume, a cgroup sub-hierarchy). criu can recreate what lives in the container (its proc, sysfs, tmpfs /dev and
 * binds between them), not what comes from outside.
 */
export function planContainer(containerMounts: MountInfo[], hostMounts: MountInfo[]): ContainerPlan {
  const problems: string[] = []
  const root = containerMounts.find((m) => m.mountPoint === '/')
  const rootfs = root ? hostPathOf(root, hostMounts) : undefined
  if (!root || !rootfs) problems.push('the container\'s root filesystem could not be found on the host')
  const wholeDevs = new Set(containerMounts.filter((m) => m.root === '/').map((m) => m.dev))
  const externalMounts: ExternalMount[] = []
  for (const m of containerMounts) {
    if (m === root || wholeDevs.has(m.dev)) continue
    const hostPath = hostPathOf(m, hostMounts)
    if (!hostPath) {
      problems.push(`mount ${m.mountPoint} (${m.fstype}) comes from a filesystem the host does not show`)
      continue
    }
    externalMounts.push({ key: m.mountPoint, hostPath, fstype: m.fstype })
  }
  return { rootfs: rootfs ?? '', externalMounts, problems }
}

/** One open fd of a process, as /proc/PID/fd and /proc/PID/fdinfo/FD show it. */
export interface OpenFd {
  fd: number
  /** readlink of /proc/PID/fd/FD: a path for a file, "pipe:[INODE]", "socket:[INODE]", "anon_inode:..." otherwise. */
  link: string
  /** fdinfo's mnt_id: the mount the file was opened through (mount ids are unique across namespaces). */
  mntId?: number
}

/** What the fd check needs of one process of the container's tree. */
export interface ContainerProcess {
  pid: number
  comm: string
  /** The ids of the mounts in the process's own mount namespace (its mountinfo). */
  mountIds: ReadonlySet<number>
  fds: OpenFd[]
}

/** A file the container's tree holds open on a host mount it does not see. */
export interface HostFile {
  /** The first holder found (the root first, then its descendants, lowest fd first). */
  pid: number
  comm: string
  fd: number
  path: string
  mount: MountInfo
  /** Every other fd of the tree on the same file. */
  alsoHeldBy: { pid: number; fd: number }[]
}

/** fdinfo's `mnt_id:` line (proc(5)); undefined on a kernel that does not show it. */
export function parseFdInfoMntId(text: string): number | undefined {
  const m = /^mnt_id:\s*(\d+)\s*$/m.exec(text)
  return m?.[1] === undefined ? undefined : Number(m[1])
}

/** Whether an fd names something on a mount: a path. Pipes, sockets, anon inodes and namespace files are no mount's,
 *  and a memfd or dma-buf reads as a path on the kernel's internal mounts, which criu handles by their kind. */
function isPathFd(link: string): boolean {
  return link.startsWith('/') && !link.startsWith('/memfd:') && !link.startsWith('/dmabuf:')
}

/**
 * The files the tree holds open on a mount its process does not see but the host does: criu dumps a file by finding
 * its mount among the process's, and fails on these after the freeze ("Can't lookup mount=N for fd=F"). A mount the
 * host does not show either (the kernel's internal ones) is left to criu, which knows those by their kind.
 *
 * Pipes are not looked at: a runtime's stdio pipes, whose other end is outside the tree, criu dumps as they are and
 * restores as pipes of their own, no longer joined to the runtime's ends (runc joins them with `--inherit-fd` at
 * restore, which only the runtime that reads them can do); the dump works, so it is not refused.
 */
export function findHostFiles(processes: ContainerProcess[], hostMounts: MountInfo[]): HostFile[] {
  const hostById = new Map(hostMounts.map((m) => [m.id, m]))
  const byFile = new Map<string, HostFile>()
  for (const p of processes) {
    for (const f of [...p.fds].sort((a, b) => a.fd - b.fd)) {
      if (f.mntId === undefined || !isPathFd(f.link) || p.mountIds.has(f.mntId)) continue
      const mount = hostById.get(f.mntId)
      if (!mount) continue
      const key = `${f.mntId} ${f.link}`
      const seen = byFile.get(key)
      if (seen) seen.alsoHeldBy.push({ pid: p.pid, fd: f.fd })
      else byFile.set(key, { pid: p.pid, comm: p.comm, fd: f.fd, path: f.link, mount, alsoHeldBy: [] })
    }
  }
  return [...byFile.values()]
}

/** One line per file: who holds it, where it is, why criu cannot dump it and what to do instead. */
export function describeHostFile(h: HostFile): string {
  const others = h.alsoHeldBy.length === 0 ? '' : ` (also ${h.alsoHeldBy.map((o) => (o.pid === h.pid ? `fd ${o.fd}` : `fd ${o.fd} of ${o.pid}`)).join(', ')})`
  // A runtime's stdio is where such files come from; another fd was opened from outside before the container's
  // pivot_root or passed in over a socket.
  const wayOut = h.fd <= 2 ? 'start the container with its stdio as a pipe or a terminal of its own, not a host file' : "bind the file's directory into the container, or let the process open it from inside"
  return (
    `process ${h.pid} (${h.comm}) fd ${h.fd} is ${h.path}${others} on the host's mount ${h.mount.id} (${h.mount.fstype} on ${h.mount.mountPoint}), ` +
    `which the container does not see, so criu cannot look it up: ${wayOut}`
  )
}

/** The container's processes as the fd check reads them; a process gone meanwhile is left out. Strict reads: a file
 *  that exists but cannot be read refuses the dump (ProcUnreadableError) rather than hide an fd. */
export function readContainerProcesses(pids: number[]): ContainerProcess[] {
  const mountsByNs = new Map<string, ReadonlySet<number>>()
  const out: ContainerProcess[] = []
  for (const pid of pids) {
    const ns = readLinkQuietly(`/proc/${pid}/ns/mnt`)
    let mountIds = ns === undefined ? undefined : mountsByNs.get(ns)
    if (!mountIds) {
      const text = readProcText(`/proc/${pid}/mountinfo`)
      if (text === undefined) continue
      mountIds = new Set(parseMountInfo(text).map((m) => m.id))
      if (ns !== undefined) mountsByNs.set(ns, mountIds)
    }
    const names = listProcDir(`/proc/${pid}/fd`)
    if (names === undefined) continue
    const fds: OpenFd[] = []
    for (const name of names) {
      const link = readProcLink(`/proc/${pid}/fd/${name}`)
      if (link === undefined) continue // closed meanwhile
      const fd: OpenFd = { fd: Number(name), link }
      if (isPathFd(link)) {
        const info = readProcText(`/proc/${pid}/fdinfo/${name}`)
        if (info === undefined) continue
        fd.mntId = parseFdInfoMntId(info)
      }
      fds.push(fd)
    }
    const comm = readProcText(`/proc/${pid}/comm`)?.trim() ?? '?'
    out.push({ pid, comm, mountIds, fds })
  }
  return out
}

/**
 * The container plan for a pid, or undefined when it is not in a container: same mount namespace as snap, or not
 * the init of a PID namespace of its own (a container's processes are dumped through their init). `pids` is the tree
 * to check for host files, the init first; read from /proc when not given.
 */
export function describeContainer(pid: number, readLink: (p: string) => string | undefined, pids?: number[]): ContainerPlan | undefined {
  const mnt = readLink(`/proc/${pid}/ns/mnt`)
  if (!mnt || mnt === readLink('/proc/self/ns/mnt')) return undefined
  const status = readTextFile(`/proc/${pid}/status`) ?? ''
  const nspid = /^NSpid:\s*(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/) ?? []
  const selfNs = /^NSpid:\s*(.*)$/m.exec(readTextFile('/proc/self/status') ?? '')?.[1]?.trim().split(/\s+/) ?? []
  if (nspid.length <= selfNs.length || nspid.at(-1) !== '1') return undefined
  const inside = readTextFile(`/proc/${pid}/mountinfo`)
  const host = readTextFile('/proc/self/mountinfo')
  if (!inside || !host) return undefined
  const hostMounts = parseMountInfo(host)
  const plan = planContainer(parseMountInfo(inside), hostMounts)
  const hostFiles = findHostFiles(readContainerProcesses(pids ?? readProcessTree(pid)), hostMounts)
  plan.problems.push(...hostFiles.map(describeHostFile))
  return plan
}
