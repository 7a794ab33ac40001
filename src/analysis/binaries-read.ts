// The executables and libraries a bundle carries (dumped with --include-binaries), extracted under one directory
// with their own paths, for gdb to use as its sysroot.

import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync, symlinkSync } from 'node:fs'
import { join } from 'node:path'
import { verifyAndExtract } from '../bundle/extract.js'
import type { Manifest } from '../bundle/manifest.js'
import { BundleInvalidError, OutputPathError, UsageError } from '../errors.js'
import { readManifest } from '../bundle/reader.js'

/** The sysroot (DIR/binaries) when the bundle carries binaries; undefined when it carries none. */
export async function extractBinaries(bundle: string, manifest: Manifest, dir: string): Promise<string | undefined> {
  if (!manifest.artifacts.some((a) => a.kind === 'binary')) return undefined
  const into = join(dir, 'sysroot')
  mkdirSync(into, { mode: 0o700 })
  const scan = await verifyAndExtract({ bundle, into, want: (a) => a.kind === 'binary' })
  if (scan.problems.length > 0) throw new BundleInvalidError(`${bundle} failed verification: ${scan.problems.join('; ')}`, scan.problems)
  const root = join(into, 'binaries')
  // The core names libraries as the dynamic loader loaded them (/lib/x86_64-linux-gnu/libc.so.6), /proc as the
  // kernel resolved them (/usr/lib/...): on a merged-/usr host those are one file. The top-level links of that
  // layout make both names work under the sysroot.
  for (const d of ['lib', 'lib64', 'lib32', 'bin', 'sbin']) {
    if (existsSync(join(root, 'usr', d)) && !existsSync(join(root, d))) symlinkSync(join('usr', d), join(root, d))
  }
  return root
}

/** Every directory of the sysroot that holds a shared library: gdb's fallback, by file name. */
function libraryDirs(root: string): string[] {
  const out: string[] = []
  const walk = (dir: string, depth: number) => {
    if (depth > 12) return
    let names: string[] = []
    try {
      names = readdirSync(dir)
    } catch {
      return
    }
    let hasLib = false
    for (const n of names) {
      const p = join(dir, n)
      const st = lstatSync(p)
      if (st.isDirectory()) walk(p, depth + 1)
      else if (st.isFile() && /\.so(\.|$)/.test(n)) hasLib = true
    }
    if (hasLib) out.push(dir)
  }
  walk(root, 0)
  return out
}

/** What gdb gets to find the executable's libraries: the bundle's own (as its sysroot), else this host's. */
export function gdbFileArgs(sysroot: string | undefined): string[] {
  if (!sysroot) return []
  return ['-iex', `set sysroot ${sysroot}`, '-iex', `set solib-search-path ${libraryDirs(sysroot).join(':')}`]
}

/** `snap core --binaries DIR`: the bundle's binaries written under DIR (new, or empty), by their own paths. */
export async function writeBinaries(bundle: string, dir: string): Promise<number> {
  const { manifest } = await readManifest(bundle)
  const binaries = manifest.artifacts.filter((a) => a.kind === 'binary')
  if (binaries.length === 0) throw new UsageError(`${bundle} carries no binaries`, 'dump with --include-binaries to carry them')
  if (existsSync(dir) && readdirSync(dir).length > 0) throw new OutputPathError(`${dir} is not empty`, 'give a new or empty directory')
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const work = mkdtempSync(join(dir, '.snap-binaries-'))
  try {
    const root = await extractBinaries(bundle, manifest, work)
    for (const name of readdirSync(root!)) renameSync(join(root!, name), join(dir, name))
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
  return binaries.length
}
