// gdb's index of the debug info of the binaries it reads (its index cache, one file per build id), kept between runs.
// Making it is a pass over the debug info that every gdb start paid at every dump: about 0.1 s for the test worker's
// libc and 0.3-0.5 s for a python3 with its debug info here. Kept only for binaries that only root can have written:
// gdb keys an index by build id alone, so a binary anyone else could write (a user's program, a container's files, a
// bundle's binaries) could claim a system library's build id and leave an index that later runs would believe.

import { lstatSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { cacheDir } from '../environment.js'

/** The most the kept indexes may take; past it the oldest go until a quarter of it is free. A python3's is 4 MiB. */
export const GDB_INDEX_CACHE_MAX_BYTES = 256 << 20

/**
 * The directory gdb's indexes are kept in between runs (`gdb-index` under snap's cache directory), made if missing,
 * pruned to its bound; undefined when it is not this user's own private directory (then each run makes its own).
 */
export function sharedGdbIndexDir(base = cacheDir(), maxBytes = GDB_INDEX_CACHE_MAX_BYTES): string | undefined {
  const dir = join(base, 'gdb-index')
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    const st = lstatSync(dir)
    if (!st.isDirectory() || st.uid !== process.getuid?.() || (st.mode & 0o077) !== 0) return undefined
    prune(dir, maxBytes)
    return dir
  } catch {
    return undefined
  }
}

/** Removes the oldest indexes (by when they were written) while the directory holds more than `maxBytes`. */
function prune(dir: string, maxBytes: number): void {
  const files: { path: string; size: number; mtimeMs: number }[] = []
  for (const name of readdirSync(dir)) {
    const path = join(dir, name)
    const st = lstatSync(path)
    if (st.isFile()) files.push({ path, size: st.size, mtimeMs: st.mtimeMs })
  }
  let total = files.reduce((n, f) => n + f.size, 0)
  if (total <= maxBytes) return
  for (const f of files.sort((a, b) => a.mtimeMs - b.mtimeMs)) {
    if (total <= (maxBytes * 3) / 4) break
    rmSync(f.path, { force: true })
    total -= f.size
  }
}

/**
 * Whether every one of these files (an executable and what its process mapped) is a regular file of root's that no
 * one else may write, in a directory no one else may write: what gdb indexes from them may then be kept. A file that
 * is gone, or cannot be checked, is not.
 */
export function onlyRootCouldWrite(files: Iterable<string>, seen = new Map<string, boolean>()): boolean {
  const safe = (path: string, dir: boolean): boolean => {
    const known = seen.get(path)
    if (known !== undefined) return known
    let ok = false
    try {
      const st = statSync(path)
      ok = (dir ? st.isDirectory() : st.isFile()) && st.uid === 0 && (st.mode & 0o022) === 0
    } catch {
      ok = false
    }
    seen.set(path, ok)
    return ok
  }
  for (const file of files) {
    if (!file.startsWith('/') || file.endsWith(' (deleted)')) return false
    if (!safe(file, false)) return false
    for (let at = file.lastIndexOf('/'); at > 0; at = file.lastIndexOf('/', at - 1)) if (!safe(file.slice(0, at), true)) return false
  }
  return true
}
