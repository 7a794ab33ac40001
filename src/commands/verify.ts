import { Args, Flags } from '@oclif/core'
import { verifyBundle, type VerifyResult } from '../bundle/verify.js'
import { BundleInvalidError } from '../errors.js'
import { cliName } from '../ui/cli-name.js'
import { SnapCommand } from '../ui/base-command.js'
import { renderVerify } from '../ui/render.js'

export default class Verify extends SnapCommand {
  static override description =
    'Check a bundle: manifest against its schema, every artifact against its sha256 and size, no unlisted entries; with --key, the signature.'

  static override examples = [
    { description: 'Check integrity', command: '<%= config.bin %> verify bundle.tar.zst' },
    { description: 'Check integrity and who signed it', command: '<%= config.bin %> verify bundle.tar.zst --key team.key.pub' },
  ]

  static override enableJsonFlag = true

  static override args = { bundle: Args.string({ description: 'bundle written by `snap dump`', required: true }) }

  static override flags = {
    key: Flags.string({ description: 'Ed25519 public key (from `snap keygen`) the manifest must be signed with' }),
  }

  async run(): Promise<VerifyResult> {
    const { args, flags } = await this.parse(Verify)
    const result = await verifyBundle(args.bundle, flags.key)
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
