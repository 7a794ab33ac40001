// Opening a bundle file: what it is from its first bytes (a compression, or age encryption), and its tar stream,
// decrypted and decoded. A plain zstd bundle is decoded by the zstd program reading the file itself: read through
// snap into the program's stdin, a 2 GiB bundle cost a core's second of pipe copies here.

import { closeSync, createReadStream, openSync, readSync, statSync } from 'node:fs'
import type { Readable } from 'node:stream'
import { BundleInvalidError, UsageError } from '../errors.js'
import { openEncrypted, readAgeHead, requireIdentity, type EncryptedBundle } from '../ship/decrypt.js'
import { decompressor, detectCompression, readOffset, zstdReadingFile, type Compression } from './compression.js'

/** The file's kind from its first bytes: a bundle's compression, or 'age' for an encrypted one (when an identity was
 *  given: without one, BundleEncryptedError naming its recipients). */
export function openBundleHead(path: string): { compression: Compression | 'age'; size: number } {
  const { head, size } = headBytes(path)
  const age = readAgeHead(path, head)
  if (age) {
    requireIdentity(path, age)
    return { compression: 'age', size }
  }
  return { compression: plainCompression(path, head), size }
}

/** What scanBundle reads: the compression of the (decrypted) bundle, and its decryption when it is encrypted. */
export async function openBundle(path: string): Promise<{ compression: Compression; size: number; encrypted?: EncryptedBundle }> {
  const { head, size } = headBytes(path)
  const age = readAgeHead(path, head)
  if (!age) return { compression: plainCompression(path, head), size }
  const encrypted = await openEncrypted(path, age)
  return { compression: plainCompression(path, encrypted.firstChunk), size, encrypted }
}

function headBytes(path: string): { head: Buffer; size: number } {
  let st
  try {
    st = statSync(path)
  } catch {
    throw new UsageError(`bundle ${path} does not exist`, 'give the path of a bundle written by `snap dump`')
  }
  if (!st.isFile()) throw new UsageError(`bundle ${path} is not a regular file`)
  // An empty file is no bundle, and neither is what /proc shows as one (/proc/self/mem: size 0, EIO when read).
  if (st.size === 0) throw new BundleInvalidError(`${path} is empty: not a snap bundle`, [path], 'give the path of a bundle written by `snap dump`')
  const head = Buffer.alloc(512)
  let fd: number | undefined
  try {
    fd = openSync(path, 'r')
    readSync(fd, head, 0, 512, 0)
  } catch (e) {
    throw new BundleInvalidError(`${path} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}): not a snap bundle`, [path], 'give the path of a bundle written by `snap dump`')
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
  return { head, size: st.size }
}

function plainCompression(path: string, head: Buffer): Compression {
  const compression = detectCompression(head)
  if (compression === 'unknown')
    throw new BundleInvalidError(`${path} is not a snap bundle (neither zstd, gzip nor tar)`, [path], 'give the path of a bundle written by `snap dump`')
  return compression
}

export interface TarStream {
  stream: Readable
  /** How many bytes of the file have been read so far. */
  bytesRead(): number
  /** Ends every reader and closes the file. */
  close(): void
}

/** The bundle's tar stream; `fail` is told what went wrong on the way (a read, the decryption, the decoding). */
export function openTarStream(path: string, compression: Compression, encrypted: EncryptedBundle | undefined, fail: (msg: string) => void): TarStream {
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch (e) {
    throw new BundleInvalidError(`${path} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, [path])
  }
  const direct = encrypted || compression !== 'zstd' ? undefined : zstdReadingFile(fd)
  // The read stream closes the file it is given; the program's copy is closed when the pass ends.
  const source = direct ? undefined : createReadStream(path, { fd, highWaterMark: 1 << 20 })
  const dec = direct ? undefined : decompressor(compression)
  const decrypt = encrypted?.decryptor()
  const plain: Readable | undefined = source && decrypt ? source.pipe(decrypt) : source
  const stream: Readable = direct ?? (dec ? plain!.pipe(dec) : plain!)
  const bytesRead = (): number => (source ? source.bytesRead : readOffset(fd))
  source?.on('error', (e) => fail(`cannot read: ${e.message}`))
  direct?.on('error', (e) => fail(`damaged zstd stream (${e.message}); the bundle is truncated or corrupt`))
  decrypt?.on('error', (e) => {
    fail(`damaged encrypted bundle (${e.message})`)
    stream.destroy() // a pipe does not pass its source's error on: the decompressor would wait for more forever
  })
  dec?.on('error', (e) => fail(`damaged ${compression} stream (${e.message}); the bundle is truncated or corrupt`))
  return {
    stream,
    bytesRead,
    close() {
      source?.destroy()
      direct?.destroy()
      if (direct) closeSync(fd)
      decrypt?.destroy()
      dec?.destroy()
    },
  }
}
