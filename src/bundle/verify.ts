// `snap verify`: the manifest against its schema, every artifact against its sha256 and size, no entry the manifest
// does not list, and the signature over the manifest: against --key when given, else against the trusted keys.

import { BundleInvalidError } from '../errors.js'
import { scanBundle } from './reader.js'
import { SIGNATURE_ENTRY } from './manifest.js'
import { checkSignature, describeSignature, loadTrustedKeys, namedKey, type SignatureStatus } from './trust.js'

export interface VerifyResult {
  bundle: string
  ok: boolean
  compression: string
  artifacts: number
  bytes: number
  /** What checking the signature found (null: the bundle could not be read far enough to tell). */
  signature: SignatureStatus | null
  problems: string[]
}

/** `warn` is told of each trusted-keys file that is ignored, with why and the fix. */
export async function verifyBundle(
  path: string,
  publicKey?: string,
  onRead?: (done: number, size: number) => void,
  warn?: (line: string) => void,
): Promise<VerifyResult> {
  // A --key that is no key is a usage error before the bundle is read, not after.
  const key = publicKey ? namedKey(publicKey) : undefined
  let scan
  try {
    scan = await scanBundle(path, { onRead })
  } catch (e) {
    // oneLine(), not message: the hint is part of the problem ("use a newer snap to read it").
    if (e instanceof BundleInvalidError)
      return { bundle: path, ok: false, compression: 'unknown', artifacts: 0, bytes: 0, signature: null, problems: [e.oneLine()] }
    throw e
  }
  const problems = [...scan.problems]
  // --key names the one key the signature must be by; without it, the keys this host trusts are asked.
  const keys = key ? undefined : loadTrustedKeys()
  for (const k of keys?.ignored ?? []) warn?.(k.warning)
  const signature = checkSignature(scan, { key, keys })
  // An invalid signature is a damaged or forged bundle whatever was asked; a missing one fails only when a key was.
  if (signature.state === 'invalid') problems.push(`${SIGNATURE_ENTRY}: ${describeSignature(signature)}`)
  if (signature.state === 'unsigned' && publicKey) problems.push(`${SIGNATURE_ENTRY}: missing (the bundle is unsigned)`)
  return {
    bundle: path,
    ok: problems.length === 0,
    compression: scan.compression,
    artifacts: scan.manifest.artifacts.length,
    bytes: [...scan.seen.values()].reduce((s, a) => s + a.size, 0),
    signature,
    problems,
  }
}
