// What a pipeline reports as it goes, and nothing of how it is shown: its steps (each run with a way to report a
// detail), free-standing notes and warnings. ui/progress.ts renders it on stderr (a live list on a terminal, plain
// timestamped lines elsewhere); a pipeline run for a check of its own (doctor's canary) gets a silent one.

export interface ProgressStep {
  title: string
  run(report: (detail: string) => void): Promise<void>
}

export type ProgressMode = 'tty' | 'plain' | 'silent'

export interface ProgressReporter {
  /** How often byte counts are worth a line depends on where they go (byte-meter.ts). */
  readonly mode: ProgressMode
  /** A free-standing line (a rollback action, a note). */
  note(line: string): void
  warn(line: string): void
  /** Runs the steps in order; the first that throws ends the run with its error. */
  run(steps: ProgressStep[]): Promise<void>
}

/** Runs the steps and shows nothing. */
export const silentProgress: ProgressReporter = {
  mode: 'silent',
  note: () => {},
  warn: () => {},
  async run(steps) {
    for (const step of steps) await step.run(() => {})
  },
}
