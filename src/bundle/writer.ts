// Seals a work directory into one bundle file: manifest.json first, then the signature if any, then the artifacts.
// Written under a private temporary name and linked into place only when complete, so a bundle under its final
// name is always whole, and an existing file is never overwritten.

import { constants, fsyncSync, linkSync, openSync, closeSync, unlinkSync, writeFileSync, createWriteStream } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { pipeline } from 'node:stream/promises'
import type { Transform } from 'node:stream'
import zlib from 'node:zlib'
import { create as createTar } from 'tar'
import { OutputPathError } from '../errors.js'
import { compressor, type Compression } from './compression.js'
import { MANIFEST_ENTRY, SIGNATURE_ENTRY, type Manifest } from './manifest.js'

export interface WriteBundleOptions {
  workDir: string
  manifest: Manifest
  output: string
  compression: Compression
  signature?: Buffer
  /** Told the temporary path as soon as it exists, so an interrupted run can remove it. */
  onPartial?: (path: string | undefined) => void
}

export function partialPathFor(output: string): string {
  return join(dirname(output), `.${basename(output)}.partial-${process.pid}-${randomBytes(4).toString('hex')}`)
}

export async function writeBundle(o: WriteBundleOptions): Promise<{ path: string; size: number }> {
  const manifestBytes = Buffer.from(JSON.stringify(o.manifest, null, 2) + '\n')
  writeFileSync(join(o.workDir, MANIFEST_ENTRY), manifestBytes, { mode: 0o600, flag: 'wx' })
  const entries = [MANIFEST_ENTRY]
  if (o.signature) {
    writeFileSync(join(o.workDir, SIGNATURE_ENTRY), o.signature, { mode: 0o600, flag: 'wx' })
    entries.push(SIGNATURE_ENTRY)
  }
  entries.push(...o.manifest.artifacts.map((a) => a.path))

  const partial = partialPathFor(o.output)
  // O_EXCL|O_NOFOLLOW with 0600: nobody else can open it in between, and a planted symlink is not followed.
  const fd = openSync(partial, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600)
  o.onPartial?.(partial)
  let size = 0
  try {
    const out = createWriteStream('', { fd, autoClose: false })
    const pack = createTar({ cwd: o.workDir, portable: true, noDirRecurse: true }, entries) as unknown as NodeJS.ReadableStream
    const z = bundleCompressor(o.compression)
    if (z) await pipeline(pack, z, out)
    else await pipeline(pack, out)
    size = out.bytesWritten
    fsyncSync(fd)
    closeSync(fd)
  } catch (e) {
    try {
      closeSync(fd)
    } catch {
      // already closed
    }
    removeQuietly(partial)
    o.onPartial?.(undefined)
    const err = e as NodeJS.ErrnoException
    if (err.code === 'ENOSPC' || err.code === 'EDQUOT')
      throw new OutputPathError(`no space left while writing the bundle in ${dirname(o.output)}`, 'free space or give --output on another filesystem')
    throw e
  }
  try {
    linkSync(partial, o.output) // fails if the final name exists: never clobber
  } catch (e) {
    removeQuietly(partial)
    o.onPartial?.(undefined)
    const err = e as NodeJS.ErrnoException
    if (err.code === 'EEXIST') throw new OutputPathError(`${o.output} already exists`, 'choose another --output; snap never overwrites')
    throw e
  }
  removeQuietly(partial)
  o.onPartial?.(undefined)
  return { path: o.output, size }
}

/**
 * compressor('zstd') asks for ZSTD_c_nbWorkers > 0, and Node's zstd stream in multi-threaded mode pushes output
 * after its end (ERR_STREAM_PUSH_AFTER_EOF, nodejs/node#59899): every zstd bundle of a few MiB failed to seal.
 * Single-threaded zstd at the same level and with the same checksum avoids it.
 */
function bundleCompressor(c: Compression): Transform | undefined {
  if (c !== 'zstd') return compressor(c)
  return zlib.createZstdCompress({
    params: { [zlib.constants.ZSTD_c_compressionLevel]: 3, [zlib.constants.ZSTD_c_checksumFlag]: 1 },
  })
}

export function removeQuietly(path: string): void {
  try {
    unlinkSync(path)
  } catch {
    // gone already
  }
}
