import { recoverAll, type RecoveryAction } from '../pipelines/recover.js'
import { SnapCommand } from '../ui/base-command.js'
import { renderRecover } from '../ui/render.js'
import { EXIT_CODES } from '../errors.js'

export default class Recover extends SnapCommand {
  static override description =
    'Finish what a snap that died left half done: put each target back in its state (only if its pid still names the same process), kill leftover gdb/criu, remove partial files.'

  static override examples = [{ description: 'After a crash or a killed session', command: '<%= config.bin %> recover' }]

  static override enableJsonFlag = true

  async run(): Promise<{ recovered: RecoveryAction[] }> {
    await this.parse(Recover)
    const recovered = await recoverAll()
    if (!this.jsonEnabled()) this.log(renderRecover(recovered))
    if (recovered.some((r) => r.outcome === 'failed')) process.exitCode = EXIT_CODES.rollbackIncomplete.code
    return { recovered }
  }
}
