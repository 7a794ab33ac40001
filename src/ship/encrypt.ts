// A bundle sealed for age recipients while it is written: the tar stream is compressed, cut into 64 KiB chunks and
// each chunk encrypted before it reaches the file, so no plaintext byte of it is ever on disk. The head (manifest and
// signature), which the writer fills in last, takes whole chunks at the start of the payload: it is encrypted then,
// with its own chunk numbers, and written in place.

import { spawn } from 'node:child_process'
import { write as fsWrite, writeSync } from 'node:fs'
import { PassThrough, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { compressor, findZstdProgram, type Compression } from '../bundle/compression.js'
import { CHUNK, newAgePrefix, SEALED_CHUNK, sealChunk } from './age.js'

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
 * Cuts what it is given into chunks, numbered from `first`, and writes each sealed at its place in the file. A full
 * chunk is held until more comes, because only the last chunk of the file carries the last flag.
 */
class ChunkWriter extends Writable {
  private buf = Buffer.allocUnsafe(CHUNK)
  private used = 0
  private index: number

  constructor(
    private readonly fd: number,
    private readonly key: Buffer,
    private readonly payloadStart: number,
    first: number,
  ) {
    super({ highWaterMark: 1 << 20 })
    this.index = first
  }

  override _write(data: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.take(data).then(() => cb(), cb)
  }

  private async take(data: Buffer): Promise<void> {
    let off = 0
    while (off < data.length) {
      if (this.used === CHUNK) await this.flush(false)
      const n = Math.min(CHUNK - this.used, data.length - off)
      data.copy(this.buf, this.used, off, off + n)
      this.used += n
      off += n
    }
  }

  private async flush(last: boolean): Promise<void> {
    const sealed = sealChunk(this.key, this.index, last, this.buf.subarray(0, this.used))
    const at = this.payloadStart + this.index * SEALED_CHUNK
    this.index++
    this.used = 0
    let done = 0
    while (done < sealed.length) {
      done += await new Promise<number>((resolve, reject) =>
        fsWrite(this.fd, sealed, done, sealed.length - done, at + done, (e, n) => (e ? reject(e) : resolve(n))),
      )
    }
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.flush(true).then(() => cb(), cb)
  }
}
