// Builds an x86_64 ELF core file from a CRIU dump after the target has been released: gdb opens it like a gcore core
// (every thread, its registers, its memory), and the target's freeze lasted only as long as criu dump.

import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { copyRanges, type CopyJob, type CopyOutcome, type KernelCopier } from './copy.js'
import { writeCoreFile } from './core-file.js'
import { readThreadImage } from '../criu-images/core-entry.js'
import {
  EHDR_SIZE, PAGE_SIZE, PF_R, PF_W, PF_X, PHDR_SIZE, PN_XNUM, PT_LOAD, PT_NOTE, SHDR_SIZE, alignUp, elfHeader,
  extendedNumberingSection, programHeader, type ProgramHeader,
} from './elf.js'
import { CoreBuildError } from './errors.js'
import { ImageFormatError } from '../criu-images/errors.js'
import { readGhostFiles } from '../criu-images/ghost-files.js'
import { VMA, type Vma } from '../criu-images/mm.js'
import { copyJobs, planLoad, shmemKey } from './load-plan.js'
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
  /** A copying helper shared by the cores of a tree (copy.ts), used whatever the core's size. */
  copier?: KernelCopier
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
  let copied: CopyOutcome = { bytes: 0, method: 'node' }
  let jobs: CopyJob[] = []
  const written: CoreLayout['written'] = []
  let threadCount = 0
  await writeCoreFile(opts.output, async (out, partial) => {
    jobs = [...copyJobs(loads)]
    copied = await copyRanges(partial, out, jobs, undefined, opts.copier)
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
  })
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
