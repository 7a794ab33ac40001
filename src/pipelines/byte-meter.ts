// Bytes done, rate and time left, for the long byte-bound steps (the seal, verify, extraction, restore): a person
// watching a 2 GiB seal must see it move and know when it ends. Lines come at most every `intervalMs` (often on a
// terminal, where one line is redrawn; rarely in logs, where each is a line of its own).

import { humanBytes } from '../bundle/output-path.js'

/** "412.0 MiB of 1.2 GiB (34%), 180.3 MiB/s, 4 s left"; without a total, the bytes and the rate only. */
export function describeBytes(done: number, total: number | undefined, elapsedMs: number): string {
  const rate = elapsedMs > 0 ? (done * 1000) / elapsedMs : 0
  const parts = [total !== undefined && total > 0 ? `${humanBytes(done)} of ${humanBytes(total)} (${Math.min(100, Math.floor((done * 100) / total))}%)` : humanBytes(done)]
  if (rate > 0 && elapsedMs >= 200) {
    parts.push(`${humanBytes(rate)}/s`)
    if (total !== undefined && total > done) parts.push(`${formatSeconds((total - done) / rate)} left`)
  }
  return parts.join(', ')
}

function formatSeconds(s: number): string {
  if (s < 60) return `${Math.max(1, Math.ceil(s))} s`
  const m = Math.floor(s / 60)
  return `${m} min ${Math.round(s - m * 60)} s`
}

export class ByteMeter {
  private readonly started = performance.now()
  private last = -Infinity
  private done = 0

  constructor(
    private emit: ((line: string) => void) | undefined,
    private total: number | undefined,
    private readonly intervalMs: number,
    private readonly what = '',
  ) {}

  /** From now on lines go to `emit` (the step now running), starting with one now. */
  speakTo(emit: (line: string) => void): void {
    this.emit = emit
    this.last = performance.now()
    emit(this.line())
  }

  /** More is to be done than first known (artifacts made while the bundle is written). */
  addTotal(bytes: number): void {
    this.total = (this.total ?? 0) + bytes
  }

  /** `done` is the running count of bytes done; `total`, when given, is how many there are to do. */
  update(done: number, total?: number): void {
    this.done = done
    if (total !== undefined) this.total = total
    const now = performance.now()
    if (now - this.last < this.intervalMs) return
    if (!this.emit) return
    this.last = now
    this.emit(this.line())
  }

  line(): string {
    return `${this.what}${describeBytes(this.done, this.total, performance.now() - this.started)}`
  }
}

/** How often a meter speaks: a terminal line is redrawn in place; a log gets a line every few seconds. */
export function meterIntervalMs(mode: 'tty' | 'plain' | 'silent'): number {
  return mode === 'tty' ? 250 : 5000
}
