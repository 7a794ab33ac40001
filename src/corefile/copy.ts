// Copies byte ranges from source files (pages-N.img, mapped files) into the core at given positions, in constant
// memory whatever the size. In the kernel when it can: a small python3 helper (KernelCopier) calls
// copy_file_range(2) (falling back to sendfile(2) across filesystems), because Node has no binding for either, and
// copying through user space cost 3-6 times more here (2 GiB: 3.5-7 s through Node's read/write, 1.1 s through
// copy_file_range). Without python3, Node reads and writes through two small buffers.

import { existsSync } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { spawn, type ChildProcess } from 'node:child_process'
import { CoreBuildError } from './errors.js'

export interface CopyJob {
  /** Where the bytes go in the core. */
  target: number
  file: string
  offset: number
  bytes: number
}

export interface CopyOutcome {
  bytes: number
  /** 'kernel' when copy_file_range/sendfile did it, else 'node'; and why the kernel path was not used. */
  method: 'kernel' | 'node'
  fallbackReason?: string
}

export const PYTHON = ['/usr/bin/python3', '/bin/python3'].find((path) => existsSync(path)) ?? 'python3'

/**
 * Copies the jobs of one core after another with copy_file_range (sendfile where that is refused): it reads a core's
 * header line ({"out": path, "jobs": n}), then its n jobs, copies them into that file and answers its total. Started
 * once for a tree, whose hundred cores of a few MiB each are each below KERNEL_COPY_MIN_BYTES (through Node's buffers
 * they took 0.7 s of snap's main thread for a python pool of 101 processes here), and once for one large core; the
 * images it reads stay open from one core to the next.
 */
const KERNEL_COPY_SERVER_SCRIPT = `
import errno, json, os, sys
sources = {}
kernel_copy = hasattr(os, "copy_file_range")
for head in sys.stdin:
    core = json.loads(head)
    out = os.open(core["out"], os.O_WRONLY)
    total = 0
    try:
        for _ in range(core["jobs"]):
            job = json.loads(sys.stdin.readline())
            src = sources.get(job["file"])
            if src is None:
                src = sources[job["file"]] = os.open(job["file"], os.O_RDONLY)
            offset, target, left = job["offset"], job["target"], job["bytes"]
            while left > 0:
                count = min(left, 1 << 30)
                if kernel_copy:
                    try:
                        n = os.copy_file_range(src, out, count, offset, target)
                    except OSError as e:
                        if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                            raise
                        kernel_copy = False
                        continue
                else:
                    os.lseek(out, target, os.SEEK_SET)
                    n = os.sendfile(out, src, offset, count)
                if n <= 0:
                    sys.exit("%s ended at %d, before the %d bytes expected there" % (job["file"], offset, left))
                offset += n
                target += n
                left -= n
                total += n
    finally:
        os.close(out)
    sys.stdout.write("%d\\n" % total)
    sys.stdout.flush()
`

/** One python3 copying for many cores, a core at a time (KERNEL_COPY_SERVER_SCRIPT); undefined without python3. */
export class KernelCopier {
  private queue: Promise<unknown> = Promise.resolve()
  private answers: string[] = []
  private waiting: ((line: string | undefined) => void) | undefined
  private buffered = ''
  private ended = false
  private stderr = ''

