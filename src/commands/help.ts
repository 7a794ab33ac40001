import { Args } from '@oclif/core'
import { loadHelpClass } from '@oclif/core'
import { UsageError } from '../errors.js'
import { nearestCommand } from '../hooks/command-not-found.js'
import { SnapCommand } from '../ui/base-command.js'

export default class HelpCommand extends SnapCommand {
  static override description = 'Show help for <%= config.bin %>, or for one command (the same as COMMAND --help, or -h).'

  static override examples = [
    { description: 'Every command', command: '<%= config.bin %> help' },
    { description: 'One command', command: '<%= config.bin %> help dump' },
  ]

  static override strict = false

  static override args = { command: Args.string({ description: 'the command to explain', required: false }) }

  async run(): Promise<void> {
    const { args } = await this.parse(HelpCommand)
    const id = args.command
    if (id !== undefined && !this.config.findCommand(id)) {
      const nearest = nearestCommand(id, this.config.commandIDs)
      throw new UsageError(
        `no command ${JSON.stringify(id)} to explain`,
        nearest ? `did you mean \`snap help ${nearest}\`? \`snap help\` lists the commands` : '`snap help` lists the commands',
      )
    }
    const Help = await loadHelpClass(this.config)
    await new Help(this.config, this.config.pjson.oclif.helpOptions).showHelp(id === undefined ? [] : [id])
  }
}
