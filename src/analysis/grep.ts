// `snap grep BUNDLE PATTERN`: search the captured memory, in one streaming pass over the bundle. The CRIU page images
// (pages-N.img) are searched as they stream by, a chunk at a time with an overlap the length of the longest match,
// so memory stays flat whatever the bundle's size; each hit is first kept as (pages image, offset) and placed at the
// end, through the pagemap (which pages sit where in the address space) and mm image (which mapping that is). Every
// image is read with snap's own bounded protobuf reader (src/criu-images/).

import type { ReadEntry } from 'tar'
import { bytesText } from '../bundle/entry-bounds.js'
import { scanBundle } from '../bundle/reader.js'
import { BundleInvalidError, UsageError } from '../errors.js'
import { ImageFormatError } from '../criu-images/errors.js'
import { regularFilePaths } from '../criu-images/files.js'
import { forEachVma, VMA } from '../criu-images/mm.js'
import { forEachPagemapRun, PE } from '../criu-images/pagemap.js'

const PAGE = 4096
/** The small images (pagemap, mm, files) are KiB to a few MiB; the pages images are streamed, never held. */
const MAX_SMALL_IMAGE = 64 << 20
/** All of them together: they are held, as their bytes, until the end, where the hits are placed through them. */
const MAX_SMALL_IMAGES = 64 << 20
const SMALL_IMAGE = /^criu\/(pagemap-\d+|mm-\d+|files)\.img$/
const CONTEXT = 16
/** The longest regex match found across two chunks of a page image. */
const REGEX_OVERLAP = 4096

export interface GrepHit {
  pid: number
  address: string
  mapping: string
  /** The bytes around the hit, as text where printable and \xNN where not. */
  context: string
}

export interface GrepResult {
  bundle: string
  pattern: string
  hits: GrepHit[]
  /** More hits were found than kept. */
  truncated: boolean
}

/**
 * The runs whose pages are in this dump's pages image, each with its offset there (they sit back to back), one call
 * each: the pagemap stays as its bytes (a record a run cost over ten times them), walked again to place the hits.
 */
function forEachPresentRun(buf: Buffer, name: string, fn: (vaddr: number, pages: number, at: number) => void): { pagesId: number; bytes: number } {
  let at = 0
  const pagesId = forEachPagemapRun(buf, name, (vaddr, pages, flags) => {
    if (!(flags & PE.PRESENT)) return
    fn(vaddr, pages, at)
    at += pages * PAGE
  })
  return { pagesId, bytes: at }
}

interface HitVma {
  start: number
  shmid: number
  status: number
}

/**
 * The mapping of each address (sorted), from an mm image walked once: only the mappings that hold a hit are kept (the
 * one starting lowest, as a sorted search finds it), never the image's every mapping.
 */
function vmasOf(mm: Buffer, pid: number, addresses: number[]): Map<number, HitVma> {
  const found = new Map<number, HitVma>()
  forEachVma(mm, pid, (v) => {
    let lo = 0
    let hi = addresses.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (addresses[mid]! < v.start) lo = mid + 1
      else hi = mid
    }
    for (let i = lo; i < addresses.length && addresses[i]! < v.end; i++) {
      const had = found.get(addresses[i]!)
      if (!had || v.start < had.start) found.set(addresses[i]!, { start: v.start, shmid: v.shmid, status: v.status })
    }
  })
  return found
}

/** A malformed image is the bundle's fault: said so, naming it. */
function readingImage<T>(name: string, read: () => T): T {
  try {
    return read()
  } catch (e) {
    if (e instanceof ImageFormatError) throw new BundleInvalidError(`${name} cannot be read: ${e.message}`, [name])
    throw e
  }
}

const isFile = (v: HitVma) => (v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED)) !== 0

