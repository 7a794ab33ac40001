// A CRIU image file: the common magic (or the service one), the image's own magic, then entries of a u32 length and
// a protobuf message (criu/include/magic.h, criu/image.c). The magics carry magic.h's names.

import { BoundedReadError, readBoundedRegularFile } from '../bundle/bounded-read.js'
import { CoreBuildError } from '../corefile/errors.js'
import { ImageFormatError } from './errors.js'

export const IMG_COMMON_MAGIC = 0x54564319
export const IMG_SERVICE_MAGIC = 0x55105940
export const PSTREE_MAGIC = 0x50273030
export const CORE_MAGIC = 0x55053847
export const MM_MAGIC = 0x57492820
export const FILES_MAGIC = 0x56303138
/** pagemap-PID.img and pagemap-shmem-ID.img alike. */
export const PAGEMAP_MAGIC = 0x56084025
export const MEMFD_INODE_MAGIC = 0x48453499
export const REMAP_FPATH_MAGIC = 0x59133954
export const GHOST_FILE_MAGIC = 0x52583605

/** Where an image's entries begin: after its magic, checked. */
function firstEntry(buf: Buffer, magic: number, name: string): number {
  let at = 0
  if (buf.length >= 4 && (buf.readUInt32LE(0) === IMG_COMMON_MAGIC || buf.readUInt32LE(0) === IMG_SERVICE_MAGIC)) at = 4
  if (buf.length < at + 4 || buf.readUInt32LE(at) !== magic) throw new ImageFormatError(`${name} does not start with its magic`)
  return at + 4
}

/** The entries of an image: its magic, then u32 length + message, repeated. */
export function imageEntries(buf: Buffer, magic: number, name: string): Buffer[] {
  const out: Buffer[] = []
  forEachEntry(buf, magic, name, (from, to) => void out.push(buf.subarray(from, to)))
  return out
}

/** Each entry of an image (after its magic), as the bounds of its message: nothing held an entry. */
export function forEachEntry(image: Buffer, magic: number, name: string, fn: (from: number, to: number) => void): void {
  let at = firstEntry(image, magic, name)
  while (at < image.length) {
    if (at + 4 > image.length) throw new ImageFormatError(`${name}: truncated entry size`)
    const end = at + 4 + image.readUInt32LE(at)
    if (end > image.length) throw new ImageFormatError(`${name}: truncated entry`)
    fn(at + 4, end)
    at = end
  }
}

/** Runs a parser; a malformed image's error names it. */
export function parsing<T>(name: string, parse: () => T): T {
  try {
    return parse()
  } catch (error) {
    if (error instanceof ImageFormatError && !error.message.startsWith(name)) throw new ImageFormatError(`${name} is not an image criu wrote: ${error.message}`)
    throw error
  }
}

/** mm, pagemap, files and memfd images of a real process are KiB to a few MiB (a pagemap entry is ~16 bytes per run
 *  of pages): more is not an image snap will hold in memory. */
export const MAX_IMAGE_BYTES = 64 << 20

/** An image's bytes for a core, bounded; undefined when it does not exist (files.img and memfd.img are optional). */
export function readImageFile(file: string, required = true): Buffer | undefined {
  try {
    return readBoundedRegularFile(file, MAX_IMAGE_BYTES)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      if (required) throw new CoreBuildError(`${file} is missing (is this directory a criu dump of that process?)`)
      return undefined
    }
    if (error instanceof BoundedReadError) throw new CoreBuildError(error.message, { cause: error })
    throw error
  }
}
