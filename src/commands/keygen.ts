import { Args } from '@oclif/core'
import { generateKeyPair } from '../bundle/signature.js'
import { SnapCommand } from '../ui/base-command.js'

export default class Keygen extends SnapCommand {
  static override description = 'Make an Ed25519 key pair for signing bundles: PATH (private, 0600) and PATH.pub.'

  static override examples = [
    { description: 'Make a key, sign a dump, verify it elsewhere', command: '<%= config.bin %> keygen ~/.snap/team.key && <%= config.bin %> dump 4242 --sign ~/.snap/team.key' },
  ]

  static override enableJsonFlag = true

  static override args = { path: Args.string({ description: 'where to write the private key', required: true }) }

  async run(): Promise<{ privateKey: string; publicKey: string }> {
    const { args } = await this.parse(Keygen)
    const { privatePath, publicPath } = generateKeyPair(args.path)
    if (!this.jsonEnabled()) this.log(`private key ${privatePath} (0600)\npublic key  ${publicPath}`)
    return { privateKey: privatePath, publicKey: publicPath }
  }
}
