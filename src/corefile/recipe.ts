// A core built from the CRIU images is mostly the images' own pages, laid out again. So the bundle stores each page
// once: instead of the core, a recipe (where each piece of the core comes from) and a small blob (the bytes the
// images do not hold: the ELF header and notes snap wrote, the pages taken from mapped files on the capture host).
// Rebuilding is copying, with no decoding: exact on any host, checked against the core's sha256 taken at the dump.
//
// Everything in a recipe comes from a bundle, so it is checked before use: sources inside the images directory or
// the blob, pieces inside the core's size, a bounded number of them.

import { link, open, rm, stat, type FileHandle } from 'node:fs/promises'
import { isAbsolute, join, normalize, relative, sep } from 'node:path'
import { sha256FileOffThread, sha256SparseFileOffThread, sha256SparseRangesOffThread } from '../bundle/hash.js'
import { array, int, JsonShapeError, object, ShapedJsonParser, string } from '../bundle/json-stream.js'
import { copyRanges, readFully, type CopyJob } from './copy.js'
import { PAGE_SIZE, PT_LOAD, readProgramHeaders } from './elf.js'
import { PageIndex } from './page-index.js'
import { CoreBuildError } from './errors.js'
import type { CoreLayout } from './index.js'

export const RECIPE_FORMAT = 'procsnap-core-recipe/1'
/** More pieces than this is not a recipe snap wrote (a process has at most 65530 mappings by default). */
export const MAX_PIECES = 4 << 20
/** A core is at most the user address space of x86_64 (128 TiB), holes included. */
export const MAX_CORE_BYTES = 2 ** 47

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


/** The image names a recipe may take from: the images' top level, no path, no hidden or special name. */
const SOURCE_NAME = /^(?!\.)[A-Za-z0-9._+@-]{1,255}$/

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

/**
 * A recipe held as columns: one row per piece in typed arrays, 28 bytes a piece. A million pieces held as objects
 * (and the JSON text they came from) took a gigabyte; here they take 28 MiB.
 */
export interface RecipeTable {
  format: typeof RECIPE_FORMAT
  size: number
  sha256: string
  count: number
  target: Float64Array
  bytes: Float64Array
  offset: Float64Array
  /** Index into `sources`. */
  source: Uint32Array
  /** 'blob', then image names, by index. */
  sources: string[]
}

/** What a recipe read from a bundle may take: its blob's size and each image's, as the manifest declares them, and
 *  how many pieces that much data can be cut into. */
export interface RecipeLimits {
  blobBytes: number
  images: ReadonlyMap<string, number>
  maxPieces: number
  /** Why that many, for the message. */
  maxPiecesWhy: string
}

/**
 * A streaming reader of a recipe from a bundle: write() the bytes as they come, end() for the recipe. Each piece is
 * checked as it arrives and then dropped (or, with `keep`, written into a RecipeTable): from the blob or an image the
 * manifest lists, inside that source's declared size, in order and without overlap, inside the core's size; no more
 * pieces than the sources can fill. A failure is a JsonShapeError saying where.
 */
export function recipeReader(limits: RecipeLimits, maxBytes: number, keep?: { capacity: number }) {
  const sources = ['blob']
  const sourceIndex = new Map<string, number>([['blob', 0]])
  let capacity = keep ? Math.max(1, Math.min(keep.capacity, limits.maxPieces)) : 0
  let target = new Float64Array(capacity)
  let bytes = new Float64Array(capacity)
  let offset = new Float64Array(capacity)
  let source = new Uint32Array(capacity)
  let count = 0
  let end = 0
  const sink = (item: unknown, index: number) => {
    const p = item as CorePiece
    const at = `$.pieces[${index}]`
    const size = p.from === 'blob' ? limits.blobBytes : limits.images.get(p.from)
    if (size === undefined) throw new JsonShapeError(`${at}: from ${JSON.stringify(p.from)}, which is not an image of the bundle`)
    if (p.offset + p.bytes > size)
      throw new JsonShapeError(`${at}: ${p.bytes} bytes at ${p.offset} of ${p.from === 'blob' ? 'the blob' : p.from}, which the manifest declares ${size} bytes`)
    if (p.target < end) throw new JsonShapeError(`${at}: at ${p.target}, before the end of the piece ahead of it (${end}): pieces out of order or overlapping`)
    end = p.target + p.bytes
    if (end > MAX_CORE_BYTES) throw new JsonShapeError(`${at}: ends at ${end}, past the largest core (${MAX_CORE_BYTES})`)
    if (!keep) return
    let s = sourceIndex.get(p.from)
    if (s === undefined) sourceIndex.set(p.from, (s = sources.push(p.from) - 1))
    if (count === capacity) {
      // The capacity is sized from the file (no piece is shorter than 40 bytes of JSON): growing is a safeguard.
      capacity = Math.min(capacity * 2, limits.maxPieces)
      const grow = <T extends Float64Array | Uint32Array>(a: T, make: (n: number) => T): T => {
        const b = make(capacity)
        b.set(a)
        return b
      }
      target = grow(target, (n) => new Float64Array(n))
      bytes = grow(bytes, (n) => new Float64Array(n))
      offset = grow(offset, (n) => new Float64Array(n))
      source = grow(source, (n) => new Uint32Array(n))
    }
    target[count] = p.target
    bytes[count] = p.bytes
    offset[count] = p.offset
    source[count] = s
    count++
  }
  const pieceShape = object({ target: int(0, MAX_CORE_BYTES), bytes: int(0, MAX_CORE_BYTES), from: string(255, { pattern: SOURCE_NAME }), offset: int(0, Number.MAX_SAFE_INTEGER) })
  const shape = object({
    format: string(64, { pattern: /^procsnap-core-recipe\/1$/ }),
    size: int(0, MAX_CORE_BYTES),
    sha256: string(64, { pattern: /^[0-9a-f]{64}$/ }),
    pieces: array(pieceShape, limits.maxPieces, { maxWhy: limits.maxPiecesWhy, sink }),
  })
  const parser = new ShapedJsonParser(shape, maxBytes)
  return {
    write: (chunk: Buffer) => parser.write(chunk),
    end: (): RecipeTable => {
      const r = parser.end() as { size: number; sha256: string }
      if (end > r.size) throw new JsonShapeError(`$.pieces: they reach ${end}, past the core's size of ${r.size}`)
      return { format: RECIPE_FORMAT, size: r.size, sha256: r.sha256, count, target, bytes, offset, source, sources }
    },
  }
}

