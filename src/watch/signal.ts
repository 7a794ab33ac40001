// --on-signal SIG: a capture each time the watcher itself receives SIG (from a runbook, an alerting hook, `kill -USR1`).
// Signals that arrive during a capture or a cooldown are kept, one capture each.

import { UsageError } from '../errors.js'
import type { Sample, Trigger } from './trigger.js'

export const WATCH_SIGNALS = ['SIGUSR1', 'SIGUSR2', 'SIGHUP'] as const
export type WatchSignal = (typeof WATCH_SIGNALS)[number]

export function parseSignal(raw: string): WatchSignal {
  const name = (raw.toUpperCase().startsWith('SIG') ? raw.toUpperCase() : `SIG${raw.toUpperCase()}`) as WatchSignal
  if (!WATCH_SIGNALS.includes(name)) throw new UsageError(`--on-signal ${raw}: watch answers ${WATCH_SIGNALS.map((s) => s.slice(3)).join(', ')} only`, 'SIGTERM and SIGINT stop the watch')
  return name
}

export interface SignalTrigger extends Trigger {
  readonly signal: WatchSignal
  /** Starts listening; returns the function that stops. */
  listen(): () => void
}

export function signalTrigger(sig: WatchSignal): SignalTrigger {
  let pending = 0
  return {
    kind: 'signal',
    signal: sig,
    condition: `${sig} received`,
    needsTree: false,
    read: (ctx): Sample => ({ at: ctx.now, value: pending }),
    crosses: (s) => s.value !== null && s.value > 0,
    fired: (run) => run.length > 0,
    show: () => `${sig} ${pending} pending`,
    captured: () => {
      pending = Math.max(0, pending - 1)
    },
    listen() {
      const h = () => void pending++
      process.on(sig, h)
      return () => process.off(sig, h)
    },
  }
}
