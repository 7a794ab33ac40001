import { Args, Flags } from '@oclif/core'
import { listRecoverable, recoverAll, type JournalListing, type RecoveryAction } from '../pipelines/recover/index.js'
import { jsonFlag, SnapCommand } from '../ui/base-command.js'
import { renderJournalList, renderRecover } from '../ui/render.js'
import { EXIT_CODES, UsageError } from '../errors.js'

export default class Recover extends SnapCommand {
  static override description =
    'Finish what a snap that died left half done: put each target back in its state (only if its pid still names the same process), kill leftover gdb/criu, remove partial files. Every such target, or the one named; --dry-run says what it would do, --list shows every journal.'

  static override examples = [
    { description: 'See what snaps that died left behind, and what recover would do', command: '<%= config.bin %> recover --list' },
    { description: 'What recover would do for target 4242, without doing it', command: '<%= config.bin %> recover 4242 --dry-run' },
    { description: 'Put target 4242 back and clean up after the snap that died', command: '<%= config.bin %> recover 4242' },
    { description: 'After a crash: every target left by a snap that died', command: '<%= config.bin %> recover' },
  ]

  static override enableJsonFlag = true

  static override args = { pid: Args.string({ description: 'only the target with this pid (as `snap recover --list` shows it)' }) }

  static override flags = {
    json: jsonFlag,
    'dry-run': Flags.boolean({ description: 'say what would be done, and do nothing' }),
    list: Flags.boolean({ description: 'list every journal on this host (left by a snap that died, or of a snap still at work), and change nothing' }),
  }

  async run(): Promise<{ recovered: RecoveryAction[]; dryRun: boolean } | { journals: JournalListing[] }> {
    const { args, flags } = await this.parse(Recover)
    let pid: number | undefined
    if (args.pid !== undefined) {
      if (!/^[1-9]\d{0,9}$/.test(args.pid)) throw new UsageError(`${JSON.stringify(args.pid)} is not a pid`, 'give the pid of a target as `snap recover --list` shows it')
      pid = Number(args.pid)
    }
    if (flags.list) {
      const journals = listRecoverable().filter((j) => pid === undefined || j.targetPid === pid)
      if (!this.jsonEnabled()) this.log(renderJournalList(journals))
      return { journals }
    }
    const dryRun = flags['dry-run']
    const recovered = await recoverAll({ pid, dryRun })
    if (!this.jsonEnabled()) this.log(renderRecover(recovered, { dryRun, pid }))
    if (!dryRun && recovered.some((r) => r.outcome === 'failed')) process.exitCode = EXIT_CODES.rollbackIncomplete.code
    return { recovered, dryRun }
  }
}
