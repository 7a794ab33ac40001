import { Args } from '@oclif/core'
import { completionScript, type CompletableCommand, type Shell } from '../ui/completion.js'
import { SnapCommand } from '../ui/base-command.js'

export default class Autocomplete extends SnapCommand {
  static override description =
    'Print the shell completion script for <%= config.bin %> (commands, flags, flag values). `npm run setup` installs it for bash; ' +
    'otherwise add the eval line of the examples to ~/.bashrc (or ~/.zshrc).'

  static override examples = [
    { description: 'Completion in this bash', command: 'eval "$(<%= config.bin %> autocomplete bash)"' },
    { description: 'In zsh', command: 'eval "$(<%= config.bin %> autocomplete zsh)"' },
  ]

  static override args = { shell: Args.string({ description: 'the shell', options: ['bash', 'zsh'], default: 'bash' }) }

  async run(): Promise<void> {
    const { args } = await this.parse(Autocomplete)
    const commands = this.config.commands.map((c) => ({ id: c.id, hidden: c.hidden, flags: c.flags }) as unknown as CompletableCommand)
    process.stdout.write(completionScript(args.shell as Shell, this.config.bin, commands))
  }
}
