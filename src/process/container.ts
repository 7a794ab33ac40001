// A process in a container (runc, and so Docker and Kubernetes): its own root filesystem and mount namespace, with
// mounts bound in from the host (cgroup hierarchies, volumes). criu must be told about those the way runc tells it
// (`--external mnt[...]`), or it fails with "doesn't have a proper root mount". Found from /proc, decided here.

import { readTextFile } from './proc.js'
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

/**
 * The container plan for a pid, or undefined when it is not in a container: same mount namespace as snap, or not
 * the init of a PID namespace of its own (a container's processes are dumped through their init).
 */
export function describeContainer(pid: number, readLink: (p: string) => string | undefined): ContainerPlan | undefined {
  const mnt = readLink(`/proc/${pid}/ns/mnt`)
  if (!mnt || mnt === readLink('/proc/self/ns/mnt')) return undefined
  const status = readTextFile(`/proc/${pid}/status`) ?? ''
  const nspid = /^NSpid:\s*(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/) ?? []
  const selfNs = /^NSpid:\s*(.*)$/m.exec(readTextFile('/proc/self/status') ?? '')?.[1]?.trim().split(/\s+/) ?? []
  if (nspid.length <= selfNs.length || nspid.at(-1) !== '1') return undefined
  const inside = readTextFile(`/proc/${pid}/mountinfo`)
  const host = readTextFile('/proc/self/mountinfo')
  if (!inside || !host) return undefined
  return planContainer(parseMountInfo(inside), parseMountInfo(host))
}
