// Worker threads that seal age STREAM chunks, so that the cipher of a large bundle (2.3 s per GiB on one core) runs
// beside the main thread's tar, reading and writing instead of between them. A batch of consecutive chunks goes to a
// worker and comes back sealed; its memory moves both ways without a copy.

import { availableParallelism } from 'node:os'
import { createSecretKey } from 'node:crypto'
import { Worker } from 'node:worker_threads'
import { CHUNK, sealChunk, SEALED_CHUNK, TAG } from './age.js'

/**
 * What every sealing thread runs (this pool's and sealing-thread.ts's), as script text: a worker's code is run by eval,
 * since a file beside this one would have to be found from dist/, from the sources under test and from the single
 * executable alike. sealBatch is sealChunk of age.ts over a batch: `length` bytes of `input` sealed as chunks `first`,
 * `first + 1`, ... into `out` (the last flagged when `last`), returning the sealed bytes; collectYoung frees the
 * chunks' Buffers every few batches.
 */
export const SEAL_BATCH_SOURCE = `
const { createCipheriv, createSecretKey } = require('node:crypto')
const CHUNK = ${CHUNK}, TAG = ${TAG}, SEALED = ${SEALED_CHUNK}
// A key object made once: given the key's bytes, each chunk's cipher made one of its own (0.7-0.9 s a GiB sealed
// against 0.56 s here).
const sealKey = createSecretKey(Buffer.from(workerData.key))
const sealNonce = Buffer.alloc(12)
function sealBatch(first, input, length, last, out) {
  const count = Math.max(1, Math.ceil(length / CHUNK))
  for (let i = 0; i < count; i++) {
    sealNonce.fill(0)
    sealNonce.writeUIntBE(first + i, 5, 6)
    sealNonce[11] = last && i === count - 1 ? 1 : 0
    const c = createCipheriv('chacha20-poly1305', sealKey, sealNonce, { authTagLength: TAG })
    const at = i * SEALED
    const n = c.update(input.subarray(i * CHUNK, Math.min(length, (i + 1) * CHUNK))).copy(out, at)
    c.final()
    c.getAuthTag().copy(out, at + n)
  }
  return length + count * TAG
}
// Each chunk's update() makes a fresh Buffer, which V8 frees only after tens of MiB of them: a young collection
// every few batches frees them while they are young (as reclaim.ts does on the main thread).
let collect = null
try {
  require('node:v8').setFlagsFromString('--expose-gc')
  collect = require('node:vm').runInNewContext('gc')
} catch {}
let sealedBatches = 0
function collectYoung() {
  if (collect && ++sealedBatches % 4 === 0) collect({ type: 'minor' })
}
`

