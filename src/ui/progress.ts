// Progress on stderr: listr2 on a terminal, plain timestamped lines otherwise (logs, CI, runbooks piping output).
// stdout is never touched here: it carries results only.

import chalk from 'chalk'
import { Listr, ListrLogger, ProcessOutput } from 'listr2'
import { asInvoked } from './cli-name.js'
import { printable } from './printable.js'

import type { ProgressMode, ProgressReporter, ProgressStep } from '../pipelines/progress.js'

export type { ProgressMode, ProgressStep } from '../pipelines/progress.js'

export function chooseProgressMode(opts: { quiet?: boolean } = {}): ProgressMode {
  if (opts.quiet) return 'silent'
  // The live task list redraws itself with cursor escapes: with NO_COLOR (or --no-color) the terminal gets plain lines.
  const noEscapes = (process.env.NO_COLOR ?? '') !== ''
  return process.stderr.isTTY && process.env.CI !== 'true' && !noEscapes ? 'tty' : 'plain'
}

function stamp(): string {
  return new Date().toISOString()
}

export class Progress implements ProgressReporter {
  constructor(readonly mode: ProgressMode) {}

  /** A free-standing line (a warning, a rollback action). */
  note(line: string): void {
    if (this.mode === 'silent') return
    line = asInvoked(printable(line))
    process.stderr.write(this.mode === 'plain' ? `${stamp()} ${line}\n` : `${line}\n`)
  }

  warn(line: string): void {
    // Made printable here, before the colour: note() would otherwise escape chalk's own sequences.
    const text = asInvoked(printable(line))
    if (this.mode === 'silent') return
    process.stderr.write(this.mode === 'plain' ? `${stamp()} warning: ${text}\n` : `${chalk.yellow(`warning: ${text}`)}\n`)
  }

  async run(steps: ProgressStep[]): Promise<void> {
    if (this.mode === 'tty') return this.runListr(steps)
    for (const step of steps) {
      const t0 = performance.now()
      this.note(`[start] ${step.title}`)
      try {
        await step.run((d) => this.note(`        ${d}`))
      } catch (e) {
        this.note(`[fail]  ${step.title} (${Math.round(performance.now() - t0)} ms)`)
        throw e
      }
      this.note(`[done]  ${step.title} (${Math.round(performance.now() - t0)} ms)`)
    }
  }

  private async runListr(steps: ProgressStep[]): Promise<void> {
    const processOutput = new ProcessOutput(process.stderr, process.stderr)
    const list = new Listr(
      steps.map((s) => ({
        title: printable(s.title),
        task: async (_ctx: unknown, task: { output: string }) => {
          await s.run((d) => {
            task.output = printable(d)
          })
        },
      })),
      {
        concurrent: false,
        exitOnError: true,
        // snap handles SIGINT itself: it must roll back, not let the renderer exit the process.
        registerSignalListeners: false,
        renderer: 'default',
        rendererOptions: { timer: { condition: true, field: (ms: number) => `${Math.round(ms)} ms`, format: () => chalk.dim }, logger: new ListrLogger({ processOutput }) },
      },
    )
    await list.run()
  }
}