function tableOf(recipe: CoreRecipe): RecipeTable {
  const n = recipe.pieces.length
  const t: RecipeTable = {
    format: RECIPE_FORMAT, size: recipe.size, sha256: recipe.sha256, count: n,
    target: new Float64Array(n), bytes: new Float64Array(n), offset: new Float64Array(n), source: new Uint32Array(n), sources: ['blob'],
  }
  const index = new Map([['blob', 0]])
  recipe.pieces.forEach((p, i) => {
    let s = index.get(p.from)
    if (s === undefined) index.set(p.from, (s = t.sources.push(p.from) - 1))
    t.target[i] = p.target
    t.bytes[i] = p.bytes
    t.offset[i] = p.offset
    t.source[i] = s
  })
  return t
}

/** Pieces handed to one copy at a time: the copy takes its jobs as one JSON text, a few MiB at this many. */
const COPY_BATCH = 1 << 16

/** Rebuilds the core into `output` (never overwritten, 0600) and checks its sha256 against the recipe's. */
export async function rebuildCore(recipe: CoreRecipe | RecipeTable, imagesDir: string, blobPath: string, output: string): Promise<void> {
  const t = 'pieces' in recipe ? tableOf(recipe) : recipe
  const files = t.sources.map((name) => (name === 'blob' ? blobPath : join(imagesDir, name)))
  // Every source must hold what the recipe takes from it: a short one would leave zeros that look like memory.
  const sizes = await Promise.all(files.map((file) => stat(file).then((s) => (s.isFile() ? s.size : -1), () => -1)))
  for (let i = 0; i < t.count; i++) {
    const s = t.source[i]!
    if (t.offset[i]! + t.bytes[i]! > sizes[s]!)
      throw new CoreBuildError(`${s === 0 ? 'the core blob' : t.sources[s]} is shorter than the recipe says (missing from the bundle?)`)
  }
  const partial = `${output}.partial-${process.pid}`
  const out = await open(partial, 'wx', 0o600)
  try {
    await out.truncate(t.size)
    for (let from = 0; from < t.count; from += COPY_BATCH) {
      const jobs: CopyJob[] = []
      for (let i = from; i < Math.min(t.count, from + COPY_BATCH); i++) jobs.push({ target: t.target[i]!, file: files[t.source[i]!]!, offset: t.offset[i]!, bytes: t.bytes[i]! })
      await copyRanges(partial, out, jobs)
    }
    await out.close()
    // Only the pieces were written: the rest of the core is holes, hashed as the zeros they read as. The pieces are
    // in order and apart, so touching ones merge into one range.
    const ranges = new Float64Array(2 * t.count)
    let n = 0
    for (let i = 0; i < t.count; i++) {
      if (t.bytes[i] === 0) continue
      if (n > 0 && ranges[n - 2]! + ranges[n - 1]! === t.target[i]) ranges[n - 1] = ranges[n - 1]! + t.bytes[i]!
      else {
        ranges[n++] = t.target[i]!
        ranges[n++] = t.bytes[i]!
      }
    }
    const { sha256 } = await sha256SparseRangesOffThread(partial, t.size, ranges.subarray(0, n))
    if (sha256 !== t.sha256) throw new CoreBuildError(`the rebuilt core's sha256 ${sha256} is not the ${t.sha256} recorded at the dump`)
    await link(partial, output)
  } finally {
    await out.close().catch(() => {})
    await rm(partial, { force: true })
  }
}
