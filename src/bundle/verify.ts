// `snap verify`: the manifest against its schema, every artifact against its sha256 and size, no entry the manifest
// does not list, and, given a public key, the signature over the manifest.

import { BundleInvalidError } from '../errors.js'
import { scanBundle } from './reader.js'
import { SIGNATURE_ENTRY } from './manifest.js'
import { verifyBytes } from './signature.js'
import { loadTrustedKeys, trustedKeysDir } from './trust.js'
import { verify } from 'node:crypto'

export interface VerifyResult {
  bundle: string
  ok: boolean
  compression: string
  artifacts: number
  bytes: number
  signature: 'valid' | 'invalid' | 'absent' | 'not-checked'
  /** The key the signature was checked against and matched (--key, or a key of the trusted-keys directory). */
  signedBy: string | null
  /** What the signature line means, for people: a signature present but not checked is said to be so. */
  signatureNote: string
  problems: string[]
}

export async function verifyBundle(path: string, publicKey?: string, onRead?: (done: number, size: number) => void): Promise<VerifyResult> {
  let scan
  try {
    scan = await scanBundle(path, { onRead })
  } catch (e) {
    // oneLine(), not message: the hint is part of the problem ("use a newer snap to read it").
    if (e instanceof BundleInvalidError)
      return { bundle: path, ok: false, compression: 'unknown', artifacts: 0, bytes: 0, signature: 'not-checked', signedBy: null, signatureNote: 'not checked', problems: [e.oneLine()] }
    throw e
  }
  const problems = [...scan.problems]
  let signature: VerifyResult['signature'] = 'not-checked'
  let signedBy: string | null = null
  let signatureNote = ''
  if (publicKey) {
    if (!scan.signature) {
      signature = 'absent'
      problems.push(`${SIGNATURE_ENTRY}: missing (the bundle is not signed)`)
    } else if (verifyBytes(publicKey, scan.manifestBytes, scan.signature)) {
      signature = 'valid'
      signedBy = publicKey
    } else {
      signature = 'invalid'
      problems.push(`${SIGNATURE_ENTRY}: does not match the manifest with this key (manifest changed, or another key)`)
    }
  } else if (!scan.signature) {
    signature = 'absent'
  } else {
    // No --key: a signature by a key this host trusts is checked; any other is present, and said to be unchecked.
    const dir = trustedKeysDir()
    const match = loadTrustedKeys(dir).find((k) => {
      try {
        return verify(null, scan.manifestBytes, k.key, scan.signature!)
      } catch {
        return false
      }
    })
    if (match) {
      signature = 'valid'
      signedBy = match.path
    }
  }
  signatureNote =
    signature === 'valid'
      ? `valid (${signedBy})`
      : signature === 'absent'
        ? 'absent: the bundle is not signed, and restore refuses it without --allow-unsigned'
        : signature === 'invalid'
          ? 'INVALID'
          : `present but NOT checked: no --key given and no key in ${trustedKeysDir()} matches it`
  return {
    bundle: path,
    ok: problems.length === 0,
    compression: scan.compression,
    artifacts: scan.manifest.artifacts.length,
    bytes: [...scan.seen.values()].reduce((s, a) => s + a.size, 0),
    signature,
    signedBy,
    signatureNote,
    problems,
  }
}
