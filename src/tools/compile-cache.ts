// Node's cache of compiled modules (module.enableCompileCache), kept in snap's cache directory between runs. Without
// it every run compiles the same modules again before it does anything: oclif, execa, listr2 and snap's own, about
// 40 ms of a dump's start here. What it holds is code Node runs as the user snap runs as (root, for a dump), so it is
// kept only where nobody else can have written: a directory of this user's own, private, under ancestors that no
// other user can change, as gdb's index is (gdb-index-cache.ts). Anywhere else, snap runs without it.

import { lstatSync, mkdirSync, realpathSync } from 'node:fs'
import module from 'node:module'
import { dirname, join } from 'node:path'
import { cacheDir } from '../environment.js'

type EnableCompileCache = (directory: string) => { status: number; message?: string; directory?: string }

/** Turns the cache on in `node-compile` under snap's cache directory; returns the directory used, or undefined
 *  (an older Node without it, NODE_DISABLE_COMPILE_CACHE, or a directory that is not safe to keep code in). */
export function enableCompileCache(base = cacheDir()): string | undefined {
  const enable = (module as unknown as { enableCompileCache?: EnableCompileCache }).enableCompileCache
  if (typeof enable !== 'function') return undefined
  try {
    const dir = join(base, 'node-compile')
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    if (!onlyOwnerCouldWrite(dir)) return undefined
    const r = enable(realpathSync(dir))
    return r.directory
  } catch {
    return undefined
  }
}

/**
 * The directory is this user's and private, and none of its ancestors (symbolic links resolved) can be changed by
 * anyone but this user or root: a directory others may write, unless sticky (as /tmp is), could have its entries
 * renamed away and replaced.
 */
export function onlyOwnerCouldWrite(dir: string): boolean {
  const uid = process.getuid?.()
  if (uid === undefined) return false
  const real = realpathSync(dir)
  const own = lstatSync(real)
  if (!own.isDirectory() || own.uid !== uid || (own.mode & 0o077) !== 0) return false
  for (let d = dirname(real); ; d = dirname(d)) {
    const st = lstatSync(d)
    if (st.uid !== uid && st.uid !== 0) return false
    if ((st.mode & 0o022) !== 0 && (st.mode & 0o1000) === 0) return false
    if (d === dirname(d)) return true
  }
}
