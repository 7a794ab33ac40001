import { Args, Flags } from '@oclif/core'
import { openBundleHead } from '../bundle/bundle-file.js'
import { verifyBundle, type VerifyResult } from '../bundle/verify.js'
import { BundleInvalidError } from '../errors.js'
import { cliName } from '../ui/cli-name.js'
import { jsonFlag, SnapCommand, warnLine } from '../ui/base-command.js'
import { ByteMeter, meterIntervalMs } from '../pipelines/byte-meter.js'
import { chooseProgressMode, Progress } from '../ui/progress.js'
import { renderVerify } from '../ui/render.js'
import { useIdentityFiles } from '../ship/decrypt.js'
import { identityFlag } from '../ship/flags.js'

export default class Verify extends SnapCommand {
  static override description =
    'Check a bundle: manifest against its schema, every artifact against its sha256 and size, no unlisted entries, and its signature (against --key, else the trusted keys): signed and verified, present but not verified, invalid (exit 11), or unsigned.'

  static override examples = [
    { description: 'Check integrity', command: '<%= config.bin %> verify bundle.tar.zst' },
    { description: 'Check integrity and who signed it', command: '<%= config.bin %> verify bundle.tar.zst --key team.key.pub' },
  ]

  static override enableJsonFlag = true

  static override args = { bundle: Args.string({ description: 'bundle written by `snap dump`', required: true }) }

  static override flags = {
    identity: identityFlag,
    json: jsonFlag,
    key: Flags.string({ description: 'Ed25519 public key (from `snap keygen`) the manifest must be signed with (default: the trusted keys, which need not match)' }),
    quiet: Flags.boolean({ char: 'q', description: 'no progress on stderr', default: false }),
  }

  async run(): Promise<VerifyResult> {
    const { args, flags } = await this.parse(Verify)
    useIdentityFiles(flags.identity ?? [])
    openBundleHead(args.bundle) // a path that is no bundle is one error line, before any progress
    // Reading a large bundle takes seconds: bytes read, rate and time left on stderr meanwhile.
    const progress = new Progress(chooseProgressMode({ quiet: flags.quiet }))
    let result!: VerifyResult
    // Told after the progress lines, not among them: a key ignored is news even with --quiet.
    const ignored: string[] = []
    await progress.run([
      {
        title: 'Verify the signature and every artifact against its sha256',
        run: async (report) => {
          const meter = new ByteMeter(report, undefined, meterIntervalMs(progress.mode), 'read: ')
          result = await verifyBundle(args.bundle, flags.key, (done, size) => meter.update(done, size), (w) => ignored.push(w))
          report(`${result.artifacts} artifacts, ${meter.line().replace(/^read: /, '')}`)
        },
      },
    ])
    for (const w of ignored) warnLine(w)
    if (!this.jsonEnabled()) this.log(renderVerify(result))
    if (!result.ok) {
      if (this.jsonEnabled()) {
        // The result is the JSON document (oclif prints what run() returns); the exit code says it failed.
        // this.exit() here threw an EEXIT that oclif printed as a second JSON document after the result.
        process.stderr.write(`${cliName()}: error: ${args.bundle} failed verification: ${result.problems.join('; ')}\n`)
        process.exitCode = new BundleInvalidError('').exitCode
        return result
      }
      throw new BundleInvalidError(`${args.bundle} failed verification: ${result.problems.join('; ')}`, result.problems)
    }
    return result
  }
}
