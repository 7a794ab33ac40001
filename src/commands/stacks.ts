import { Args, Flags } from '@oclif/core'
import { renderStacks } from '../analysis/stacks.js'
import { readStacks, type StacksResult } from '../pipelines/stacks-read.js'
import { parsePid } from '../process/access.js'
import { SnapCommand } from '../ui/base-command.js'
import { printable } from '../ui/printable.js'

export default class Stacks extends SnapCommand {
  static override description =
    "Every thread's backtrace, for every process of a bundle: recorded at the dump, or (for an older bundle) unwound now by gdb from its cores."

  static override examples = [
    { description: 'What every thread was doing', command: '<%= config.bin %> stacks bundle.tar.zst' },
    { description: 'One process, as JSON', command: '<%= config.bin %> stacks bundle.tar.zst --pid 4250 --json' },
  ]

  static override enableJsonFlag = true

  static override args = { bundle: Args.string({ description: 'bundle written by `snap dump`', required: true }) }

  static override flags = {
    pid: Flags.string({ description: 'only this process, by its pid at the dump' }),
    gdb: Flags.string({ description: 'gdb to unwind an older bundle with (default: $SNAP_GDB, then snap\'s own, then PATH)' }),
  }

  async run(): Promise<StacksResult> {
    const { args, flags } = await this.parse(Stacks)
    const result = await readStacks({ bundle: args.bundle, pid: flags.pid === undefined ? undefined : parsePid(flags.pid), gdb: flags.gdb })
    for (const w of result.warnings) process.stderr.write(`warning: ${printable(w)}\n`)
    if (!this.jsonEnabled()) this.log(printable(renderStacks(result.processes)))
    return result
  }
}
