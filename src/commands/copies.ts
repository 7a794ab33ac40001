import { Flags } from '@oclif/core'
import { EXIT_CODES, UsageError } from '../errors.js'
import { endCopy, listCopies, type EndedCopy, type ListedCopy } from '../pipelines/copies.js'
import { jsonFlag, SnapCommand } from '../ui/base-command.js'
import { renderCopies, renderEndedCopies } from '../ui/render.js'

export default class Copies extends SnapCommand {
  static override description =
    'List the isolated copies `restore --isolate` left running on this host (how to enter each), or end one: its processes, its port forwarders and its cgroups, nothing else.'

  static override examples = [
    { description: 'Which isolated copies run here', command: '<%= config.bin %> copies' },
    { description: 'End the copy whose root is pid 5151 and everything made for it', command: '<%= config.bin %> copies --end 5151' },
    { description: 'End every isolated copy on this host', command: '<%= config.bin %> copies --end-all' },
  ]

  static override enableJsonFlag = true

  static override flags = {
    json: jsonFlag,
    end: Flags.string({ description: 'end the copy whose restored root has this pid (as `copies` lists it)', exclusive: ['end-all'] }),
    'end-all': Flags.boolean({ description: 'end every isolated copy on this host', default: false }),
  }

  async run(): Promise<{ copies: ListedCopy[] } | { ended: EndedCopy[] }> {
    const { flags } = await this.parse(Copies)
    const copies = listCopies()
    if (flags.end === undefined && !flags['end-all']) {
      if (!this.jsonEnabled()) this.log(renderCopies(copies))
      return { copies }
    }
    let chosen = copies
    if (flags.end !== undefined) {
      if (!/^[1-9]\d{0,9}$/.test(flags.end)) throw new UsageError(`${JSON.stringify(flags.end)} is not a pid`, 'give the pid of a copy as `snap copies` lists it')
      chosen = copies.filter((c) => c.record.root.pid === Number(flags.end))
      if (chosen.length === 0) throw new UsageError(`no isolated copy has the pid ${flags.end}`, 'run `snap copies` to list them')
    }
    const ended: EndedCopy[] = []
    for (const c of chosen) ended.push(await endCopy(c.record))
    if (!this.jsonEnabled()) this.log(renderEndedCopies(ended))
    if (ended.some((e) => e.left.length > 0)) process.exitCode = EXIT_CODES.rollbackIncomplete.code
    return { ended }
  }
}
