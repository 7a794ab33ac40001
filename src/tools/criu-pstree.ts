// The process tree criu dumped, read straight from pstree.img: what the manifest records is what was dumped, not what
// snap saw before the stop. Read without crit (a Python start per image), so it costs nothing in the freeze.

import { readFileSync } from 'node:fs'

export interface DumpedTask {
  pid: number
  ppid: number
  pgid: number
  sid: number
  /** Thread ids as criu recorded them (the main thread first, as criu writes it). */
  threads: number[]
}

/** CRIU's image magics (images/magic.h): a common magic, then the image's own. */
const IMG_COMMON_MAGIC = 0x54564319
const PSTREE_MAGIC = 0x50273030

/** A bounded image: criu writes a few dozen bytes per task, so a megabyte is a tree of tens of thousands. */
const MAX_PSTREE_BYTES = 16 << 20

export class PstreeImageError extends Error {}

function readVarint(buf: Buffer, at: number): [value: number, next: number] {
  let value = 0
  let shift = 0
  for (let i = at; i < buf.length && i < at + 10; i++) {
    const b = buf[i]!
    value += (b & 0x7f) * 2 ** shift
    shift += 7
    if ((b & 0x80) === 0) return [value, i + 1]
  }
  throw new PstreeImageError('truncated varint in pstree.img')
}

/** One pstree_entry (images/pstree.proto): pid = 1, ppid = 2, pgid = 3, sid = 4, repeated threads = 5. */
export function parsePstreeEntry(msg: Buffer): DumpedTask {
  const task: DumpedTask = { pid: 0, ppid: 0, pgid: 0, sid: 0, threads: [] }
  let at = 0
  while (at < msg.length) {
    const [key, afterKey] = readVarint(msg, at)
    const field = Math.floor(key / 8)
    const wire = key & 7
    at = afterKey
    if (wire === 0) {
      const [v, next] = readVarint(msg, at)
      at = next
      if (field === 1) task.pid = v
      else if (field === 2) task.ppid = v
      else if (field === 3) task.pgid = v
      else if (field === 4) task.sid = v
      else if (field === 5) task.threads.push(v)
    } else if (wire === 2) {
      const [len, next] = readVarint(msg, at)
      const end = next + len
      if (end > msg.length) throw new PstreeImageError('truncated field in pstree.img')
      for (let p = next; field === 5 && p < end; ) {
        // packed repeated threads
        const [tid, after] = readVarint(msg, p)
        task.threads.push(tid)
        p = after
      }
      at = end
    } else if (wire === 5) at += 4
    else if (wire === 1) at += 8
    else throw new PstreeImageError(`unexpected wire type ${wire} in pstree.img`)
  }
  if (task.pid <= 0) throw new PstreeImageError('a pstree.img entry has no pid')
  if (task.threads.length === 0) task.threads = [task.pid]
  return task
}

export function parsePstreeImage(buf: Buffer): DumpedTask[] {
  if (buf.length < 8) throw new PstreeImageError('pstree.img is too short')
  let at = 0
  if (buf.readUInt32LE(0) === IMG_COMMON_MAGIC) at = 4
  if (buf.readUInt32LE(at) !== PSTREE_MAGIC) throw new PstreeImageError('pstree.img does not start with the pstree magic')
  at += 4
  const tasks: DumpedTask[] = []
  while (at < buf.length) {
    if (at + 4 > buf.length) throw new PstreeImageError('truncated entry size in pstree.img')
    const len = buf.readUInt32LE(at)
    at += 4
    if (at + len > buf.length) throw new PstreeImageError('truncated entry in pstree.img')
    tasks.push(parsePstreeEntry(buf.subarray(at, at + len)))
    at += len
  }
  if (tasks.length === 0) throw new PstreeImageError('pstree.img holds no task')
  return tasks
}

export function readPstreeImage(file: string): DumpedTask[] {
  const buf = readFileSync(file)
  if (buf.length > MAX_PSTREE_BYTES) throw new PstreeImageError(`pstree.img is ${buf.length} bytes, more than any real tree`)
  return parsePstreeImage(buf)
}
