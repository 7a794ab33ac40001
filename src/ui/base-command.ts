// What every snap command shares: private file modes, one-line errors with documented exit codes, the warning about
// unfinished work left by a snap that died, and SIGINT/SIGTERM/SIGHUP turned into a rollback instead of an exit.

import { Command, Flags } from '@oclif/core'
import chalk from 'chalk'
import { EXIT_CODES, InternalError, SnapError, type InterruptSignal } from '../errors.js'
import { actionableStaleJournals } from '../pipelines/journal.js'
import { printableLine } from '../tools/run.js'
import { asInvoked, cliName, setCliName } from './cli-name.js'
import { printableInline } from './printable.js'

export abstract class SnapCommand extends Command {
  static override baseFlags = {
    debug: Flags.boolean({ description: 'show stack traces for errors', default: false, helpGroup: 'GLOBAL' }),
    'no-color': Flags.boolean({ description: 'no colour or other escape sequences (also NO_COLOR=1)', default: false, helpGroup: 'GLOBAL' }),
  }

  protected jsonRequested(): boolean {
    return this.argv.includes('--json')
  }

  override async init(): Promise<void> {
    setCliName(this.config.bin)
    // Cores and images hold the target's secrets: everything snap creates is private from the first byte.
    process.umask(0o077)
    // NO_COLOR (no-color.org) and --no-color: chalk does not read NO_COLOR itself; the task list's library does, so it
    // is set for it too.
    if (this.argv.includes('--no-color') || (process.env.NO_COLOR ?? '') !== '') {
      chalk.level = 0
      process.env.NO_COLOR = '1'
    }
    // After SIGHUP the terminal is gone and a write fails with EIO (EPIPE for a closed pipe). Unhandled, that error
    // would end snap in the middle of a rollback and leave the target frozen: output is lost, the work goes on.
    for (const stream of [process.stdout, process.stderr]) stream.on('error', () => undefined)
    await super.init()
    if (this.id !== 'recover') {
      const stale = actionableStaleJournals()
      if (stale.length > 0)
        this.logToStderr(
          `${cliName()}: warning: ${stale.length} target(s) left by a snap that died (${stale.map((s) => s.entry.target.pid).join(', ')}); run \`snap recover\` for all, or \`snap recover PID\` for one (\`snap recover --list\` shows them)`,
        )
    }
  }

  /** Results and notes name commands as they were typed (`procsnap recover`, not `snap recover`). */
  override log(message = '', ...args: unknown[]): void {
    super.log(asInvoked(message), ...args)
  }

  override logToStderr(message = '', ...args: unknown[]): void {
    super.logToStderr(asInvoked(message), ...args)
  }

  /** SIGINT, SIGTERM, SIGHUP abort the controller once; later ones are reported and ignored until rollback ends. */
  protected interruptController(): { controller: AbortController; dispose: () => void } {
    const controller = new AbortController()
    const handlers = new Map<InterruptSignal, () => void>()
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      const h = () => {
        if (!controller.signal.aborted) {
          safeStderr(`${cliName()}: ${sig} received: stopping the running step and putting the target back\n`)
          controller.abort(sig)
        } else {
          safeStderr(`${cliName()}: ${sig} received again: the rollback is still running and will finish first\n`)
        }
      }
      handlers.set(sig, h)
      process.on(sig, h)
    }
    return {
      controller,
      dispose: () => {
        for (const [sig, h] of handlers) process.off(sig, h)
      },
    }
  }

  override async catch(err: Error & { exitCode?: number; oclif?: { exit?: number } }): Promise<unknown> {
    if (err instanceof SnapError) {
      const debug = this.argv.includes('--debug') || !!process.env.DEBUG
      if (this.jsonRequested()) {
        process.stdout.write(
          JSON.stringify({ error: { kind: err.kind, exitCode: err.exitCode, message: asInvoked(err.message), hint: err.hint === undefined ? null : asInvoked(err.hint), meaning: EXIT_CODES[err.kind].meaning } }, null, 2) + '\n',
        )
      }
      safeStderr(`${cliName()}: error: ${asInvoked(printableLine(err.oneLine(), 1000))}\n`)
      if (debug && err.stack) safeStderr(`${err.stack}\n`)
      process.exitCode = err.exitCode
      return this.exit(err.exitCode)
    }
    // oclif's parse errors (unknown flag, missing argument, bad option value): one line, exit 2 (usage).
    if (err.oclif?.exit === 2 && err.name !== 'ExitError') {
      const first = err.message
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l && !/^(See more help|Note:)/.test(l) && !/^The following errors occurred:?$/.test(l))
        .join(' ')
        .replace(/:\s+/g, ': ')
      if (this.jsonRequested()) process.stdout.write(JSON.stringify({ error: { kind: 'usage', exitCode: 2, message: first, hint: null, meaning: EXIT_CODES.usage.meaning } }, null, 2) + '\n')
      safeStderr(`${cliName()}: error: ${first}; see \`${cliName()} ${this.id ?? ''} --help\`\n`)
      process.exitCode = 2
      return this.exit(2)
    }
    // An exit already decided keeps oclif's handling.
    if (err.oclif?.exit !== undefined || err.name === 'ExitError' || /^(EEXIT|ECONFIG)/.test(String((err as { code?: string }).code))) return super.catch(err)
    // Anything else is a bug in snap. Every pipeline has already rolled back by the time it gets here.
    return this.catch(new InternalError(err))
  }
}

/** What --json does, said for this program: oclif's own reads "Format output as json.". A command with
 *  enableJsonFlag names it among its flags, which oclif lets take the place of its own. */
export const jsonFlag = Flags.boolean({ description: 'print the result as one JSON document on stdout (progress and warnings stay on stderr)', helpGroup: 'GLOBAL' })

/** stderr may be a closed terminal after SIGHUP; a failed progress line must not derail a rollback. */
export function safeStderr(text: string): void {
  try {
    process.stderr.write(text)
  } catch {
    // nowhere to write
  }
}

/** A warning that is shown whatever the progress mode (a trusted key ignored): one printable line on stderr. */
export function warnLine(line: string): void {
  safeStderr(`warning: ${asInvoked(printableInline(line))}\n`)
}
