// What an operation (a dump, a restore) may still spend: the --timeout deadline and the cancel signal snap's signal
// handlers abort. Each step asks it before it starts and bounds its own wait by it.

import { InterruptedError, StepTimeoutError, type InterruptSignal } from '../errors.js'

export class OperationBudget {
  private deadline: number

  constructor(
    private readonly cancel: AbortSignal,
    private readonly timeoutSec: number | undefined,
    /** "the dump", "restore": named in the timeout message. */
    private readonly operation: string,
  ) {
    this.deadline = timeoutSec ? performance.now() + timeoutSec * 1000 : Number.POSITIVE_INFINITY
  }

  /**
   * --timeout bounds the time the target is held. Once it is back as it was found, finishing the capture harms
   * nothing: throwing a finished capture away at the deadline would only lose it. What comes after gets a deadline of
   * its own (`ms` from now, if that is later than --timeout's), so no step can wait for ever.
   */
  extendAfterRelease(ms: number): void {
    if (Number.isFinite(this.deadline)) this.deadline = Math.max(this.deadline, performance.now() + ms)
  }

  /** Throws the InterruptedError for the signal that aborted the operation, if one did. */
  checkCancelled(during: string): void {
    if (this.cancel.aborted) throw new InterruptedError(this.cancel.reason as InterruptSignal, during)
  }

  /** A step's own time limit, cut to what is left of the --timeout; throws when nothing is left. */
  remainingMs(stepDefault: number): number {
    const left = this.deadline - performance.now()
    if (left <= 0) throw new StepTimeoutError(`${this.operation} ran past its --timeout of ${this.timeoutSec} s`)
    return Math.min(stepDefault, Math.floor(left))
  }

  /**
   * Waits for work that takes no cancel signal (the preflight probes, the bundle writer), but not past a signal or the
   * --timeout: it must not keep snap from stopping. A probe left behind dies with snap (execa's cleanup, pdeathsig).
   */
  unlessStopped<T>(work: Promise<T>, during: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => reject(new InterruptedError(this.cancel.reason as InterruptSignal, during))
      const left = this.deadline - performance.now()
      const timer = Number.isFinite(left)
        ? setTimeout(() => reject(new StepTimeoutError(`${during} ran past the --timeout of ${this.timeoutSec} s`)), Math.max(0, left))
        : undefined
      if (this.cancel.aborted) onAbort()
      this.cancel.addEventListener('abort', onAbort, { once: true })
      work.then(resolve, reject).finally(() => {
        clearTimeout(timer)
        this.cancel.removeEventListener('abort', onAbort)
      })
    })
  }
}

/** criu and gcore both write about the target's resident memory: a minute plus 30 s per GiB, at dump and restore. */
export function toolTimeoutMs(rssKiB: number | null | undefined): number {
  const gib = (rssKiB ?? 0) / (1024 * 1024)
  return Math.round(60_000 + 30_000 * gib)
}
