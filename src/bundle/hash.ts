// Streaming sha256 of a file: one read, constant memory, whatever the file's size. A large file (a core) is hashed
// on a worker thread, so that the bundle being written meanwhile, hashed on the main thread, is not held up by it.

import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { availableParallelism } from 'node:os'
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
 *  16 MiB of data; reading its holes back took 10 s here. The worker takes one file per message and stays for the
 *  next (see the pool below). */
const SPARSE_HASH_WORKER = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
const { closeSync, openSync, readSync } = require('node:fs')
const buf = Buffer.allocUnsafe(1 << 20)
const zeros = Buffer.alloc(1 << 20)
parentPort.on('message', ({ path, size, ranges }) => {
  let fd
  try {
    fd = openSync(path, 'r')
    const hash = createHash('sha256')
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
  } catch (e) {
    parentPort.postMessage({ error: String(e && e.message || e) })
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
})
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
  return runWorker({ path, size, ranges: own }, [own.buffer as ArrayBuffer])
}

/**
 * Hashing workers kept for the next file. Starting one costs tens of milliseconds here, more than hashing a small core
 * takes: a tree of a hundred processes paid it a hundred times. Idle workers are unref'd (they never keep snap
 * alive), and at most one per CPU is kept.
 */
const idleWorkers: Worker[] = []
const MAX_IDLE_WORKERS = Math.max(1, availableParallelism())

/** A worker running `source`, a CommonJS script: a parent started with --input-type=module would make an eval'd
 *  worker a module, so that flag is not passed on. */
export function scriptWorker(source: string): Worker {
  const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'))
  return new Worker(source, { eval: true, execArgv })
}

function takeWorker(): Worker {
  const kept = idleWorkers.pop()
  if (kept) {
    kept.ref()
    return kept
  }
  const worker = scriptWorker(SPARSE_HASH_WORKER)
  // One that fails or ends while idle is no longer kept (and its error is not an unhandled one).
  const forget = () => {
    const at = idleWorkers.indexOf(worker)
    if (at >= 0) idleWorkers.splice(at, 1)
  }
  worker.on('error', forget)
  worker.on('exit', forget)
  return worker
}

function giveBack(worker: Worker): void {
  if (idleWorkers.length >= MAX_IDLE_WORKERS) {
    void worker.terminate()
    return
  }
  worker.unref()
  idleWorkers.push(worker)
}

function runWorker(workerData: { path: string; size: number; ranges: Float64Array }, transferList: ArrayBuffer[] = []): Promise<{ sha256: string; size: number }> {
  return new Promise((resolve, reject) => {
    const worker = takeWorker()
    const done = () => {
      worker.off('message', onMessage)
      worker.off('error', onError)
      worker.off('exit', onExit)
    }
    const onMessage = (m: { sha256: string; size: number } | { error: string }) => {
      done()
      giveBack(worker)
      if ('error' in m) reject(new Error(`hashing ${workerData.path}: ${m.error}`))
      else resolve(m)
    }
    // A worker that failed or exited is not given back.
    const onError = (e: Error) => {
      done()
      void worker.terminate()
      reject(e)
    }
    const onExit = (code: number) => {
      done()
      reject(new Error(`hashing ${workerData.path} stopped (worker exit ${code})`))
    }
    worker.on('message', onMessage)
    worker.once('error', onError)
    worker.once('exit', onExit)
    worker.postMessage(workerData, transferList)
  })
}
