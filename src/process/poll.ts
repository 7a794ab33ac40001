// Waiting on the kernel: /proc changes asynchronously after a signal, so we poll the real state against a deadline.

export interface PollOptions {
  timeoutMs: number
  /** First interval; doubles up to maxIntervalMs so short waits stay short and long ones stay cheap. */
  intervalMs?: number
  maxIntervalMs?: number
}

/** Resolves with the first truthy value of probe, or undefined when the deadline passes. */
export async function pollUntil<T>(probe: () => T | undefined | false | null, opts: PollOptions): Promise<T | undefined> {
  const deadline = performance.now() + opts.timeoutMs
  let interval = opts.intervalMs ?? 1
  const maxInterval = opts.maxIntervalMs ?? 25
  for (;;) {
    const v = probe()
    if (v !== undefined && v !== false && v !== null) return v
    const left = deadline - performance.now()
    if (left <= 0) return undefined
    await new Promise((r) => setTimeout(r, Math.min(interval, left)))
    interval = Math.min(interval * 2, maxInterval)
  }
}