  private constructor(private readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8')
    child.stdout!.on('data', (d: string) => {
      this.buffered += d
      for (let nl = this.buffered.indexOf('\n'); nl >= 0; nl = this.buffered.indexOf('\n')) {
        this.answers.push(this.buffered.slice(0, nl))
        this.buffered = this.buffered.slice(nl + 1)
      }
      this.wake()
    })
    child.stderr!.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-2000)))
    child.on('close', () => {
      this.ended = true
      this.wake()
    })
    child.on('error', () => {
      this.ended = true
      this.wake()
    })
    child.stdin!.on('error', () => undefined) // a helper gone is told by its missing answer
  }

  static start(): KernelCopier | undefined {
    if (!existsSync(PYTHON)) return undefined
    // Its stdin is snap's: if snap dies, the helper reads its end and exits.
    return new KernelCopier(spawn(PYTHON, ['-c', KERNEL_COPY_SERVER_SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'] }))
  }

  private wake(): void {
    const w = this.waiting
    if (!w) return
    if (this.answers.length > 0) {
      this.waiting = undefined
      w(this.answers.shift())
    } else if (this.ended) {
      this.waiting = undefined
      w(undefined)
    }
  }

  private nextAnswer(): Promise<string | undefined> {
    return new Promise((resolve) => {
      this.waiting = resolve
      this.wake()
    })
  }

  /** Copies `jobs` into the file at `outPath` (it exists); resolves with the bytes copied, rejects with the helper's
   *  own words when it failed. Cores are copied one after another, in the order asked. */
  copy(outPath: string, jobs: CopyJob[]): Promise<number> {
    const run = this.queue.then(async () => {
      if (this.ended) throw new Error(this.stderr.trim().split('\n').at(-1) || 'the copying helper has ended')
      this.child.stdin!.write([JSON.stringify({ out: outPath, jobs: jobs.length }), ...jobs.map((j) => JSON.stringify(j))].join('\n') + '\n')
      const line = await this.nextAnswer()
      if (line === undefined) throw new Error(this.stderr.trim().split('\n').at(-1) || 'the copying helper ended')
      return Number(line)
    })
    this.queue = run.catch(() => undefined)
    return run
  }

  close(): void {
    this.child.stdin!.end()
    if (!this.ended) this.child.kill('SIGKILL')
  }
}

/** Below this, Node's own copy: python3's start (30-40 ms here) is more than copying 32 MiB through Node's buffers. */
export const KERNEL_COPY_MIN_BYTES = 32 << 20

/** Runs the jobs (sorted by target and by offset: sequential I/O on both sides) into `outPath`, open as `out`. */
export async function copyRanges(outPath: string, out: FileHandle, jobs: Iterable<CopyJob>, kernelFrom = KERNEL_COPY_MIN_BYTES, shared?: KernelCopier): Promise<CopyOutcome> {
  const list = [...jobs]
  const expected = list.reduce((sum, job) => sum + job.bytes, 0)
  if (expected === 0) return { bytes: 0, method: 'node' }
  // Starting python3 costs more than Node copies this much; a helper already started (a tree's) copies any size.
  if (!shared && expected < kernelFrom) return { bytes: await copyThroughBuffers(out, list), method: 'node' }
  const copier = shared ?? KernelCopier.start()
  if (!copier) return { bytes: await copyThroughBuffers(out, list), method: 'node', fallbackReason: `${PYTHON} not found` }
  let fallbackReason: string
  try {
    const copied = await copier.copy(outPath, list)
    if (copied === expected) return { bytes: copied, method: 'kernel' }
    fallbackReason = `the kernel copy reported ${copied} bytes, not ${expected}`
  } catch (error) {
    const detail = (error as Error).message
    // A source that ends early is the images' fault, not the copy method's: say so instead of trying again.
    if (/ended at \d+, before/.test(detail)) throw new CoreBuildError(detail, { cause: error })
    fallbackReason = detail
  } finally {
    if (!shared) copier.close()
  }
  return { bytes: await copyThroughBuffers(out, list), method: 'node', fallbackReason }
}

/** 256 KiB: small enough that both buffers stay in the CPU cache between the read and the write (8 MiB and even
 *  1 MiB were 1.5-3 times slower here). */
const CHUNK_BYTES = 256 << 10

/** Reads exactly `length` bytes at `position`; a file that ends first is an error naming it. */
export async function readFully(handle: FileHandle, buffer: Buffer, length: number, position: number, file: string): Promise<void> {
  let done = 0
  while (done < length) {
    const { bytesRead } = await handle.read(buffer, done, length - done, position + done)
    if (bytesRead === 0) throw new CoreBuildError(`${file} ended at ${position + done}, before the ${length} bytes expected at ${position}`)
    done += bytesRead
  }
}

async function writeFully(handle: FileHandle, buffer: Buffer, length: number, position: number): Promise<void> {
  let done = 0
  while (done < length) {
    const { bytesWritten } = await handle.write(buffer, done, length - done, position + done)
    done += bytesWritten
  }
}

/** Node's own copy: the next chunk is read while the last one is written. */
export async function copyThroughBuffers(out: FileHandle, jobs: Iterable<CopyJob>): Promise<number> {
  const buffers = [Buffer.allocUnsafe(CHUNK_BYTES), Buffer.allocUnsafe(CHUNK_BYTES)] as const
  const sources = new Map<string, FileHandle>()
  let pendingWrite: Promise<void> = Promise.resolve()
  let chunk = 0
  let copied = 0
  try {
    for (const job of jobs) {
      let source = sources.get(job.file)
      if (!source) {
        source = await open(job.file, 'r')
        sources.set(job.file, source)
      }
      for (let done = 0; done < job.bytes; done += CHUNK_BYTES) {
        const length = Math.min(CHUNK_BYTES, job.bytes - done)
        const buffer = buffers[chunk++ % 2]!
        // This buffer's previous write finished before the write still pending was started.
        await readFully(source, buffer, length, job.offset + done, job.file)
        await pendingWrite
        pendingWrite = writeFully(out, buffer, length, job.target + done)
        pendingWrite.catch(() => {}) // awaited on the next chunk or below; never an unhandled rejection
        copied += length
      }
    }
    await pendingWrite
  } finally {
    await pendingWrite.catch(() => {})
    await Promise.all([...sources.values()].map((handle) => handle.close()))
  }
  return copied
}
