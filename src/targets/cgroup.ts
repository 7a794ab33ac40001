// --cgroup PATH: the root of the processes in a cgroup (and the cgroups below it). PATH is a directory under a cgroup
// mount (/sys/fs/cgroup/memory/app) or a path as /proc/PID/cgroup shows it (/system.slice/app.service), looked for in
// every hierarchy: cgroup v2's, then v1's named systemd one, then each v1 controller's.

import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { isAbsolute, join, normalize } from 'node:path'
import { NoSuchTargetError, UsageError } from '../errors.js'
import { readProcText } from '../process/proc.js'
import { type ProcessEntry, type ResolvedTarget } from './naming.js'
import { readProcessEntry } from './process-table.js'
import { ambiguous } from './name.js'
import { treeRoots } from './roots.js'

export interface CgroupHierarchy {
  version: 1 | 2
  mountPoint: string
  /** v1: what the hierarchy holds, as its mount options name it ("memory", "cpu", "name=systemd"); v2: empty. */
  controllers: string[]
}

/** The cgroup mounts in /proc/PID/mountinfo (proc(5)): v2 first, then v1's name=systemd, then the other v1 ones. */
export function parseCgroupMounts(mountinfo: string): CgroupHierarchy[] {
  const out: CgroupHierarchy[] = []
  for (const line of mountinfo.split('\n')) {
    const [left, right] = line.split(' - ')
    if (!left || !right) continue
    const [fstype, , superOptions = ''] = right.split(' ')
    const mountPoint = left.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
    if (!mountPoint) continue
    if (fstype === 'cgroup2') out.push({ version: 2, mountPoint, controllers: [] })
    else if (fstype === 'cgroup')
      out.push({ version: 1, mountPoint, controllers: superOptions.split(',').filter((o) => o !== 'rw' && o !== 'ro' && !o.startsWith('release_agent') && o !== 'clone_children' && o !== 'noprefix' && o !== 'xattr') })
  }
  const rank = (h: CgroupHierarchy) => (h.version === 2 ? 0 : h.controllers.includes('name=systemd') ? 1 : 2)
  return out.sort((a, b) => rank(a) - rank(b))
}

export function cgroupHierarchies(): CgroupHierarchy[] {
  return parseCgroupMounts(readProcText('/proc/self/mountinfo') ?? '')
}

/** How a hierarchy is named in a record: "cgroup v2", "cgroup v1 memory", "cgroup v1 name=systemd". */
export function hierarchyName(h: CgroupHierarchy): string {
  return h.version === 2 ? 'cgroup v2' : `cgroup v1 ${h.controllers.join(',')}`
}

/** A cgroup path names a cgroup from its hierarchy's root, never with '..'. */
function checkRelative(path: string): string {
  if (path.split('/').includes('..')) throw new UsageError(`the cgroup path ${path} climbs out with '..'`, 'give the path as /proc/PID/cgroup shows it')
  return normalize(`/${path}`)
}

/** Where PATH is: the directory and the hierarchy it belongs to, in the order the hierarchies are searched. */
export function cgroupCandidates(path: string, hierarchies: CgroupHierarchy[]): { dir: string; hierarchy: CgroupHierarchy; rel: string }[] {
  if (isAbsolute(path)) {
    const abs = normalize(path)
    const within = hierarchies.filter((h) => abs === h.mountPoint || abs.startsWith(`${h.mountPoint}/`))
    // The deepest mount holding it (/sys/fs/cgroup/unified, not a v2 mounted at /sys/fs/cgroup above it).
    const h = within.sort((a, b) => b.mountPoint.length - a.mountPoint.length)[0]
    if (h) return [{ dir: abs, hierarchy: h, rel: abs.slice(h.mountPoint.length) || '/' }]
  }
  const rel = checkRelative(path)
  return hierarchies.map((h) => ({ dir: join(h.mountPoint, rel), hierarchy: h, rel }))
}

const MAX_CGROUP_DIRS = 10_000

/** Every pid in the cgroup at dir and in the cgroups below it, each once. */
export function cgroupPids(dir: string): number[] {
  const pids = new Set<number>()
  const queue = [dir]
  let dirs = 0
  while (queue.length > 0) {
    const d = queue.shift()!
    if (++dirs > MAX_CGROUP_DIRS) throw new UsageError(`${dir} holds more than ${MAX_CGROUP_DIRS} cgroups`, 'name a cgroup further down')
    let text: string
    try {
      text = readFileSync(join(d, 'cgroup.procs'), 'utf8')
    } catch {
      continue // removed meanwhile, or no cgroup directory at all
    }
    for (const line of text.split('\n')) if (/^\d+$/.test(line.trim())) pids.add(Number(line.trim()))
    for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) queue.push(join(d, e.name))
  }
  return [...pids].sort((a, b) => a - b)
}

/** The one root among a cgroup's processes: those whose parent is outside it. Zombies are no target. */
export function cgroupRoot(what: string, entries: ProcessEntry[]): ProcessEntry {
  const live = entries.filter((p) => p.state !== 'Z' && p.state !== 'X')
  if (live.length === 0) throw new NoSuchTargetError(`${what} holds no running process`, 'is the service running?')
  const roots = treeRoots(live, live)
  if (roots.length > 1) throw ambiguous(what, roots)
  return roots[0]!
}

export interface FoundCgroup {
  dir: string
  hierarchy: CgroupHierarchy
  rel: string
  pids: number[]
}

/** The first candidate directory that exists and holds processes; else the first that exists (empty); else none. */
export function findCgroup(path: string, hierarchies = cgroupHierarchies()): FoundCgroup | undefined {
  let empty: FoundCgroup | undefined
  for (const c of cgroupCandidates(path, hierarchies)) {
    if (!isDirectory(c.dir) || !existsSync(join(c.dir, 'cgroup.procs'))) continue
    const pids = cgroupPids(c.dir)
    if (pids.length > 0) return { ...c, pids }
    empty ??= { ...c, pids }
  }
  return empty
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory()
  } catch {
    return false
  }
}

export function resolveCgroup(path: string): ResolvedTarget {
  const found = findCgroup(path)
  if (!found) throw new NoSuchTargetError(`no cgroup ${path} in any cgroup hierarchy of this host`, 'give the path as /proc/PID/cgroup shows it, or a directory under /sys/fs/cgroup')
  const root = rootOf(`the cgroup ${path}`, found)
  return { pid: root.pid, naming: { by: 'cgroup', value: path, via: `${hierarchyName(found.hierarchy)} ${found.rel}`, pid: root.pid } }
}

/** The root process of a found cgroup, read from /proc now. */
export function rootOf(what: string, found: FoundCgroup): ProcessEntry {
  const entries = found.pids.map(readProcessEntry).filter((e): e is ProcessEntry => e !== undefined)
  return cgroupRoot(what, entries)
}

