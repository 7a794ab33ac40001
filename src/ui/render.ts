// Human renderings of command results. Each is a pure function of the result object that --json prints.

import chalk from 'chalk'
import type { DumpResult } from '../pipelines/dump.js'
import { humanBytes } from '../bundle/output-path.js'

export function renderDumpResult(r: DumpResult): string {
  const lines = [
    `${chalk.green('bundle')}        ${r.bundle} (${humanBytes(r.bundleSize)})`,
    `target        pid ${r.pid}: was ${r.originalState}, now ${r.finalState}`,
    `stop          ${r.normalization.note}`,
    `freeze window ${r.freezeWindowMs.toFixed(1)} ms`,
    `steps         ${r.steps.map((s) => `${s.name} ${Math.round(s.durationMs)} ms`).join(', ')}`,
  ]
  for (const w of r.warnings) lines.push(chalk.yellow(`warning       ${w}`))
  return lines.join('\n')
}
