// What a bundle's JSON entries can be, from what its manifest says was captured: stacks.json holds the stacks of the
// threads the manifest lists, a core's recipe cuts the images and the blob the manifest lists into pieces. An entry
// declared larger than that is refused at the head, before a byte of it is read; its content is held to its shape
// as it streams by, in every pass over a bundle. A 660 KB bundle whose stacks.json was 64 MiB of JSON made
// `snap stacks` take 4.8 GB; a recipe of 3.8 million pieces made `snap core` take 1.16 GB.

import { statSync } from 'node:fs'
import { processStacksShape, type ProcessStacks } from '../analysis/stacks-model.js'
import { MAX_PIECES, recipeReader, type RecipeLimits, type RecipeTable } from '../corefile/recipe.js'
import { BundleInvalidError } from '../errors.js'
import { BoundedReadError, readFileThrough, type ChunkReader } from './bounded-read.js'
import { array, JsonShapeError, ShapedJsonParser } from './json-stream.js'
import type { ArtifactRecord, Manifest } from './manifest.js'

export const STACKS_ENTRY = 'stacks.json'
const RECIPE_ENTRY = /^core-recipe\.(\d+)\.json$/
const PAGE = 4096

/** stacks.json is pretty-printed: a frame is ~250 bytes with its names and paths; 256 frames of up to 1 KiB each. */
const STACKS_BYTES_PER_THREAD = 256 << 10
const STACKS_BYTES_BASE = 64 << 10
/** Whatever thread count a manifest claims: stacks.json is held in memory, then printed. */
const MAX_STACKS_BYTES = 32 << 20

/** The longest piece JSON.stringify writes: {"target":2^47,"bytes":2^47,"from":"pages-4294967295.img","offset":2^47},
 *  and a name or two longer. */
const RECIPE_BYTES_PER_PIECE = 160
const RECIPE_BYTES_BASE = 1024
/** Pieces beyond the pages: the core's head and, at most one a mapping, the tails of mapped files, under a page. */
const RECIPE_SPARE_PIECES = 65536

