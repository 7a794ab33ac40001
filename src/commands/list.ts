import { Args } from '@oclif/core'
import { humanBytes } from '../bundle/output-path.js'
import { listBundles, type ListResult } from '../pipelines/bundle-list.js'
import { SnapCommand } from '../ui/base-command.js'
import { printable, printableInline } from '../ui/printable.js'

export default class List extends SnapCommand {
  static override description = 'List the bundles in some directories (default: the current one), newest first, from their manifests alone.'

  static override examples = [
    { description: 'Bundles here', command: '<%= config.bin %> list' },
    { description: 'Two directories, as JSON', command: '<%= config.bin %> list /var/tmp /srv/captures --json' },
  ]

  static override enableJsonFlag = true

  static override strict = false

  static override args = { dir: Args.string({ description: 'directories to look in (default: .)', required: false }) }

  async run(): Promise<ListResult> {
    const { argv } = await this.parse(List)
    const result = await listBundles(argv as string[])
    if (!this.jsonEnabled()) {
      for (const b of result.bundles)
        this.log(
          `${b.createdAt}  ${printableInline(b.host)}  pid ${b.pid} ${printableInline(b.comm)}${b.processes > 1 ? ` (+${b.processes - 1})` : ''}  ` +
            `${humanBytes(b.size)}  ${b.signed ? 'signed' : 'unsigned'}  ${printable(b.path)}`,
        )
      if (result.bundles.length === 0) this.log('no bundles')
      for (const s of result.skipped) process.stderr.write(`warning: ${printable(s.path)} is not a readable bundle: ${printableInline(s.why)}\n`)
    }
    return result
  }
}
