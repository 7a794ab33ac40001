import { Args, Flags } from '@oclif/core'
import { debugBundle } from '../analysis/debug.js'
import { parsePid } from '../process/access.js'
import { SnapCommand } from '../ui/base-command.js'
import { printable } from '../ui/printable.js'
import { toolDefaults } from '../tools/locate.js'
import { useIdentityFiles } from '../ship/decrypt.js'
import { identityFlag } from '../ship/flags.js'

export default class Debug extends SnapCommand {
  static override description =
    "gdb on one process's core from a bundle, with the executable it ran where this host has it. Arguments after -- go to gdb."

  static override examples = [
    { description: 'An interactive gdb on the root process', command: '<%= config.bin %> debug bundle.tar.zst' },
    { description: 'Every thread of a worker, in batch mode', command: "<%= config.bin %> debug bundle.tar.zst --pid 4250 -- -batch -ex 'info threads'" },
  ]

  static override strict = false

  static override args = { bundle: Args.string({ description: 'bundle written by `snap dump`', required: true }) }

  static override flags = {
    identity: identityFlag,
    pid: Flags.string({ description: 'the process to debug, by its pid at the dump (default: the root)' }),
    gdb: Flags.string({ description: `gdb to run (${toolDefaults('gdb')})` }),
  }

  async run(): Promise<void> {
    const { args, flags } = await this.parse(Debug)
    useIdentityFiles(flags.identity ?? [])
    // gdb's arguments are what follows `--` on the command line, in their order: oclif's argv reorders what looks
    // like flags (`-ex A -ex B` came out as `-ex -ex A B`), so they are taken from the process's own argv.
    const dashdash = process.argv.indexOf('--')
    const gdbArgs = dashdash >= 0 ? process.argv.slice(dashdash + 1) : []
    const code = await debugBundle({
      bundle: args.bundle,
      pid: flags.pid === undefined ? undefined : parsePid(flags.pid),
      gdb: flags.gdb,
      gdbArgs,
      warn: (t) => process.stderr.write(`warning: ${printable(t)}\n`),
    })
    process.exitCode = code
  }
}
