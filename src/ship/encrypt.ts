// A bundle sealed for age recipients while it is written: the tar stream is compressed, cut into 64 KiB chunks and
// each chunk encrypted before it reaches the file, so no plaintext byte of it is ever on disk. The head (manifest and
// signature), which the writer fills in last, takes whole chunks at the start of the payload: it is encrypted then,
// with its own chunk numbers, and written in place. The zstd program's output goes through a FIFO to one thread that
// seals and writes it (sealing-thread.ts); a stream compressed in snap (gzip, none, zstd without its program) is cut
// into batches here for the sealing threads (seal-pool.ts).

import { writeSync, writev } from 'node:fs'
import { PassThrough, Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { compressor, findZstdProgram, zstdIntoFile, type Compression, type CompressOptions } from '../bundle/compression.js'
import { CHUNK, newAgePrefix, SEALED_CHUNK, sealChunk } from './age.js'
import { sealPool, sealThreads, type SealPool } from './seal-pool.js'
import { startFifoSealer } from './sealing-thread.js'
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
  open(fd: number, reserve: number, compression: Compression, options?: CompressOptions): EncryptedBody
}

/** A fresh file key for these recipients (each an age1... X25519 public key), ready for one bundle. */
export async function bundleEncryption(recipients: string[]): Promise<BundleEncryption> {
  const { prefix, key } = await newAgePrefix(recipients)
  return {
    recipients,
    roundReserve: (bytes) => Math.ceil(bytes / CHUNK) * CHUNK,
    open(fd, reserve, compression, options = {}) {
      if (reserve % CHUNK !== 0) throw new Error('the head must take whole chunks')
      writeSync(fd, prefix, 0, prefix.length, 0)
      const { input, done } =
        compression === 'zstd' && findZstdProgram()
          ? zstdIntoSealer(fd, key, prefix.length, reserve / CHUNK, options)
          : compressInto(new ChunkWriter(fd, key, prefix.length, reserve / CHUNK), compression, options)
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

/**
 * The zstd program writing into a FIFO that the sealing thread reads (sealing-thread.ts): the compressed bytes go from
 * the program to the thread, which seals and writes them, without passing through snap's main thread.
 */
function zstdIntoSealer(fd: number, key: Buffer, payloadStart: number, first: number, options: CompressOptions): { input: Writable; done: Promise<void> } {
  const sealer = startFifoSealer({ fd, key, payloadStart, first })
  let z: ReturnType<typeof zstdIntoFile>
  try {
    z = zstdIntoFile(sealer.writeFd, options)
  } finally {
    sealer.handOver()
  }
  if (!z) throw new Error('the zstd program is gone')
  const zstd = z
  // The thread's failure first (a full disk): zstd, stopped for it, would only say it was killed.
  const done = Promise.allSettled([zstd.done, sealer.done.catch((e: unknown) => (zstd.kill(), Promise.reject(e)))]).then(([program, sealed]) => {
    if (sealed.status === 'rejected') throw sealed.reason
    if (program.status === 'rejected') throw program.reason
  })
  return { input: zstd.input, done }
}

/** The tar stream compressed into the chunk writer, in snap (gzip, none, or zstd without its program). */
function compressInto(chunks: ChunkWriter, compression: Compression, options: CompressOptions): { input: Writable; done: Promise<void> } {
  const z = compressor(compression, options)
  if (z) return { input: z, done: pipeline(z, chunks) }
  const through = new PassThrough({ highWaterMark: 1 << 20 })
  return { input: through, done: pipeline(through, chunks) }
}

/**
 * Cuts what it is given into chunks, numbered from `first`, and writes them sealed at their place in the file, in
 * order. Chunks go to the sealing threads a batch at a time (BATCH_CHUNKS of them), several batches under way at once
 * and at most IN_FLIGHT_PER_THREAD per thread, so that memory stays bounded and a slow disk holds the writer back.
 * A full batch is held until more comes, because only the last chunk of the file carries the last flag. The sealed
 * chunks' memory is reclaimed as it goes. With one awaited write per 64 KiB chunk, a 1 GiB bundle's seal took 7.7 s
 * here and snap peaked at 222 MiB; batched, 4.4 s and 180 MiB, of which the cipher alone was 2.3 s on the main thread.
 * On threads, the cipher overlaps the rest of the dump only where a core is idle: on a 2-core host that the dump
 * keeps busy (criu, the core writer, zstd -T0), a 1 GiB dump took 6.0 s encrypted against 3.7 s plain, peak 183 MiB;
 * with the zstd program, the sealing thread now takes the compressed stream without the main thread.
 */
const BATCH_CHUNKS = 16
const IN_FLIGHT_PER_THREAD = 3

class ChunkWriter extends Writable {
  private buf: Buffer
  private used = 0
  private index: number
  private written = 0
  private readonly reclaim = reclaimEvery(4 << 20)
  private readonly pool: SealPool
  private readonly inFlight: { at: number; sealed: Promise<Buffer> }[] = []
  private readonly maxInFlight: number

  constructor(
    private readonly fd: number,
    key: Buffer,
    private readonly payloadStart: number,
    first: number,
  ) {
    super({ highWaterMark: 4 << 20 })
    this.index = first
    const threads = sealThreads()
    this.pool = sealPool(key, threads, BATCH_CHUNKS * CHUNK)
    this.buf = this.pool.batchBuffer()
    this.maxInFlight = Math.max(1, threads) * IN_FLIGHT_PER_THREAD
  }

  override _write(data: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.put([data]).then(() => cb(), cb)
  }

  override _writev(chunks: { chunk: Buffer }[], cb: (e?: Error | null) => void): void {
    this.put(chunks.map((c) => c.chunk)).then(() => cb(), cb)
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.dispatch(true)
    this.drain(0)
      .then(() => this.pool.close())
      .then(() => cb(), cb)
  }

  override _destroy(e: Error | null, cb: (e?: Error | null) => void): void {
    // Sealed batches still under way are dropped with the threads; the bundle is being abandoned.
    for (const f of this.inFlight) f.sealed.catch(() => undefined)
    this.pool.close().then(() => cb(e), () => cb(e))
  }

  private async put(data: Buffer[]): Promise<void> {
    for (const d of data) {
      let off = 0
      while (off < d.length) {
        if (this.used === this.buf.length) {
          this.dispatch(false)
          await this.drain(this.maxInFlight - 1)
        }
        const n = Math.min(this.buf.length - this.used, d.length - off)
        d.copy(this.buf, this.used, off, off + n)
        this.used += n
        off += n
      }
    }
  }

  /** Hands the batch so far to the sealing threads (with the last flag on its last chunk when `end`). */
  private dispatch(end: boolean): void {
    if (this.used === 0 && !end) return
    const count = Math.max(1, Math.ceil(this.used / CHUNK))
    const at = this.payloadStart + this.index * SEALED_CHUNK
    const plain = this.used === this.buf.length ? this.buf : this.buf.subarray(0, this.used)
    const sealed = this.pool.seal(this.index, plain, end)
    // Awaited in order by drain(); one that fails before its turn must not count as unhandled meanwhile.
    sealed.catch(() => undefined)
    this.inFlight.push({ at, sealed })
    this.index += count
    this.used = 0
    // The batch's memory went to a thread with it.
    this.buf = this.pool.batchBuffer()
  }

  /** Writes sealed batches, oldest first, until no more than `keep` are under way. */
  private async drain(keep: number): Promise<void> {
    while (this.inFlight.length > keep) {
      const { at, sealed } = this.inFlight[0]!
      const b = await sealed
      this.inFlight.shift()
      await writeAll(this.fd, [b], at)
      this.written += b.length
      this.pool.release(b)
      this.reclaim(this.written)
    }
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
