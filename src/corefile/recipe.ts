// A core built from the CRIU images is mostly the images' own pages, laid out again. So the bundle stores each page
// once: instead of the core, a recipe (where each piece of the core comes from) and a small blob (the bytes the
// images do not hold: the ELF header and notes snap wrote, the pages taken from mapped files on the capture host).
// Rebuilding is copying, with no decoding: exact on any host, checked against the core's sha256 taken at the dump.
//
// Everything in a recipe comes from a bundle, so it is checked before use: sources inside the images directory or
// the blob, pieces inside the core's size, a bounded number of them.

import { link, open, rm, stat, type FileHandle } from 'node:fs/promises'
import { isAbsolute, join, normalize, relative, sep } from 'node:path'
import { sha256FileOffThread, sha256SparseFileOffThread } from '../bundle/hash.js'
import { copyRanges, readFully, type CopyJob } from './copy.js'
import { PAGE_SIZE, PT_LOAD, readProgramHeaders } from './elf.js'
import { PageIndex } from './page-index.js'
import { CoreBuildError } from './errors.js'
import type { CoreLayout } from './index.js'

export const RECIPE_FORMAT = 'procsnap-core-recipe/1'
/** More pieces than this is not a recipe snap wrote (a process has at most 65530 mappings by default). */
const MAX_PIECES = 4 << 20
/** A core is at most the user address space of x86_64 (128 TiB), holes included. */
const MAX_CORE_BYTES = 2 ** 47

export interface CorePiece {
  /** Where the bytes go in the core. */
  target: number
  bytes: number
  /** 'blob', or a file of the images directory, by its name there (pages-1.img). */
  from: string
  offset: number
}

export interface CoreRecipe {
  format: typeof RECIPE_FORMAT
  size: number
  sha256: string
  pieces: CorePiece[]
}

/**
 * The recipe of a core just written from `imagesDir`, and its blob at `blobPath`: the pieces the images hold are
 * named by file, the others (snap's head and what came from the host's files) are read back from the core itself,
 * so the blob holds exactly what the core holds.
 */
export async function writeRecipe(core: string, layout: CoreLayout, imagesDir: string, blobPath: string): Promise<CoreRecipe> {
  const fromBlob: { target: number; bytes: number }[] = [...layout.written]
  const pieces: CorePiece[] = []
  for (const job of layout.jobs) {
    const name = relative(imagesDir, job.file)
    // The images' top level only: a `parent` chain (pre-dump) is not in the bundle.
    if (!isAbsolute(name) && !name.startsWith('..') && !name.includes(sep)) pieces.push({ target: job.target, bytes: job.bytes, from: name, offset: job.offset })
    else fromBlob.push({ target: job.target, bytes: job.bytes })
  }
  const source = await open(core, 'r')
  const blob = await open(blobPath, 'wx', 0o600)
  let at = 0
  try {
    const buf = Buffer.alloc(1 << 20)
    for (const piece of fromBlob) {
      if (piece.bytes === 0) continue
      for (let done = 0; done < piece.bytes; ) {
        const want = Math.min(buf.length, piece.bytes - done)
        const { bytesRead } = await source.read(buf, 0, want, piece.target + done)
        if (bytesRead <= 0) throw new CoreBuildError(`${core} ended at ${piece.target + done}, inside its own layout`)
        await blob.write(buf, 0, bytesRead, at + done)
        done += bytesRead
      }
      pieces.push({ target: piece.target, bytes: piece.bytes, from: 'blob', offset: at })
      at += piece.bytes
    }
  } finally {
    await source.close()
    await blob.close()
  }
  pieces.sort((a, b) => a.target - b.target)
  const data = [...layout.written, ...layout.jobs].map((r) => ({ at: r.target, bytes: r.bytes }))
  const { sha256 } = await sha256SparseFileOffThread(core, layout.size, data)
  return { format: RECIPE_FORMAT, size: layout.size, sha256, pieces }
}

/**
 * The recipe of a core someone else wrote (gdb's gcore, at the same stop as the criu dump): every page of its memory
 * that is byte for byte the page the images hold for that address is taken from the images, every other byte that
 * is not zero goes into the blob, and the zeros (the untouched memory gcore writes out in full) are holes. Exact
 * whatever gcore wrote: a page that differs (the rseq area the kernel updates) is simply the blob's.
 */
