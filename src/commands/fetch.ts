import { Args, Flags } from '@oclif/core'
import { humanBytes } from '../bundle/output-path.js'
import { fetchBundle, type FetchResult } from '../ship/s3.js'
import { parseS3Url } from '../ship/s3-location.js'
import { jsonFlag, SnapCommand } from '../ui/base-command.js'
import { printable } from '../ui/printable.js'

export default class Fetch extends SnapCommand {
  static override description =
    'Download a bundle that `dump --upload` put in S3 or an S3-compatible store (endpoint, region and credentials from the AWS environment and profiles), held to the sha256 recorded beside it; a mismatch keeps nothing.'

  static override examples = [
    { description: 'Into the current directory, under its own name', command: '<%= config.bin %> fetch s3://captures/api/snap-api-4242-20260101T000000Z.tar.zst' },
    { description: 'A store of its own', command: 'AWS_ENDPOINT_URL=https://minio.example:9000 <%= config.bin %> fetch s3://captures/x.tar.zst -o /var/tmp/x.tar.zst' },
  ]

  static override enableJsonFlag = true

  static override args = { url: Args.string({ description: 's3://BUCKET/KEY of a bundle', required: true }) }

  static override flags = {
    json: jsonFlag,
    output: Flags.string({ char: 'o', description: 'file to write (never overwritten; mode 0600; default: the object\'s name in the current directory)' }),
  }

  async run(): Promise<FetchResult> {
    const { args, flags } = await this.parse(Fetch)
    const result = await fetchBundle(parseS3Url(args.url), flags.output)
    if (!this.jsonEnabled()) this.log(`${printable(result.path)}: ${humanBytes(result.size)}, sha256 ${result.sha256} as recorded at the upload`)
    return result
  }
}
