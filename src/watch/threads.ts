// --threads N: the tree's threads, all processes together, at or above N for --for (a thread leak, a pool gone wild).

import { formatDuration } from './units.js'
import { total } from './proc-readings.js'
import { spans, type Sample, type Trigger } from './trigger.js'

export function threadsTrigger(limit: number, forMs: number): Trigger {
  return {
    kind: 'threads',
    condition: `threads at or above ${limit} for ${formatDuration(forMs)}`,
    needsTree: true,
    read: (ctx): Sample => ({ at: ctx.now, value: total(ctx.tree, (pid) => ctx.readings.threadCount(pid)) }),
    crosses: (s) => s.value !== null && s.value >= limit,
    fired: (run) => spans(run, forMs),
    show: (s) => (s.value === null ? 'threads -' : `threads ${s.value}`),
  }
}
