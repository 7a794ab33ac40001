import { Args } from '@oclif/core'
import { statSync } from 'node:fs'
import type { Manifest } from '../bundle/manifest.js'
import { readManifest } from '../bundle/reader.js'
import { SnapCommand } from '../ui/base-command.js'
import { renderInspect } from '../ui/render.js'

export interface InspectResult {
  bundle: { path: string; size: number; compression: string }
  manifest: Manifest
}

export default class Inspect extends SnapCommand {
  static override description = 'Show what a bundle holds, from its manifest alone (reads only the head of the file, whatever its size).'

  static override examples = [
    { description: 'Summary for people', command: '<%= config.bin %> inspect bundle.tar.zst' },
    { description: 'The whole manifest as JSON', command: '<%= config.bin %> inspect bundle.tar.zst --json | jq .steps' },
  ]

  static override enableJsonFlag = true

  static override args = { bundle: Args.string({ description: 'bundle written by `snap dump`', required: true }) }

  async run(): Promise<InspectResult> {
    const { args } = await this.parse(Inspect)
    const { manifest, compression } = await readManifest(args.bundle)
    const result = { bundle: { path: args.bundle, size: statSync(args.bundle).size, compression }, manifest }
    if (!this.jsonEnabled()) this.log(renderInspect(result))
    return result
  }
}
