// Seals a work directory into one bundle file, reading each artifact exactly once: the artifacts are hashed while
// they stream into the compressor, written after a space reserved at the head of the file; the manifest, which
// holds those hashes and must be the tar's first entry, is then written into that space. The rest of the space is
// filled with bytes decoders skip (a zstd skippable frame, an empty gzip member) or, uncompressed, with spaces that
// end the manifest's JSON. The file has a private temporary name until complete, then is linked into place, so a
// bundle under its final name is always whole, and an existing file is never overwritten.

import { createHash, randomBytes } from 'node:crypto'
import { closeSync, constants, createWriteStream, fdatasync, fstatSync, fsyncSync, linkSync, openSync, unlinkSync, writeSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { open } from 'node:fs/promises'
import type { Writable } from 'node:stream'
import { finished, pipeline } from 'node:stream/promises'
import { Header, Pax } from 'tar'
import { OutputPathError } from '../errors.js'
import { partialPrefix } from './output-path.js'
import { compressSmall, compressor, filler, LONG_WINDOW_LOG, zstdIntoFile, type Compression } from './compression.js'
import { MANIFEST_ENTRY, SIGNATURE_ENTRY, type ArtifactRecord, type Manifest } from './manifest.js'
import type { BundleEncryption } from '../ship/encrypt.js'

const BLOCK = 512

export interface SealInput {
  workDir: string
  /** Paths relative to workDir, in bundle order, with their kinds. */
  artifacts: Pick<ArtifactRecord, 'path' | 'kind'>[]
  /**
   * Artifacts still being made when the seal starts (the cores' recipes and the stacks, made while the images
   * stream into the bundle): written after `artifacts`, once this resolves. A rejection abandons the bundle.
   */
  later?: Promise<Pick<ArtifactRecord, 'path' | 'kind'>[]>
  /** How many records `later` may bring at most, for the room set aside for the manifest. */
  laterCount?: number
  /** Gives up: the writer stops at its next chunk, removes its file, and never links it under `output`. */
  signal?: AbortSignal
  /** Builds the manifest once the artifacts' hashes are known. */
  manifest: (artifacts: ArtifactRecord[]) => Manifest
  /** Signs the exact manifest bytes, when the bundle is to be signed. */
  sign?: (manifestBytes: Buffer) => Buffer
  output: string
  compression: Compression
  /** Entries that repeat each other far apart (the processes of a tree): zstd looks for matches that far back. */
  longMatches?: boolean
  /** Told the temporary path as soon as it exists, so an interrupted run can remove it. */
  onPartial?: (path: string | undefined) => void
  /** Told the running count of artifact bytes read into the bundle, after each chunk (for progress). */
  onBytes?: (done: number) => void
  /** Encrypts the whole file, head included, as it is written: no plaintext byte of the bundle reaches the disk. */
  encryption?: BundleEncryption
}

function partialPathFor(output: string): string {
  return join(dirname(output), `${partialPrefix(output, process.pid)}${randomBytes(4).toString('hex')}`)
}

/**
 * The header of one entry. A core of a JVM passes 8 GiB, past what the header's octal size field holds: then a pax
 * extended header carries the size (POSIX, read by every tar and by snap's reader), and the plain header holds it in
 * base-256 as GNU tar writes it, for readers that skip pax records.
 */
export function tarHeader(path: string, size: number, mtime: Date): Buffer {
  if (Buffer.byteLength(path) > 100) throw new Error(`artifact name too long for a tar header: ${path}`)
  const block = Buffer.alloc(BLOCK)
  const needPax = new Header({ path, mode: 0o600, uid: 0, gid: 0, size, mtime, type: 'File' }).encode(block, 0)
  if (!needPax) return block
  return Buffer.concat([new Pax({ path, size, mtime }).encode(), block])
}

const padding = (n: number) => Buffer.alloc((BLOCK - (n % BLOCK)) % BLOCK)

// Artifacts are read into a small ring of buffers, each reused once the sink has taken what it held, so memory stays
// flat whatever the artifacts' size. With a fresh 1 MiB buffer per read, V8 collected them late and snap's peak grew
// with the target: 127 MiB for a 64 MiB target, 156 MiB for a 2 GiB one, measured here.
const CHUNK = 1 << 20
const RING = 4

/**
 * Writes the artifacts into `sink` as tar entries, hashing each chunk on its way through, then the end-of-archive
 * blocks, and ends the sink. Resolves once the sink has taken every byte; rejects with the sink's error.
 */
async function writeEntries(
  sink: Writable,
  workDir: string,
  artifacts: SealInput['artifacts'],
  later: SealInput['later'],
  out: ArtifactRecord[],
  signal?: AbortSignal,
  onBytes?: (done: number) => void,
): Promise<void> {
  const ring = Array.from({ length: RING }, () => Buffer.allocUnsafe(CHUNK))
  const taken: (Promise<void> | undefined)[] = new Array<Promise<void> | undefined>(RING)
  const swallow = () => undefined
  sink.on('error', swallow) // each write's callback carries the error; this only keeps it from being unhandled
  const write = (data: Buffer): Promise<void> => {
    const p = new Promise<void>((resolve, reject) => {
      // A file stream opened with autoClose: false is not destroyed by its error (ENOSPC): a write given to it after
      // that is buffered forever and its callback never runs: the seal would wait on it forever.
      if (sink.errored) reject(sink.errored)
      else sink.write(data, (e) => (e ? reject(e) : resolve()))
    })
    p.catch(swallow) // awaited later, when its buffer comes round again or at the end
    return p
  }
  const pending: Promise<void>[] = []
  let slot = 0
  let done = 0
  const writeArtifact = async (a: SealInput['artifacts'][number]) => {
    const file = await open(join(workDir, a.path), 'r')
    try {
      const st = await file.stat()
      pending.push(write(tarHeader(a.path, st.size, st.mtime)))
      const hash = createHash('sha256')
      let size = 0
      for (;;) {
        const i = slot++ % RING
        await taken[i]
        signal?.throwIfAborted()
        const { bytesRead } = await file.read(ring[i]!, 0, CHUNK, null)
        if (bytesRead === 0) break
        const chunk = ring[i]!.subarray(0, bytesRead)
        hash.update(chunk)
        size += bytesRead
        taken[i] = write(chunk)
        onBytes?.((done += bytesRead))
      }
      if (size !== st.size) throw new Error(`${a.path} changed size while it was sealed`)
      out.push({ path: a.path, kind: a.kind, size, sha256: hash.digest('hex') })
      pending.push(write(padding(size)))
    } finally {
      await file.close()
    }
  }
  try {
    for (const a of artifacts) await writeArtifact(a)
    if (later) for (const a of await later) await writeArtifact(a)
    pending.push(write(Buffer.alloc(2 * BLOCK)))
    await Promise.all([...pending, ...taken])
    sink.end()
    await finished(sink)
  } catch (e) {
    sink.destroy()
    throw e
  } finally {
    sink.off('error', swallow)
  }
}

/**
 * Bytes to reserve for the head: the manifest with 64-character hashes in place, generous slack for the fields that
 * change while sealing, and the signature entry.
 */
function reserveFor(input: SealInput): number {
  const longest = { path: 'x'.repeat(100), kind: 'core-recipe' } as const // a tar header's longest name
  const named = [...input.artifacts, ...Array.from({ length: input.laterCount ?? 0 }, () => longest)]
  const draft = input.manifest(named.map((a) => ({ ...a, size: Number.MAX_SAFE_INTEGER, sha256: '0'.repeat(64) })))
  const bytes = Buffer.byteLength(JSON.stringify(draft, null, 2)) + 64 * 1024 + 4 * BLOCK
  return input.encryption ? input.encryption.roundReserve(bytes) : Math.ceil(bytes / BLOCK) * BLOCK
}

function entry(path: string, data: Buffer, mtime: Date): Buffer {
  return Buffer.concat([tarHeader(path, data.length, mtime), data, padding(data.length)])
}

/** The head: manifest.json (and manifest.sig) as tar entries, exactly `reserve` bytes once compressed and filled. */
function buildHead(input: SealInput, manifest: Manifest, reserve: number): Buffer {
  const now = new Date()
  const json = JSON.stringify(manifest, null, 2)
  const sigSpace = input.sign ? 2 * BLOCK : 0 // header + 64-byte Ed25519 signature padded to a block
  if (input.compression === 'none') {
    // Uncompressed, the manifest's own JSON absorbs the reserve: trailing whitespace is valid JSON.
    const dataSize = reserve - BLOCK - sigSpace
    if (Buffer.byteLength(json) + 1 > dataSize) throw new Error('manifest larger than the space reserved for it')
    const manifestBytes = Buffer.alloc(dataSize, 0x20)
    manifestBytes.write(json, 0)
    manifestBytes[dataSize - 1] = 0x0a
    const parts = [entry(MANIFEST_ENTRY, manifestBytes, now)]
    if (input.sign) parts.push(entry(SIGNATURE_ENTRY, input.sign(manifestBytes), now))
    return Buffer.concat(parts)
  }
  const manifestBytes = Buffer.from(json + '\n')
  const parts = [entry(MANIFEST_ENTRY, manifestBytes, now)]
  if (input.sign) parts.push(entry(SIGNATURE_ENTRY, input.sign(manifestBytes), now))
  const compressed = compressSmall(input.compression, Buffer.concat(parts))
  const minFiller = input.compression === 'zstd' ? 8 : 21
  if (compressed.length + minFiller > reserve) throw new Error('manifest larger than the space reserved for it')
  return Buffer.concat([compressed, filler(input.compression, reserve - compressed.length)])
}

/**
 * Flushes the bundle to disk while it is still being written, one fdatasync at a time on a worker thread, so the
 * fsync that makes it durable at the end has little left to do. Measured here on a 1 GiB bundle: that final fsync
 * alone took 0.6-1 s when every page was still dirty, about the time it takes to compress the whole of it.
 */
class BackgroundFlush {
  private inFlight: Promise<void> | undefined
  private readonly timer: NodeJS.Timeout

  constructor(private readonly fd: number, intervalMs = 200) {
    this.timer = setInterval(() => {
      if (this.inFlight) return
      this.inFlight = new Promise<void>((resolve) => fdatasync(this.fd, () => resolve())).finally(() => {
        this.inFlight = undefined
      })
    }, intervalMs)
    this.timer.unref()
  }

  /** Stops flushing and waits for a flush still under way (its errors are the final fsync's to report). */
  async stop(): Promise<void> {
    clearInterval(this.timer)
    await this.inFlight
  }
}

export interface SealResult {
  path: string
  size: number
  manifest: Manifest
}

export async function writeBundle(input: SealInput): Promise<SealResult> {
  input.later?.catch(() => undefined) // awaited after the first artifacts; a rejection must not go unhandled meanwhile
  const reserve = reserveFor(input)
  const partial = partialPathFor(input.output)
  // O_EXCL|O_NOFOLLOW with 0600: nobody else can open it in between, and a planted symlink is not followed.
  const fd = openSync(partial, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
  input.onPartial?.(partial)
  let manifest: Manifest
  let size: number
  try {
    const records: ArtifactRecord[] = []
    let head: (bytes: Buffer) => void = (bytes) => writeSync(fd, bytes, 0, bytes.length, 0)
    const flushing = new BackgroundFlush(fd)
    try {
      const options = input.longMatches ? { longWindowLog: LONG_WINDOW_LOG } : {}
      const sealed = input.encryption?.open(fd, reserve, input.compression, options)
      const direct = !sealed && input.compression === 'zstd' ? zstdIntoFile(fd, options) : undefined
      if (sealed) {
        await bothEnded(writeEntries(sealed.input, input.workDir, input.artifacts, input.later, records, input.signal, input.onBytes), sealed.done)
        head = sealed.writeHead
      } else if (direct) {
        // zstd appends at the file offset: move it past the reserved head first (positional writes do not move it).
        writeSync(fd, Buffer.alloc(reserve))
        await bothEnded(writeEntries(direct.input, input.workDir, input.artifacts, input.later, records, input.signal, input.onBytes), direct.done)
      } else {
        const out = createWriteStream('', { fd, start: reserve, autoClose: false })
        const z = compressor(input.compression, options)
        if (z) await bothEnded(writeEntries(z, input.workDir, input.artifacts, input.later, records, input.signal, input.onBytes), pipeline(z, out))
        else await writeEntries(out, input.workDir, input.artifacts, input.later, records, input.signal, input.onBytes)
      }
    } finally {
      await flushing.stop()
    }
    input.signal?.throwIfAborted()
    manifest = input.manifest(records)
    head(buildHead(input, manifest, reserve))
    size = fstatSync(fd).size
    fsyncSync(fd)
    closeSync(fd)
  } catch (e) {
    try {
      closeSync(fd)
    } catch {
      // already closed
    }
    removeQuietly(partial)
    input.onPartial?.(undefined)
    // A full disk (ENOSPC, EDQUOT) is the caller's to name with the rest of its writes (asOutputError).
    throw e
  }
  try {
    input.signal?.throwIfAborted()
    linkSync(partial, input.output) // fails if the final name exists: never clobber
  } catch (e) {
    removeQuietly(partial)
    input.onPartial?.(undefined)
    const err = e as NodeJS.ErrnoException
    if (err.code === 'EEXIST') throw new OutputPathError(`${input.output} already exists`, 'choose another --output; snap never overwrites')
    throw e
  }
  removeQuietly(partial)
  input.onPartial?.(undefined)
  return { path: input.output, size, manifest }
}

/** What a stream's writer gets when what it writes into has gone: the zstd program's stdin, a destroyed stream. */
const BROKEN_SINK = new Set(['EPIPE', 'ERR_STREAM_DESTROYED', 'ERR_STREAM_PREMATURE_CLOSE'])

/**
 * The entries written into a compressor and the compressed stream's way to the file, both to their end. When the
 * second fails (zstd or the sealing thread on a full disk), the entries' writer meets a broken pipe: the failure
 * named is the one that broke it (ENOSPC), not the broken pipe.
 */
async function bothEnded(entries: Promise<void>, rest: Promise<unknown>): Promise<void> {
  const [written, ended] = await Promise.allSettled([entries, rest])
  if (written.status === 'rejected' && !(ended.status === 'rejected' && BROKEN_SINK.has((written.reason as NodeJS.ErrnoException)?.code ?? ''))) throw written.reason
  if (ended.status === 'rejected') throw ended.reason
}

export function removeQuietly(path: string): void {
  try {
    unlinkSync(path)
  } catch {
    // gone already
  }
}
