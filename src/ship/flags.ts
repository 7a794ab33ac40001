// The flags by which commands encrypt a bundle (dump) and read an encrypted one (everything that reads a bundle).

import { Flags } from '@oclif/core'
import { DEFAULT_RECIPIENTS_FILE, RECIPIENTS_ENV } from './recipients.js'

export const identityFlag = Flags.string({
  description: 'age identity file (from `age-keygen`) to decrypt an encrypted bundle with; repeatable',
  multiple: true,
  // One file per --identity: `grep BUNDLE --identity KEY PATTERN` must not take PATTERN for a second identity.
  multipleNonGreedy: true,
})

export const encryptToFlag = Flags.string({
  description: `encrypt the bundle, head included, for this age recipient (age1...) or file of them, one a line; repeatable (default: the list in $${RECIPIENTS_ENV}, else ${DEFAULT_RECIPIENTS_FILE}, when it exists)`,
  multiple: true,
  multipleNonGreedy: true,
})

export const uploadFlag = Flags.string({
  description: 'upload the bundle to s3://BUCKET/PREFIX while it is sealed (any S3-compatible store: AWS_ENDPOINT_URL, AWS_REGION, credentials and profiles as the AWS CLI reads them), with its sha256 beside it; a failed upload keeps the bundle (exit 16)',
})

export const keepLocalFlag = Flags.boolean({ description: 'with --upload: keep the local bundle once the upload is checked (default: removed)', dependsOn: ['upload'] })
