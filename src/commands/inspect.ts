import { Args, Flags } from '@oclif/core'
import { statSync } from 'node:fs'
import type { Manifest } from '../bundle/manifest.js'
import { readManifest } from '../bundle/reader.js'
import { checkSignature, loadTrustedKeys, namedKey, type SignatureStatus } from '../bundle/trust.js'
import { jsonFlag, SnapCommand, warnLine } from '../ui/base-command.js'
import { renderInspect } from '../ui/render.js'
import { useIdentityFiles, type EncryptionFacts } from '../ship/decrypt.js'
import { identityFlag } from '../ship/flags.js'

export interface InspectResult {
  bundle: { path: string; size: number; compression: string; encryption?: EncryptionFacts }
  /** What checking the signature against the trusted keys (or --key) found; the manifest's `signed` is only its claim. */
  signature: SignatureStatus
  manifest: Manifest
}

export default class Inspect extends SnapCommand {
  static override description =
    'Show what a bundle holds, from its head alone (the manifest and its signature, checked against the trusted keys or --key; whatever the size of the file).'

  static override examples = [
    { description: 'Summary for people', command: '<%= config.bin %> inspect bundle.tar.zst' },
    { description: 'The whole manifest as JSON', command: '<%= config.bin %> inspect bundle.tar.zst --json | jq .steps' },
  ]

  static override enableJsonFlag = true

  static override args = { bundle: Args.string({ description: 'bundle written by `snap dump`', required: true }) }

  static override flags = {
    identity: identityFlag,
    json: jsonFlag,
    key: Flags.string({ description: 'check the signature against this Ed25519 public key alone (default: the trusted keys)' }),
  }

  async run(): Promise<InspectResult> {
    const { args, flags } = await this.parse(Inspect)
    useIdentityFiles(flags.identity ?? [])
    const key = flags.key ? namedKey(flags.key) : undefined
    const head = await readManifest(args.bundle)
    const keys = key ? undefined : loadTrustedKeys()
    for (const k of keys?.ignored ?? []) warnLine(k.warning)
    const { manifest, compression, encryption } = head
    const signature = checkSignature(head, { key, keys })
    const result = { bundle: { path: args.bundle, size: statSync(args.bundle).size, compression, ...(encryption ? { encryption } : {}) }, signature, manifest }
    if (!this.jsonEnabled()) {
      if (encryption) this.log(`encrypted: age, for ${encryption.stanzas} X25519 recipient${encryption.stanzas === 1 ? '' : 's'}${encryption.recipients.length > 0 ? ` (${encryption.recipients.join(', ')})` : ''}`)
      this.log(renderInspect(result))
    }
    return result
  }
}
