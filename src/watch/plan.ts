// From the watch's flags to its triggers and limits: every value checked before the first poll, each refusal a
// UsageError naming the flag.

import { UsageError } from '../errors.js'
import { cgroupMemoryTrigger } from './cgroup-memory.js'
import { cpuTrigger } from './cpu.js'
import { fdsTrigger } from './fds.js'
import { probeTrigger } from './probe.js'
import { rssTrigger } from './rss.js'
import { parseSignal, signalTrigger, type SignalTrigger } from './signal.js'
import { threadsTrigger } from './threads.js'
import type { Trigger } from './trigger.js'
import { parseDuration, parsePercent, parseSize, parseUntil } from './units.js'

export interface WatchFlags {
  cpu?: string
  'cpu-below'?: string
  rss?: string
  threads?: number
  fds?: number
  'cgroup-memory'?: string
  probe?: string
  'probe-timeout': string
  failures: number
  'on-signal'?: string
  for: string
  count: number
  cooldown: string
  until?: string
}

export interface WatchPlan {
  triggers: Trigger[]
  signals: SignalTrigger[]
  count: number
  cooldownMs: number
  untilMs?: number
}

export function planWatch(f: WatchFlags, now: Date): WatchPlan {
  const forMs = parseDuration(f.for, '--for')
  const triggers: Trigger[] = []
  // CPU is in percent of one CPU: a tree busy on every CPU of a large host reads far above 100.
  if (f.cpu !== undefined) triggers.push(cpuTrigger(parsePercent(f.cpu, '--cpu', 100_000), forMs))
  if (f['cpu-below'] !== undefined) triggers.push(cpuTrigger(parsePercent(f['cpu-below'], '--cpu-below', 100_000), forMs, true))
  if (f.rss !== undefined) triggers.push(rssTrigger(parseSize(f.rss, '--rss'), forMs))
  if (f.threads !== undefined) triggers.push(threadsTrigger(f.threads, forMs))
  if (f.fds !== undefined) triggers.push(fdsTrigger(f.fds, forMs))
  if (f['cgroup-memory'] !== undefined) triggers.push(cgroupMemoryTrigger(parsePercent(f['cgroup-memory'], '--cgroup-memory'), forMs))
  if (f.probe !== undefined) triggers.push(probeTrigger(f.probe, parseDuration(f['probe-timeout'], '--probe-timeout'), f.failures, forMs))
  const signals: SignalTrigger[] = []
  if (f['on-signal'] !== undefined) {
    const t = signalTrigger(parseSignal(f['on-signal']))
    signals.push(t)
    triggers.push(t)
  }
  if (triggers.length === 0)
    throw new UsageError('no trigger given', 'give at least one of --cpu, --cpu-below, --rss, --threads, --fds, --cgroup-memory, --probe, --on-signal')
  return {
    triggers,
    signals,
    count: f.count,
    cooldownMs: parseDuration(f.cooldown, '--cooldown'),
    ...(f.until !== undefined ? { untilMs: parseUntil(f.until, now) } : {}),
  }
}

/** The bundle's name says which trigger fired and which capture it is: snap-COMM-PID-TRIGGER-N-TIME.tar.zst. */
export function captureName(defaultName: string, pid: number, trigger: string, n: number): string {
  return defaultName.replace(new RegExp(`-${pid}-(\\d{8}T\\d{6}Z)`), `-${pid}-${trigger}-${n}-$1`)
}
