import { Args, Flags } from '@oclif/core'
import { onlyLanguage, stacksLines, STACKS_LANGUAGES, type StacksLanguage } from '../analysis/stacks-render.js'
import { readStacks, type StacksResult } from '../analysis/stacks-read.js'
import { UsageError } from '../errors.js'
import { parsePid } from '../process/access.js'
import { jsonFlag, SnapCommand } from '../ui/base-command.js'
import { printable } from '../ui/printable.js'
import { LineBatches, writePrettyJson } from '../ui/stream-out.js'
import { toolDefaults } from '../tools/locate.js'
import { useIdentityFiles } from '../ship/decrypt.js'
import { identityFlag } from '../ship/flags.js'

export default class Stacks extends SnapCommand {
  static override description =
    "Every thread's backtrace, for every process of a bundle: recorded at the dump, or (for an older bundle) unwound now by gdb from its cores."

  static override examples = [
    { description: 'What every thread was doing', command: '<%= config.bin %> stacks bundle.tar.zst' },
    { description: 'One process, as JSON', command: '<%= config.bin %> stacks bundle.tar.zst --pid 4250 --json' },
    { description: "Only the Python frames of the tree's Python processes", command: '<%= config.bin %> stacks bundle.tar.zst --lang python' },
  ]

  static override enableJsonFlag = true

  static override args = { bundle: Args.string({ description: 'bundle written by `snap dump`', required: true }) }

  static override flags = {
    identity: identityFlag,
    json: jsonFlag,
    pid: Flags.string({ description: 'only this process, by its pid at the dump' }),
    gdb: Flags.string({ description: `gdb to unwind an older bundle with (${toolDefaults('gdb')})` }),
    lang: Flags.string({
      description: "only one kind of frame: a language's (python, java, go: of the processes that run it) or the native ones (of every process)",
      options: [...STACKS_LANGUAGES],
    }),
  }

  async run(): Promise<StacksResult> {
    const { args, flags } = await this.parse(Stacks)
    useIdentityFiles(flags.identity ?? [])
    const result = await readStacks({ bundle: args.bundle, pid: flags.pid === undefined ? undefined : parsePid(flags.pid), gdb: flags.gdb })
    if (flags.lang) {
      const lang = flags.lang as StacksLanguage
      const kept = onlyLanguage(result.processes, lang)
      if (kept.length === 0)
        throw new UsageError(
          `no ${lang} process in ${args.bundle}`,
          `its processes run ${result.processes.map((p) => `${p.runtime?.name ?? 'native'} (${p.pid})`).join(', ')}`,
        )
      result.processes = kept
    }
    for (const w of result.warnings) process.stderr.write(`warning: ${printable(w)}\n`)
    if (!this.jsonEnabled()) {
      // Up to 256 frames of every thread of the tree: written a batch at a time, never as one text.
      const out = new LineBatches((batch) => this.log(printable(batch)))
      for (const line of stacksLines(result.processes)) out.line(line)
      out.flush()
    }
    return result
  }

  /** The result as oclif writes it (JSON.stringify's layout), a piece at a time: oclif's own way holds an object for
   *  every token of the text. */
  protected override logJson(json: unknown): void {
    writePrettyJson(json, (piece) => process.stdout.write(piece))
    process.stdout.write('\n')
  }
}
