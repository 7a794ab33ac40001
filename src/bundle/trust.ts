// Whether a bundle may be restored, and what its signature is: restoring runs its images as root, so trust comes from
// a signature by a key this host trusts (`--key PUB`, or the keys in the trusted-keys directory), never from what the
// manifest says of itself. A key is trusted only where no one but root (or the invoking user) could have put it, as
// sshd's StrictModes judges authorized_keys (key-files.ts): anyone who can write a trusted key gets root through `restore`.

import { verify, type KeyObject } from 'node:crypto'
import { readdirSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { configValue } from '../environment.js'
import { BundleInvalidError, KeyNotTrustedError } from '../errors.js'
import { directoryProblems, examineKeyFile, fingerprint, joinProblems, namedKey, TRUSTED_KEYS_ENV, type TrustedKey } from './key-files.js'
import { SIGNATURE_ENTRY } from './manifest.js'

export { fingerprint, namedKey, TRUSTED_KEYS_ENV, type TrustedKey }
export const DEFAULT_TRUSTED_KEYS_DIR = '/etc/procsnap/trusted-keys'
/** A directory of keys is a handful of files: these bounds keep a hostile one from costing anything. */
const MAX_KEYS = 64
/** Every Ed25519 signature is this long; anything else in manifest.sig is not a signature at all. */
export const ED25519_SIGNATURE_BYTES = 64

export function trustedKeysDir(): string {
  return configValue('TRUSTED_KEYS') ?? DEFAULT_TRUSTED_KEYS_DIR
}

/** A key file that is not trusted because of where or how it lies (someone else could have written it). */
export interface IgnoredKey {
  path: string
  why: string
  /** The fix, naming the key by its path. */
  fix: string
  /** The key it holds, when it holds one: a restore that only this key would have let through names it. */
  key?: KeyObject
  /** `ignoring trusted key PATH: WHY; FIX`, as printed. */
  warning: string
}

export interface TrustedKeys {
  dir: string
  trusted: TrustedKey[]
  ignored: IgnoredKey[]
}

/**
 * The Ed25519 public keys (`*.pub`) in the directory, split into those trusted and those ignored because someone other
 * than root (or the invoking user) could have written them or a directory above them. Files that hold no key and
 * break no rule are skipped silently.
 */
export function loadTrustedKeys(dir: string = trustedKeysDir()): TrustedKeys {
  const abs = resolve(dir)
  const result: TrustedKeys = { dir: abs, trusted: [], ignored: [] }
  const dirProblems = directoryProblems(abs)
  if (dirProblems === undefined) return result
  let names: string[]
  try {
    names = readdirSync(abs).filter((n) => n.endsWith('.pub')).sort().slice(0, MAX_KEYS)
  } catch {
    return result
  }
  for (const n of names) {
    const path = join(abs, n)
    const file = examineKeyFile(path)
    if (!file) continue
    const problems = [...dirProblems, ...file.problems]
    if (problems.length === 0) {
      if (file.key) result.trusted.push({ path, key: file.key, fingerprint: fingerprint(file.key) })
      continue
    }
    const { why, fix, fixIt } = joinProblems(problems, path)
    result.ignored.push({ path, why, fix, key: file.key, warning: `ignoring trusted key ${path}: ${why}; ${fixIt}` })
  }
  return result
}

export type SignatureState = 'verified' | 'unverified' | 'invalid' | 'unsigned'

/** What a bundle's signature is, found by checking it: the manifest's own word is never asked. */
export interface SignatureStatus {
  state: SignatureState
  /** verified: the key file that verified it. */
  keyFile?: string
  /** verified: that key's fingerprint. */
  fingerprint?: string
  /** unverified, invalid: why, for people. */
  reason?: string
  /** unverified: the one key that would have verified it, ignored for where or how it lies. */
  ignoredKey?: { path: string; why: string; fix: string }
}

function signatureMatches(key: KeyObject, data: Buffer, signature: Buffer): boolean {
  try {
    return verify(null, data, key, signature)
  } catch {
    return false
  }
}

/**
 * Checks the signature over the exact manifest bytes: against --key alone when one is given (the key it names), else
 * against the trusted keys. A signature that is not one (the wrong length), or fails against the key named, is
 * invalid; one no trusted key matches is present but not verified (another key's, or a changed manifest: the two
 * cannot be told apart without the signer's key).
 */
export function checkSignature(head: { manifestBytes: Buffer; signature?: Buffer }, o: { key?: string | TrustedKey; keys?: TrustedKeys }): SignatureStatus {
  const sig = head.signature
  if (!sig) return { state: 'unsigned' }
  if (sig.length !== ED25519_SIGNATURE_BYTES)
    return { state: 'invalid', reason: `${SIGNATURE_ENTRY} is ${sig.length} bytes, not a ${ED25519_SIGNATURE_BYTES}-byte Ed25519 signature` }
  if (o.key) {
    const named = typeof o.key === 'string' ? namedKey(o.key) : o.key
    if (signatureMatches(named.key, head.manifestBytes, sig)) return { state: 'verified', keyFile: named.path, fingerprint: named.fingerprint }
    return { state: 'invalid', reason: `the manifest signature does not match ${named.path} (the manifest changed, or another key signed it)` }
  }
  const keys = o.keys ?? loadTrustedKeys()
  const match = keys.trusted.find((k) => signatureMatches(k.key, head.manifestBytes, sig))
  if (match) return { state: 'verified', keyFile: match.path, fingerprint: match.fingerprint }
  const ignored = keys.ignored.find((k) => k.key && signatureMatches(k.key, head.manifestBytes, sig))
  if (ignored)
    return {
      state: 'unverified',
      reason: `it is signed by ${ignored.path}, which is not trusted: ${ignored.why}`,
      ignoredKey: { path: ignored.path, why: ignored.why, fix: ignored.fix },
    }
  return {
    state: 'unverified',
    reason:
      keys.trusted.length === 0
        ? `no trusted key is installed in ${keys.dir} to check it`
        : `none of the ${keys.trusted.length} trusted key(s) in ${keys.dir} matches it`,
  }
}

/** The one line people read for each state. */
export function describeSignature(s: SignatureStatus): string {
  switch (s.state) {
    case 'verified':
      return `signed and verified by ${s.keyFile} (${s.fingerprint})`
    case 'unverified':
      return `signature present but not verified: ${s.reason}`
    case 'invalid':
      return `signature invalid: ${s.reason}`
    case 'unsigned':
      return 'unsigned'
  }
}

export type TrustVerdict =
  | { trusted: true; by: string; signature: SignatureStatus }
  | { trusted: false; allowedUnsigned: true; warning: string; signature: SignatureStatus }

/**
 * Throws (exit 11) unless the manifest is signed and verified by --key or by a trusted key. An unsigned bundle passes
 * only with allowUnsigned, and then says so: the caller prints and records the warning. Each trusted-keys file that
 * is ignored is told to `warn`; a bundle only such a key would have let through is refused naming it and the fix.
 */
export function judgeTrust(
  bundle: string,
  head: { manifestBytes: Buffer; signature?: Buffer },
  o: { key?: string; allowUnsigned?: boolean; dir?: string; warn?: (line: string) => void },
): TrustVerdict {
  // A --key someone else could have written is refused whether or not the bundle turns out to be signed: it names a
  // key that must not be used, and the person should hear so.
  const named = o.key ? namedKey(o.key) : undefined
  const keys = named ? undefined : loadTrustedKeys(o.dir ?? trustedKeysDir())
  for (const k of keys?.ignored ?? []) o.warn?.(k.warning)
  const dir = keys?.dir ?? resolve(o.dir ?? trustedKeysDir())
  const s = checkSignature(head, { key: named, keys })
  switch (s.state) {
    case 'verified':
      return { trusted: true, by: s.keyFile!, signature: s }
    case 'unsigned':
      if (o.allowUnsigned)
        return {
          trusted: false,
          allowedUnsigned: true,
          warning: `${bundle} is not signed; restored anyway because of --allow-unsigned: its images run as the uid they record`,
          signature: s,
        }
      throw new BundleInvalidError(
        `${bundle} is not signed, and restoring runs its images as root`,
        [SIGNATURE_ENTRY],
        `sign bundles at dump (--sign KEY) and put KEY.pub in ${dir} or pass --key; --allow-unsigned restores it anyway`,
      )
    case 'invalid':
      throw new BundleInvalidError(`${bundle}: ${describeSignature(s)}`, [SIGNATURE_ENTRY], 'nothing was restored')
    case 'unverified':
      if (s.ignoredKey)
        throw new KeyNotTrustedError(
          `${bundle} is signed by ${s.ignoredKey.path}, but that key is not trusted: ${s.ignoredKey.why}`,
          s.ignoredKey.path,
          `${s.ignoredKey.fix}; nothing was restored`,
        )
      throw new BundleInvalidError(
        `${bundle}: ${describeSignature(s)}`,
        [SIGNATURE_ENTRY],
        `pass the signer's public key with --key, or add it to ${dir} (${TRUSTED_KEYS_ENV} overrides the directory)`,
      )
  }
}
