// CPU and memory caps for an isolated copy: a cgroup of its own, so a copy under study can never starve the host the
// original still serves. cgroup v2 (one unified hierarchy: cpu.max, memory.max) where the host runs it, else v1's cpu
// and memory hierarchies (cpu.cfs_quota_us, memory.limit_in_bytes).

import { existsSync, mkdirSync, rmdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { RestoreRefusedError } from '../errors.js'

const ROOT = '/sys/fs/cgroup'
const PERIOD_US = 100_000

export interface CopyLimits {
  /** CPUs, e.g. 0.5 for half of one. */
  cpus?: number
  memoryBytes?: number
}

/** The cgroup directories made for one copy, to move its processes into and to remove when it ends. */
export interface CopyCgroups {
  dirs: string[]
}

function isV2(): boolean {
  return existsSync(join(ROOT, 'cgroup.controllers'))
}

/** Makes the copy's cgroup(s) with its caps; nothing is moved in yet. A cap this host cannot set is a refusal. */
export function makeCopyCgroups(name: string, limits: CopyLimits): CopyCgroups {
  const dirs: string[] = []
  const make = (dir: string, files: [string, string][]) => {
    try {
      mkdirSync(dir)
      dirs.push(dir)
      for (const [file, value] of files) writeFileSync(join(dir, file), value)
    } catch (e) {
      removeCopyCgroups({ dirs })
      throw new RestoreRefusedError(`cannot cap the copy in ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'restore without --cpu and --memory, or on a host whose cgroups can be written')
    }
  }
  if (isV2()) {
    const files: [string, string][] = []
    if (limits.cpus !== undefined) files.push(['cpu.max', `${Math.max(1000, Math.round(limits.cpus * PERIOD_US))} ${PERIOD_US}`])
    if (limits.memoryBytes !== undefined) files.push(['memory.max', String(limits.memoryBytes)], ['memory.swap.max', '0'])
    make(join(ROOT, name), files)
  } else {
    if (limits.cpus !== undefined)
      make(join(ROOT, 'cpu', name), [['cpu.cfs_period_us', String(PERIOD_US)], ['cpu.cfs_quota_us', String(Math.max(1000, Math.round(limits.cpus * PERIOD_US)))]])
    if (limits.memoryBytes !== undefined) make(join(ROOT, 'memory', name), [['memory.limit_in_bytes', String(limits.memoryBytes)]])
  }
  return { dirs }
}

/** Moves each process (all its threads) into every cgroup of the copy: their children are born there. */
export function moveIntoCgroups(cg: CopyCgroups, pids: number[]): void {
  for (const dir of cg.dirs) for (const pid of pids) writeFileSync(join(dir, 'cgroup.procs'), String(pid))
}

/** Removes the copy's cgroups; one still holding a process (EBUSY) is left and named. */
export function removeCopyCgroups(cg: CopyCgroups): string[] {
  const left: string[] = []
  for (const dir of cg.dirs) {
    try {
      rmdirSync(dir)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') left.push(dir)
    }
  }
  return left
}
