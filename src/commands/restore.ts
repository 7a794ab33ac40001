import { Args, Flags } from '@oclif/core'
import { RestoreRun, type RestoreResult } from '../pipelines/restore.js'
import { SnapCommand } from '../ui/base-command.js'
import { chooseProgressMode, Progress } from '../ui/progress.js'
import { renderRestoreResult } from '../ui/render.js'

export default class Restore extends SnapCommand {
  static override description =
    'Bring a captured process back with CRIU: verify the bundle, extract it privately, check this host can take it, restore, and confirm the result in /proc.'

  static override examples = [
    { description: 'Restore in the state it was captured in', command: '<%= config.bin %> restore snap-api-4242-20261123T030000Z.tar.zst' },
    { description: 'Restore and let it run, even if it was captured paused', command: '<%= config.bin %> restore bundle.tar.zst --resume' },
    { description: 'The original still runs: restore a copy in a new pid namespace', command: '<%= config.bin %> restore bundle.tar.zst --new-pidns' },
    { description: 'Trust a signature by this key (or put it in /etc/procsnap/trusted-keys/)', command: '<%= config.bin %> restore bundle.tar.zst --key team.key.pub' },
  ]

  static override enableJsonFlag = true

  static override args = { bundle: Args.string({ description: 'bundle written by `snap dump`', required: true }) }

  static override flags = {
    resume: Flags.boolean({ description: 'leave the restored process running', exclusive: ['leave-stopped'], default: false }),
    'leave-stopped': Flags.boolean({ description: 'leave the restored process stopped', exclusive: ['resume'], default: false }),
    'new-pidns': Flags.boolean({ description: 'restore into a new pid namespace, so the old pids need not be free', default: false }),
    criu: Flags.string({ description: 'criu binary to use (default: $SNAP_CRIU, then PATH)' }),
    'work-dir': Flags.string({ description: 'where to extract the images (a private directory is made inside; default: the system temp dir)' }),
    timeout: Flags.integer({ description: 'give up after this many seconds; anything partly restored is killed', min: 1 }),
    key: Flags.string({ description: 'trust only a signature by this Ed25519 public key (default: the keys in $SNAP_TRUSTED_KEYS, else /etc/procsnap/trusted-keys/)' }),
    'tcp-close': Flags.boolean({ description: 'restore its TCP connections closed (for study away from its peers; criu --tcp-close)', default: false }),
    'criu-opt': Flags.string({ description: 'extra criu restore option, given as it is (e.g. --tcp-close)', multiple: true }),
    'allow-unsigned': Flags.boolean({ description: 'restore a bundle that is not signed (its images run as root); warned and recorded', default: false }),
    quiet: Flags.boolean({ char: 'q', description: 'no progress on stderr', default: false }),
  }

  async run(): Promise<RestoreResult> {
    const { args, flags } = await this.parse(Restore)
    const { controller, dispose } = this.interruptController()
    try {
      const result = await new RestoreRun(
        {
          bundle: args.bundle,
          final: flags.resume ? 'running' : flags['leave-stopped'] ? 'stopped' : undefined,
          newPidns: flags['new-pidns'],
          criu: flags.criu,
          workDirParent: flags['work-dir'],
          timeoutSec: flags.timeout,
          publicKey: flags.key,
          allowUnsigned: flags['allow-unsigned'],
          tcpClose: flags['tcp-close'],
          criuExtraOptions: flags['criu-opt'] ?? [],
          cancel: controller.signal,
        },
        new Progress(chooseProgressMode({ quiet: flags.quiet })),
      ).execute()
      if (!this.jsonEnabled()) this.log(renderRestoreResult(result))
      return result
    } finally {
      dispose()
    }
  }
}
