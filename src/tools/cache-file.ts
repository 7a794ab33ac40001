// A small JSON file snap keeps in its cache directory between runs (a passed `criu check`, the tools' versions). It
// is believed only when it is this user's own regular file, not a link, writable by no one else, and small; it is
// written beside and renamed into place, 0600. Neither side throws: a cache that cannot be trusted or kept only
// means the work is done again.

import { closeSync, constants, fstatSync, mkdirSync, openSync, readSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

/** The file's parsed JSON, or undefined when it is missing, untrusted, larger than `maxBytes` or not JSON. */
export function readCacheJson(dir: string, name: string, maxBytes: number): unknown {
  let fd: number | undefined
  try {
    fd = openSync(join(dir, name), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK)
    const st = fstatSync(fd)
    if (!st.isFile() || st.size > maxBytes) return undefined
    if (st.uid !== process.getuid?.() || (st.mode & 0o022) !== 0) return undefined
    const buf = Buffer.alloc(maxBytes + 1)
    const n = readSync(fd, buf, 0, buf.length, 0)
    if (n > maxBytes) return undefined
    return JSON.parse(buf.subarray(0, n).toString('utf8')) as unknown
  } catch {
    return undefined
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

/** Writes `value` as the file `name` in `dir` (made 0700 if missing): beside it first, then renamed into place. */
export function writeCacheJson(dir: string, name: string, value: unknown): void {
  const partial = join(dir, `${name}.${process.pid}`)
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    writeFileSync(partial, JSON.stringify(value) + '\n', { mode: 0o600, flag: 'wx' })
    renameSync(partial, join(dir, name))
  } catch {
    try {
      rmSync(partial, { force: true })
    } catch {
      // nothing was made there (the directory cannot be): nothing to remove
    }
  }
}
