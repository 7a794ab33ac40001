// --unit NAME.service: systemd's MainPID where systemctl answers; otherwise the unit's cgroup as systemd lays it out
// (system.slice/NAME.service, in the cgroup v2 hierarchy or v1's name=systemd one), whose root process is the target:
// a host whose pid 1 is not systemd, or a container that shares the host's cgroups, still names services this way.

import { NoSuchTargetError, UsageError } from '../errors.js'
import { ask } from './ask.js'
import { cgroupHierarchies, findCgroup, hierarchyName, rootOf, type CgroupHierarchy } from './cgroup.js'
import type { ResolvedTarget } from './naming.js'

const UNIT_TYPES = ['service', 'scope', 'socket', 'mount', 'swap', 'slice']

/** NAME or NAME.service (a unit without a known type suffix is a service, as systemctl takes it). */
export function unitName(raw: string): string {
  if (!/^[A-Za-z0-9:_.@\\-]+$/.test(raw) || raw.startsWith('.') || raw.includes('..'))
    throw new UsageError(`'${raw}' is not a systemd unit name`, 'give the unit as `systemctl status` names it, e.g. nginx.service')
  const type = raw.slice(raw.lastIndexOf('.') + 1)
  return raw.includes('.') && UNIT_TYPES.includes(type) ? raw : `${raw}.service`
}

/** The cgroup systemd puts a system unit in: system.slice/UNIT (a unit of a slice of its own is not looked for). */
export function unitCgroupPath(unit: string): string {
  return `/system.slice/${unit}`
}

/** The hierarchies systemd lays its units out in: v2, and v1's name=systemd. */
export function systemdHierarchies(all: CgroupHierarchy[]): CgroupHierarchy[] {
  return all.filter((h) => h.version === 2 || h.controllers.includes('name=systemd'))
}

/** MainPID as systemctl reports it: a pid, 0 (no main process), or undefined (no systemd to ask). */
export function parseMainPid(stdout: string): number | undefined {
  const v = stdout.trim()
  return /^\d+$/.test(v) ? Number(v) : undefined
}

export async function resolveUnit(raw: string): Promise<ResolvedTarget> {
  const unit = unitName(raw)
  const answer = await ask('systemctl', ['show', '--property', 'MainPID', '--value', '--', unit])
  const main = answer ? parseMainPid(answer.stdout) : undefined
  if (main !== undefined && main > 0) return { pid: main, naming: { by: 'unit', value: unit, via: 'systemctl MainPID', pid: main } }
  const found = findCgroup(unitCgroupPath(unit), systemdHierarchies(cgroupHierarchies()))
  if (!found || found.pids.length === 0)
    throw new NoSuchTargetError(
      main === 0 ? `the unit ${unit} has no main process and no process in its cgroup` : `no unit ${unit}: systemctl does not answer and no cgroup ${unitCgroupPath(unit)} holds a process`,
      'is it running? check with `systemctl status`, or give the pid',
    )
  const root = rootOf(`the unit ${unit}`, found)
  return { pid: root.pid, naming: { by: 'unit', value: unit, via: `${hierarchyName(found.hierarchy)} ${found.rel}`, pid: root.pid } }
}
