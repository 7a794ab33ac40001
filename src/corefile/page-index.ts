// Where each dumped page's bytes are: an index over one pagemap image and its pages-N.img, following the `parent`
// link of an incremental dump (criu dump --prev-images-dir) for the pages flagged as in the parent images.
// Only the index is held in memory (one record per pagemap run), never the pages.

import { existsSync, statSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import { CoreBuildError } from './errors.js'
import { ImageFormatError } from '../criu-images/errors.js'
import { readImageFile } from '../criu-images/image-file.js'
import { PE, forEachPagemapRun } from '../criu-images/pagemap.js'
import { PAGE_SIZE } from './elf.js'

/** A stretch of memory whose bytes sit contiguously in `file` from `offset`. */
export interface Extent {
  vaddr: number
  bytes: number
  file: string
  offset: number
}

interface IndexedRun {
  vaddr: number
  end: number
  flags: number
  /** Offset in pages-N.img, for runs flagged PE_PRESENT. */
  fileOffset: number
}

/** A chain of incremental dumps deeper than this is taken for a `parent` link loop. */
const MAX_PARENT_DEPTH = 64
/** Runs whose pages are elsewhere (the parent images, a lazy-pages server): a process has at most ~2^20 mappings,
 *  and criu writes a run per stretch of a mapping. */
const MAX_ABSENT_RUNS = 1 << 20

export class PageIndex {
  private constructor(
    readonly imagesDir: string,
    readonly pagesFile: string,
    private readonly runs: IndexedRun[],
    readonly parent: PageIndex | undefined,
  ) {}

  /**
   * Indexes `pagemapName` (pagemap-PID.img, pagemap-shmem-ID.img) in `imagesDir`, and in its parents as far as
   * its runs point there. Undefined when the image does not exist in `imagesDir`.
   */
  static open(imagesDir: string, pagemapName: string, depth = 0): PageIndex | undefined {
    const pagemapFile = join(imagesDir, pagemapName)
    const image = readImageFile(pagemapFile, false)
    if (!image) return undefined
    // A first pass that holds nothing: what the runs claim is checked against the pages image before a record is
    // made for each. Every present run holds at least a page of pages-N.img, whose size the manifest bounds; the
    // others (in the parent images, lazy, or empty) are bounded on their own: a pagemap of millions of runs is 16 bytes a
    // run on disk and ten times that held.
    let count = 0
    let absent = 0
    let cursor = 0
    const pagesId = forEachPagemapRun(image, pagemapFile, (_vaddr, pages, flags) => {
      count++
      // A run of no pages is what a reader of another CRIU version makes of its page counts: the pages file tells.
      if (flags & PE.PRESENT && pages > 0) cursor += pages * PAGE_SIZE
      else if (++absent > MAX_ABSENT_RUNS) throw new ImageFormatError(`${pagemapFile} lists more than ${MAX_ABSENT_RUNS} runs of pages it does not hold, more than snap indexes`)
    })
    const pagesFile = join(imagesDir, `pages-${pagesId}.img`)
    if (cursor > 0) {
      const size = existsSync(pagesFile) ? statSync(pagesFile).size : -1
      if (size < 0) throw new CoreBuildError(`${pagemapFile} lists ${cursor} bytes of pages but ${pagesFile} is missing`)
      if (size < cursor) throw new CoreBuildError(`${pagesFile} holds ${size} bytes; ${pagemapFile} lists ${cursor}`)
    }
    // More pages on disk than the pagemap accounts for is a pagemap read wrong (a reader older than the criu that
    // wrote it, as crit before 4.2 read 4.2's page counts as 0): a core built from it would hold none of that memory
    // and look whole.
    const onDisk = existsSync(pagesFile) ? statSync(pagesFile).size : 0
    if (onDisk > cursor)
      throw new CoreBuildError(
        `${pagesFile} holds ${onDisk} bytes of memory but ${pagemapFile} accounts for ${cursor}: the images were read wrong (were they written by a CRIU newer than this snap reads?)`,
      )

    // pages-N.img holds the PE_PRESENT runs' pages back to back, in pagemap order.
    const runs: IndexedRun[] = new Array<IndexedRun>(count)
    let i = 0
    cursor = 0
    forEachPagemapRun(image, pagemapFile, (vaddr, pages, flags) => {
      runs[i++] = { vaddr, end: vaddr + pages * PAGE_SIZE, flags, fileOffset: cursor }
      if (flags & PE.PRESENT) cursor += pages * PAGE_SIZE
    })
    runs.sort((a, b) => a.vaddr - b.vaddr)

    let parent: PageIndex | undefined
    if (runs.some((run) => run.flags & PE.PARENT && !(run.flags & PE.PRESENT))) {
      if (depth >= MAX_PARENT_DEPTH) throw new CoreBuildError(`more than ${MAX_PARENT_DEPTH} parent image directories from ${imagesDir}`)
      const parentDir = join(imagesDir, 'parent') // criu's symlink to --prev-images-dir
      parent = PageIndex.open(parentDir, pagemapName, depth + 1)
      if (!parent) {
        throw new CoreBuildError(
          `${pagemapFile} has pages in the parent images, but ${join(parentDir, pagemapName)} is missing (is the pre-dump directory still there?)`,
        )
      }
    }
    return new PageIndex(imagesDir, pagesFile, runs, parent)
  }

  /** The extents with data inside [from, to), in address order; addresses without data are left out. */
  extents(from: number, to: number): Extent[] {
    const out: Extent[] = []
    for (let i = this.firstRunEndingAfter(from); i < this.runs.length; i++) {
      const run = this.runs[i]!
      if (run.vaddr >= to) break
      const start = Math.max(from, run.vaddr)
      const end = Math.min(to, run.end)
      if (end <= start) continue
      if (run.flags & PE.PRESENT) {
        pushMerged(out, { vaddr: start, bytes: end - start, file: this.pagesFile, offset: run.fileOffset + (start - run.vaddr) })
      } else if (run.flags & PE.PARENT && this.parent) {
        for (const extent of this.parent.extents(start, end)) pushMerged(out, extent)
      }
      // A PE_LAZY run without PE_PRESENT lives in a lazy-pages server, not in any image: it reads as zeros.
    }
    return out
  }

  /** Bytes this pagemap says are in the parent images that no parent has (a broken chain): they read as zeros. */
  bytesMissingFromParents(): number {
    let missing = 0
    for (const run of this.runs) {
      if (run.flags & PE.PRESENT || !(run.flags & PE.PARENT) || !this.parent) continue
      const found = this.parent.extents(run.vaddr, run.end).reduce((sum, extent) => sum + extent.bytes, 0)
      missing += run.end - run.vaddr - found
    }
    return missing
  }

  /** Whether any byte of [from, to) has data in the images. */
  hasData(from: number, to: number): boolean {
    return this.extents(from, to).length > 0
  }

  /** Reads [addr, addr + length) from the images, zero where nothing was dumped. For small reads (argv). */
  async read(addr: number, length: number): Promise<Buffer> {
    const out = Buffer.alloc(length)
    for (const extent of this.extents(addr, addr + length)) {
      const handle = await open(extent.file, 'r')
      try {
        await handle.read(out, extent.vaddr - addr, extent.bytes, extent.offset)
      } finally {
        await handle.close()
      }
    }
    return out
  }

  private firstRunEndingAfter(addr: number): number {
    let lo = 0
    let hi = this.runs.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.runs[mid]!.end <= addr) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}

/** Appends, joining with the previous extent when both address and file position carry on (criu splits runs). */
function pushMerged(out: Extent[], extent: Extent): void {
  const last = out.at(-1)
  if (last && last.file === extent.file && last.vaddr + last.bytes === extent.vaddr && last.offset + last.bytes === extent.offset) {
    last.bytes += extent.bytes
  } else {
    out.push({ ...extent })
  }
}
