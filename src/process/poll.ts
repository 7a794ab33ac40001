// Waiting on the kernel: /proc changes asynchronously after a signal, so we poll the real state against a deadline.

export interface PollOptions {
  timeoutMs: number
  /** First interval; doubles up to maxIntervalMs so short waits stay short and long ones stay cheap. */
  intervalMs?: number
  maxIntervalMs?: number
  /** For this long at first, probe again as soon as the event loop is free (a timer waits at least 1 ms): for a
   *  wait that is part of the freeze and usually over within a millisecond. */
  spinMs?: number
}

/** Resolves with the first truthy value of probe, or undefined when the deadline passes. */
export async function pollUntil<T>(probe: () => T | undefined | false | null, opts: PollOptions): Promise<T | undefined> {
  const started = performance.now()
  const deadline = started + opts.timeoutMs
  const spinUntil = started + (opts.spinMs ?? 0)
  let interval = opts.intervalMs ?? 1
  const maxInterval = opts.maxIntervalMs ?? 25
  for (;;) {
    const v = probe()
    if (v !== undefined && v !== false && v !== null) return v
    const now = performance.now()
    const left = deadline - now
    if (left <= 0) return undefined
    if (now < spinUntil) {
      await new Promise((r) => setImmediate(r))
      continue
    }
    await new Promise((r) => setTimeout(r, Math.min(interval, left)))
    interval = Math.min(interval * 2, maxInterval)
  }
}
