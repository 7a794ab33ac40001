// The sha256 of each artifact as a bundle is read. Hashing is most of a read's work (1.2 s a GiB on one core here),
// and for a restore the reader's thread also writes every entry out: there, a large entry's bytes go to a hashing
// thread, 512 KiB at a time, so that hashing and writing run side by side (a 2 GiB restore's extraction took 3.1 to
// 3.6 s instead of 3.6 to 4.3 s). A pass that only reads keeps its hashing: the thread (about 20 MiB) did not make
// `snap verify` faster. Small entries (the JSON ones, most of a tree's images) are always hashed where they are read:
// a message costs more than hashing them.

import { createHash } from 'node:crypto'
import { writeSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import type { Worker } from 'node:worker_threads'
import { scriptWorker } from './hash.js'

/** An entry this large or larger is hashed on the thread. */
export const OFF_THREAD_MIN_BYTES = 16 << 20
const BATCH = 512 << 10
/** Bytes handed to the thread and not yet hashed, beyond which the reader waits (its memory bound). */
const MAX_BACKLOG = 4 << 20

export interface EntryHash {
  update(chunk: Buffer): void
  /** The hex digest of everything given; the entry is finished. */
  digest(): Promise<string>
}

/**
 * Writes what it is given to `fd`, when there is one, never more than `maxBytes` (what the room was checked for), and
 * keeps the first failure (no write is tried after it).
 */
class FileSink {
  failed: Error | undefined
  private written = 0
  constructor(
    private readonly fd: number | undefined,
    private readonly maxBytes: number,
  ) {}
  write(c: Uint8Array): void {
    if (this.fd === undefined || this.failed) return
    if ((this.written += c.length) > this.maxBytes) {
      this.failed = new Error(`more than the ${this.maxBytes} bytes declared; stopped writing it`)
      return
    }
    try {
      for (let off = 0; off < c.length; ) off += writeSync(this.fd, c, off, c.length - off)
    } catch (e) {
      this.failed = e as Error
    }
  }
}

/** Hashes where it is called. */
function inlineHash(size: number, fd: number | undefined): EntryHash {
  const h = createHash('sha256')
  const sink = new FileSink(fd, size)
  return {
    update: (c) => {
      h.update(c)
      sink.write(c)
    },
    digest: () => (sink.failed ? Promise.reject(sink.failed) : Promise.resolve(h.digest('hex'))),
  }
}

/**
 * The thread's code, run as a script (eval), as the other hashing workers are. Entries come one after another: 'data'
 * batches of the current one, then 'end', answered with its digest; each batch's memory goes back for the next.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
let hash = createHash('sha256')
parentPort.on('message', (m) => {
  if (m.op === 'data') {
    hash.update(new Uint8Array(m.buf, 0, m.length))
    parentPort.postMessage({ op: 'free', buf: m.buf }, [m.buf])
  } else if (m.op === 'end') {
    parentPort.postMessage({ op: 'digest', id: m.id, sha256: hash.digest('hex') })
    hash = createHash('sha256')
  }
})
`

/**
 * Hashes for one pass over a bundle: entries of OFF_THREAD_MIN_BYTES and more on one thread of their own (started
 * when the first such entry comes, ended by close()), the others inline. With a single CPU there is no thread.
 */
export class EntryHasher {
  private worker: Worker | undefined
  private failed: Error | undefined
  private batch: ArrayBuffer | undefined
  private used = 0
  private backlog = 0
  private readonly free: ArrayBuffer[] = []
  private readonly digests = new Map<number, { resolve: (s: string) => void; reject: (e: Error) => void }>()
  private nextId = 0
  private waiting: (() => void)[] = []
  private readonly threaded: boolean

  /** `threaded`: whether large entries go to a thread at all (never with a single CPU). */
  constructor(threaded: boolean) {
    this.threaded = threaded && availableParallelism() > 1
  }

  /**
   * A hash for an entry of `size` bytes (as its header declares), which also writes what it is given to `fd` when
   * one is given (an extraction). The writing stays on the calling thread, as the chunks come: written on the hashing
   * thread a MiB at a time, a 2 GiB restore's extraction took 4.5 s instead of 3.2 s here, that thread doing both.
   * One threaded entry at a time: the tar's order. A write that fails fails the digest, as does a byte past `size`.
   */
  forEntry(size: number, fd?: number): EntryHash {
    if (!this.threaded || size < OFF_THREAD_MIN_BYTES) return inlineHash(size, fd)
    const worker = this.start()
    const sink = new FileSink(fd, size)
    return {
      update: (c) => {
        sink.write(c)
        this.put(worker, c)
      },
      digest: () => {
        this.flush(worker)
        if (sink.failed) return Promise.reject(sink.failed)
        if (this.failed) return Promise.reject(this.failed)
        const id = this.nextId++
        return new Promise<string>((resolve, reject) => {
          this.digests.set(id, { resolve, reject })
          worker.postMessage({ op: 'end', id })
        })
      },
    }
  }

  /** Settles once the thread's backlog is within its bound (at once when it is): the reader awaits it between reads. */
  roomForMore(): Promise<void> | undefined {
    if (this.backlog <= MAX_BACKLOG || this.failed) return undefined
    return new Promise((resolve) => this.waiting.push(resolve))
  }

  async close(): Promise<void> {
    const w = this.worker
    this.worker = undefined
    this.fail(new Error('the pass over the bundle ended'))
    if (w) await w.terminate()
  }

  private start(): Worker {
    if (this.worker) return this.worker
    const w = scriptWorker(WORKER_SOURCE)
    w.on('message', (m: { op: 'free'; buf: ArrayBuffer } | { op: 'digest'; id: number; sha256: string }) => {
      if (m.op === 'free') {
        this.backlog -= m.buf.byteLength
        if (this.free.length < MAX_BACKLOG / BATCH) this.free.push(m.buf)
        if (this.backlog <= MAX_BACKLOG) this.wake()
      } else {
        this.digests.get(m.id)?.resolve(m.sha256)
        this.digests.delete(m.id)
      }
    })
    w.on('error', (e) => this.fail(e))
    w.on('exit', (code) => this.fail(new Error(`the hashing thread exited (${code})`)))
    this.worker = w
    return w
  }

  private fail(e: Error): void {
    this.failed ??= e
    for (const d of this.digests.values()) d.reject(this.failed)
    this.digests.clear()
    this.wake()
  }

  private wake(): void {
    const w = this.waiting
    this.waiting = []
    for (const resolve of w) resolve()
  }

  /** Copies into the current batch, sending each as it fills: the chunks are the reader's, still in use after. */
  private put(worker: Worker, c: Buffer): void {
    let off = 0
    while (off < c.length) {
      this.batch ??= this.free.pop() ?? new ArrayBuffer(BATCH)
      const n = Math.min(BATCH - this.used, c.length - off)
      c.copy(new Uint8Array(this.batch), this.used, off, off + n)
      this.used += n
      off += n
      if (this.used === BATCH) this.flush(worker)
    }
  }

  private flush(worker: Worker): void {
    if (!this.batch || this.used === 0) return
    const buf = this.batch
    this.backlog += buf.byteLength
    worker.postMessage({ op: 'data', buf, length: this.used }, [buf])
    this.batch = undefined
    this.used = 0
  }
}
