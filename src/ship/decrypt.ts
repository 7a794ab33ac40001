// Reading an encrypted bundle: the identities given with --identity, the header checked against them, and the
// payload decrypted chunk by chunk as the reader streams it (one 64 KiB chunk in memory at a time).

import { createSecretKey, type KeyObject } from 'node:crypto'
import { closeSync, openSync, readSync } from 'node:fs'
import { Transform, type TransformCallback } from 'node:stream'
import { BoundedReadError, readBoundedRegularFile } from '../bundle/bounded-read.js'
import { BundleEncryptedError, UsageError } from '../errors.js'
import { CHUNK, isAge, MAX_HEADER_BYTES, openChunk, parseAgeHeader, SEALED_CHUNK, unwrapPayloadKey, type AgeHeader } from './age.js'

const MAX_IDENTITY_FILE_BYTES = 64 << 10

let identityFiles: string[] = []
let identities: string[] = []

/**
 * The age identities (AGE-SECRET-KEY-1... lines, as `age-keygen` writes them) that commands reading a bundle decrypt
 * with; set once by the command from --identity.
 */
export function useIdentityFiles(paths: string[]): void {
  identityFiles = paths
  identities = paths.flatMap(readIdentityFile)
}

function readIdentityFile(path: string): string[] {
  const hint = 'give a file written by `age-keygen`'
  let text: string
  try {
    text = readBoundedRegularFile(path, MAX_IDENTITY_FILE_BYTES, { followLinks: true }).toString('utf8')
  } catch (e) {
    if (e instanceof BoundedReadError) throw new UsageError(`--identity ${e.message}`, hint)
    throw new UsageError(`cannot read --identity ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, hint)
  }
  const keys = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
  const bad = keys.find((k) => !k.startsWith('AGE-SECRET-KEY-1'))
  if (bad !== undefined || keys.length === 0)
    throw new UsageError(`--identity ${path} holds no age X25519 identity (AGE-SECRET-KEY-1...)`, hint)
  return keys
}

/** What can be said of an encrypted bundle without opening it: for messages, inspect and list. */
export interface EncryptionFacts {
  format: 'age'
  /** Recipient stanzas of any type in the header (one per recipient for X25519). */
  stanzas: number
  /** The public keys snap named in the header: whoever holds one of their identities can read the bundle. */
  recipients: string[]
}

export interface EncryptedBundle extends EncryptionFacts {
  /** A fresh transform from the file's bytes (from its first) to the plaintext bundle. */
  decryptor(): Transform
  /** The plaintext's first bytes (chunk 0), for its compression. */
  firstChunk: Buffer
}

/** The age header at the start of a file, when it is one; throws when it starts so but the header is not whole. */
export function readAgeHead(path: string, head: Buffer): AgeHeader | undefined {
  if (!isAge(head)) return undefined
  const buf = Buffer.alloc(MAX_HEADER_BYTES + SEALED_CHUNK)
  const fd = openSync(path, 'r')
  let got: number
  try {
    got = readSync(fd, buf, 0, buf.length, 0)
  } finally {
    closeSync(fd)
  }
  const h = parseAgeHeader(buf.subarray(0, Math.min(got, MAX_HEADER_BYTES)))
  if (!h) throw new BundleEncryptedError(`${path} starts as an age file but its header is damaged or cut`, [], 'the file is not a whole bundle')
  return h
}

export function encryptionFacts(h: AgeHeader): EncryptionFacts {
  return { format: 'age', stanzas: h.stanzas.filter((s) => s.type === 'X25519').length, recipients: h.recipients }
}

function whom(f: EncryptionFacts): string {
  const n = `${f.stanzas} X25519 recipient${f.stanzas === 1 ? '' : 's'}`
  return f.recipients.length > 0 ? `${n}: ${f.recipients.join(', ')}` : n
}

/** Throws BundleEncryptedError (exit 11) when no identity was given; before any byte past the header is read. */
export function requireIdentity(path: string, h: AgeHeader): void {
  if (identities.length === 0)
    throw new BundleEncryptedError(`${path} is encrypted (age) for ${whom(encryptionFacts(h))}`, [], 'give --identity FILE with the age identity of one of them')
}

/** The bundle's payload key from the identities given, and what decrypts it. */
export async function openEncrypted(path: string, h: AgeHeader): Promise<EncryptedBundle> {
  requireIdentity(path, h)
  const fd = openSync(path, 'r')
  const buf = Buffer.alloc(16 + SEALED_CHUNK)
  let got: number
  try {
    got = readSync(fd, buf, 0, buf.length, h.header.length)
  } finally {
    closeSync(fd)
  }
  const nonce = buf.subarray(0, 16)
  const key = await unwrapPayloadKey(h, nonce, identities)
  if (!key)
    throw new BundleEncryptedError(
      `${path} is encrypted (age) for ${whom(encryptionFacts(h))}, and no identity in ${identityFiles.join(', ')} is one of them`,
      [],
      'give --identity FILE with the age identity of one of those recipients',
    )
  const sealed0 = buf.subarray(16, got)
  let firstChunk: Buffer
  try {
    // A file of one chunk has it last; any other has a full first chunk.
    firstChunk = sealed0.length < SEALED_CHUNK ? openChunk(key, 0, true, sealed0) : openChunk(key, 0, false, sealed0)
  } catch {
    throw new BundleEncryptedError(`${path}: its first encrypted chunk does not decrypt (the file is damaged or was changed)`, [], 'get the bundle again from where it was made')
  }
  return { ...encryptionFacts(h), firstChunk, decryptor: () => new ChunkDecryptor(key, h.payloadStart) }
}

/**
 * The plaintext of an age payload as the file streams through: skips the header, holds one sealed chunk until the
 * next arrives (only the file's end says which one is last), and fails on any chunk that does not authenticate, or a
 * file cut at a chunk boundary (its last chunk would not carry the last flag).
 */
class ChunkDecryptor extends Transform {
  private skip: number
  private buf = Buffer.allocUnsafe(SEALED_CHUNK)
  private used = 0
  private index = 0

  /** Made once: a chunk's decipher given the key's bytes makes a key object of its own each time (sealChunk's). */
  private readonly key: KeyObject

  constructor(key: Buffer, payloadStart: number) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 20 })
    this.key = createSecretKey(key)
    this.skip = payloadStart
  }

  override _transform(data: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    try {
      let off = Math.min(this.skip, data.length)
      this.skip -= off
      while (off < data.length) {
        if (this.used === SEALED_CHUNK) this.open(false)
        const n = Math.min(SEALED_CHUNK - this.used, data.length - off)
        data.copy(this.buf, this.used, off, off + n)
        this.used += n
        off += n
      }
      cb()
    } catch (e) {
      cb(e as Error)
    }
  }

  override _flush(cb: TransformCallback): void {
    try {
      if (this.used === 0 && this.index > 0) throw new Error('the file ends after a chunk that is not its last: it is cut')
      this.open(true)
      cb()
    } catch (e) {
      cb(e as Error)
    }
  }

  private open(last: boolean): void {
    let plain: Buffer
    try {
      plain = openChunk(this.key, this.index, last, this.buf.subarray(0, this.used))
    } catch {
      throw new Error(`encrypted chunk ${this.index} does not decrypt${last ? ' as the last one (the file is cut or was changed)' : ' (the file was changed)'}`)
    }
    this.index++
    this.used = 0
    if (plain.length > CHUNK) throw new Error('a chunk larger than age allows')
    this.push(plain)
  }
}
