// Streaming sha256 of a file: one read, constant memory, whatever the file's size. A large file (a core) is hashed
// on a worker thread, so that the bundle being written meanwhile, hashed on the main thread, is not held up by it.

import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
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

const HASH_WORKER = `
const { parentPort, workerData } = require('node:worker_threads')
const { createHash } = require('node:crypto')
const { closeSync, openSync, readSync } = require('node:fs')
const fd = openSync(workerData, 'r')
try {
  const hash = createHash('sha256')
  const buf = Buffer.allocUnsafe(1 << 20)
  let size = 0
  for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; size += n) hash.update(buf.subarray(0, n))
  parentPort.postMessage({ sha256: hash.digest('hex'), size })
} finally {
  closeSync(fd)
}
`

/** sha256File on a thread of its own: for files of hundreds of MiB and more (a worker costs a few ms to start). */
export function sha256FileOffThread(path: string): Promise<{ sha256: string; size: number }> {
  return new Promise((resolve, reject) => {
    // The script is CommonJS: a parent started with --input-type=module would make an eval'd worker a module.
    const execArgv = process.execArgv.filter((a) => !a.startsWith('--input-type'))
    const worker = new Worker(HASH_WORKER, { eval: true, workerData: path, execArgv })
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
