import { Args, Flags } from '@oclif/core'
import { humanBytes } from '../bundle/output-path.js'
import { listBundles, type ListResult } from '../analysis/bundle-list.js'
import { describeSignature } from '../bundle/trust.js'
import { jsonFlag, SnapCommand, warnLine } from '../ui/base-command.js'
import { printable, printableInline } from '../ui/printable.js'
import { useIdentityFiles } from '../ship/decrypt.js'
import { identityFlag } from '../ship/flags.js'
import type { ListedObject } from '../ship/s3.js'
import { parseS3Url } from '../ship/s3-location.js'
import { UsageError } from '../errors.js'

export default class List extends SnapCommand {
  static override description =
    'List the bundles in some directories (default: the current one), newest first, from their heads alone, each with its signature checked against the trusted keys (or --key).'

  static override examples = [
    { description: 'Bundles here', command: '<%= config.bin %> list' },
    { description: 'Two directories, as JSON', command: '<%= config.bin %> list /var/tmp /srv/captures --json' },
    { description: 'The bundles uploaded under a prefix', command: '<%= config.bin %> list s3://captures/api/' },
  ]

  static override enableJsonFlag = true

  static override strict = false

  static override args = { dir: Args.string({ description: 'directories to look in (default: .)', required: false }) }

  static override flags = {
    identity: identityFlag,
    json: jsonFlag,
    key: Flags.string({ description: 'check signatures against this Ed25519 public key alone (default: the trusted keys)' }),
  }

  async run(): Promise<ListResult | { objects: ListedObject[] }> {
    const { argv, flags } = await this.parse(List)
    useIdentityFiles(flags.identity ?? [])
    const remote = (argv as string[]).filter((a) => a.startsWith('s3://'))
    if (remote.length > 0) {
      if (remote.length < argv.length) throw new UsageError('give either directories or s3:// prefixes, not both')
      const { listObjects } = await import('../ship/s3.js')
      const objects = (await Promise.all(remote.map((u) => listObjects(parseS3Url(u))))).flat()
      if (!this.jsonEnabled()) {
        for (const o of objects) this.log(`${o.lastModified}  ${humanBytes(o.size)}  ${o.hasSha256 ? 'sha256 recorded' : 'no sha256 recorded'}  ${printable(o.url)}`)
        if (objects.length === 0) this.log('no bundles')
      }
      return { objects }
    }
    const result = await listBundles(argv as string[], { key: flags.key, warn: warnLine })
    if (!this.jsonEnabled()) {
      for (const b of result.bundles)
        this.log(
          `${b.createdAt}  ${printableInline(b.host)}  pid ${b.pid} ${printableInline(b.comm)}${b.processes > 1 ? ` (+${b.processes - 1})` : ''}  ` +
            `${humanBytes(b.size)}  ${printableInline(listedSignature(b))}  ${printable(b.path)}`,
        )
      if (result.bundles.length === 0) this.log('no bundles')
      for (const s of result.skipped) process.stderr.write(`warning: ${printable(s.path)} is not a readable bundle: ${printableInline(s.why)}\n`)
    }
    return result
  }
}

/** One column's worth: the state, with the key and fingerprint that verified it; the reasons are for verify. */
function listedSignature(b: ListResult['bundles'][number]): string {
  const s = b.signature
  if (s.state === 'verified') return describeSignature(s)
  return s.state === 'unverified' ? 'signature present but not verified' : s.state === 'invalid' ? 'signature invalid' : 'unsigned'
}
