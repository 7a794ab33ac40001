// Whom a bundle is encrypted for: --encrypt-to (an age1... public key, or a file of them, repeatable), else the
// host's default list. The default list decides who can read every capture taken on the host, so it is held to the
// trusted keys' rule: anyone who could write it could add their own key and read what is captured.

import { closeSync, constants, fstatSync, lstatSync, openSync, readSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { configValue, variableName } from '../environment.js'
import { UsageError } from '../errors.js'
import { directoryProblems, joinProblems, ownershipProblems, type Problem } from '../bundle/key-files.js'

export const DEFAULT_RECIPIENTS_FILE = '/etc/procsnap/recipients'
export const RECIPIENTS_ENV = variableName('RECIPIENTS')
const MAX_RECIPIENTS = 64
const MAX_LIST_BYTES = 64 << 10
/** An age X25519 recipient: "age1" and 58 bech32 characters. */
const X25519_RECIPIENT = /^age1[02-9ac-hj-np-z]{58}$/

export function recipientsFile(): string {
  return configValue('RECIPIENTS') ?? DEFAULT_RECIPIENTS_FILE
}

function readList(path: string, fd: number, size: number): string[] {
  if (size > MAX_LIST_BYTES) throw new UsageError(`${path} is ${size} bytes, too large for a list of age recipients`, 'keep one age1... public key per line')
  const buf = Buffer.alloc(size)
  let off = 0
  while (off < size) {
    const n = readSync(fd, buf, off, size - off, off)
    if (n === 0) break
    off += n
  }
  return buf
    .subarray(0, off)
    .toString('utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
}

function checked(list: string[], from: string): string[] {
  for (const r of list)
    if (!X25519_RECIPIENT.test(r))
      throw new UsageError(`${from}: '${r.slice(0, 80)}' is not an age X25519 recipient (age1...)`, 'give the public key `age-keygen -y IDENTITY` prints')
  return list
}

/** One --encrypt-to value: a public key, or a file of them one a line (# comments). */
function fromFlag(value: string): string[] {
  if (value.startsWith('age1')) return checked([value], '--encrypt-to')
  let fd: number | undefined
  try {
    fd = openSync(value, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY)
  } catch (e) {
    throw new UsageError(`--encrypt-to ${value} is neither an age1... public key nor a readable file (${(e as NodeJS.ErrnoException).code ?? 'unreadable'})`, 'give an age1... recipient or a file of them')
  }
  try {
    const st = fstatSync(fd)
    if (!st.isFile()) throw new UsageError(`--encrypt-to ${value} is not a regular file`, 'give an age1... recipient or a file of them')
    const list = checked(readList(value, fd, st.size), value)
    if (list.length === 0) throw new UsageError(`--encrypt-to ${value} holds no recipient`, 'put one age1... public key per line')
    return list
  } finally {
    closeSync(fd)
  }
}

/**
 * The default list, when there is one: the file, and every directory above it, owned by root (or the invoking user)
 * and writable by no one else, no link, one hard link; read from the descriptor those checks were made on. A list
 * that breaks the rule is refused (not ignored: the host asked for its captures to be encrypted).
 */
function fromDefault(): { path: string; recipients: string[] } | undefined {
  const path = resolve(recipientsFile())
  let lst
  try {
    lst = lstatSync(path)
  } catch {
    return undefined
  }
  const problems: Problem[] = [...(directoryProblems(dirname(path)) ?? [])]
  if (lst.isSymbolicLink()) problems.push({ why: 'a symbolic link, which can lead anywhere', fix: (it) => `put the list itself in place of ${it}` })
  let fd: number | undefined
  try {
    if (problems.length === 0) {
      fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY)
      const st = fstatSync(fd)
      if (!st.isFile()) throw new UsageError(`${path} is not a regular file`, `put one age1... public key per line in it, or unset ${RECIPIENTS_ENV}`)
      problems.push(...ownershipProblems(path, st, true))
      if (st.nlink > 1) problems.push({ why: `${st.nlink} hard links, so another name can change it`, fix: (it) => `give it a name of its own: cp ${it} ${it}.new && mv ${it}.new ${it}` })
      if (problems.length === 0) {
        const recipients = checked(readList(path, fd, st.size), path)
        return recipients.length > 0 ? { path, recipients } : undefined
      }
    }
    const { why, fix } = joinProblems(problems, path)
    throw new UsageError(`the default recipients list ${path} is not trusted: ${why}`, `${fix}; or give --encrypt-to`)
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

export interface RecipientChoice {
  recipients: string[]
  /** Where they came from: '--encrypt-to', or the default list's path. */
  from: string
}

/** The recipients a dump encrypts for, or undefined for a plaintext bundle (no --encrypt-to and no default list). */
export function chooseRecipients(flag: string[] | undefined): RecipientChoice | undefined {
  if (flag && flag.length > 0) {
    const recipients = [...new Set(flag.flatMap(fromFlag))]
    if (recipients.length > MAX_RECIPIENTS) throw new UsageError(`${recipients.length} recipients; snap encrypts for at most ${MAX_RECIPIENTS}`)
    return { recipients, from: '--encrypt-to' }
  }
  const d = fromDefault()
  if (!d) return undefined
  if (d.recipients.length > MAX_RECIPIENTS) throw new UsageError(`${d.path} lists ${d.recipients.length} recipients; snap encrypts for at most ${MAX_RECIPIENTS}`)
  return { recipients: [...new Set(d.recipients)], from: d.path }
}
