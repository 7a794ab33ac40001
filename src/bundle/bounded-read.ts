// Reading a file that a bundle or a user named, as hostile input: opened without following a link and without
// blocking (a FIFO), refused unless a regular file, and never more than a bound.

import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs'

export class BoundedReadError extends Error {}

export function readBoundedRegularFile(path: string, maxBytes: number): Buffer {
  let fd: number | undefined
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
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
