// What every trigger is: a reader of one value from /proc (or the network) per poll, and a pure rule over the samples
// it has seen that says whether it fired. The rule is the part tested without a process; the loop (loop.ts) reads,
// keeps the samples and acts.

import type { PollReadings } from './proc-readings.js'

export interface Sample {
  /** ms since the epoch. */
  at: number
  /** The value read (percent, bytes, a count, a latency in ms); null when it could not be read. */
  value: number | null
  /** For a probe: what it saw ("HTTP 200 in 12 ms", "timed out after 2000 ms"). */
  detail?: string
}

/** What the readers get each poll: the tree's pids, root first, read once for all triggers that need them (empty
 *  when none does). */
export interface PollContext {
  root: number
  tree: number[]
  now: number
  /** This poll's /proc readings, each file read once whichever triggers ask. */
  readings: PollReadings
}

export interface Trigger {
  /** cpu, cpu-below, rss, threads, fds, cgroup-memory, probe, signal: also the bundle name's part. */
  readonly kind: string
  /** "cpu above 80% for 2s", for the status line and the manifest. */
  readonly condition: string
  /** Whether its reader needs the tree's pids. */
  readonly needsTree: boolean
  /** One reading; undefined when there is nothing new (a probe still out). */
  read(ctx: PollContext): Sample | undefined
  /** Pure: whether one sample is past the threshold (a sample that could not be read never is, but for a probe). */
  crosses(s: Sample): boolean
  /** Pure: whether an unbroken run of crossing samples (oldest first) is enough to fire. */
  fired(run: Sample[]): boolean
  /** The value as the status line shows it. */
  show(s: Sample): string
  /** Forget what was read (after any capture: the next firing is judged on new samples only). */
  reset?(): void
  /** This trigger's capture was taken (a signal's is one of those pending). */
  captured?(): void
}

/** The rule of the threshold triggers: a run of crossing samples that spans at least forMs (with forMs 0, one sample
 *  fires). */
export function spans(run: Sample[], forMs: number): boolean {
  return run.length > 0 && run.at(-1)!.at - run[0]!.at >= forMs
}

/** How many samples of a run are kept: the manifest records them. The first is always kept (it says when the run
 *  began, which --for is judged from); past the cap, the oldest after it go. */
export const MAX_SAMPLES = 64

/** Adds a sample to a trigger's run: a sample that does not cross ends the run. Returns the run. */
export function extendRun(run: Sample[], s: Sample, crosses: boolean): Sample[] {
  if (!crosses) return []
  run.push(s)
  if (run.length > MAX_SAMPLES) run.splice(1, run.length - MAX_SAMPLES)
  return run
}
