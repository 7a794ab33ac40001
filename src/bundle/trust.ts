// Whether a bundle may be restored: restoring runs its images as root, so trust comes from a signature by a key this
// host trusts (`--key PUB`, or the keys in the trusted-keys directory), never from what the manifest says of itself.

import { readdirSync } from 'node:fs'
import { readBoundedRegularFile } from './bounded-read.js'
import { createPublicKey, verify, type KeyObject } from 'node:crypto'
import { join } from 'node:path'
import { BundleInvalidError } from '../errors.js'
import { verifyBytes } from './signature.js'

export const TRUSTED_KEYS_ENV = 'SNAP_TRUSTED_KEYS'
export const DEFAULT_TRUSTED_KEYS_DIR = '/etc/procsnap/trusted-keys'
/** A directory of keys is a handful of files: these bounds keep a hostile one from costing anything. */
const MAX_KEYS = 64
const MAX_KEY_BYTES = 16 << 10

export function trustedKeysDir(): string {
  return process.env[TRUSTED_KEYS_ENV] || DEFAULT_TRUSTED_KEYS_DIR
}

/** A regular file read up to a bound; undefined for anything else (a link, a FIFO, a huge file). */
function readSmallRegular(path: string): Buffer | undefined {
  try {
    return readBoundedRegularFile(path, MAX_KEY_BYTES)
  } catch {
    return undefined
  }
}

export interface TrustedKey {
  path: string
  key: KeyObject
}

/** The Ed25519 public keys (`*.pub`) in the directory; others are skipped. */
export function loadTrustedKeys(dir: string = trustedKeysDir()): TrustedKey[] {
  let names: string[] = []
  try {
    names = readdirSync(dir).filter((n) => n.endsWith('.pub')).sort().slice(0, MAX_KEYS)
  } catch {
    return []
  }
  const keys: TrustedKey[] = []
  for (const n of names) {
    const pem = readSmallRegular(join(dir, n))
    if (!pem) continue
    try {
      const key = createPublicKey(pem)
      if (key.asymmetricKeyType === 'ed25519') keys.push({ path: join(dir, n), key })
    } catch {
      // not a key: skipped
    }
  }
  return keys
}

export type TrustVerdict =
  | { trusted: true; by: string }
  | { trusted: false; allowedUnsigned: true; warning: string }

/**
 * Throws BundleInvalidError (exit 11) unless the manifest is signed by --key or by a trusted key. An unsigned bundle
 * passes only with allowUnsigned, and then says so: the caller prints and records the warning.
 */
export function judgeTrust(
  bundle: string,
  head: { manifestBytes: Buffer; signature?: Buffer },
  o: { key?: string; allowUnsigned?: boolean; dir?: string },
): TrustVerdict {
  const dir = o.dir ?? trustedKeysDir()
  if (!head.signature) {
    if (o.allowUnsigned)
      return { trusted: false, allowedUnsigned: true, warning: `${bundle} is not signed; restored anyway because of --allow-unsigned: its images run as the uid they record` }
    throw new BundleInvalidError(
      `${bundle} is not signed, and restoring runs its images as root`,
      ['manifest.sig'],
      `sign bundles at dump (--sign KEY) and put KEY.pub in ${dir} or pass --key; --allow-unsigned restores it anyway`,
    )
  }
  if (o.key) {
    if (verifyBytes(o.key, head.manifestBytes, head.signature)) return { trusted: true, by: o.key }
    throw new BundleInvalidError(`${bundle}: the manifest signature does not match ${o.key}`, ['manifest.sig'], 'nothing was restored')
  }
  const keys = loadTrustedKeys(dir)
  for (const k of keys) {
    try {
      if (verify(null, head.manifestBytes, k.key, head.signature)) return { trusted: true, by: k.path }
    } catch {
      // a signature of the wrong length for this key: not a match
    }
  }
  throw new BundleInvalidError(
    keys.length === 0
      ? `${bundle} is signed, but no trusted key is installed in ${dir} to check it`
      : `${bundle} is not signed by any of the ${keys.length} trusted key(s) in ${dir}`,
    ['manifest.sig'],
    `pass the signer's public key with --key, or add it to ${dir} (${TRUSTED_KEYS_ENV} overrides the directory)`,
  )
}
