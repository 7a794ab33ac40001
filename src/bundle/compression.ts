// Bundle compression: zstd (default, every core), gzip, or none; recognised on read from the first bytes.
// zstd runs as the `zstd` program: measured here, Node's built-in zstd stream was 4x slower to compress and failed
// with ERR_STREAM_PUSH_AFTER_EOF when given worker threads; decoding a 2 GiB bundle in snap (zstd-frames.ts) took
// 1.7 s, but with 30-100 MiB more of peak memory than the program reading the file. Without the program, snap falls
// back to Node's zstd, one frame at a time.

import { spawn, type ChildProcess } from 'node:child_process'
import { accessSync, constants, readFileSync } from 'node:fs'
import { Duplex, PassThrough, type Readable, type Transform, type Writable } from 'node:stream'
import zlib from 'node:zlib'
import { ZstdFramesDecompressor } from './zstd-frames.js'
import { configValue } from '../environment.js'

export type Compression = 'zstd' | 'gzip' | 'none'
export const COMPRESSIONS: Compression[] = ['zstd', 'gzip', 'none']

export const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd])
export const GZIP_MAGIC = Buffer.from([0x1f, 0x8b])

export function detectCompression(head: Buffer): Compression | 'unknown' {
  if (head.subarray(0, 4).equals(ZSTD_MAGIC)) return 'zstd'
  if (head.subarray(0, 2).equals(GZIP_MAGIC)) return 'gzip'
  // A POSIX tar header has "ustar" at offset 257.
  if (head.length >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar') return 'none'
  return 'unknown'
}

const ZSTD_CANDIDATES = ['/usr/bin/zstd', '/usr/local/bin/zstd', '/bin/zstd']
let zstdProgram: string | null | undefined

/** The zstd program, or null: then snap compresses and decompresses in Node (PROCSNAP_ZSTD=none asks for that). */
export function findZstdProgram(): string | null {
  if (zstdProgram !== undefined) return zstdProgram
  zstdProgram = null
  if (configValue('ZSTD') === 'none') return zstdProgram
  for (const p of ZSTD_CANDIDATES) {
    try {
      accessSync(p, constants.X_OK)
      zstdProgram = p
      break
    } catch {
      // next
    }
  }
  return zstdProgram
}

/**
 * A stream through an external filter program. Its readable side ends only after the program exited 0, and fails
 * with the program's own message otherwise, so a corrupt or truncated input is an error, never a silent short read.
 */
function programFilter(file: string, args: string[]): Duplex {
  const { child, out } = programOutput(file, args, 'pipe')
  child.stdin!.on('error', () => undefined) // the consumer may stop early (inspect reads only the head)
  const duplex = Duplex.from({ writable: child.stdin!, readable: out })
  duplex.on('close', () => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  return duplex
}

/** The program's output, ending once it exited 0 and failing with its own words otherwise. */
function programOutput(file: string, args: string[], stdin: 'pipe' | number): { child: ChildProcess; out: PassThrough } {
  const child = spawn(file, args, { stdio: [stdin, 'pipe', 'pipe'] })
  const out = new PassThrough({ highWaterMark: 1 << 20 })
  let stderr = ''
  child.stderr!.on('data', (c: Buffer) => {
    stderr += c.toString()
  })
  child.stdout!.pipe(out, { end: false })
  child.on('error', (e) => out.destroy(e))
  child.on('close', (code, signal) => {
    if (code === 0) out.end()
    else if (!out.destroyed) out.destroy(new Error(stderr.trim().split('\n').at(-1) || `${file} exited with ${code ?? signal}`))
  })
  return { child, out }
}

/**
 * The zstd program decoding the file open at `fd` as its own input, from the file's offset: the compressed bytes
 * never pass through snap. Read through snap into the program's stdin, a 2 GiB bundle cost a core's second of pipe
 * copies here. The program shares the open file, so the file's offset says how far it has read (readOffset).
 * Undefined without the program.
 */
export function zstdReadingFile(fd: number): Readable | undefined {
  const program = findZstdProgram()
  if (!program) return undefined
  const { child, out } = programOutput(program, ['-d', '-q', '-c'], fd)
  out.on('close', () => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  return out
}

/** How far into the open file `fd` its readers have come (its offset, from /proc/self/fdinfo); 0 when not known. */
export function readOffset(fd: number): number {
  try {
    return Number(/^pos:\s*(\d+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1'))?.[1] ?? 0)
  } catch {
    return 0
  }
}

/**
 * zstd writing straight into an open file at the file's current offset (or into a FIFO: encrypt.ts): the compressed
 * bytes never pass through snap. Returns its stdin and a promise that settles when it has exited (rejecting with its
 * own words on failure; ENOSPC on a full disk).
 */
export function zstdIntoFile(fd: number, o: CompressOptions = {}): { input: Writable; done: Promise<void>; kill: () => void } | undefined {
  const program = findZstdProgram()
  if (!program) return undefined
  const child = spawn(program, zstdProgramArgs(o), { stdio: ['pipe', fd, 'pipe'] })
  let stderr = ''
  child.stderr!.on('data', (c: Buffer) => {
    stderr += c.toString()
  })
  const done = new Promise<void>((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code, signal) => {
      if (code === 0) resolve()
      else {
        const err = new Error(stderr.trim().split('\n').at(-1) || `${program} exited with ${code ?? signal}`) as NodeJS.ErrnoException
        if (/No space left/i.test(stderr)) err.code = 'ENOSPC'
        reject(err)
      }
    })
  })
  done.catch(() => undefined)
  return { input: child.stdin!, done, kill: () => child.kill('SIGKILL') }
}

/**
 * zstd's long-distance matching, for a bundle whose entries repeat each other far apart: the images and cores of a
 * master's forked workers hold the same pages, a process's worth of bytes apart, beyond level 3's window. With a
 * 32 MiB window, a 101-process python pool's 640 MiB of entries compressed to 6.8 MB instead of 232 MB, in a fifth of
 * the CPU time (0.66 s against 3.4 s) and less memory (49 MB against 61; 37 MB to decode). Where nothing repeats that
 * far it costs about a fifth more time, so a bundle of one process goes without. 2^27 is the most a zstd decoder
 * accepts without being told, the program's and Node's alike.
 */
export const LONG_WINDOW_LOG = 25

export interface CompressOptions {
  /** Long-distance matching over a window of 2^this bytes (LONG_WINDOW_LOG), or none. */
  longWindowLog?: number
}

/** The zstd program's arguments for a bundle's body: level 3 on every core, to stdout. */
export function zstdProgramArgs(o: CompressOptions = {}): string[] {
  return ['-3', '-T0', ...(o.longWindowLog ? [`--long=${o.longWindowLog}`] : []), '-q', '-c']
}

/** An in-process compressor: gzip, or zstd when the zstd program is missing (with it, see zstdIntoFile). */
export function compressor(c: Compression, o: CompressOptions = {}): Transform | undefined {
  if (c === 'zstd') {
    const long = o.longWindowLog ? { [zlib.constants.ZSTD_c_enableLongDistanceMatching]: 1, [zlib.constants.ZSTD_c_windowLog]: o.longWindowLog } : {}
    return zlib.createZstdCompress({ params: { [zlib.constants.ZSTD_c_compressionLevel]: 3, [zlib.constants.ZSTD_c_checksumFlag]: 1, ...long } })
  }
  if (c === 'gzip') return zlib.createGzip({ level: 6 })
  return undefined
}

export function decompressor(c: Compression): Transform | Duplex | undefined {
  if (c === 'zstd') {
    const program = findZstdProgram()
    if (program) return programFilter(program, ['-d', '-q', '-c'])
    return new ZstdFramesDecompressor()
  }
  if (c === 'gzip') return zlib.createGunzip()
  return undefined
}

/** A whole small buffer compressed as one independent frame (zstd) or member (gzip). */
export function compressSmall(c: Compression, data: Buffer): Buffer {
  if (c === 'zstd') return zlib.zstdCompressSync(data, { params: { [zlib.constants.ZSTD_c_checksumFlag]: 1 } })
  if (c === 'gzip') return zlib.gzipSync(data)
  return data
}

/**
 * Bytes that a decoder skips, of exactly `length` bytes: a zstd skippable frame, or an empty gzip member whose
 * header comment is the padding. Used to fill the space reserved for the manifest at the head of a bundle.
 */
export function filler(c: Compression, length: number): Buffer {
  if (c === 'zstd') {
    if (length < 8) throw new Error(`zstd filler needs at least 8 bytes, got ${length}`)
    const b = Buffer.alloc(length)
    b.writeUInt32LE(0x184d2a50, 0)
    b.writeUInt32LE(length - 8, 4)
    return b
  }
  if (c === 'gzip') {
    // header (10) + comment (n spaces + NUL) + empty final fixed-Huffman block (2) + CRC32 (4) + ISIZE (4)
    const n = length - 21
    if (n < 0) throw new Error(`gzip filler needs at least 21 bytes, got ${length}`)
    const b = Buffer.alloc(length)
    Buffer.from([0x1f, 0x8b, 0x08, 0x10, 0, 0, 0, 0, 0x00, 0xff]).copy(b, 0)
    b.fill(0x20, 10, 10 + n)
    b[10 + n] = 0
    b[11 + n] = 0x03
    b[12 + n] = 0x00
    return b // CRC32 and ISIZE of empty data are zero
  }
  throw new Error('an uncompressed bundle pads its manifest instead')
}

export const EXTENSION: Record<Compression, string> = { zstd: '.tar.zst', gzip: '.tar.gz', none: '.tar' }
