// Files the process had open or mapped after they were deleted: criu carries their content in its own images (a
// "ghost": remap-fpath.img names it for the file's id, ghost-file-ID.img holds it), because nothing on the host
// does any more. The core takes a deleted file's mapped pages from there. Only headers are read; the content stays
// where it is and is copied straight into the core.
//
// ghost-file-ID.img (criu/files-reg.c dump_ghost_file): the magics, one ghost_file_entry, then either the content to
// the end of the image, or (chunks = true, for a sparse file) ghost_chunk_entry { len, off } followed by len bytes,
// repeated; what no chunk covers is a hole.

import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs'
import { join } from 'node:path'
import { readBoundedRegularFile } from '../bundle/bounded-read.js'
import { CoreBuildError } from '../corefile/errors.js'
import { GHOST_FILE_MAGIC, IMG_COMMON_MAGIC, imageEntries, REMAP_FPATH_MAGIC } from './image-file.js'
import { CRIU_ENUMS, GHOST_CHUNK_ENTRY, GHOST_FILE_ENTRY, REMAP_FILE_PATH_ENTRY } from './proto.js'
import { decodeMessage, uintField, type Fields } from './wire.js'

/** Before remap_type existed, the top bit of remap_id said the remap was a ghost. */
const OLD_GHOST_BIT = 0x80000000
/** A ghost_file_entry or ghost_chunk_entry is tens of bytes. */
const MAX_ENTRY_BYTES = 64 << 10
/** A file with more chunks than this is not one criu wrote (its ghost limit is 1 MiB by default). */
const MAX_CHUNKS = 1 << 20

/** Where the bytes of a deleted file are: each run of its content, at `at` in the image. */
export interface GhostContent {
  image: string
  size: number
  runs: { off: number; len: number; at: number }[]
}

/** The ghosts of an images directory, by the id of the file they stand for (files.img's id, a VMA's shmid). */
export function readGhostFiles(imagesDir: string): Map<number, GhostContent> {
  const out = new Map<number, GhostContent>()
  const remap = join(imagesDir, 'remap-fpath.img')
  if (!existsSync(remap)) return out
  const R = REMAP_FILE_PATH_ENTRY
  for (const entry of imageEntries(readBoundedRegularFile(remap, 16 << 20), REMAP_FPATH_MAGIC, 'remap-fpath.img')) {
    const f = decodeMessage(entry)
    const origId = uintField(f, R.orig_id)
    let remapId = uintField(f, R.remap_id)
    const type = uintField(f, R.remap_type)
    if (origId === undefined || remapId === undefined) continue
    const ghost = type === CRIU_ENUMS.remap_type.GHOST || (type === undefined && remapId >= OLD_GHOST_BIT)
    if (!ghost) continue // a linked remap: criu linked the file back under another name, found through files.img
    if (type === undefined) remapId -= OLD_GHOST_BIT
    const image = join(imagesDir, `ghost-file-${remapId.toString(16)}.img`)
    if (existsSync(image)) out.set(origId, readGhostContent(image))
  }
  return out
}

/**
 * The files.img ids of every file criu remapped (a ghost it carries, or a deleted file it linked back under another
 * name): criu restores those from its own images, so no file now at their old path has to match them.
 */
export function remappedFileIds(imagesDir: string): Set<number> {
  const out = new Set<number>()
  const remap = join(imagesDir, 'remap-fpath.img')
  if (!existsSync(remap)) return out
  for (const entry of imageEntries(readBoundedRegularFile(remap, 16 << 20), REMAP_FPATH_MAGIC, 'remap-fpath.img')) {
    const origId = uintField(decodeMessage(entry), REMAP_FILE_PATH_ENTRY.orig_id)
    if (origId !== undefined) out.add(origId)
  }
  return out
}

function readGhostContent(image: string): GhostContent {
  const fd = openSync(image, 'r')
  try {
    const imageSize = fstatSync(fd).size
    const u32At = (pos: number): number => {
      const b = Buffer.alloc(4)
      if (readSync(fd, b, 0, 4, pos) !== 4) throw new CoreBuildError(`${image} is truncated at ${pos}`)
      return b.readUInt32LE(0)
    }
    const entryAt = (pos: number): { fields: Fields; next: number } => {
      const len = u32At(pos)
      if (len > MAX_ENTRY_BYTES || pos + 4 + len > imageSize) throw new CoreBuildError(`${image}: an entry of ${len} bytes at ${pos} is not one criu wrote`)
      const b = Buffer.alloc(len)
      readSync(fd, b, 0, len, pos + 4)
      return { fields: decodeMessage(b), next: pos + 4 + len }
    }
    let pos = u32At(0) === IMG_COMMON_MAGIC ? 4 : 0
    if (u32At(pos) !== GHOST_FILE_MAGIC) throw new CoreBuildError(`${image} does not start with the ghost file magic`)
    const head = entryAt(pos + 4)
    pos = head.next
    const chunked = uintField(head.fields, GHOST_FILE_ENTRY.chunks) === 1
    if (!chunked) return { image, size: imageSize - pos, runs: [{ off: 0, len: imageSize - pos, at: pos }] }
    const runs: GhostContent['runs'] = []
    while (pos < imageSize) {
      if (runs.length >= MAX_CHUNKS) throw new CoreBuildError(`${image} has more than ${MAX_CHUNKS} chunks`)
      const chunk = entryAt(pos)
      const len = uintField(chunk.fields, GHOST_CHUNK_ENTRY.len) ?? 0
      const off = uintField(chunk.fields, GHOST_CHUNK_ENTRY.off) ?? 0
      if (chunk.next + len > imageSize) throw new CoreBuildError(`${image}: a chunk of ${len} bytes runs past the image's end`)
      runs.push({ off, len, at: chunk.next })
      pos = chunk.next + len
    }
    return { image, size: uintField(head.fields, GHOST_FILE_ENTRY.size) ?? runs.reduce((end, r) => Math.max(end, r.off + r.len), 0), runs }
  } finally {
    closeSync(fd)
  }
}
