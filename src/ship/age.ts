// The age format (age-encryption.org/v1) for bundles. The header, its recipient stanzas and its MAC are made and
// checked by the age-encryption package; the payload's STREAM chunks (ChaCha20-Poly1305, 64 KiB each) are sealed
// here with node:crypto, which runs natively: the package's pure-JavaScript cipher would more than double the time
// of a large seal. Chunks are independent given the payload key and their index, which is what lets the writer fill
// the bundle's head in last, as it does unencrypted.

import { createCipheriv, createDecipheriv, hkdfSync, type KeyObject } from 'node:crypto'
import type { Recipient } from 'age-encryption'

export const AGE_MAGIC = 'age-encryption.org/v1\n'

/** The package, loaded when a bundle is sealed or opened: 90 ms of modules here that a plain bundle has no use for. */
const agePackage = () => import('age-encryption')
/** Plaintext bytes per STREAM chunk, and what each sealed chunk adds (the Poly1305 tag). */
export const CHUNK = 64 * 1024
export const TAG = 16
export const SEALED_CHUNK = CHUNK + TAG
const NONCE = 16
/** A header longer than this is no bundle snap wrote (one stanza is ~120 bytes; snap takes at most 64 recipients). */
export const MAX_HEADER_BYTES = 64 << 10

/**
 * The stanza type under which snap names each recipient's public key, in clear, in the header: age headers say only
 * a recipient's type, and a person who meets an encrypted bundle must be told whose key opens it. Identities skip
 * stanzas of types they do not know (the age specification), so `age -d` reads the file as any other.
 */
export const RECIPIENT_LABEL = 'procsnap.recipient'

export function isAge(head: Buffer): boolean {
  return head.subarray(0, AGE_MAGIC.length).toString('latin1') === AGE_MAGIC
}

/** The 12-byte STREAM nonce of chunk `index`: its big-endian counter, then 1 for the last chunk. */
function chunkNonce(index: number, last: boolean): Buffer {
  const n = Buffer.alloc(12)
  n.writeUIntBE(index, 5, 6)
  n[11] = last ? 1 : 0
  return n
}

export function sealChunk(key: Buffer | KeyObject, index: number, last: boolean, plain: Buffer): Buffer {
  const c = createCipheriv('chacha20-poly1305', key, chunkNonce(index, last), { authTagLength: TAG })
  return Buffer.concat([c.update(plain), c.final(), c.getAuthTag()])
}

/** The chunk's plaintext; throws when it was not sealed with this key, at this index, with this last flag. */
export function openChunk(key: Buffer | KeyObject, index: number, last: boolean, sealed: Buffer): Buffer {
  if (sealed.length < TAG) throw new Error('a chunk shorter than its tag')
  const d = createDecipheriv('chacha20-poly1305', key, chunkNonce(index, last), { authTagLength: TAG })
  d.setAuthTag(sealed.subarray(sealed.length - TAG))
  return Buffer.concat([d.update(sealed.subarray(0, sealed.length - TAG)), d.final()])
}

const payloadKey = (fileKey: Uint8Array, nonce: Buffer): Buffer => Buffer.from(hkdfSync('sha256', fileKey, nonce, 'payload', 32))

export interface AgePrefix {
  /** The header and the payload nonce: the file's first bytes, before chunk 0. */
  prefix: Buffer
  key: Buffer
}

/**
 * A new file key wrapped for each recipient, with a label stanza naming it. The package makes the header of an empty
 * file; the file key is what a recipient of its own is handed (the package's Recipient interface), and that header
 * with its nonce is this file's prefix. The empty file's one chunk is dropped.
 */
export async function newAgePrefix(recipients: string[]): Promise<AgePrefix> {
  let fileKey: Uint8Array | undefined
  const { Encrypter, Stanza } = await agePackage()
  const e = new Encrypter()
  for (const r of recipients) {
    e.addRecipient(r)
    const label: Recipient = {
      wrapFileKey: (key) => {
        fileKey = key
        return [new Stanza([RECIPIENT_LABEL, r], new Uint8Array(0))]
      },
    }
    e.addRecipient(label)
  }
  const empty = Buffer.from(await e.encrypt(new Uint8Array(0)))
  if (!fileKey) throw new Error('no recipient was given the file key')
  const prefix = empty.subarray(0, empty.length - TAG)
  return { prefix, key: payloadKey(fileKey, prefix.subarray(prefix.length - NONCE)) }
}

export interface AgeHeader {
  /** Bytes up to and including the MAC line. */
  header: Buffer
  /** Where chunk 0 starts: after the header and the payload nonce. */
  payloadStart: number
  stanzas: { type: string; args: string[] }[]
  /** The public keys snap named in the header (RECIPIENT_LABEL stanzas). */
  recipients: string[]
}

/** The header's lines as they stand in the file's first bytes; undefined when they do not end within `head`. */
export function parseAgeHeader(head: Buffer): AgeHeader | undefined {
  if (!isAge(head)) return undefined
  const text = head.toString('latin1')
  const end = text.indexOf('\n--- ')
  if (end < 0) return undefined
  const macEnd = text.indexOf('\n', end + 1)
  if (macEnd < 0) return undefined
  const stanzas: AgeHeader['stanzas'] = []
  for (const line of text.slice(AGE_MAGIC.length, end + 1).split('\n')) {
    if (!line.startsWith('-> ')) continue
    const [type = '', ...args] = line.slice(3).split(' ')
    stanzas.push({ type, args })
  }
  const recipients = stanzas.filter((s) => s.type === RECIPIENT_LABEL && s.args.length === 1).map((s) => s.args[0]!)
  return { header: head.subarray(0, macEnd + 1), payloadStart: macEnd + 1 + NONCE, stanzas, recipients }
}

/**
 * The payload key, from the first identity that unwraps the file key (the package checks the header's MAC too).
 * Undefined when none does.
 */
export async function unwrapPayloadKey(h: AgeHeader, nonce: Buffer, identities: string[]): Promise<Buffer | undefined> {
  const { Decrypter } = await agePackage()
  for (const identity of identities) {
    const d = new Decrypter()
    d.addIdentity(identity)
    try {
      return payloadKey(await d.decryptHeader(h.header), nonce)
    } catch {
      // not this one's
    }
  }
  return undefined
}
