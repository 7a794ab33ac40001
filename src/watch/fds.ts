// --fds N: the open file descriptors of the process of the tree that has the most (the limit, RLIMIT_NOFILE, is per
// process), at or above N for --for: a descriptor leak, caught before accept() starts failing with EMFILE.

import { formatDuration } from './units.js'
import { largest } from './proc-readings.js'
import { spans, type Sample, type Trigger } from './trigger.js'

export function fdsTrigger(limit: number, forMs: number): Trigger {
  return {
    kind: 'fds',
    condition: `fds at or above ${limit} for ${formatDuration(forMs)}`,
    needsTree: true,
    read: (ctx): Sample => ({ at: ctx.now, value: largest(ctx.tree, (pid) => ctx.readings.fdCount(pid)) }),
    crosses: (s) => s.value !== null && s.value >= limit,
    fired: (run) => spans(run, forMs),
    show: (s) => (s.value === null ? 'fds -' : `fds ${s.value}`),
  }
}
