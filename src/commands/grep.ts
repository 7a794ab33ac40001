import { Args, Flags } from '@oclif/core'
import { grepBundle, type GrepResult } from '../analysis/grep.js'
import { parsePid } from '../process/access.js'
import { jsonFlag, SnapCommand } from '../ui/base-command.js'
import { printableInline } from '../ui/printable.js'
import { useIdentityFiles } from '../ship/decrypt.js'
import { identityFlag } from '../ship/flags.js'

export default class Grep extends SnapCommand {
  static override description =
    "Search the captured memory of a bundle for a string (or, with --regex, a pattern): each hit's process, address, mapping and the bytes around it. One streaming pass; memory stays flat whatever the bundle's size."

  static override examples = [
    { description: 'Where a request id sits in memory', command: '<%= config.bin %> grep bundle.tar.zst req-4f1c2a' },
    { description: 'A pattern, in one process, as JSON', command: "<%= config.bin %> grep bundle.tar.zst --regex 'Bearer [A-Za-z0-9._-]{20,}' --pid 4250 --json" },
  ]

  static override enableJsonFlag = true

  static override args = {
    bundle: Args.string({ description: 'bundle written by `snap dump`', required: true }),
    pattern: Args.string({ description: 'what to look for (bytes of its UTF-8 text)', required: true }),
  }

  static override flags = {
    identity: identityFlag,
    json: jsonFlag,
    regex: Flags.boolean({ description: 'PATTERN is a JavaScript regular expression over the bytes (as latin1), matches up to 4 KiB', default: false }),
    pid: Flags.string({ description: 'only hits in this process, by its pid at the dump' }),
    'max-hits': Flags.integer({ description: 'stop keeping hits after this many', default: 1000, min: 1 }),
  }

  async run(): Promise<GrepResult> {
    const { args, flags } = await this.parse(Grep)
    useIdentityFiles(flags.identity ?? [])
    const result = await grepBundle({
      bundle: args.bundle,
      pattern: args.pattern,
      regex: flags.regex,
      pid: flags.pid === undefined ? undefined : parsePid(flags.pid),
      maxHits: flags['max-hits'],
    })
    if (!this.jsonEnabled()) {
      for (const h of result.hits) this.log(`${h.pid}  ${h.address}  ${printableInline(h.mapping)}  ${h.context}`)
      if (result.hits.length === 0) this.log(`no hits for ${printableInline(args.pattern)}`)
      if (result.truncated) process.stderr.write(`warning: more than ${flags['max-hits']} hits; the rest were not kept (--max-hits)\n`)
    }
    return result
  }
}