export function bytesText(n: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024
    i++
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`
}

/** A problem with an entry's bytes, as the one line snap prints (exit 11). */
export function entryError(entry: string, e: unknown): Error {
  if (e instanceof JsonShapeError) return new BundleInvalidError(`${entry} is not what snap writes: ${e.message}`, [entry])
  if (e instanceof BoundedReadError) return new BundleInvalidError(`${entry}: ${e.message}`, [entry])
  return e as Error
}

interface StacksBounds {
  maxBytes: number
  /** Threads by process (host pid), as the manifest counts them. */
  threadsOf: Map<number, number>
  why: string
}

/** The limits one manifest sets on its JSON entries; made once per pass. */
export class EntryBounds {
  private stacksCache: StacksBounds | undefined
  private imagesCache: { sizes: Map<string, number>; pages: number; blobs: Map<string, number> } | undefined

  constructor(private readonly manifest: Manifest) {}

  stacks(): StacksBounds {
    if (this.stacksCache) return this.stacksCache
    const m = this.manifest
    const processes = m.processes?.map((p) => ({ pid: p.hostPid ?? p.pid, threads: Math.max(p.threads, p.tids.length) })) ?? [
      { pid: m.target.pid, threads: Math.max(m.target.threads, m.target.threadIds.length) },
    ]
    const threadsOf = new Map<number, number>()
    for (const p of processes) threadsOf.set(p.pid, p.threads)
    const threads = processes.reduce((n, p) => n + p.threads, 0)
    const perThreads = STACKS_BYTES_BASE + threads * STACKS_BYTES_PER_THREAD
    const maxBytes = Math.min(MAX_STACKS_BYTES, perThreads)
    const why = maxBytes < perThreads ? 'snap reads' : `the stacks of the manifest's ${threads} thread${threads === 1 ? '' : 's'} can take`
    return (this.stacksCache = { maxBytes, threadsOf, why })
  }

  private images(): { sizes: Map<string, number>; pages: number; blobs: Map<string, number> } {
    if (this.imagesCache) return this.imagesCache
    const sizes = new Map<string, number>()
    const blobs = new Map<string, number>()
    let pages = 0
    for (const a of this.manifest.artifacts) {
      if (a.kind === 'core-recipe' && a.path.startsWith('core-blob.')) blobs.set(a.path, a.size)
      const name = a.kind === 'criu-image' ? /^criu\/([^/]+)$/.exec(a.path)?.[1] : undefined
      if (name === undefined) continue
      sizes.set(name, a.size)
      pages += Math.ceil(a.size / PAGE)
    }
    return (this.imagesCache = { sizes, pages, blobs })
  }

  /** The recipe of `pid`'s core: the pieces the manifest's images and that core's blob can be cut into (each piece
   *  at least a page but for a few, each page used at most twice: a shared mapping seen through two addresses). */
  recipe(pid: number): RecipeLimits & { maxBytes: number } {
    const images = this.images()
    const blobBytes = images.blobs.get(`core-blob.${pid}`) ?? 0
    const pages = images.pages + Math.ceil(blobBytes / PAGE)
    const maxPieces = Math.min(MAX_PIECES, 2 * pages + RECIPE_SPARE_PIECES)
    return {
      blobBytes,
      images: images.sizes,
      maxPieces,
      maxPiecesWhy: `what the bundle's ${bytesText(pages * PAGE)} of images and blob can be cut into`,
      maxBytes: RECIPE_BYTES_BASE + maxPieces * RECIPE_BYTES_PER_PIECE,
    }
  }

  /** Refuses, naming it, an entry the manifest declares larger than its content can be: before a byte is read. */
  checkDeclared(): void {
    for (const a of this.manifest.artifacts) {
      let max: number | undefined
      let why = ''
      if (a.path === STACKS_ENTRY) {
        ;({ maxBytes: max, why } = this.stacks())
      } else {
        const pid = RECIPE_ENTRY.exec(a.path)?.[1]
        if (pid === undefined) continue
        const r = this.recipe(Number(pid))
        max = r.maxBytes
        why = `a recipe of at most ${r.maxPieces} pieces (${r.maxPiecesWhy}) takes`
      }
      if (a.size > max) throw new BundleInvalidError(`${a.path} is declared ${bytesText(a.size)}, more than the ${bytesText(max)} ${why}`, [a.path])
    }
  }

  /** stacks.json read against the manifest: each process one the manifest lists, once, with at most its threads. */
  stacksReader(keep: boolean): ChunkReader<ProcessStacks[]> {
    const { threadsOf, maxBytes } = this.stacks()
    const mostThreads = Math.max(0, ...threadsOf.values())
    const kept: ProcessStacks[] = []
    const seen = new Set<number>()
    const sink = (item: unknown, index: number) => {
      const p = item as ProcessStacks
      const threads = threadsOf.get(p.pid)
      if (threads === undefined) throw new JsonShapeError(`$[${index}]: process ${p.pid} is not in the manifest`)
      if (seen.has(p.pid)) throw new JsonShapeError(`$[${index}]: process ${p.pid} a second time`)
      seen.add(p.pid)
      if (p.threads.length > threads) throw new JsonShapeError(`$[${index}]: ${p.threads.length} threads of process ${p.pid}, which the manifest counts ${threads}`)
      if (keep) kept.push(p)
    }
    const shape = array(processStacksShape(mostThreads, 'the most threads of a process in the manifest'), threadsOf.size, { maxWhy: "the manifest's processes", sink })
    const parser = new ShapedJsonParser(shape, maxBytes)
    return {
      write: (chunk) => parser.write(chunk),
      end: () => {
        parser.end()
        return kept
      },
    }
  }

  /** A checker of an entry's content as it streams by (its JSON held to its shape), or undefined for an entry that
   *  is not JSON snap reads. */
  checker(record: ArtifactRecord): ChunkReader<unknown> | undefined {
    if (record.path === STACKS_ENTRY) return this.stacksReader(false)
    const pid = RECIPE_ENTRY.exec(record.path)?.[1]
    if (pid === undefined) return undefined
    const limits = this.recipe(Number(pid))
    return recipeReader(limits, limits.maxBytes)
  }
}

/** stacks.json, extracted to `file`, as ProcessStacks held to the manifest. */
export function readStacksEntry(file: string, manifest: Manifest): ProcessStacks[] {
  const bounds = new EntryBounds(manifest)
  try {
    return readFileThrough(file, bounds.stacksReader(true), bounds.stacks().maxBytes)
  } catch (e) {
    throw entryError(STACKS_ENTRY, e)
  }
}

/** The recipe of `pid`'s core, extracted to `file`, as a RecipeTable held to the manifest's images and blob. */
export function readRecipeEntry(file: string, entry: string, manifest: Manifest, pid: number): RecipeTable {
  const limits = new EntryBounds(manifest).recipe(pid)
  try {
    // No piece is written in fewer than 40 bytes: the table is sized from the file, once.
    const reader = recipeReader(limits, limits.maxBytes, { capacity: Math.ceil(Math.min(limits.maxBytes, fileSize(file)) / 40) + 1 })
    return readFileThrough(file, reader, limits.maxBytes)
  } catch (e) {
    throw entryError(entry, e)
  }
}

function fileSize(file: string): number {
  try {
    return statSync(file).size
  } catch {
    return 0
  }
}
