import { Args } from '@oclif/core'
import { basename, join } from 'node:path'
import { generateKeyPair } from '../bundle/signature.js'
import { trustedKeysDir } from '../bundle/trust.js'
import { jsonFlag, SnapCommand } from '../ui/base-command.js'

export default class Keygen extends SnapCommand {
  static override description = 'Make an Ed25519 key pair for signing bundles: PATH (private, 0600) and PATH.pub.'

  static override examples = [
    { description: 'Make a key, sign a dump, verify it elsewhere', command: '<%= config.bin %> keygen ~/.procsnap/team.key && <%= config.bin %> dump 4242 --sign ~/.procsnap/team.key' },
  ]

  static override enableJsonFlag = true

  static override flags = { json: jsonFlag }

  static override args = { path: Args.string({ description: 'where to write the private key', required: true }) }

  async run(): Promise<{ privateKey: string; publicKey: string }> {
    const { args } = await this.parse(Keygen)
    const { privatePath, publicPath } = generateKeyPair(args.path)
    if (!this.jsonEnabled()) {
      this.log(`private key ${privatePath} (0600)\npublic key  ${publicPath}`)
      // The next step, which nothing else on a fresh host says: restore trusts only keys in this directory (or --key).
      this.log(`to trust it where bundles are restored: install -D -m 644 ${publicPath} ${join(trustedKeysDir(), basename(publicPath))}`)
    }
    return { privateKey: privatePath, publicKey: publicPath }
  }
}
