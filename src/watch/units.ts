// The watch's arguments as people write them: durations (2s, 500ms, 5m, 1h), sizes (200M, 1.5G, 4096), percents,
// and --until as a time of day, a date-time or a duration from now. Pure, each refusal a UsageError naming the flag.

import { UsageError } from '../errors.js'

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** Milliseconds; a bare number is seconds. */
export function parseDuration(raw: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(raw.trim())
  if (!m) throw new UsageError(`${flag} '${raw}' is not a duration`, 'give it as 500ms, 2s, 5m or 1h')
  return Math.round(Number(m[1]) * DURATION_UNITS[m[2] ?? 's']!)
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }

/** Bytes; K, M, G, T are powers of 1024 (KiB, MiB, ...), with or without "iB"/"B". */
export function parseSize(raw: string, flag: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(raw.trim())
  if (!m) throw new UsageError(`${flag} '${raw}' is not a size`, 'give it as 200M, 1.5G or a number of bytes')
  const bytes = Math.round(Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]!)
  if (bytes <= 0) throw new UsageError(`${flag} must be more than 0`)
  return bytes
}

export function parsePercent(raw: string, flag: string, max = 100): number {
  const m = /^(\d+(?:\.\d+)?)%?$/.exec(raw.trim())
  const v = m ? Number(m[1]) : NaN
  if (!m || v <= 0 || v > max) throw new UsageError(`${flag} '${raw}' is not a percentage between 0 and ${max}`)
  return v
}

/** When the watch ends, in ms since the epoch: a duration from now (30m), a time of day (06:00, the next one), or a
 *  date-time (2026-12-08T06:00:00Z). */
export function parseUntil(raw: string, now: Date): number {
  const t = raw.trim()
  if (/^\d+(?:\.\d+)?(ms|s|m|h|d)?$/.test(t)) return now.getTime() + parseDuration(t, '--until')
  const tod = /^(\d{1,2}):(\d{2})(?::(\d{2}))?$/.exec(t)
  if (tod) {
    const [h, m, s] = [Number(tod[1]), Number(tod[2]), Number(tod[3] ?? 0)]
    if (h > 23 || m > 59 || s > 59) throw new UsageError(`--until '${raw}' is not a time of day`)
    const at = new Date(now)
    at.setHours(h, m, s, 0)
    if (at.getTime() <= now.getTime()) at.setDate(at.getDate() + 1)
    return at.getTime()
  }
  const at = Date.parse(t)
  if (Number.isNaN(at) || !/^\d{4}-\d{2}-\d{2}/.test(t)) throw new UsageError(`--until '${raw}' is neither a time nor a duration`, 'give it as 06:00, 2026-12-08T06:00:00Z or 30m')
  return at
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024
    i++
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`
}

export function formatDuration(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`
}
