// The watch: poll the target once a second, feed each trigger's reading to its run, and when one fires take a capture
// through the caller's capture function (the dump pipeline), then wait out the cooldown. It stops when the count is
// reached, at --until, when the target is gone (with --follow, a named target is looked for again each poll instead),
// or when asked to (SIGTERM, Ctrl+C): never in the middle of a capture, which the caller lets finish or roll back
// first. Every event goes to onEvent; the last values to onStatus.

import type { WatchTriggerRecord } from '../bundle/manifest.js'
import { SnapError, TargetChangedError, TargetNotFoundError } from '../errors.js'
import { checkIdentity, type TargetIdentity } from '../process/identity.js'
import { PollReadings } from './proc-readings.js'
import { extendRun, type Sample, type Trigger } from './trigger.js'

export const POLL_MS = 1000

export type StopReason = 'count' | 'until' | 'signal' | 'target-gone'

export type WatchEvent =
  | { event: 'watching'; at: string; pid: number; target: string; triggers: string[] }
  | { event: 'fired'; at: string; trigger: string; condition: string; samples: WatchTriggerRecord['samples'] }
  | { event: 'captured'; at: string; trigger: string; capture: number; bundle: string; upload?: string }
  | { event: 'target-gone'; at: string; pid: number }
  | { event: 'target-back'; at: string; pid: number; previous: number }
  | { event: 'skipped'; at: string; trigger: string; reason: 'locked'; message: string }
  | { event: 'capture-failed'; at: string; trigger: string; exitCode: number; message: string }
  | { event: 'stopped'; at: string; reason: StopReason; captures: number }

export interface CaptureRequest {
  /** The process to capture: the one watched when the trigger fired (with --follow, not always the first). */
  target: TargetIdentity
  trigger: Trigger
  record: WatchTriggerRecord
}

export interface CaptureResult {
  /** The bundle's path (removed once uploaded, unless kept). */
  bundle: string
  /** s3://... when it was uploaded. */
  upload?: string
}

export interface WatchLoopOptions {
  target: TargetIdentity
  /** How the target was named, for the first event. */
  label: string
  triggers: Trigger[]
  /** Captures to take before the watch ends. */
  count: number
  cooldownMs: number
  /** ms since the epoch; undefined: no end but the count. */
  untilMs?: number
  pollMs?: number
  /** Aborted to end the watch (the first SIGTERM or Ctrl+C); a capture under way is not interrupted by it. */
  stop: AbortSignal
  /** Takes one capture; resolves with where the bundle went, or throws a SnapError. */
  capture(req: CaptureRequest): Promise<CaptureResult>
  /** --follow: names the target again once it is gone (undefined while nothing answers to its name); without it, a
   *  target that is gone ends the watch. */
  resolveAgain?(): Promise<TargetIdentity | undefined>
  onEvent(e: WatchEvent): void
  onStatus?(line: string): void
}

export interface WatchOutcome {
  reason: StopReason
  captures: number
  bundles: string[]
}

const iso = (ms: number) => new Date(ms).toISOString()

/** Sleeps ms, or less when stop is aborted. */
function pause(ms: number, stop: AbortSignal): Promise<void> {
  if (stop.aborted || ms <= 0) return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer)
      stop.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    stop.addEventListener('abort', done, { once: true })
  })
}

/** The record a capture carries into its manifest: the trigger, its condition, the run of samples that fired it. */
export function triggerRecord(trigger: Trigger, run: Sample[], capture: number, firedAt: number): WatchTriggerRecord {
  return {
    trigger: trigger.kind,
    condition: trigger.condition,
    firedAt: iso(firedAt),
    capture,
    samples: run.map((s) => ({ at: iso(s.at), value: s.value, ...(s.detail ? { detail: s.detail } : {}) })),
  }
}

