// Whether a bundle may be restored, and what its signature is: restoring runs its images as root, so trust comes from
// a signature by a key this host trusts (`--key PUB`, or the keys in the trusted-keys directory), never from what the
// manifest says of itself. A key is trusted only where no one but root (or the invoking user) could have put it, as
// sshd's StrictModes judges authorized_keys: anyone who can write a trusted key gets root through `snap restore`.

import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto'
import { closeSync, constants, fstatSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, realpathSync, type Stats } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { configValue, variableName } from '../environment.js'
import { BundleInvalidError, KeyNotTrustedError, UsageError } from '../errors.js'
import { SIGNATURE_ENTRY } from './manifest.js'

export const TRUSTED_KEYS_ENV = variableName('TRUSTED_KEYS')
export const DEFAULT_TRUSTED_KEYS_DIR = '/etc/procsnap/trusted-keys'
/** A directory of keys is a handful of files: these bounds keep a hostile one from costing anything. */
const MAX_KEYS = 64
const MAX_KEY_BYTES = 16 << 10
/** Every Ed25519 signature is this long; anything else in manifest.sig is not a signature at all. */
export const ED25519_SIGNATURE_BYTES = 64

export function trustedKeysDir(): string {
  return configValue('TRUSTED_KEYS') ?? DEFAULT_TRUSTED_KEYS_DIR
}

/** What makes a path untrustworthy, and what fixes it: `fix(it)` names the key as `it` (a warning that has just named
 *  it) or by its path (a doctor's problem, a refusal). */
interface Problem {
  why: string
  fix: (it: string) => string
}

