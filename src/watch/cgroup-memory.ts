// --cgroup-memory PCT: the target's memory cgroup, its usage against its limit, at or above PCT for --for: the
// capture is taken before the kernel's OOM killer ends the process. cgroup v1 (memory.usage_in_bytes against
// memory.limit_in_bytes) and v2 (memory.current against memory.max); a limit set on an ancestor cgroup counts too, so
// each level with a limit is compared and the fullest one is the value.

import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { cgroupHierarchies, type CgroupHierarchy } from '../targets/cgroup.js'
import { formatBytes, formatDuration } from './units.js'
import { spans, type Sample, type Trigger } from './trigger.js'

/** A v1 limit this large (PAGE_COUNTER_MAX rounded to pages) means none. */
const NO_LIMIT = 2 ** 60

export interface MemoryCgroup {
  version: 1 | 2
  /** The hierarchy's mount point and the cgroup's directory under it. */
  mountPoint: string
  dir: string
}

/** The process's memory cgroup from its /proc/PID/cgroup text: v1's memory hierarchy where there is one (the v2
 *  hierarchy of a hybrid host holds no controller), else the v2 one. */
export function memoryCgroupOf(cgroupText: string, hierarchies: CgroupHierarchy[]): MemoryCgroup | undefined {
  const lines = cgroupText.split('\n').map((l) => l.split(':'))
  const v1 = hierarchies.find((h) => h.version === 1 && h.controllers.includes('memory'))
  const v1Line = lines.find((f) => f.length >= 3 && f[1]!.split(',').includes('memory'))
  if (v1 && v1Line) return { version: 1, mountPoint: v1.mountPoint, dir: join(v1.mountPoint, v1Line.slice(2).join(':')) }
  const v2 = hierarchies.find((h) => h.version === 2)
  const v2Line = lines.find((f) => f.length >= 3 && f[0] === '0' && f[1] === '')
  if (v2 && v2Line) return { version: 2, mountPoint: v2.mountPoint, dir: join(v2.mountPoint, v2Line.slice(2).join(':')) }
  return undefined
}

/** A limit as the file says it: bytes, or undefined for none ("max" in v2, a huge number in v1). */
export function parseLimit(text: string): number | undefined {
  const t = text.trim()
  if (t === 'max') return undefined
  const n = Number(t)
  return Number.isFinite(n) && n > 0 && n < NO_LIMIT ? n : undefined
}

export interface LevelReading {
  dir: string
  usage: number
  limit: number | undefined
}

/** The fullest level with a limit, in percent of it, and what it holds; null when no level has a limit. */
export function fullest(levels: LevelReading[]): { percent: number; level: LevelReading } | null {
  let best: { percent: number; level: LevelReading } | null = null
  for (const l of levels) {
    if (l.limit === undefined) continue
    const percent = Math.round((l.usage / l.limit) * 1000) / 10
    if (!best || percent > best.percent) best = { percent, level: l }
  }
  return best
}

function readLevels(cg: MemoryCgroup): LevelReading[] {
  const [usageFile, limitFile] = cg.version === 1 ? ['memory.usage_in_bytes', 'memory.limit_in_bytes'] : ['memory.current', 'memory.max']
  const out: LevelReading[] = []
  for (let dir = cg.dir; dir.length >= cg.mountPoint.length; dir = dirname(dir)) {
    try {
      out.push({ dir, usage: Number(readFileSync(join(dir, usageFile), 'utf8').trim()), limit: parseLimit(readFileSync(join(dir, limitFile), 'utf8')) })
    } catch {
      // the v2 root has no memory.max; a level removed meanwhile has nothing to say
    }
    if (dir === cg.mountPoint) break
  }
  return out
}

export function cgroupMemoryTrigger(threshold: number, forMs: number): Trigger {
  let hierarchies: CgroupHierarchy[] | undefined
  return {
    kind: 'cgroup-memory',
    condition: `cgroup memory at or above ${threshold}% of its limit for ${formatDuration(forMs)}`,
    needsTree: false,
    read(ctx): Sample {
      hierarchies ??= cgroupHierarchies()
      let text: string
      try {
        text = readFileSync(`/proc/${ctx.root}/cgroup`, 'utf8')
      } catch {
        return { at: ctx.now, value: null, detail: 'the target is gone' }
      }
      const cg = memoryCgroupOf(text, hierarchies)
      if (!cg) return { at: ctx.now, value: null, detail: 'no memory cgroup' }
      const f = fullest(readLevels(cg))
      if (!f) return { at: ctx.now, value: null, detail: `no memory limit on ${cg.dir} or above it` }
      return { at: ctx.now, value: f.percent, detail: `${formatBytes(f.level.usage)} of ${formatBytes(f.level.limit!)} in ${f.level.dir}` }
    },
    crosses: (s) => s.value !== null && s.value >= threshold,
    fired: (run) => spans(run, forMs),
    show: (s) => (s.value === null ? `cgroup memory - (${s.detail ?? 'unknown'})` : `cgroup memory ${s.value}%`),
  }
}
