// Where each byte of a core built from the images comes from: a plan per VMA (its memory from the page images, its
// file, zeros, or nothing, split into segments at long holes) and the copy jobs that carry it out.

import { closeSync, openSync, readSync, statSync } from 'node:fs'
import type { CopyJob } from './copy.js'
import type { GhostContent } from '../criu-images/ghost-files.js'
import { MADV_DONTDUMP_BIT, VMA, type Vma } from '../criu-images/mm.js'
import { PAGE_SIZE } from './elf.js'
import type { PageIndex } from './page-index.js'

/** How a VMA's bytes get into its PT_LOAD. */
export type Fill =
  | { kind: 'none' } // p_filesz 0: gdb reads it from the mapped file, or it cannot be read (vvar, DONTDUMP)
  | { kind: 'memory'; layers: Layer[]; file?: MappedFile } // whole VMA: the first layer with data, else the file, else zeros
  | { kind: 'elf-header'; file: MappedFile } // first page only, from the file, as the kernel does for ELF mappings

/** Pages from a page index whose addresses are `base` below the VMA's (a shmem image is addressed by offset). */
export interface Layer {
  index: PageIndex
  base: number
}

export interface MappedFile {
  path: string
  /** Bytes of the file a mapping may show (pages past the end read as SIGBUS, here as zeros). */
  size: number
  /** Where the file's content is in `path` when that is not the file itself but criu's ghost image of it. */
  runs?: GhostContent['runs']
}

export interface LoadPlan {
  vma: Vma
  fill: Fill
  /** The segment's addresses: the VMA's, or a part of it when its memory is split at long holes (splitAtHoles). */
  start: number
  end: number
  filesz: number
  offset: number
}

/** Untouched memory this long or longer ends a segment's bytes in the file: the next data gets a segment of its own,
 *  and what lies between is memory past p_filesz, zeros to gdb. Shorter holes stay holes inside one segment. */
export const SPLIT_HOLE_BYTES = 1 << 20

export function planLoad(
  vma: Vma,
  memory: PageIndex,
  shmem: Map<string, PageIndex | undefined>,
  files: Map<number, { path: string; size?: number }>,
  ghosts: Map<number, GhostContent>,
  warnings: string[],
): LoadPlan[] {
  const length = vma.end - vma.start
  const none = (): LoadPlan[] => [{ vma, fill: { kind: 'none' }, start: vma.start, end: vma.end, filesz: 0, offset: 0 }]
  const whole = (fill: Fill, filesz = length): LoadPlan[] => [{ vma, fill, start: vma.start, end: vma.end, filesz, offset: 0 }]
  const where = `${hex(vma.start)}-${hex(vma.end)}`

  // Never dumped by criu nor by the kernel: vvar's pages are the kernel's, DONTDUMP is the program's own wish.
  if (vma.status & VMA.AREA_VVAR || vma.madv & MADV_DONTDUMP_BIT) return none()
  if (vma.status & (VMA.AREA_SYSVIPC | VMA.AREA_SOCKET | VMA.AREA_AIORING)) {
    warnings.push(`${where}: SysV shared memory, socket and AIO ring contents are not carried into the core`)
    return none()
  }
  if (vma.status & (VMA.ANON_SHARED | VMA.AREA_MEMFD)) {
    // Shared anonymous memory and memfds (CRIU 4 records the first as the second): a pagemap-shmem image addressed
    // by offset in the shared object.
    const index = shmem.get(shmemKey(vma))
    if (!index) warnings.push(`${where}: shared memory has no pagemap-shmem image; it reads as zeros`)
    const layers: Layer[] = index ? [{ index, base: vma.start - vma.pgoff }] : []
    // A private mapping of a memfd: its written-to pages are the process's own, the rest the memfd's.
    if (vma.status & VMA.FILE_PRIVATE) layers.unshift({ index: memory, base: 0 })
    return splitAtHoles(vma, layers)
  }
  if (vma.status & VMA.FILE_SHARED) return none() // the file holds these bytes; the kernel does not dump them either
  if (vma.status & VMA.FILE_PRIVATE) {
    // A file deleted while mapped: criu's ghost image holds its content, and nothing else will once the process is
    // gone, so the whole mapping goes into the core (the pages it wrote from its memory, the rest from the ghost).
    const ghost = ghosts.get(vma.shmid)
    if (ghost) {
      const file = { path: ghost.image, size: ghost.size, runs: ghost.runs }
      return whole({ kind: 'memory', layers: [{ index: memory, base: 0 }], file })
    }
    const file = mappedFile(vma, files, warnings, where)
    if (memory.hasData(vma.start, vma.end)) {
      // Written-to private file pages (data, relro, GOT) are in the images; the rest is still the file's.
      return whole({ kind: 'memory', layers: [{ index: memory, base: 0 }], file })
    }
    if (vma.pgoff === 0 && file && isElf(file.path)) {
      return whole({ kind: 'elf-header', file }, Math.min(PAGE_SIZE, length))
    }
    return none()
  }
  // Private anonymous memory (heap, stacks, vdso): what was never touched is left as a hole and reads as zeros,
  // which is what it held. A VMA with no page at all is left out like the kernel does (a reservation of terabytes
  // of PROT_NONE must not become a terabyte-sized sparse core).
  if (!memory.hasData(vma.start, vma.end)) return none()
  return splitAtHoles(vma, [{ index: memory, base: 0 }])
}