/** The pool's worker: a batch in a message, sealed by SEAL_BATCH_SOURCE, its memory moved back and forth. */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
${SEAL_BATCH_SOURCE}
parentPort.on('message', ({ id, first, length, last, plain, out }) => {
  try {
    const sealedLength = sealBatch(first, Buffer.from(plain, 0, length), length, last, Buffer.from(out))
    collectYoung()
    parentPort.postMessage({ id, length: sealedLength, sealed: out, plain }, [out, plain])
  } catch (e) {
    parentPort.postMessage({ id, error: String(e && e.message || e) })
  }
})
`

/** Worker threads worth starting here: one core stays with the main thread (and the compressor shares them all). */
export function sealThreads(): number {
  return Math.max(0, availableParallelism() - 1)
}

export interface SealPool {
  /** A Buffer of `batchBytes` to fill with the next batch's plaintext: one the threads gave back, or a new one. */
  batchBuffer(): Buffer
  /**
   * Seals `plain` (whole chunks, but for the last when `last`) as chunks `first`, `first + 1`, ...; the last of them
   * flagged last when `last`. `plain` is handed over: it must not be used after.
   */
  seal(first: number, plain: Buffer, last: boolean): Promise<Buffer>
  /** Gives back a sealed batch once it is written, for the threads to seal into again. */
  release(sealed: Buffer): void
  close(): Promise<void>
}

/**
 * Seals on `threads` workers, or on the calling thread when there are none to have. The batches' memory goes round
 * between the threads and the writer (the plaintext back to be filled again, the sealed batch back once written), so
 * that a GiB sealed makes no garbage of its size: with fresh Buffers each way snap peaked at 322 MiB instead of 146.
 */
export function sealPool(key: Buffer, threads: number, batchBytes: number): SealPool {
  if (threads <= 0) return inlinePool(key, batchBytes)
  const sealedBytes = Math.ceil(batchBytes / CHUNK) * SEALED_CHUNK
  const workers = Array.from({ length: threads }, () => {
    const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { key: Uint8Array.from(key) } })
    // A writer that fails half way must not be kept alive by its pool.
    w.unref()
    return w
  })
  const ours = new WeakSet<ArrayBufferLike>()
  const freePlain: ArrayBuffer[] = []
  const freeSealed: ArrayBuffer[] = []
  const KEEP = 32
  const fresh = (bytes: number): ArrayBuffer => {
    const b = Buffer.allocUnsafeSlow(bytes).buffer as ArrayBuffer
    ours.add(b)
    return b
  }
  const waiting = new Map<number, { resolve: (b: Buffer) => void; reject: (e: Error) => void }>()
  let failed: Error | undefined
  const fail = (e: Error) => {
    failed ??= e
    for (const p of waiting.values()) p.reject(e)
    waiting.clear()
  }
  for (const w of workers) {
    w.on('message', (m: { id: number; length?: number; sealed?: ArrayBuffer; plain?: ArrayBuffer; error?: string }) => {
      const p = waiting.get(m.id)
      if (!p) return
      waiting.delete(m.id)
      if (m.plain && m.plain.byteLength === batchBytes && freePlain.length < KEEP) {
        ours.add(m.plain)
        freePlain.push(m.plain)
      }
      if (m.sealed) {
        ours.add(m.sealed)
        p.resolve(Buffer.from(m.sealed, 0, m.length))
      } else p.reject(new Error(`sealing a chunk failed: ${m.error}`))
    })
    w.on('error', fail)
    w.on('exit', (code) => {
      if (waiting.size > 0) fail(new Error(`a sealing thread exited (${code}) with chunks to seal`))
    })
  }
  let next = 0
  let closed = false
  return {
    batchBuffer: () => Buffer.from(freePlain.pop() ?? fresh(batchBytes)),
    seal(first, plain, last) {
      if (failed) return Promise.reject(failed)
      if (closed) return Promise.reject(new Error('the sealing threads are closed'))
      const id = next++
      // Memory the pool made moves to the worker as it is; any other (a slice of something else, Node's pool of
      // small Buffers) is copied first.
      let ab = plain.buffer
      if (plain.byteOffset !== 0 || !ours.has(ab)) {
        ab = plain.length <= batchBytes ? (freePlain.pop() ?? fresh(batchBytes)) : fresh(plain.length)
        plain.copy(Buffer.from(ab))
      }
      const count = Math.max(1, Math.ceil(plain.length / CHUNK))
      const out = count * SEALED_CHUNK <= sealedBytes ? (freeSealed.pop() ?? fresh(sealedBytes)) : fresh(count * SEALED_CHUNK)
      return new Promise<Buffer>((resolve, reject) => {
        waiting.set(id, { resolve, reject })
        workers[id % workers.length]!.postMessage({ id, first, length: plain.length, last, plain: ab, out }, [ab as ArrayBuffer, out])
      })
    },
    release(sealed) {
      if (sealed.buffer.byteLength === sealedBytes && ours.has(sealed.buffer) && freeSealed.length < KEEP) freeSealed.push(sealed.buffer as ArrayBuffer)
    },
    async close() {
      closed = true
      await Promise.all(workers.map((w) => w.terminate()))
    },
  }
}

function inlinePool(keyBytes: Buffer, batchBytes: number): SealPool {
  const key = createSecretKey(keyBytes)
  return {
    batchBuffer: () => Buffer.allocUnsafeSlow(batchBytes),
    async seal(first, plain, last) {
      const count = Math.max(1, Math.ceil(plain.length / CHUNK))
      const sealed: Buffer[] = []
      for (let i = 0; i < count; i++) sealed.push(sealChunk(key, first + i, last && i === count - 1, plain.subarray(i * CHUNK, (i + 1) * CHUNK)))
      return Buffer.concat(sealed)
    },
    release() {},
    async close() {},
  }
}
