// A bundle sealed for age recipients while it is written: the tar stream is compressed, cut into 64 KiB chunks and
// each chunk encrypted before it reaches the file, so no plaintext byte of it is ever on disk. The head (manifest and
// signature), which the writer fills in last, takes whole chunks at the start of the payload: it is encrypted then,
// with its own chunk numbers, and written in place.

import { spawn } from 'node:child_process'
import { writeSync, writev } from 'node:fs'
import { PassThrough, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { compressor, findZstdProgram, type Compression } from '../bundle/compression.js'
import { CHUNK, newAgePrefix, SEALED_CHUNK, sealChunk } from './age.js'
import { reclaimEvery } from '../tools/reclaim.js'

export interface EncryptedBody {
  /** Where the tar stream after the head goes (compressed here). */
  input: Writable
  /** Settles when every byte is encrypted and written. */
  done: Promise<void>
  /** Encrypts the head (exactly the reserve's bytes) into its chunks at the start of the payload. */
  writeHead(head: Buffer): void
}

export interface BundleEncryption {
  /** The public keys it is sealed for, as given. */
  recipients: string[]
  /** The head's plaintext room rounded up to whole chunks, so that the head can be encrypted on its own. */
  roundReserve(bytes: number): number
  open(fd: number, reserve: number, compression: Compression): EncryptedBody
}

/** A fresh file key for these recipients (each an age1... X25519 public key), ready for one bundle. */
export async function bundleEncryption(recipients: string[]): Promise<BundleEncryption> {
  const { prefix, key } = await newAgePrefix(recipients)
  return {
    recipients,
    roundReserve: (bytes) => Math.ceil(bytes / CHUNK) * CHUNK,
    open(fd, reserve, compression) {
      if (reserve % CHUNK !== 0) throw new Error('the head must take whole chunks')
      writeSync(fd, prefix, 0, prefix.length, 0)
      const chunks = new ChunkWriter(fd, key, prefix.length, reserve / CHUNK)
      const { input, done } = compressInto(chunks, compression)
      return {
        input,
        done,
        writeHead(head) {
          if (head.length !== reserve) throw new Error(`the head is ${head.length} bytes, not the ${reserve} reserved`)
          // The body after it is never empty (the tar's end blocks at least), so no head chunk is the last.
          for (let i = 0; i < reserve / CHUNK; i++) {
            const sealed = sealChunk(key, i, false, head.subarray(i * CHUNK, (i + 1) * CHUNK))
            writeSync(fd, sealed, 0, sealed.length, prefix.length + i * SEALED_CHUNK)
          }
        },
      }
    },
  }
}

/** The tar stream compressed into the chunk writer: by the zstd program when there is one, as the plain writer does. */
function compressInto(chunks: ChunkWriter, compression: Compression): { input: Writable; done: Promise<void> } {
  const program = compression === 'zstd' ? findZstdProgram() : null
  if (program) {
    const child = spawn(program, ['-3', '-T0', '-q', '-c'], { stdio: ['pipe', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    const exited = new Promise<void>((resolve, reject) => {
      child.on('error', reject)
      child.on('close', (code, signal) => (code === 0 ? resolve() : reject(new Error(stderr.trim().split('\n').at(-1) || `${program} exited with ${code ?? signal}`))))
    })
    const done = Promise.all([exited, pipeline(child.stdout, chunks)]).then(() => undefined)
    done.catch(() => child.kill('SIGKILL'))
    return { input: child.stdin, done }
  }
  const z = compressor(compression)
  if (z) return { input: z, done: pipeline(z, chunks) }
  const through = new PassThrough({ highWaterMark: 1 << 20 })
  return { input: through, done: pipeline(through, chunks) }
}

/**
 * Cuts what it is given into chunks, numbered from `first`, and writes them sealed at their place in the file. A full
 * chunk is held until more comes, because only the last chunk of the file carries the last flag. What piled up while
 * a write was under way is sealed and written in one writev, and the sealed chunks' memory reclaimed as it goes: with
 * one awaited write per 64 KiB chunk, a 1 GiB bundle's seal took 7.7 s here and snap peaked at 222 MiB; batched,
 * 4.4 s and 180 MiB, of which the cipher alone is 2.3 s on this host.
 */
class ChunkWriter extends Writable {
  private buf = Buffer.allocUnsafe(CHUNK)
  private used = 0
  private index: number
  private written = 0
  private readonly reclaim = reclaimEvery(4 << 20)

  constructor(
    private readonly fd: number,
    private readonly key: Buffer,
    private readonly payloadStart: number,
    first: number,
  ) {
    super({ highWaterMark: 4 << 20 })
    this.index = first
  }

  override _write(data: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.put([data], false).then(() => cb(), cb)
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (e?: Error | null) => void): void {
    this.put(
      chunks.map((c) => c.chunk),
      false,
    ).then(() => cb(), cb)
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.put([], true).then(() => cb(), cb)
  }

  private async put(data: Buffer[], end: boolean): Promise<void> {
    const at = this.payloadStart + this.index * SEALED_CHUNK
    const sealed: Buffer[] = []
    for (const d of data) {
      let off = 0
      while (off < d.length) {
        if (this.used === CHUNK) sealed.push(this.seal(false))
        const n = Math.min(CHUNK - this.used, d.length - off)
        d.copy(this.buf, this.used, off, off + n)
        this.used += n
        off += n
      }
    }
    if (end) sealed.push(this.seal(true))
    await writeAll(this.fd, sealed, at)
    for (const b of sealed) this.written += b.length
    this.reclaim(this.written)
  }

  private seal(last: boolean): Buffer {
    const sealed = sealChunk(this.key, this.index, last, this.buf.subarray(0, this.used))
    this.index++
    this.used = 0
    return sealed
  }
}

/** Writes the buffers one after another from `position`, however many calls that takes. */
async function writeAll(fd: number, buffers: Buffer[], position: number): Promise<void> {
  let left = buffers.filter((b) => b.length > 0)
  let at = position
  while (left.length > 0) {
    let n = await new Promise<number>((resolve, reject) => writev(fd, left, at, (e, written) => (e ? reject(e) : resolve(written))))
    at += n
    const rest: Buffer[] = []
    for (const b of left) {
      if (n >= b.length) n -= b.length
      else {
        rest.push(b.subarray(n))
        n = 0
      }
    }
    left = rest
  }
}
