import { Args, Flags } from '@oclif/core'
import { exportCore, type CoreExportResult } from '../analysis/core-export.js'
import { writeBinaries } from '../analysis/binaries-read.js'
import { parsePid } from '../process/access.js'
import { jsonFlag, SnapCommand } from '../ui/base-command.js'
import { printable } from '../ui/printable.js'
import { useIdentityFiles } from '../ship/decrypt.js'
import { identityFlag } from '../ship/flags.js'

const CORE_SOURCE = {
  stored: 'stored in the bundle',
  recipe: 'rebuilt from the CRIU images, the same bytes as at the dump',
  built: 'built from the CRIU images: the process got no core at the dump',
} as const

export default class Core extends SnapCommand {
  static override description =
    "Write one process's core from a bundle to a file of its own, for gdb or any tool that reads cores: rebuilt from the bundle's CRIU images to the sha256 recorded at the dump (or extracted, when the bundle stores it), or, for a process that got none, built from the images."

  static override examples = [
    { description: "The root process's core", command: '<%= config.bin %> core bundle.tar.zst -o core.4242' },
    { description: 'A worker of the tree, then gdb on it', command: '<%= config.bin %> core bundle.tar.zst --pid 4250 -o core.4250 && gdb /usr/sbin/nginx core.4250' },
  ]

  static override enableJsonFlag = true

  static override args = { bundle: Args.string({ description: 'bundle written by `snap dump`', required: true }) }

  static override flags = {
    identity: identityFlag,
    json: jsonFlag,
    pid: Flags.string({ description: 'the process whose core to write, by its pid at the dump (default: the root)' }),
    output: Flags.string({ char: 'o', description: 'file to write (never overwritten; mode 0600)', required: true }),
    binaries: Flags.string({ description: 'also write the executables and libraries the bundle carries (--include-binaries) under this new directory, by their own paths, for a debugger\'s sysroot' }),
  }

  async run(): Promise<CoreExportResult & { binaries?: string }> {
    const { args, flags } = await this.parse(Core)
    useIdentityFiles(flags.identity ?? [])
    const result = await exportCore({ bundle: args.bundle, pid: flags.pid === undefined ? undefined : parsePid(flags.pid), output: flags.output })
    if (flags.binaries !== undefined) {
      const written = await writeBinaries(args.bundle, flags.binaries)
      if (!this.jsonEnabled()) this.log(`${printable(flags.binaries)}: ${written} executables and libraries (gdb: set sysroot ${printable(flags.binaries)})`)
      return { ...result, binaries: flags.binaries }
    }
    if (!this.jsonEnabled())
      this.log(`${printable(result.output)}: core of process ${result.pid}, ${result.size} bytes, sha256 ${result.sha256} (${CORE_SOURCE[result.source]})`)
    return result
  }
}
