// A target as named (a pid, --name, --pidfile, --cgroup, --unit, --container) resolved to the root of its tree, with
// the record of how. One module per way of naming; this one only chooses among them and reads the clock they share.

import { readFileSync } from 'node:fs'
import { UsageError } from '../errors.js'
import { readStat } from '../process/proc.js'
import { resolveCgroup } from './cgroup.js'
import { resolveContainer } from './container.js'
import { resolveName } from './name.js'
import type { ResolvedTarget, TargetSpec } from './naming.js'
import { checkPidfile, readPidfile } from './pidfile.js'
import { ownLineage, readProcessTable } from './process-table.js'
import { resolveUnit } from './unit.js'

export type { ResolvedTarget, TargetNaming, TargetSpec } from './naming.js'

/** USER_HZ: /proc counts start times in these, 100 on every Linux architecture snap runs on. */
const CLOCK_TICKS_PER_SECOND = 100

/** When a live process started, in ms since the epoch (undefined when it is gone or a zombie). */
export function processStartedMs(pid: number): number | undefined {
  const s = readStat(pid)
  if (!s || s.state === 'Z' || s.state === 'X') return undefined
  const uptimeSec = Number(readFileSync('/proc/uptime', 'utf8').split(' ')[0])
  const bootMs = Date.now() - uptimeSec * 1000
  return bootMs + (s.startTime * 1000) / CLOCK_TICKS_PER_SECOND
}

export interface TargetChoice {
  pid?: string
  name?: string
  pidfile?: string
  cgroup?: string
  unit?: string
  container?: string
  runcRoot?: string
}

/** Exactly one way of naming the target; the pid is parsed by the caller's parser (it words its own refusal). */
export function targetSpec(c: TargetChoice, parsePid: (raw: string) => number): TargetSpec {
  const given = (['pid', 'name', 'pidfile', 'cgroup', 'unit', 'container'] as const).filter((k) => c[k] !== undefined)
  if (given.length === 0) throw new UsageError('no target given', 'give a pid, or one of --name, --pidfile, --cgroup, --unit, --container')
  if (given.length > 1)
    throw new UsageError(`the target is named twice (${given.map((k) => (k === 'pid' ? 'a pid' : `--${k}`)).join(' and ')})`, 'name it one way only')
  if (c.runcRoot !== undefined && c.container === undefined) throw new UsageError('--runc-root is for --container only')
  switch (given[0]) {
    case 'pid':
      return { kind: 'pid', pid: parsePid(c.pid!) }
    case 'name':
      return { kind: 'name', name: c.name! }
    case 'pidfile':
      return { kind: 'pidfile', path: c.pidfile! }
    case 'cgroup':
      return { kind: 'cgroup', path: c.cgroup! }
    case 'unit':
      return { kind: 'unit', unit: c.unit! }
    default:
      return { kind: 'container', id: c.container!, ...(c.runcRoot ? { runcRoot: c.runcRoot } : {}) }
  }
}

export async function resolveTarget(spec: TargetSpec): Promise<ResolvedTarget> {
  switch (spec.kind) {
    case 'pid':
      return { pid: spec.pid, naming: { by: 'pid', value: String(spec.pid), via: 'pid', pid: spec.pid } }
    case 'name': {
      const table = readProcessTable()
      return resolveName(spec.name, table, ownLineage(table))
    }
    case 'pidfile': {
      const content = readPidfile(spec.path)
      return checkPidfile(spec.path, content, processStartedMs(content.pid))
    }
    case 'cgroup':
      return resolveCgroup(spec.path)
    case 'unit':
      return resolveUnit(spec.unit)
    case 'container':
      return resolveContainer(spec.id, spec.runcRoot)
  }
}

/** How a target is shown in a status line or a bundle name: "name nginx", "unit api.service", "pid 4242". */
export function targetLabel(spec: TargetSpec): string {
  switch (spec.kind) {
    case 'pid':
      return `pid ${spec.pid}`
    case 'name':
      return `name ${spec.name}`
    case 'pidfile':
      return `pidfile ${spec.path}`
    case 'cgroup':
      return `cgroup ${spec.path}`
    case 'unit':
      return `unit ${spec.unit}`
    case 'container':
      return `container ${spec.id}`
  }
}
