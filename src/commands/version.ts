import { jsonFlag, SnapCommand } from '../ui/base-command.js'

export interface VersionResult {
  name: string
  version: string
  node: string
  platform: string
  arch: string
}

export default class Version extends SnapCommand {
  static override description = "<%= config.bin %>'s version, and the Node.js it runs on (the same line as --version)."

  static override examples = [
    { description: 'The version line', command: '<%= config.bin %> version' },
    { description: 'For inventory scripts', command: '<%= config.bin %> version --json' },
  ]

  static override enableJsonFlag = true

  static override flags = { json: jsonFlag }

  async run(): Promise<VersionResult> {
    await this.parse(Version)
    const r = { name: this.config.name, version: this.config.version, node: process.version, platform: process.platform, arch: process.arch }
    if (!this.jsonEnabled()) this.log(`${r.name}/${r.version} ${r.platform}-${r.arch} node-${r.node}`)
    return r
  }
}