export interface TrustedKey {
  path: string
  key: KeyObject
  fingerprint: string
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

/** SHA256:base64 of the key's SubjectPublicKeyInfo, as ssh-keygen -l prints a key's. */
export function fingerprint(key: KeyObject): string {
  return `SHA256:${createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('base64').replace(/=+$/, '')}`
}

const euid = (): number => process.geteuid?.() ?? 0

function ownerAllowed(uid: number): boolean {
  return uid === 0 || uid === euid()
}

function octalMode(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0')
}

/**
 * Owner and write bits of one path: a directory above the keys or the directory itself (named in the why and the fix),
 * or a key (`isKey`: the warning has named it already). `stickyIsEnough`: a directory with the sticky bit may be
 * writable by others, as /tmp is, where what is asked is only that no one else can replace a name in it (a file or
 * directory owned by root or the invoking user, which the sticky bit keeps others from renaming or removing).
 */
function ownershipProblems(path: string, st: Stats, isKey = false, stickyIsEnough = false): Problem[] {
  const problems: Problem[] = []
  if (stickyIsEnough && st.isDirectory() && st.mode & 0o1000) return ownerProblems(path, st, isKey)
  const subject = isKey ? '' : `${path} is `
  const target = (it: string) => (isKey ? it : path)
  problems.push(...ownerProblems(path, st, isKey))
  if (st.mode & 0o022) {
    const who = st.mode & 0o002 ? 'others' : `its group (gid ${st.gid})`
    if (st.isDirectory() && st.mode & 0o1000 && st.mode & 0o002)
      // chmod 755 /tmp would break the host: the keys belong elsewhere.
      problems.push({
        why: `${subject}mode ${octalMode(st.mode)}, writable by others (the sticky bit does not stop anyone adding a key below it)`,
        fix: () => `keep trusted keys out of ${path}: put them in a directory only root can write, and point ${TRUSTED_KEYS_ENV} at it`,
      })
    else problems.push({ why: `${subject}mode ${octalMode(st.mode)}, writable by ${who}`, fix: (it) => `chmod ${(st.mode & 0o7755).toString(8)} ${target(it)}` })
  }
  return problems
}

function ownerProblems(path: string, st: Stats, isKey: boolean): Problem[] {
  if (ownerAllowed(st.uid)) return []
  return [{ why: `${isKey ? '' : `${path} is `}owned by uid ${st.uid}, not root${euid() === 0 ? '' : ` or uid ${euid()} (you)`}`, fix: (it) => `chown root ${isKey ? it : path}` }]
}

/** Every directory above `dir` up to /, by name and by where its links really lead. */
function ancestors(dir: string): string[] {
  const out = new Set<string>()
  for (let p = dirname(dir); ; p = dirname(p)) {
    out.add(p)
    if (p === dirname(p)) break
  }
  try {
    // A link among the names leads elsewhere: the directories it leads through must be safe too.
    for (let p = realpathSync(dirname(dir)); ; p = dirname(p)) {
      out.add(p)
      if (p === dirname(p)) break
    }
  } catch {
    // a name that does not resolve: the directory cannot be read either
  }
  return [...out].sort()
}

/** What is wrong with the directory and every directory above it; undefined when it does not exist (no keys). */
function directoryProblems(dir: string): Problem[] | undefined {
  let st: Stats
  try {
    st = lstatSync(dir)
  } catch {
    return undefined
  }
  const problems: Problem[] = []
  for (const a of ancestors(dir)) {
    let ast: Stats
    try {
      ast = lstatSync(a)
    } catch {
      continue
    }
    // A link's own mode means nothing; the directory holding it is checked, and the path it leads to.
    if (!ast.isSymbolicLink()) problems.push(...ownershipProblems(a, ast))
  }
  if (st.isSymbolicLink())
    problems.push({
      why: `${dir} is a symbolic link, which can lead anywhere`,
      fix: () => `make ${dir} a real directory, or point ${TRUSTED_KEYS_ENV} at the directory itself`,
    })
  else if (!st.isDirectory()) return undefined
  else problems.push(...ownershipProblems(dir, st))
  return problems
}

/** Reads a key from an open descriptor (never through a name that could be swapped meanwhile); undefined if none. */
function readKeyFrom(fd: number, size: number): KeyObject | undefined {
  if (size > MAX_KEY_BYTES) return undefined
  const buf = Buffer.alloc(size)
  let off = 0
  while (off < size) {
    const n = readSync(fd, buf, off, size - off, off)
    if (n === 0) break
    off += n
  }
  try {
    const key = createPublicKey(buf.subarray(0, off))
    return key.asymmetricKeyType === 'ed25519' ? key : undefined
  } catch {
    return undefined
  }
}

/** The key a symbolic link leads to, read only to say which ignored key a bundle needed; never trusted. */
function keyBehindLink(path: string): KeyObject | undefined {
  let fd: number | undefined
  try {
    fd = openSync(realpathSync(path), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
    const st = fstatSync(fd)
    return st.isFile() ? readKeyFrom(fd, st.size) : undefined
  } catch {
    return undefined
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

type KeyFile = { key?: KeyObject; problems: Problem[] } | undefined

/**
 * One key file: lstat'ed (a link is refused, not followed), then opened without following a link and judged by the
 * fstat of the descriptor it is read from, so what is checked is what is read. Undefined: not a key file at all.
 */
function examineKeyFile(path: string): KeyFile {
  let lst: Stats
  try {
    lst = lstatSync(path)
  } catch {
    return undefined
  }
  if (lst.isSymbolicLink())
    return { key: keyBehindLink(path), problems: [{ why: 'a symbolic link, which can lead anywhere', fix: (it) => `put the key file itself in place of ${it === 'it' ? 'the link' : it}` }] }
  if (!lst.isFile()) return undefined
  let fd: number | undefined
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
    const st = fstatSync(fd)
    if (st.ino !== lst.ino || st.dev !== lst.dev || !st.isFile())
      return { problems: [{ why: 'replaced while it was being checked', fix: () => 'run again' }] }
    const problems = ownershipProblems(path, st, true)
    if (st.nlink > 1)
      problems.push({
        why: `${st.nlink} hard links, so another name can change it`,
        fix: (it) => (it === 'it' ? 'give it a name of its own (cp it it.new && mv it.new it)' : `give it a name of its own: cp ${it} ${it}.new && mv ${it}.new ${it}`),
      })
    return { key: readKeyFrom(fd, st.size), problems }
  } catch {
    return undefined
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

function joinProblems(problems: Problem[], path: string): { why: string; fix: string; fixIt: string } {
  const unique = (xs: string[]) => [...new Set(xs)]
  const fix = (it: string) => unique(problems.map((p) => p.fix(it))).join(', then ')
  return { why: unique(problems.map((p) => p.why)).join(', and '), fix: fix(path), fixIt: fix('it') }
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

/**
 * Where a named key file really lies: every directory its name leads through, hop by hop through each symbolic link
 * (whoever can write one of them can put another key in its place), each link on the way, and the file it ends at.
 * Throws (ENOENT, ELOOP) when the name leads to nothing.
 */
function namedKeyPath(path: string): { dirs: string[]; links: string[]; real: string } {
  const dirs = new Set<string>()
  const links: string[] = []
  const above = (p: string) => {
    for (let d = dirname(p); ; d = dirname(d)) {
      dirs.add(d)
      if (d === dirname(d)) break
    }
  }
  let p = resolve(path)
  for (let hop = 0; ; hop++) {
    above(p)
    // A directory of the name that is itself a link: where it leads is checked too.
    above(join(realpathSync(dirname(p)), 'x'))
    if (!lstatSync(p).isSymbolicLink()) break
    if (hop === 40) throw Object.assign(new Error(`${path}: too many symbolic links`), { code: 'ELOOP' })
    links.push(p)
    p = resolve(dirname(p), readlinkSync(p))
  }
  return { dirs: [...dirs].sort(), links, real: realpathSync(p) }
}

/**
 * The key given with --key, held to the rule a trusted key is held to: the user named it, but anyone who can write
 * it, or a directory its name leads through, could have put their own key there, and a bundle they signed would then
 * be restored as root. A directory writable by others is enough only with the sticky bit (a key under /tmp owned by
 * root or the user cannot be swapped). UsageError when it cannot be read or is no Ed25519 public key; KeyNotTrusted
 * (exit 11) naming the file, why and the fix when someone else could have written it.
 */
export function namedKey(path: string): TrustedKey {
  const unreadable = () => new UsageError(`cannot read public key ${path}`, 'give the .pub file made by `snap keygen`')
  let walk: ReturnType<typeof namedKeyPath>
  try {
    walk = namedKeyPath(path)
  } catch {
    throw unreadable()
  }
  const problems: Problem[] = []
  for (const d of walk.dirs) {
    let st: Stats
    try {
      st = lstatSync(d)
    } catch {
      continue
    }
    if (!st.isSymbolicLink()) problems.push(...ownershipProblems(d, st, false, true))
  }
  for (const l of walk.links) {
    // A link is replaced, never changed: its owner can do that where the sticky bit lets only owners.
    const st = lstatSync(l)
    if (!ownerAllowed(st.uid)) problems.push({ why: `the symbolic link ${l} is owned by uid ${st.uid}, not root`, fix: () => `give the key file's own path with --key, not ${l}` })
  }
  let fd: number | undefined
  try {
    try {
      // The file is read from the descriptor its checks are made on: what is checked is what is read.
      fd = openSync(walk.real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY)
    } catch {
      throw unreadable()
    }
    const st = fstatSync(fd)
    if (!st.isFile()) throw new UsageError(`${path} is not a regular file`, 'give the .pub file made by `snap keygen`')
    problems.push(...ownershipProblems(walk.real, st))
    if (st.nlink > 1)
      problems.push({ why: `${walk.real} has ${st.nlink} hard links, so another name can change it`, fix: () => `give it a name of its own: cp ${walk.real} ${walk.real}.new && mv ${walk.real}.new ${walk.real}` })
    if (problems.length > 0) {
      const { why, fix } = joinProblems(problems, walk.real)
      throw new KeyNotTrustedError(`the key given with --key, ${path}, is not trusted: ${why}`, path, `${fix}; or give a key only root${euid() === 0 ? '' : ' or you'} can change`)
    }
    const key = readKeyFrom(fd, st.size)
    if (!key) throw new UsageError(`${path} is not an Ed25519 public key in PEM form`, 'make one with `snap keygen`')
    return { path, key, fingerprint: fingerprint(key) }
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
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
