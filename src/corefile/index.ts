// Builds an x86_64 ELF core file from a CRIU dump after the target has been released: gdb opens it like a gcore core
// (every thread, its registers, its memory), and the target's freeze lasted only as long as criu dump.

import { closeSync, existsSync, openSync, readSync, statSync } from 'node:fs'
import { link, open, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { copyRanges, type CopyJob, type CopyOutcome } from './copy.js'
import { readThreadImage } from '../criu-images/core-entry.js'
import {
  EHDR_SIZE, PAGE_SIZE, PF_R, PF_W, PF_X, PHDR_SIZE, PN_XNUM, PT_LOAD, PT_NOTE, SHDR_SIZE, alignUp, elfHeader,
  extendedNumberingSection, programHeader, type ProgramHeader,
} from './elf.js'
import { CoreBuildError } from './errors.js'
import { ImageFormatError } from '../criu-images/errors.js'
import { readGhostFiles, type GhostContent } from '../criu-images/ghost-files.js'
import { MADV_DONTDUMP_BIT, VMA, type Vma } from '../criu-images/mm.js'
import { buildNotes, maxNotesSize, type FileMapping } from './notes.js'
import { PageIndex } from './page-index.js'
import { readProcessImages } from './process-images.js'

export { CoreBuildError } from './errors.js'

export interface WriteCoreOptions {
  /** The directory criu dump wrote (with a `parent` link when it was made with --prev-images-dir). */
  imagesDir: string
  /** The root task's pid, as in the images. */
  pid: number
  /** The core file to create; it must not exist. Written as OUTPUT.partial-PID, then linked into place. */
  output: string
  /** Called with the bytes the core's data will take (its head and every PT_LOAD's contents, holes aside) before a
   *  byte is written: throws when the output's filesystem has no room for them. */
  checkRoom?: (bytes: number) => void
}

export interface WriteCoreResult {
  threads: number
  loadSegments: number
  /** The core's size (holes included: never-touched anonymous memory is left as file holes). */
  bytes: number
  /** Memory bytes copied from the images and from mapped files. */
  copiedBytes: number
  /** 'kernel': copy_file_range/sendfile through python3; 'node': through Node's buffers (see copy.ts). */
  copyMethod: 'kernel' | 'node'
  /** What the core lacks and why (a mapped file gone, shared memory of a kind not carried over). */
  warnings: string[]
  /** Where every byte of the core came from: what a recipe (recipe.ts) is made of. */
  layout: CoreLayout
}

/** The core as pieces: the head (ELF header, program headers, notes) and the extended-numbering section are snap's
 *  own bytes; every other byte is a copy job from an image or a mapped file; the rest is holes. */
export interface CoreLayout {
  size: number
  written: { target: number; bytes: number }[]
  jobs: CopyJob[]
}

/** How a VMA's bytes get into its PT_LOAD. */
type Fill =
  | { kind: 'none' } // p_filesz 0: gdb reads it from the mapped file, or it cannot be read (vvar, DONTDUMP)
  | { kind: 'memory'; layers: Layer[]; file?: MappedFile } // whole VMA: the first layer with data, else the file, else zeros
  | { kind: 'elf-header'; file: MappedFile } // first page only, from the file, as the kernel does for ELF mappings

/** Pages from a page index whose addresses are `base` below the VMA's (a shmem image is addressed by offset). */
interface Layer {
  index: PageIndex
  base: number
}

interface MappedFile {
  path: string
  /** Bytes of the file a mapping may show (pages past the end read as SIGBUS, here as zeros). */
  size: number
  /** Where the file's content is in `path` when that is not the file itself but criu's ghost image of it. */
  runs?: GhostContent['runs']
}

interface LoadPlan {
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
const SPLIT_HOLE_BYTES = 1 << 20

export async function writeCoreFromImages(opts: WriteCoreOptions): Promise<WriteCoreResult> {
  try {
    return await buildCore(opts)
  } catch (error) {
    if (error instanceof ImageFormatError) throw new CoreBuildError(error.message, { cause: error })
    throw error
  }
}

async function buildCore(opts: WriteCoreOptions): Promise<WriteCoreResult> {
  const { imagesDir, pid } = opts
  const warnings: string[] = []
  if (existsSync(opts.output)) throw new CoreBuildError(`${opts.output} already exists`)
  const requireImage = (name: string): string => {
    const file = join(imagesDir, name)
    if (!existsSync(file)) throw new CoreBuildError(`${file} is missing (is ${imagesDir} a criu dump of pid ${pid}?)`)
    return file
  }

  // 1. The per-process images. The threads' images (one per thread, see src/criu-images/core-entry.ts) are only needed for the
  //    notes, which are written last.
  const { task, mm, files: filesImage, memfds } = readProcessImages(imagesDir, pid)
  const files = filesImage.regular
  const threadsDecoded = Promise.all(task.threads.map((tid) => readThreadImage(requireImage(`core-${tid}.img`), tid)))
  threadsDecoded.catch(() => {}) // awaited below; a failure must not surface as an unhandled rejection meanwhile
  const memory = PageIndex.open(imagesDir, `pagemap-${pid}.img`)
  if (!memory) throw new CoreBuildError(`${join(imagesDir, `pagemap-${pid}.img`)} is missing`)
  const shmem = openShmemIndexes(imagesDir, mm.vmas, memfds)
  for (const index of [memory, ...shmem.values()]) {
    const lost = index?.bytesMissingFromParents() ?? 0
    if (lost > 0) warnings.push(`${lost} bytes flagged as in the parent images are not there; they read as zeros`)
  }

  // 2. One PT_LOAD per VMA, and what fills it.
  const ghosts = readGhostFiles(imagesDir)
  const loads = mm.vmas.filter((vma) => vma.status & VMA.AREA_REGULAR).flatMap((vma) => planLoad(vma, memory, shmem, files, ghosts, warnings))

  // 3. What the notes need besides the threads: argv (from the dumped stack) and the file mappings.
  const psargs = await readPsargs(memory, mm.argStart, mm.argEnd)
  const fileMappings: FileMapping[] = []
  for (const vma of mm.vmas) {
    if (!(vma.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED))) continue
    const file = files.get(vma.shmid)
    if (file) fileMappings.push({ start: vma.start, end: vma.end, offset: vma.pgoff, path: file.path })
  }

  // 4. Layout: header, program headers, room for the notes, then each PT_LOAD's bytes at a page boundary.
  const phnum = 1 + loads.length
  const notesOffset = EHDR_SIZE + phnum * PHDR_SIZE
  const notesRoom = maxNotesSize({ threads: task.threads.length, auxv: mm.auxv, files: fileMappings })
  let cursor = alignUp(notesOffset + notesRoom, PAGE_SIZE)
  for (const load of loads) {
    load.offset = cursor
    cursor += load.filesz
  }
  const extended = phnum >= PN_XNUM
  const shoff = extended ? cursor : 0
  const size = extended ? cursor + SHDR_SIZE : cursor
  opts.checkRoom?.(loads.reduce((n, load) => n + load.filesz, notesOffset + notesRoom + (extended ? SHDR_SIZE : 0)))

  // 5. Write beside the output, give it its name when complete: a half-written core never carries the final name.
  const partial = `${opts.output}.partial-${process.pid}`
  const out = await open(partial, 'wx', 0o600) // a core holds the process's secrets
  let copied: CopyOutcome = { bytes: 0, method: 'node' }
  let jobs: CopyJob[] = []
  const written: CoreLayout['written'] = []
  let threadCount = 0
  try {
    jobs = [...copyJobs(loads)]
    copied = await copyRanges(partial, out, jobs)
    if (copied.fallbackReason) warnings.push(`memory copied through Node's buffers (slower): ${copied.fallbackReason}`)

    const threads = await threadsDecoded
    threadCount = threads.length
    const mainThread = threads[0]!
    const comm = mainThread.comm ?? 'unknown'
    const notes = buildNotes({
      info: { task, comm, psargs: psargs || comm, uid: mainThread.creds?.uid ?? 0, gid: mainThread.creds?.gid ?? 0 },
      threads,
      auxv: mm.auxv,
      files: fileMappings,
    })
    if (notes.length > notesRoom) throw new CoreBuildError(`the notes take ${notes.length} bytes, more than the ${notesRoom} set aside`)
    const headers: ProgramHeader[] = [
      { type: PT_NOTE, flags: 0, offset: notesOffset, vaddr: 0, filesz: notes.length, memsz: 0, align: 1 },
      ...loads.map((load) => ({
        type: PT_LOAD,
        flags: (load.vma.prot & 1 ? PF_R : 0) | (load.vma.prot & 2 ? PF_W : 0) | (load.vma.prot & 4 ? PF_X : 0),
        offset: load.offset,
        vaddr: load.start,
        filesz: load.filesz,
        memsz: load.end - load.start,
        align: PAGE_SIZE,
      })),
    ]
    const head = Buffer.concat([elfHeader(phnum, shoff), ...headers.map(programHeader), notes])
    await out.write(head, 0, head.length, 0)
    written.push({ target: 0, bytes: head.length })
    if (extended) {
      const section = extendedNumberingSection(phnum)
      await out.write(section, 0, section.length, shoff)
      written.push({ target: shoff, bytes: section.length })
    }
    await out.truncate(size) // the last load may end in a hole
    await out.close()
    await link(partial, opts.output) // unlike rename, never replaces a file that appeared there meanwhile
    await rm(partial)
  } catch (error) {
    await out.close().catch(() => {})
    await rm(partial, { force: true })
    throw error instanceof CoreBuildError ? error : new CoreBuildError((error as Error).message, { cause: error })
  }
  return {
    threads: threadCount,
    loadSegments: loads.length,
    bytes: size,
    copiedBytes: copied.bytes,
    copyMethod: copied.method,
    warnings,
    layout: { size, written, jobs },
  }
}

function planLoad(
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
function splitAtHoles(vma: Vma, layers: Layer[]): LoadPlan[] {
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

function mappedFile(
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
function* copyJobs(loads: LoadPlan[]): Generator<CopyJob> {
  for (const load of loads) {
    const { fill } = load
    if (fill.kind === 'elf-header') yield* fileJobs(load, fill.file, load.start, load.start + load.filesz)
    else if (fill.kind === 'memory') yield* layeredJobs(load, fill.layers, fill.file, load.start, load.start + load.filesz)
  }
}

/** [from, to) from the first layer that has each page, then from the mapped file; what none has stays a hole. */
function* layeredJobs(load: LoadPlan, layers: Layer[], file: MappedFile | undefined, from: number, to: number): Generator<CopyJob> {
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
function* fileJobs(load: LoadPlan, file: MappedFile, from: number, to: number): Generator<CopyJob> {
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
function shmemKey(vma: Vma): string {
  return vma.status & VMA.AREA_MEMFD ? `memfd-${vma.shmid}` : `shmem-${vma.shmid}`
}

function openShmemIndexes(imagesDir: string, vmas: Vma[], memfds: Map<number, number>): Map<string, PageIndex | undefined> {
  const wanted = new Map<string, number>() // key -> the shmid naming the pagemap-shmem image
  for (const vma of vmas) {
    if (vma.status & VMA.AREA_MEMFD) {
      const shmid = memfds.get(vma.shmid)
      if (shmid !== undefined) wanted.set(shmemKey(vma), shmid)
    } else if (vma.status & VMA.ANON_SHARED) {
      wanted.set(shmemKey(vma), vma.shmid)
    }
  }
  return new Map([...wanted].map(([key, shmid]) => [key, PageIndex.open(imagesDir, `pagemap-shmem-${shmid}.img`)] as const))
}

/** argv as `ps` shows it, from the dumped stack; empty when it was not dumped. */
async function readPsargs(memory: PageIndex, argStart: number, argEnd: number): Promise<string> {
  if (argEnd <= argStart) return ''
  const raw = await memory.read(argStart, Math.min(argEnd - argStart, 4096))
  return raw.toString('latin1').replace(/\0+$/, '').replace(/\0/g, ' ').trim()
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
