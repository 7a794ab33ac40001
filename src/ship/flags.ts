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
