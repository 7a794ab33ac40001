// --rss SIZE: the resident memory of the largest process of the tree (a leaking worker is seen under its master),
// at or above SIZE for --for.

import { formatBytes, formatDuration } from './units.js'
import { largest } from './proc-readings.js'
import { spans, type Sample, type Trigger } from './trigger.js'

export function rssTrigger(limitBytes: number, forMs: number): Trigger {
  return {
    kind: 'rss',
    condition: `rss at or above ${formatBytes(limitBytes)} for ${formatDuration(forMs)}`,
    needsTree: true,
    read: (ctx): Sample => ({ at: ctx.now, value: largest(ctx.tree, (pid) => ctx.readings.rssBytes(pid)) }),
    crosses: (s) => s.value !== null && s.value >= limitBytes,
    fired: (run) => spans(run, forMs),
    show: (s) => (s.value === null ? 'rss -' : `rss ${formatBytes(s.value)}`),
  }
}
