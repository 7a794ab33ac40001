// --container ID: a container's init on the host. runc's state where runc knows the container (its own root, and
// the roots Docker and containerd give it), then the docker and crictl CLIs where they answer.

import { existsSync } from 'node:fs'
import { NoSuchTargetError, TargetRefusedError, UsageError } from '../errors.js'
import { ask } from './ask.js'
import type { ResolvedTarget } from './naming.js'

/** Where runc keeps containers' state: its own default, Docker's (moby) and containerd's namespaces. */
export const RUNC_ROOTS = ['/run/runc', '/run/docker/runtime-runc/moby', '/run/containerd/runc/k8s.io', '/run/containerd/runc/default']

export function checkContainerId(id: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(id)) throw new UsageError(`'${id}' is not a container id`, 'give the id or name as `runc list` or `docker ps` shows it')
  return id
}

export interface RuncState {
  pid: number
  status: string
}

/** `runc state` prints the container's state as JSON; anything else is no answer. */
export function parseRuncState(stdout: string): RuncState | undefined {
  try {
    const s = JSON.parse(stdout) as { pid?: unknown; status?: unknown }
    return typeof s.pid === 'number' && typeof s.status === 'string' ? { pid: s.pid, status: s.status } : undefined
  } catch {
    return undefined
  }
}

/** What a state means for a dump: the init's pid while it runs, else a refusal naming the state. */
export function runcTarget(id: string, root: string, state: RuncState): ResolvedTarget {
  if (state.status === 'paused')
    throw new TargetRefusedError(`the container ${id} is paused (cgroup freezer): its processes cannot be stopped and put back`, `resume it first (runc --root ${root} resume ${id})`)
  if (state.status !== 'running' || state.pid <= 0) throw new NoSuchTargetError(`the container ${id} is ${state.status}, not running`, 'start it, or give the pid')
  return { pid: state.pid, naming: { by: 'container', value: id, via: `runc state (root ${root})`, pid: state.pid } }
}

export async function resolveContainer(rawId: string, runcRoot?: string): Promise<ResolvedTarget> {
  const id = checkContainerId(rawId)
  const roots = runcRoot ? [runcRoot] : RUNC_ROOTS.filter((r) => existsSync(r))
  for (const root of roots) {
    const answer = await ask('runc', ['--root', root, 'state', id])
    const state = answer ? parseRuncState(answer.stdout) : undefined
    if (state) return runcTarget(id, root, state)
  }
  if (!runcRoot) {
    const docker = await ask('docker', ['inspect', '--format', '{{.State.Pid}}', id])
    const pid = Number(docker?.stdout.trim())
    if (Number.isInteger(pid) && pid > 0) return { pid, naming: { by: 'container', value: id, via: 'docker inspect', pid } }
    const crictl = await ask('crictl', ['inspect', '--output', 'go-template', '--template', '{{.info.pid}}', id])
    const cpid = Number(crictl?.stdout.trim())
    if (Number.isInteger(cpid) && cpid > 0) return { pid: cpid, naming: { by: 'container', value: id, via: 'crictl inspect', pid: cpid } }
  }
  throw new NoSuchTargetError(
    `no running container ${id}: ${runcRoot ? `runc --root ${runcRoot}` : `runc (${roots.length ? roots.join(', ') : 'no state directory'}), docker and crictl`} do not know it`,
    'check with `runc list` or `docker ps`, or give --runc-root for a runc state kept elsewhere',
  )
}