/**
 * Memory that only the images fill, as one segment per stretch of data: a stretch ends at the first hole of
 * SPLIT_HOLE_BYTES, and its segment's memory (p_memsz) runs on to the next stretch, the rest of it zeros past
 * p_filesz. The core's size is then about the data's, not the address space's: 64 MiB touched in a 256 GiB
 * reservation made a 256 GiB core whose holes every sha256 of it (the recipe's, `snap core`'s check) read as zeros
 * for minutes.
 */
export function splitAtHoles(vma: Vma, layers: Layer[]): LoadPlan[] {
  const fill: Fill = { kind: 'memory', layers }
  const runs: [number, number][] = []
  for (const layer of layers)
    for (const e of layer.index.extents(vma.start - layer.base, vma.end - layer.base)) runs.push([e.vaddr + layer.base, e.vaddr + layer.base + e.bytes])
  if (layers.length > 1) runs.sort((a, b) => a[0] - b[0])
  const stretches: [number, number][] = []
  for (const [from, to] of runs) {
    const last = stretches.at(-1)
    if (last && from - last[1] < SPLIT_HOLE_BYTES) last[1] = Math.max(last[1], to)
    else stretches.push([from, to])
  }
  if (stretches.length === 0) return [{ vma, fill: { kind: 'none' }, start: vma.start, end: vma.end, filesz: 0, offset: 0 }]
  const plans: LoadPlan[] = []
  const first = stretches[0]!
  if (first[0] - vma.start < SPLIT_HOLE_BYTES) first[0] = vma.start
  else plans.push({ vma, fill: { kind: 'none' }, start: vma.start, end: first[0], filesz: 0, offset: 0 })
  stretches.forEach(([from, to], i) => plans.push({ vma, fill, start: from, end: stretches[i + 1]?.[0] ?? vma.end, filesz: to - from, offset: 0 }))
  return plans
}

export function mappedFile(
  vma: Vma,
  files: Map<number, { path: string; size?: number }>,
  warnings: string[],
  where: string,
): MappedFile | undefined {
  const known = files.get(vma.shmid)
  if (!known) {
    warnings.push(`${where}: mapped file ${vma.shmid} is not in files.img; pages not in the images read as zeros`)
    return undefined
  }
  let size: number
  try {
    size = statSync(known.path).size
  } catch {
    warnings.push(`${where}: ${known.path} is gone; its pages not in the images read as zeros`)
    return undefined
  }
  if (known.size !== undefined && known.size !== size) {
    warnings.push(`${where}: ${known.path} changed size since the dump (${known.size} -> ${size}); its pages not in the images read as zeros`)
    return undefined
  }
  return { path: known.path, size }
}

/** The copy jobs of every PT_LOAD, in file order. */
export function* copyJobs(loads: LoadPlan[]): Generator<CopyJob> {
  for (const load of loads) {
    const { fill } = load
    if (fill.kind === 'elf-header') yield* fileJobs(load, fill.file, load.start, load.start + load.filesz)
    else if (fill.kind === 'memory') yield* layeredJobs(load, fill.layers, fill.file, load.start, load.start + load.filesz)
  }
}

/** [from, to) from the first layer that has each page, then from the mapped file; what none has stays a hole. */
export function* layeredJobs(load: LoadPlan, layers: Layer[], file: MappedFile | undefined, from: number, to: number): Generator<CopyJob> {
  if (from >= to) return
  const [layer, ...below] = layers
  if (!layer) {
    if (file) yield* fileJobs(load, file, from, to)
    return
  }
  let next = from
  for (const extent of layer.index.extents(from - layer.base, to - layer.base)) {
    const start = extent.vaddr + layer.base
    yield* layeredJobs(load, below, file, next, start)
    yield { target: load.offset + (start - load.start), file: extent.file, offset: extent.offset, bytes: extent.bytes }
    next = start + extent.bytes
  }
  yield* layeredJobs(load, below, file, next, to)
}

/** [from, to) of a file mapping, read from the file (or the runs of its ghost image), clipped at its end. */
export function* fileJobs(load: LoadPlan, file: MappedFile, from: number, to: number): Generator<CopyJob> {
  const fileOffset = load.vma.pgoff + (from - load.vma.start)
  const end = Math.min(fileOffset + (to - from), file.size)
  for (const run of file.runs ?? [{ off: 0, len: file.size, at: 0 }]) {
    const start = Math.max(fileOffset, run.off)
    const stop = Math.min(end, run.off + run.len)
    if (stop <= start) continue // a hole of a sparse ghost reads as zeros
    yield { target: load.offset + (from - load.start) + (start - fileOffset), file: file.path, offset: run.at + (start - run.off), bytes: stop - start }
  }
}

/** A shared VMA's key in the shmem index map: its memfd's file id, or its shmem id for old-style shared anon. */
export function shmemKey(vma: Vma): string {
  return vma.status & VMA.AREA_MEMFD ? `memfd-${vma.shmid}` : `shmem-${vma.shmid}`
}

function isElf(path: string): boolean {
  try {
    const fd = openSync(path, 'r')
    try {
      const magic = Buffer.alloc(4)
      return readSync(fd, magic, 0, 4, 0) === 4 && magic.toString('latin1') === '\x7fELF'
    } finally {
      closeSync(fd)
    }
  } catch {
    return false
  }
}

function hex(n: number): string {
  return `0x${n.toString(16)}`
}