export async function watch(o: WatchLoopOptions): Promise<WatchOutcome> {
  const pollMs = o.pollMs ?? 1000
  const runs = new Map<Trigger, Sample[]>(o.triggers.map((t) => [t, []]))
  const last = new Map<Trigger, Sample>()
  const needsTree = o.triggers.some((t) => t.needsTree)
  const bundles: string[] = []
  let captures = 0
  let quietUntil = 0
  let target = o.target
  /** Set while a followed target is gone: the pid it had. */
  let goneFrom: number | undefined
  o.onEvent({ event: 'watching', at: iso(Date.now()), pid: target.pid, target: o.label, triggers: o.triggers.map((t) => t.condition) })
  const end = (reason: StopReason): WatchOutcome => {
    o.onEvent({ event: 'stopped', at: iso(Date.now()), reason, captures })
    return { reason, captures, bundles }
  }
  // Samples of one process say nothing of the next: every trigger starts over.
  const startOver = () => {
    for (const t of o.triggers) {
      runs.set(t, [])
      t.reset?.()
    }
    last.clear()
  }
  const lost = () => {
    goneFrom = target.pid
    startOver()
    o.onEvent({ event: 'target-gone', at: iso(Date.now()), pid: target.pid })
  }

  for (;;) {
    if (o.stop.aborted) return end('signal')
    const now = Date.now()
    if (o.untilMs !== undefined && now >= o.untilMs) return end('until')
    if (goneFrom === undefined && checkIdentity(target) !== 'same') {
      if (!o.resolveAgain) return end('target-gone')
      lost()
    }
    if (goneFrom !== undefined) {
      // Looked for once a poll, nothing captured meanwhile.
      const back = await o.resolveAgain!()
      if (!back) {
        await pause(pollMs, o.stop)
        continue
      }
      o.onEvent({ event: 'target-back', at: iso(Date.now()), pid: back.pid, previous: goneFrom })
      target = back
      goneFrom = undefined
    }
    const readings = new PollReadings()
    const tree = needsTree ? readings.tree(target.pid) : []
    for (const t of o.triggers) {
      const s = t.read({ root: target.pid, tree, now, readings })
      if (!s) continue
      last.set(t, s)
      runs.set(t, extendRun(runs.get(t)!, s, t.crosses(s)))
    }
    o.onStatus?.(statusLine(o, target.pid, last, captures))
    const fired = now >= quietUntil ? o.triggers.find((t) => t.fired(runs.get(t)!)) : undefined
    if (fired) {
      const run = [...runs.get(fired)!]
      const record = triggerRecord(fired, run, captures + 1, now)
      o.onEvent({ event: 'fired', at: iso(now), trigger: fired.kind, condition: fired.condition, samples: record.samples })
      try {
        const { bundle, upload } = await o.capture({ target, trigger: fired, record })
        captures++
        bundles.push(upload ?? bundle)
        fired.captured?.()
        o.onEvent({ event: 'captured', at: iso(Date.now()), trigger: fired.kind, capture: captures, bundle, ...(upload ? { upload } : {}) })
      } catch (e) {
        if (!(e instanceof SnapError)) throw e
        if (e.kind === 'locked') {
          // Another snap holds the tree: this firing is let go, never queued behind a frozen process.
          o.onEvent({ event: 'skipped', at: iso(Date.now()), trigger: fired.kind, reason: 'locked', message: e.oneLine() })
        } else if (e instanceof TargetNotFoundError || e instanceof TargetChangedError) {
          if (!o.resolveAgain) return end('target-gone')
          lost()
        } else if (e.kind.startsWith('interrupted')) {
          return end('signal')
        } else {
          o.onEvent({ event: 'capture-failed', at: iso(Date.now()), trigger: fired.kind, exitCode: e.exitCode, message: e.oneLine() })
        }
      }
      // Whatever became of it, every trigger starts over on new samples, after the cooldown.
      startOver()
      quietUntil = Date.now() + o.cooldownMs
      if (captures >= o.count) return end('count')
      continue
    }
    await pause(pollMs, o.stop)
  }
}

function statusLine(o: WatchLoopOptions, pid: number, last: Map<Trigger, Sample>, captures: number): string {
  const values = o.triggers.map((t) => {
    const s = last.get(t)
    return s ? t.show(s) : `${t.kind} -`
  })
  return `watching ${o.label} (pid ${pid}): ${values.join(', ')}; ${captures} of ${o.count} captured`
}
