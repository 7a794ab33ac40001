// --cpu PCT / --cpu-below PCT: the tree's CPU use over the last poll, in percent of one CPU (200 is two CPUs busy),
// from the utime and stime ticks of each process: above (a spin) or below (a stall) the threshold for --for.

import { formatDuration } from './units.js'
import { spans, type PollContext, type Sample, type Trigger } from './trigger.js'

/** USER_HZ: /proc counts CPU time in these. */
const TICKS_PER_SECOND = 100

export interface TickReading {
  at: number
  /** pid -> utime + stime in ticks. */
  ticks: Map<number, number>
}

/**
 * Percent of one CPU between two readings: each process's ticks since the first reading (a process new since then
 * counts from 0, one gone counts no more). Null without a first reading or without time between them.
 */
export function cpuPercent(prev: TickReading | undefined, cur: TickReading): number | null {
  if (!prev || cur.at <= prev.at) return null
  let ticks = 0
  for (const [pid, t] of cur.ticks) ticks += Math.max(0, t - (prev.ticks.get(pid) ?? 0))
  return Math.round(((ticks / TICKS_PER_SECOND) * 1000 * 100) / (cur.at - prev.at) * 10) / 10
}

export function cpuTrigger(threshold: number, forMs: number, below = false): Trigger {
  let prev: TickReading | undefined
  return {
    kind: below ? 'cpu-below' : 'cpu',
    condition: `cpu ${below ? 'below' : 'above'} ${threshold}% for ${formatDuration(forMs)}`,
    needsTree: true,
    read(ctx: PollContext): Sample {
      const ticks = new Map<number, number>()
      for (const pid of ctx.tree) {
        const t = ctx.readings.cpuTicks(pid)
        if (t !== undefined) ticks.set(pid, t)
      }
      const cur = { at: ctx.now, ticks }
      const value = ticks.size === 0 ? null : cpuPercent(prev, cur)
      prev = cur
      return { at: ctx.now, value }
    },
    crosses: (s) => s.value !== null && (below ? s.value < threshold : s.value >= threshold),
    fired: (run) => spans(run, forMs),
    show: (s) => (s.value === null ? 'cpu -' : `cpu ${s.value}%`),
    reset: () => {
      prev = undefined
    },
  }
}
