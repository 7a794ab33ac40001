// `snap verify`: the manifest against its schema, every artifact against its sha256 and size, no entry the manifest
// does not list, and, given a public key, the signature over the manifest.

import { BundleInvalidError } from '../errors.js'
import { scanBundle } from './reader.js'
import { SIGNATURE_ENTRY } from './manifest.js'
import { verifyBytes } from './signature.js'

export interface VerifyResult {
  bundle: string
  ok: boolean
  compression: string
  artifacts: number
  bytes: number
  signature: 'valid' | 'invalid' | 'absent' | 'not-checked'
  problems: string[]
}

export async function verifyBundle(path: string, publicKey?: string): Promise<VerifyResult> {
  let scan
  try {
    scan = await scanBundle(path)
  } catch (e) {
    // oneLine(), not message: the hint is part of the problem ("use a newer snap to read it").
    if (e instanceof BundleInvalidError) return { bundle: path, ok: false, compression: 'unknown', artifacts: 0, bytes: 0, signature: 'not-checked', problems: [e.oneLine()] }
    throw e
  }
  const problems = [...scan.problems]
  let signature: VerifyResult['signature'] = 'not-checked'
  if (publicKey) {
    if (!scan.signature) {
      signature = 'absent'
      problems.push(`${SIGNATURE_ENTRY}: missing (the bundle is not signed)`)
    } else if (verifyBytes(publicKey, scan.manifestBytes, scan.signature)) {
      signature = 'valid'
    } else {
      signature = 'invalid'
      problems.push(`${SIGNATURE_ENTRY}: does not match the manifest with this key (manifest changed, or another key)`)
    }
  } else if (!scan.signature) {
    signature = 'absent'
  }
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
