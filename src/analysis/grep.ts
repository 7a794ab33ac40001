// `snap grep BUNDLE PATTERN`: search the captured memory, in one streaming pass over the bundle. The CRIU page images
// (pages-N.img) are searched as they stream by, a chunk at a time with an overlap the length of the longest match,
// so memory stays flat whatever the bundle's size; each hit is first kept as (pages image, offset) and placed at the
// end, through the pagemap (which pages sit where in the address space) and mm image (which mapping that is). Every
// image is read with snap's own bounded protobuf reader (corefile/images.ts).

import type { ReadEntry } from 'tar'
import { scanBundle } from '../bundle/reader.js'
import { BundleInvalidError, UsageError } from '../errors.js'
import { filesFromImage, mmFromImage, pagemapFromImage, PE, VMA } from '../corefile/images.js'

const PAGE = 4096
/** The small images (pagemap, mm, files) are KiB to a few MiB; the pages images are streamed, never held. */
const MAX_SMALL_IMAGE = 64 << 20
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

interface Run {
  vaddr: number
  pages: number
  /** Offset of the run's first page in the pages image. */
  at: number
}

/** The runs whose pages are in this dump's pages image, each with its offset there (they sit back to back). */
function pagemapRuns(buf: Buffer, name: string): { pagesId: number; runs: Run[] } {
  const { pagesId, runs: all } = pagemapFromImage(buf, name)
  const runs: Run[] = []
  let at = 0
  for (const run of all) {
    if (!(run.flags & PE.PRESENT)) continue
    runs.push({ vaddr: run.vaddr, pages: run.pages, at })
    at += run.pages * PAGE
  }
  return { pagesId, runs }
}

interface Mapping {
  start: number
  end: number
  name: string
}

function mappings(mm: Buffer, files: Map<number, { path: string }>, pid: number): Mapping[] {
  return mmFromImage(mm, pid).vmas.map((v) => {
    const file = v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED) ? files.get(v.shmid)?.path : undefined
    const label = file ?? (v.status & VMA.AREA_HEAP ? '[heap]' : v.status & VMA.AREA_STACK ? '[stack]' : v.status & VMA.AREA_VDSO ? '[vdso]' : '[anon]')
    return { start: v.start, end: v.end, name: label }
  })
}

function shown(bytes: Buffer): string {
  let s = ''
  for (const b of bytes) s += b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`
  return s
}

/** A small image whole, bounded; what goes wrong is kept in `errors` (a stream's handler must not throw). */
function collect(entry: ReadEntry, limit: number, name: string, errors: Error[], done: (buf: Buffer) => void): void {
  const parts: Buffer[] = []
  let size = 0
  entry.on('data', (c: Buffer) => {
    size += c.length
    if (size <= limit) parts.push(c)
  })
  entry.on('end', () => {
    if (size > limit) return void errors.push(new BundleInvalidError(`${name} is ${size} bytes, more than an image snap reads`, [name]))
    try {
      done(Buffer.concat(parts))
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
  const pagemaps = new Map<number, { pid: number; runs: Run[] }>()
  const mms = new Map<number, Buffer>()
  let files = new Map<number, { path: string }>()
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

  const scan = await scanBundle(o.bundle, {
    onHead: ({ manifest }) => {
      for (const p of manifest.processes ?? []) if (p.hostPid !== undefined) hostPid.set(p.pid, p.hostPid)
    },
    onArtifact(entry, record) {
      let m: RegExpExecArray | null
      if ((m = /^criu\/pagemap-(\d+)\.img$/.exec(record.path))) {
        const pid = Number(m[1])
        collect(entry, MAX_SMALL_IMAGE, record.path, errors, (buf) => {
          const { pagesId, runs } = pagemapRuns(buf, record.path)
          pagemaps.set(pagesId, { pid, runs })
        })
      } else if ((m = /^criu\/mm-(\d+)\.img$/.exec(record.path))) {
        const pid = Number(m[1])
        collect(entry, MAX_SMALL_IMAGE, record.path, errors, (buf) => mms.set(pid, buf))
      } else if (record.path === 'criu/files.img') {
        collect(entry, MAX_SMALL_IMAGE, record.path, errors, (buf) => (files = filesFromImage(buf).regular))
      } else if ((m = /^criu\/pages-(\d+)\.img$/.exec(record.path))) {
        search(entry, Number(m[1]))
      }
    },
  })
  if (scan.problems.length > 0) throw new BundleInvalidError(`${o.bundle} failed verification: ${scan.problems.join('; ')}`, scan.problems)
  if (errors[0]) throw errors[0]
  if (pagemaps.size === 0) throw new BundleInvalidError(`${o.bundle} holds no CRIU page images to search (a core-only bundle)`, [], 'search its core with `snap core` and a tool of your choice')

  const maps = new Map<number, Mapping[]>()
  const mappingsOf = (pid: number) => {
    if (!maps.has(pid)) maps.set(pid, mms.has(pid) ? mappings(mms.get(pid)!, files, pid) : [])
    return maps.get(pid)!
  }
  const hits: GrepHit[] = []
  for (const h of raw) {
    const pm = pagemaps.get(h.pagesId)
    if (!pm) continue // the pages of a shared memory object: no process's address
    const pid = hostPid.get(pm.pid) ?? pm.pid
    if (o.pid !== undefined && pid !== o.pid) continue
    const run = pm.runs.find((r) => h.offset >= r.at && h.offset < r.at + r.pages * PAGE)
    if (!run) continue
    const address = run.vaddr + (h.offset - run.at)
    const mapping = mappingsOf(pm.pid).find((v) => address >= v.start && address < v.end)?.name ?? '?'
    hits.push({ pid, address: `0x${address.toString(16)}`, mapping, context: shown(h.context) })
  }
  return { bundle: o.bundle, pattern: o.pattern, hits, truncated }
}
