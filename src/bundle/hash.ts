// Streaming sha256 of a file: one read, constant memory, whatever the file's size. A large file (a core) is hashed
// on a worker thread, so that the bundle being written meanwhile, hashed on the main thread, is not held up by it.

import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { Worker } from 'node:worker_threads'

export async function sha256File(path: string): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256')
  let size = 0
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer)
    size += (chunk as Buffer).length
  }
  return { sha256: hash.digest('hex'), size }
}

/** sha256File on a thread of its own: for files of hundreds of MiB and more (a worker costs a few ms to start). */
export async function sha256FileOffThread(path: string): Promise<{ sha256: string; size: number }> {
  const { size } = await stat(path)
  return sha256SparseFileOffThread(path, size, [{ at: 0, bytes: size }])
}

/** The same, for a sparse file whose data is known to lie only in `data` (sorted [at, at + bytes) ranges): the rest is
 *  hashed as the zeros it reads as, without reading it. A core of 600 threads is 5 GB of thread-stack holes around
 *  16 MiB of data; reading its holes back took 10 s here. */
const SPARSE_HASH_WORKER = `
const { parentPort, workerData } = require('node:worker_threads')
const { createHash } = require('node:crypto')
const { closeSync, openSync, readSync } = require('node:fs')
const { path, size, ranges } = workerData
const fd = openSync(path, 'r')
try {
  const hash = createHash('sha256')
  const buf = Buffer.allocUnsafe(1 << 20)
  const zeros = Buffer.alloc(1 << 20)
  const hashZeros = (n) => { for (; n > 0; n -= zeros.length) hash.update(n >= zeros.length ? zeros : zeros.subarray(0, n)) }
  let at = 0
  for (let i = 0; i < ranges.length; i += 2) {
    const from = ranges[i], bytes = ranges[i + 1]
    hashZeros(from - at)
    for (let done = 0; done < bytes; ) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, bytes - done), from + done)
      if (n === 0) throw new Error(path + ' ended at ' + (from + done) + ', inside its data')
      hash.update(buf.subarray(0, n))
      done += n
    }
    at = from + bytes
  }
  hashZeros(size - at)
  parentPort.postMessage({ sha256: hash.digest('hex'), size })
} finally {
  closeSync(fd)
}
`

export function sha256SparseFileOffThread(path: string, size: number, data: { at: number; bytes: number }[]): Promise<{ sha256: string; size: number }> {
  // Sorted, merged, clipped to the file: overlapping copy jobs must not hash a byte twice.
  const merged: number[] = []
  for (const r of [...data].filter((r) => r.bytes > 0).sort((a, b) => a.at - b.at)) {
    const n = merged.length
    const end = Math.min(r.at + r.bytes, size)
    if (n > 0 && r.at <= merged[n - 2]! + merged[n - 1]!) merged[n - 1] = Math.max(merged[n - 1]!, end - merged[n - 2]!)
    else if (r.at < size) merged.push(r.at, end - r.at)
  }
  return sha256SparseRangesOffThread(path, size, Float64Array.from(merged))
}

/** The same, with the data ranges already sorted, apart and inside the file, as (at, bytes) pairs: a million ranges
 *  take 16 MiB here, and are handed to the worker without a copy. */
export function sha256SparseRangesOffThread(path: string, size: number, ranges: Float64Array): Promise<{ sha256: string; size: number }> {
  const own = ranges.byteOffset === 0 && ranges.byteLength === ranges.buffer.byteLength ? ranges : ranges.slice()
  return runWorker(SPARSE_HASH_WORKER, { path, size, ranges: own }, path, [own.buffer as ArrayBuffer])
}

function runWorker(script: string, workerData: unknown, path: string, transferList: ArrayBuffer[] = []): Promise<{ sha256: string; size: number }> {
  return new Promise((resolve, reject) => {
    // The script is CommonJS: a parent started with --input-type=module would make an eval'd worker a module.
    const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'))
    const worker = new Worker(script, { eval: true, workerData, execArgv, transferList })
    let answered = false
    worker.once('message', (m: { sha256: string; size: number }) => {
      answered = true
      resolve(m)
    })
    worker.once('error', reject)
    worker.once('exit', (code) => {
      if (!answered) reject(new Error(`hashing ${path} stopped (worker exit ${code})`))
    })
  })
}