function label(v: HitVma | undefined, files: Map<number, string>): string {
  if (!v) return '?'
  const file = isFile(v) ? files.get(v.shmid) : undefined
  return file ?? (v.status & VMA.AREA_HEAP ? '[heap]' : v.status & VMA.AREA_STACK ? '[stack]' : v.status & VMA.AREA_VDSO ? '[vdso]' : '[anon]')
}

function shown(bytes: Buffer): string {
  let s = ''
  for (const b of bytes) s += b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`
  return s
}

/** A small image whole, bounded; what goes wrong is kept in `errors` (a stream's handler must not throw). */
function collect(entry: ReadEntry, limit: number, name: string, errors: Error[], done: (buf: Buffer) => void): void {
  // One buffer of the declared size, filled as the chunks come: joining the chunks at the end held the image twice.
  const whole = entry.size <= limit ? Buffer.allocUnsafe(entry.size) : undefined
  let size = 0
  entry.on('data', (c: Buffer) => {
    if (whole && size + c.length <= whole.length) c.copy(whole, size)
    size += c.length
  })
  entry.on('end', () => {
    if (!whole || size > limit) return void errors.push(new BundleInvalidError(`${name} is ${Math.max(size, entry.size)} bytes, more than an image snap reads`, [name]))
    try {
      done(whole.subarray(0, Math.min(size, whole.length)))
    } catch (e) {
      errors.push(e instanceof BundleInvalidError ? e : new BundleInvalidError(`${name} cannot be read: ${(e as Error).message}`, [name]))
    }
  })
}

export interface GrepOptions {
  bundle: string
  pattern: string
  regex?: boolean
  pid?: number
  maxHits?: number
}

export async function grepBundle(o: GrepOptions): Promise<GrepResult> {
  const maxHits = o.maxHits ?? 1000
  const needle = Buffer.from(o.pattern, 'utf8')
  if (needle.length === 0) throw new UsageError('the pattern is empty', 'give a string to search for')
  // A regex runs over the bytes as latin1 text (one character a byte, so offsets stay byte offsets).
  let re: RegExp | undefined
  try {
    re = o.regex ? new RegExp(o.pattern, 'gs') : undefined
  } catch (e) {
    throw new UsageError(`--regex ${JSON.stringify(o.pattern)} is not a regular expression: ${(e as Error).message}`, 'fix the pattern, or search for the plain string without --regex')
  }
  const raw: { pagesId: number; offset: number; context: Buffer }[] = []
  let truncated = false
  const pagemaps = new Map<number, { pid: number; image: Buffer; bytes: number; name: string }>()
  /** Each pages image's declared size, by its id. */
  const pagesSizes = new Map<number, { name: string; size: number }>()
  const mms = new Map<number, Buffer>()
  let filesImage: Buffer | undefined
  const errors: Error[] = []
  /** The images name a process by its pid in the tree's namespace; the manifest says which host pid that was. */
  const hostPid = new Map<number, number>()

  const keepHit = (pagesId: number, offset: number, from: Buffer, at: number, length: number) => {
    if (raw.length >= maxHits) return void (truncated = true)
    raw.push({ pagesId, offset, context: Buffer.from(from.subarray(Math.max(0, at - CONTEXT), at + length + CONTEXT)) })
  }

  /** A literal: each chunk is searched where it lies (no copy of it), and only the few bytes where one chunk meets
   *  the next are joined, for a match that straddles them. */
  const searchLiteral = (entry: ReadEntry, pagesId: number) => {
    let carry = Buffer.alloc(0) // the last needle.length - 1 bytes seen
    let chunkStart = 0 // offset in the image of the chunk at hand
    entry.on('data', (chunk: Buffer) => {
      if (carry.length > 0) {
        const junction = Buffer.concat([carry, chunk.subarray(0, needle.length - 1)])
        for (let i = junction.indexOf(needle); i >= 0 && i < carry.length; i = junction.indexOf(needle, i + 1))
          keepHit(pagesId, chunkStart - carry.length + i, junction, i, needle.length)
      }
      for (let i = chunk.indexOf(needle); i >= 0; i = chunk.indexOf(needle, i + 1)) keepHit(pagesId, chunkStart + i, chunk, i, needle.length)
      const tail = needle.length - 1
      carry = chunk.length >= tail ? Buffer.from(chunk.subarray(chunk.length - tail)) : Buffer.concat([carry, chunk]).subarray(-tail)
      chunkStart += chunk.length
    })
  }

  /** A regex over the bytes as latin1 text: chunks are joined with a 4 KiB overlap, so a match of up to that length
   *  that straddles two chunks is found, once. */
  const searchRegex = (entry: ReadEntry, pagesId: number, re: RegExp) => {
    let carry = Buffer.alloc(0)
    let base = 0 // offset in the image of carry[0]
    const scanText = (buf: Buffer, limit: number) => {
      const text = buf.toString('latin1')
      re.lastIndex = 0
      for (let m = re.exec(text); m && m.index < limit; m = re.exec(text)) {
        keepHit(pagesId, base + m.index, buf, m.index, m[0].length)
        if (m[0].length === 0) re.lastIndex++
      }
    }
    entry.on('data', (chunk: Buffer) => {
      const buf = carry.length ? Buffer.concat([carry, chunk]) : chunk
      // Only matches that start before the overlap kept for the next chunk: the others are found there, whole.
      scanText(buf, buf.length - REGEX_OVERLAP)
      const keep = Math.min(REGEX_OVERLAP, buf.length)
      base += buf.length - keep
      carry = Buffer.from(buf.subarray(buf.length - keep))
    })
    entry.on('end', () => scanText(carry, Infinity))
  }

  const search = (entry: ReadEntry, pagesId: number) => (re ? searchRegex(entry, pagesId, re) : searchLiteral(entry, pagesId))

  /** A pages image must hold exactly what its pagemap lists: more is memory no address explains (a 4 GiB image of
   *  zeros behind a pagemap of a few pages), searched for nothing. */
  const pagesProblem = (pagesId: number): string | undefined => {
    const pm = pagemaps.get(pagesId)
    const pages = pagesSizes.get(pagesId)
    if (!pm || !pages || pages.size === pm.bytes) return undefined
    return `${pages.name} is declared ${bytesText(pages.size)} but ${pm.name} lists ${bytesText(pm.bytes)} of pages`
  }

  const scan = await scanBundle(o.bundle, {
    onHead: ({ manifest }) => {
      for (const p of manifest.processes ?? []) if (p.hostPid !== undefined) hostPid.set(p.pid, p.hostPid)
      // What is held until the end is bounded before any of it is read.
      const small = manifest.artifacts.filter((a) => SMALL_IMAGE.test(a.path))
      const largest = small.reduce<(typeof small)[number] | undefined>((a, b) => (a && a.size >= b.size ? a : b), undefined)
      if (largest && largest.size > MAX_SMALL_IMAGE)
        throw new BundleInvalidError(`${o.bundle}: ${largest.path} is declared ${bytesText(largest.size)}, more than the ${bytesText(MAX_SMALL_IMAGE)} an image snap reads whole can be`, [largest.path])
      const total = small.reduce((n, a) => n + a.size, 0)
      if (largest && total > MAX_SMALL_IMAGES)
        throw new BundleInvalidError(`${o.bundle}: the pagemap, mm and files images are declared ${bytesText(total)} in all, more than the ${bytesText(MAX_SMALL_IMAGES)} snap holds to place hits (the largest: ${largest.path})`, [largest.path])
    },
    onArtifact(entry, record, abort) {
      let m: RegExpExecArray | null
      if ((m = /^criu\/pagemap-(\d+)\.img$/.exec(record.path))) {
        const pid = Number(m[1])
        collect(entry, MAX_SMALL_IMAGE, record.path, errors, (image) => {
          const { pagesId, bytes } = forEachPresentRun(image, record.path, () => {})
          pagemaps.set(pagesId, { pid, image, bytes, name: record.path })
        })
      } else if ((m = /^criu\/mm-(\d+)\.img$/.exec(record.path))) {
        const pid = Number(m[1])
        collect(entry, MAX_SMALL_IMAGE, record.path, errors, (buf) => mms.set(pid, buf))
      } else if (record.path === 'criu/files.img') {
        collect(entry, MAX_SMALL_IMAGE, record.path, errors, (buf) => (filesImage = buf))
      } else if ((m = /^criu\/pages-(\d+)\.img$/.exec(record.path))) {
        const pagesId = Number(m[1])
        pagesSizes.set(pagesId, { name: record.path, size: record.size })
        // Its pagemap comes first in a bundle snap wrote: checked before a byte of it is searched.
        const problem = pagesProblem(pagesId)
        if (problem) return abort(new BundleInvalidError(`${o.bundle}: ${problem}`, [record.path]))
        search(entry, pagesId)
      }
    },
  })
  if (scan.problems.length > 0) throw new BundleInvalidError(`${o.bundle} failed verification: ${scan.problems.join('; ')}`, scan.problems)
  if (errors[0]) throw errors[0]
  for (const pagesId of pagesSizes.keys()) {
    const problem = pagesProblem(pagesId)
    if (problem) throw new BundleInvalidError(`${o.bundle}: ${problem}`, [pagesSizes.get(pagesId)!.name])
  }
  if (pagemaps.size === 0) throw new BundleInvalidError(`${o.bundle} holds no CRIU page images to search (a core-only bundle)`, [], 'search its core with `snap core` and a tool of your choice')

  // Each hit's address: its pages image's runs walked once, the hits in the order of their offsets.
  const addressOf = new Map<(typeof raw)[number], number>()
  for (const [pagesId, pm] of pagemaps) {
    const mine = raw.filter((h) => h.pagesId === pagesId).sort((a, b) => a.offset - b.offset)
    let next = 0
    if (mine.length > 0)
      forEachPresentRun(pm.image, pm.name, (vaddr, pages, at) => {
        for (; next < mine.length && mine[next]!.offset < at + pages * PAGE; next++) if (mine[next]!.offset >= at) addressOf.set(mine[next]!, vaddr + (mine[next]!.offset - at))
      })
  }
  // Each hit's mapping: its process's mm image walked once for the addresses hit, then files.img once for the files
  // those mappings are of.
  const kept = raw.flatMap((h) => {
    const pm = pagemaps.get(h.pagesId)
    const address = addressOf.get(h)
    if (!pm || address === undefined) return [] // the pages of a shared memory object: no process's address
    const pid = hostPid.get(pm.pid) ?? pm.pid
    return o.pid !== undefined && pid !== o.pid ? [] : [{ h, pid, imagePid: pm.pid, address }]
  })
  const vmas = new Map<number, Map<number, HitVma>>()
  for (const imagePid of new Set(kept.map((k) => k.imagePid))) {
    const mm = mms.get(imagePid)
    const addresses = [...new Set(kept.filter((k) => k.imagePid === imagePid).map((k) => k.address))].sort((a, b) => a - b)
    vmas.set(imagePid, mm ? readingImage(`criu/mm-${imagePid}.img`, () => vmasOf(mm, imagePid, addresses)) : new Map())
  }
  const fileIds = new Set([...vmas.values()].flatMap((m) => [...m.values()].filter(isFile).map((v) => v.shmid)))
  const files = filesImage && fileIds.size > 0 ? readingImage('criu/files.img', () => regularFilePaths(filesImage!, fileIds)) : new Map<number, string>()
  const hits: GrepHit[] = kept.map(({ h, pid, imagePid, address }) => ({
    pid,
    address: `0x${address.toString(16)}`,
    mapping: label(vmas.get(imagePid)!.get(address), files),
    context: shown(h.context),
  }))
  return { bundle: o.bundle, pattern: o.pattern, hits, truncated }
}
