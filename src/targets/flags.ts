// The flags that name a target, shared by dump and watch so both take the same names the same way.

import { Flags } from '@oclif/core'
import type { TargetChoice } from './index.js'

const GROUP = 'TARGET'

export const targetFlags = {
  name: Flags.string({ description: "the process named NAME (its comm), or whose command line matches the regular expression NAME: exactly one tree root may match", helpGroup: GROUP }),
  pidfile: Flags.string({ description: 'the process whose pid FILE holds (refused when that process started after the file was written)', helpGroup: GROUP }),
  cgroup: Flags.string({ description: 'the root process of the cgroup PATH (as /proc/PID/cgroup shows it, or a directory under /sys/fs/cgroup)', helpGroup: GROUP }),
  unit: Flags.string({ description: "the systemd unit's main process (systemctl MainPID, else the root of its cgroup system.slice/UNIT)", helpGroup: GROUP }),
  container: Flags.string({ description: "the container's init (runc state; docker or crictl where they answer)", helpGroup: GROUP }),
  'runc-root': Flags.string({ description: "runc's state directory for --container (default: runc's, Docker's and containerd's)", helpGroup: GROUP }),
}

export function targetChoice(pid: string | undefined, f: { name?: string; pidfile?: string; cgroup?: string; unit?: string; container?: string; 'runc-root'?: string }): TargetChoice {
  return { pid, name: f.name, pidfile: f.pidfile, cgroup: f.cgroup, unit: f.unit, container: f.container, runcRoot: f['runc-root'] }
}
