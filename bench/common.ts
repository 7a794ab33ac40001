// What every part of the bench shares: the median of its rounds, and waiting for a condition with a deadline.

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** Polls `probe` every `everyMs` until it gives something, which it returns; throws after `timeoutMs`. */
export async function until<T>(probe: () => T | undefined | false | null, what: string, timeoutMs = 60_000, everyMs = 10): Promise<T> {
  const end = performance.now() + timeoutMs
  for (;;) {
    const v = probe()
    if (v) return v
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}