export async function recipeFromCore(core: string, imagesDir: string, pid: number, blobPath: string): Promise<CoreRecipe> {
  const memory = PageIndex.open(imagesDir, `pagemap-${pid}.img`)
  if (!memory) throw new CoreBuildError(`${join(imagesDir, `pagemap-${pid}.img`)} is missing`)
  const source = await open(core, 'r')
  const blob = await open(blobPath, 'wx', 0o600)
  const hashing = sha256FileOffThread(core)
  hashing.catch(() => undefined) // awaited below
  const pieces: CorePiece[] = []
  let blobAt = 0
  const images = new Map<string, FileHandle>()
  try {
    const size = (await source.stat()).size
    // What the images can give, by position in the core: each PT_LOAD's dumped extents (this directory's own pages,
    // not a pre-dump's, which is not in the bundle).
    const covered: { target: number; bytes: number; file: string; offset: number }[] = []
    for (const h of await readProgramHeaders(source, core)) {
      if (h.type !== PT_LOAD || h.filesz === 0) continue
      if (h.offset + h.filesz > size) throw new CoreBuildError(`${core} ends inside the segment at 0x${h.vaddr.toString(16)}`)
      for (const e of memory.extents(h.vaddr, h.vaddr + h.filesz)) {
        if (relative(imagesDir, e.file).includes(sep)) continue
        covered.push({ target: h.offset + (e.vaddr - h.vaddr), bytes: e.bytes, file: e.file, offset: e.offset })
      }
    }
    covered.sort((a, b) => a.target - b.target)

    const push = (piece: CorePiece) => {
      const last = pieces.at(-1)
      if (last && last.from === piece.from && last.target + last.bytes === piece.target && last.offset + last.bytes === piece.offset) last.bytes += piece.bytes
      else pieces.push(piece)
    }
    const mine = Buffer.allocUnsafe(COMPARE_CHUNK)
    const theirs = Buffer.allocUnsafe(COMPARE_CHUNK)
    /** [from, to) of the core: each page from the images when it equals their bytes (given), else the blob's unless zero. */
    const scan = async (from: number, to: number, image?: { file: string; offset: number }) => {
      const handle = image && (images.get(image.file) ?? (images.set(image.file, await open(image.file, 'r')), images.get(image.file)!))
      for (let at = from; at < to; at += COMPARE_CHUNK) {
        const length = Math.min(COMPARE_CHUNK, to - at)
        await readFully(source, mine, length, at, core)
        if (handle) await readFully(handle, theirs, length, image!.offset + (at - from), image!.file)
        for (let page = 0; page < length; page += PAGE_SIZE) {
          const n = Math.min(PAGE_SIZE, length - page)
          const bytes = mine.subarray(page, page + n)
          const target = at + page
          if (handle && bytes.equals(theirs.subarray(page, page + n))) {
            push({ target, bytes: n, from: relative(imagesDir, image!.file), offset: image!.offset + (target - from) })
          } else if (!bytes.equals(ZEROS.subarray(0, n))) {
            await blob.write(bytes, 0, n, blobAt)
            push({ target, bytes: n, from: 'blob', offset: blobAt })
            blobAt += n
          }
        }
      }
    }
    let at = 0
    for (const c of covered) {
      await scan(at, c.target)
      await scan(c.target, c.target + c.bytes, c)
      at = c.target + c.bytes
    }
    await scan(at, size)
    const { sha256 } = await hashing
    return { format: RECIPE_FORMAT, size, sha256, pieces }
  } finally {
    await source.close()
    await blob.close()
    await Promise.all([...images.values()].map((h) => h.close()))
  }
}

/** Bytes compared at a time: a few hundred pages. */
const COMPARE_CHUNK = 1 << 20
const ZEROS = Buffer.alloc(PAGE_SIZE)


/** A recipe read from a bundle, checked to be one snap could have written. */
export function parseRecipe(text: string): CoreRecipe {
  const r = JSON.parse(text) as Partial<CoreRecipe>
  const bad = (why: string) => new CoreBuildError(`the core recipe is not one snap wrote: ${why}`)
  if (r.format !== RECIPE_FORMAT) throw bad(`format ${JSON.stringify(r.format)}`)
  if (!Number.isSafeInteger(r.size) || r.size! < 0 || r.size! > MAX_CORE_BYTES) throw bad('its size')
  if (typeof r.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(r.sha256)) throw bad('its sha256')
  if (!Array.isArray(r.pieces) || r.pieces.length > MAX_PIECES) throw bad('its pieces')
  for (const p of r.pieces) {
    const ints = [p.target, p.bytes, p.offset].every((n) => Number.isSafeInteger(n) && n >= 0)
    if (!ints || p.target + p.bytes > r.size!) throw bad(`a piece at ${String(p.target)} outside the core`)
    if (typeof p.from !== 'string' || (p.from !== 'blob' && (p.from === '' || normalize(p.from) !== p.from || p.from.includes('/') || p.from.startsWith('.'))))
      throw bad(`a piece from ${JSON.stringify(p.from)}`)
  }
  return r as CoreRecipe
}

/** Rebuilds the core into `output` (never overwritten, 0600) and checks its sha256 against the recipe's. */
export async function rebuildCore(recipe: CoreRecipe, imagesDir: string, blobPath: string, output: string): Promise<void> {
  const sourceOf = (p: CorePiece) => (p.from === 'blob' ? blobPath : join(imagesDir, p.from))
  // Every source must hold what the recipe takes from it: a short one would leave zeros that look like memory.
  const sizes = new Map<string, number>()
  for (const p of recipe.pieces) {
    const file = sourceOf(p)
    if (!sizes.has(file)) sizes.set(file, await stat(file).then((s) => (s.isFile() ? s.size : -1), () => -1))
    if (p.offset + p.bytes > sizes.get(file)!) throw new CoreBuildError(`${p.from === 'blob' ? 'the core blob' : p.from} is shorter than the recipe says (missing from the bundle?)`)
  }
  const partial = `${output}.partial-${process.pid}`
  const out = await open(partial, 'wx', 0o600)
  try {
    await out.truncate(recipe.size)
    const jobs: CopyJob[] = recipe.pieces.map((p) => ({ target: p.target, file: sourceOf(p), offset: p.offset, bytes: p.bytes }))
    await copyRanges(partial, out, jobs)
    await out.close()
    // Only the pieces were written: the rest of the core is holes, hashed as the zeros they read as.
    const { sha256 } = await sha256SparseFileOffThread(partial, recipe.size, recipe.pieces.map((p) => ({ at: p.target, bytes: p.bytes })))
    if (sha256 !== recipe.sha256) throw new CoreBuildError(`the rebuilt core's sha256 ${sha256} is not the ${recipe.sha256} recorded at the dump`)
    await link(partial, output)
  } finally {
    await out.close().catch(() => {})
    await rm(partial, { force: true })
  }
}
