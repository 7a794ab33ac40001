// Where a key file may be trusted: only where no one but root (or the invoking user) could have put it, as sshd's
// StrictModes judges authorized_keys. The file, every directory above it, each link its name leads through; read from
// the descriptor its checks were made on. trust.ts decides with these which keys verify a bundle.

import { createHash, createPublicKey, type KeyObject } from 'node:crypto'
import { closeSync, constants, fstatSync, lstatSync, openSync, readlinkSync, readSync, realpathSync, type Stats } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { variableName } from '../environment.js'
import { KeyNotTrustedError, UsageError } from '../errors.js'

export const TRUSTED_KEYS_ENV = variableName('TRUSTED_KEYS')

export const MAX_KEY_BYTES = 16 << 10

/** What makes a path untrustworthy, and what fixes it: `fix(it)` names the key as `it` (a warning that has just named
 *  it) or by its path (a doctor's problem, a refusal). */
export interface Problem {
  why: string
  fix: (it: string) => string
}

export interface TrustedKey {
  path: string
  key: KeyObject
  fingerprint: string
}

/** SHA256:base64 of the key's SubjectPublicKeyInfo, as ssh-keygen -l prints a key's. */
export function fingerprint(key: KeyObject): string {
  return `SHA256:${createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('base64').replace(/=+$/, '')}`
}

const euid = (): number => process.geteuid?.() ?? 0

export function ownerAllowed(uid: number): boolean {
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
export function ownershipProblems(path: string, st: Stats, isKey = false, stickyIsEnough = false): Problem[] {
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
export function directoryProblems(dir: string): Problem[] | undefined {
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
export function readKeyFrom(fd: number, size: number): KeyObject | undefined {
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

export type KeyFile = { key?: KeyObject; problems: Problem[] } | undefined

/**
 * One key file: lstat'ed (a link is refused, not followed), then opened without following a link and judged by the
 * fstat of the descriptor it is read from, so what is checked is what is read. Undefined: not a key file at all.
 */
export function examineKeyFile(path: string): KeyFile {
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

export function joinProblems(problems: Problem[], path: string): { why: string; fix: string; fixIt: string } {
  const unique = (xs: string[]) => [...new Set(xs)]
  const fix = (it: string) => unique(problems.map((p) => p.fix(it))).join(', then ')
  return { why: unique(problems.map((p) => p.why)).join(', and '), fix: fix(path), fixIt: fix('it') }
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
