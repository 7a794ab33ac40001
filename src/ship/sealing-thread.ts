// One thread that takes a producer's output from a FIFO, seals it as age STREAM chunks and writes them into the
// bundle, so that the compressed bytes never pass through snap's main thread. Fed through a pipe into the main
// thread, cut into batches and handed to sealing threads and back, a 1 GiB encrypted dump took 1.47x the plain one
// here: on a 2-core host the main thread's share of that traffic (a callback per 64 KiB read, a copy, two messages
// and a write per batch) competed with criu, the core builder and zstd for the same cores.

import { spawnSync } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, constants, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'
import { SEAL_BATCH_SOURCE } from './seal-pool.js'

/** Chunks read, sealed and written at a time: 1 MiB of plaintext. */
const BATCH_CHUNKS = 16

/**
 * The thread's code, run as a script (eval), sealing as seal-pool.ts's threads do (SEAL_BATCH_SOURCE). It reads the FIFO to its end; a batch is sealed
 * once the next read shows whether more follows, since only the last chunk of the file carries the last flag (a full
 * one when the payload ends on a chunk's end, as the age format wants it: never an empty last chunk after others).
 * It writes through a file description of its own (/proc/self/fd), so that the caller closing its descriptor, or
 * the number being reused, never redirects a late write.
 */
const THREAD_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads')
const { closeSync, openSync, readSync, writeSync } = require('node:fs')
${SEAL_BATCH_SOURCE}
const { fifo, file, payloadStart, first } = workerData
const BATCH = ${BATCH_CHUNKS} * CHUNK
const retry = (f) => {
  for (;;) {
    try {
      return f()
    } catch (e) {
      if (e.code !== 'EINTR' && e.code !== 'EAGAIN') throw e
    }
  }
}
let input, output
try {
  output = openSync('/proc/self/fd/' + file, 'r+')
  input = openSync(fifo, 'r')
  parentPort.postMessage({ opened: true })
  const fill = (b) => {
    let n = 0
    while (n < b.length) {
      const r = retry(() => readSync(input, b, n, b.length - n, null))
      if (r === 0) break
      n += r
    }
    return n
  }
  let cur = Buffer.allocUnsafeSlow(BATCH), next = Buffer.allocUnsafeSlow(BATCH)
  const sealed = Buffer.allocUnsafeSlow(${BATCH_CHUNKS} * SEALED)
  let index = first, at = payloadStart + first * SEALED, plain = 0
  let have = fill(cur)
  for (;;) {
    const more = have === BATCH ? fill(next) : 0
    const last = more === 0
    const length = sealBatch(index, cur, have, last, sealed)
    for (let off = 0; off < length; ) off += retry(() => writeSync(output, sealed, off, length - off, at + off))
    at += length
    index += Math.max(1, Math.ceil(have / CHUNK))
    plain += have
    collectYoung()
    if (last) break
    const t = cur
    cur = next
    next = t
    have = more
  }
  parentPort.postMessage({ done: true, plain })
} catch (e) {
  parentPort.postMessage({ error: String((e && e.message) || e), code: e && e.code })
} finally {
  if (input !== undefined) closeSync(input)
  if (output !== undefined) closeSync(output)
}
`

export interface FifoSealer {
  /** The FIFO's write end for the producer (a child's stdout). Open read-write, so that opening it never waits for
   *  the thread; closed by handOver() once the thread has its own read end. */
  writeFd: number
  /** Tells the sealer the producer has the write end (it is started): snap's own is closed as soon as the thread has
   *  opened the FIFO, so that the producer's exit is the thread's end of input. */
  handOver(): void
  /** Settles when the thread has sealed and written everything the producer wrote, up to its end: the plaintext
   *  bytes sealed. Rejects with the thread's error (a full disk keeps its code, ENOSPC). */
  done: Promise<number>
}

/**
 * Starts the sealing thread over a new FIFO: chunk `first` on is written into the file `fd` is open on, chunk i at
 * `payloadStart + i * SEALED_CHUNK`. The FIFO is made in a private directory and unlinked once both ends are open.
 */
export function startFifoSealer(o: { fd: number; key: Buffer; payloadStart: number; first: number }): FifoSealer {
  const dir = mkdtempSync(join(tmpdir(), 'procsnap-seal-'))
  const fifo = join(dir, 'stream')
  const made = spawnSync('mkfifo', ['-m', '600', fifo], { encoding: 'utf8' })
  if (made.status !== 0) {
    rmSync(dir, { recursive: true, force: true })
    throw new Error(`cannot make a FIFO for the sealing thread: ${made.stderr?.trim() || made.error?.message || `mkfifo exited with ${made.status}`}`)
  }
  const writeFd = openSync(fifo, constants.O_RDWR)
  let ownEnd: number | undefined = writeFd
  let opened = false
  let handedOver = false
  const closeOwnEnd = () => {
    if (ownEnd === undefined) return
    closeSync(ownEnd)
    ownEnd = undefined
  }
  const removeFifo = () => rmSync(dir, { recursive: true, force: true })
  const worker = new Worker(THREAD_SOURCE, { eval: true, workerData: { fifo, file: o.fd, key: Uint8Array.from(o.key), payloadStart: o.payloadStart, first: o.first } })
  // A producer that never ends must not keep snap alive through its sealer.
  worker.unref()
  const done = new Promise<number>((resolve, reject) => {
    let settled = false
    const fail = (e: Error) => {
      if (settled) return
      settled = true
      // The producer holds the FIFO read-write too, so it never gets SIGPIPE: the caller stops it on this rejection.
      closeOwnEnd()
      removeFifo()
      reject(e)
    }
    worker.on('message', (m: { opened?: boolean; done?: boolean; plain?: number; error?: string; code?: string }) => {
      if (m.opened) {
        opened = true
        removeFifo()
        if (handedOver) closeOwnEnd()
      } else if (m.done) {
        settled = true
        resolve(m.plain ?? 0)
      } else if (m.error !== undefined) {
        const err = new Error(m.error) as NodeJS.ErrnoException
        if (m.code) err.code = m.code
        fail(err)
      }
    })
    worker.on('error', fail)
    worker.on('exit', (code) => fail(new Error(`the sealing thread exited (${code}) before the end of its input`)))
  })
  done.catch(() => undefined)
  return {
    writeFd,
    handOver() {
      handedOver = true
      if (opened) closeOwnEnd()
    },
    done,
  }
}
