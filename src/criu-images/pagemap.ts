// pagemap-PID.img and pagemap-shmem-ID.img: a pagemap_head naming the pages-N.img that holds the dumped pages, then
// a pagemap_entry per run of pages, each present in pages-N.img, in the parent images, or lazy.

import { ImageFormatError } from './errors.js'
import { IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC, PAGEMAP_MAGIC, parsing } from './image-file.js'
import { PAGEMAP_ENTRY, PAGEMAP_HEAD } from './proto.js'
import { readVarint, required } from './wire.js'

/** pagemap_entry.flags (criu/include/pagemap.h), without their PE_ prefix. */
export const PE = { PARENT: 1 << 0, LAZY: 1 << 1, PRESENT: 1 << 2 } as const

export interface PagemapRun {
  vaddr: number
  pages: number
  flags: number
}

export interface Pagemap {
  pagesId: number
  runs: PagemapRun[]
}

/** CRIU 4.2 counts pages in nr_pages (64-bit); older images only in compat_nr_pages. */
export function pagemapFromImage(image: Buffer, file: string): Pagemap {
  const runs: PagemapRun[] = []
  const pagesId = forEachPagemapRun(image, file, (vaddr, pages, flags) => void runs.push({ vaddr, pages, flags }))
  return { pagesId, runs }
}

/** The highest field number read of pagemap_head and pagemap_entry. */
const LAST_FIELD = Math.max(...Object.values(PAGEMAP_HEAD), ...Object.values(PAGEMAP_ENTRY))

/** The runs of a pagemap, one call each in the image's order, none held: its pages_id. */
export function forEachPagemapRun(image: Buffer, file: string, run: (vaddr: number, pages: number, flags: number) => void): number {
  return parsing(file, () => {
    let at = 0
    if (image.length >= 4 && (image.readUInt32LE(0) === IMG_COMMON_MAGIC || image.readUInt32LE(0) === IMG_SERVICE_MAGIC)) at = 4
    if (image.length < at + 4 || image.readUInt32LE(at) !== PAGEMAP_MAGIC) throw new ImageFormatError(`${file} does not start with its magic`)
    at += 4
    let pagesId: number | undefined
    // Each entry decoded where it lies, its fields straight into the run: a Map and a Buffer an entry (as
    // decodeMessage and imageEntries make them) cost 16 times the image, a GB for a 57 MiB pagemap.
    const last: (number | bigint | undefined)[] = new Array(LAST_FIELD + 1).fill(undefined)
    const field = (n: number): number | undefined => {
      const v = last[n]
      if (typeof v === 'bigint') throw new ImageFormatError(`field ${n} holds ${v}, past 2^53`)
      return v
    }
    const E = PAGEMAP_ENTRY
    for (let first = true; at < image.length; first = false) {
      if (at + 4 > image.length) throw new ImageFormatError(`${file}: truncated entry size`)
      const end = at + 4 + image.readUInt32LE(at)
      at += 4
      if (end > image.length) throw new ImageFormatError(`${file}: truncated entry`)
      last.fill(undefined)
      while (at < end) {
        const [keyValue, afterKey] = readVarint(image, at)
        const key = Number(keyValue)
        const n = Math.floor(key / 8)
        const wire = key & 7
        at = afterKey
        let value: number | bigint | undefined
        if (wire === 0) [value, at] = readVarint(image, at)
        else if (wire === 2 || wire === 1 || wire === 5) {
          let len = wire === 1 ? 8 : 4
          if (wire === 2) {
            const [l, next] = readVarint(image, at)
            len = Number(l)
            at = next
          }
          at += len
        } else throw new ImageFormatError(`unexpected wire type ${wire}`)
        if (at > end) throw new ImageFormatError('truncated field')
        // The last value wins, as in protobuf; a field of another wire type reads as absent, as uintField has it.
        if (n >= 1 && n <= LAST_FIELD) last[n] = value
      }
      if (first) {
        pagesId = field(PAGEMAP_HEAD.pages_id)
        if (pagesId === undefined) throw new ImageFormatError('it has no pagemap head (pages_id)')
        continue
      }
      // Images from before CRIU 3 have no flags, only in_parent.
      const flags = field(E.flags) ?? (field(E.in_parent) === 1 ? PE.PARENT : PE.PRESENT)
      const pages = field(E.nr_pages) ?? required(field(E.compat_nr_pages), 'a run\'s page count')
      run(required(field(E.vaddr), 'a run\'s vaddr'), pages, flags)
    }
    if (pagesId === undefined) throw new ImageFormatError('it has no pagemap head (pages_id)')
    return pagesId
  })
}
