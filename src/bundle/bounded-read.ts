// Reading a file that a bundle or a user named, as hostile input: opened without following a link and without
// blocking (a FIFO), refused unless a regular file, and never more than a bound.

import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs'
import { reclaimBuffers } from '../tools/reclaim.js'
import { JsonShapeError, ShapedJsonParser, type Shape } from './json-stream.js'

export class BoundedReadError extends Error {}

/** `followLinks`: for a file a person names (an identity file may well be a link); never for one a bundle names. */
export function readBoundedRegularFile(path: string, maxBytes: number, { followLinks = false } = {}): Buffer {
  let fd: number | undefined
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY | (followLinks ? 0 : constants.O_NOFOLLOW))
    const st = fstatSync(fd)
    if (!st.isFile()) throw new BoundedReadError(`${path} is not a regular file`)
    if (st.size > maxBytes) throw new BoundedReadError(`${path} is ${st.size} bytes, more than the ${maxBytes} allowed`)
    const buf = Buffer.alloc(st.size)
    let off = 0
    while (off < buf.length) {
      const n = readSync(fd, buf, off, buf.length - off, off)
      if (n === 0) break
      off += n
    }
    return buf.subarray(0, off)
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

/** Something that takes a file's bytes a chunk at a time and gives a value at their end (a ShapedJsonParser). */
export interface ChunkReader<T> {
  write(chunk: Buffer): void
  end(): T
}

/**
 * A file read through `reader` 256 KiB at a time, opened as readBoundedRegularFile opens one and refused past
 * `maxBytes`: its memory is the reader's, never the file's size. Problems with the bytes are JsonShapeErrors.
 */
export function readFileThrough<T>(path: string, reader: ChunkReader<T>, maxBytes: number): T {
  let fd: number | undefined
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
    const st = fstatSync(fd)
    if (!st.isFile()) throw new BoundedReadError(`${path} is not a regular file`)
    if (st.size > maxBytes) throw new JsonShapeError(`${st.size} bytes, more than the ${maxBytes} allowed`)
    // One buffer for every read: the reader copies what it keeps.
    const buf = Buffer.allocUnsafe(Math.min(256 << 10, Math.max(st.size, 1)))
    let total = 0
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null)
      if (n === 0) break
      total += n
      if (total > maxBytes) throw new JsonShapeError(`more than the ${maxBytes} bytes allowed`)
      reader.write(buf.subarray(0, n))
      // What the reader made of those bytes and dropped (the bytes of each string, each piece it checked) is freed
      // now, while young: left to V8, it grew the young generation by a hundred MiB on a 30 MiB stacks.json.
      reclaimBuffers()
    }
    return reader.end()
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

/** A JSON file held to `shape` as it is read (see json-stream.ts). */
export function readJsonFile(path: string, shape: Shape, maxBytes: number): unknown {
  return readFileThrough(path, new ShapedJsonParser(shape, maxBytes), maxBytes)
}
