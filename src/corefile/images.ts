// The per-process CRIU images a core needs (pstree, mm, pagemap, files, memfd), read straight from their protobuf
// bytes into typed, checked records; the threads' core-TID.img are read by core-image.ts, pages-N.img by
// page-index.ts. No crit: one python start-up per image made the cores built after the release cost seconds. The
// e2e test holds every reader here to what crit decodes from the same real images.
// Field numbers: CRIU's images/pstree.proto, mm.proto, vma.proto, pagemap.proto, fdinfo.proto, regfile.proto, memfd.proto.

import { join } from 'node:path'
import { BoundedReadError, readBoundedRegularFile } from '../bundle/bounded-read.js'
import {
  decodeMessage, FILES_MAGIC, ImageFormatError, imageEntries, int32Field, MEMFD_INODE_MAGIC, messageField, messagesField, MM_MAGIC,
  PAGEMAP_MAGIC, textField, u64Field, u64sField, uintField,
} from '../tools/criu-image-format.js'
import { parsePstreeImage } from '../tools/criu-pstree.js'
import { CoreBuildError } from './errors.js'

/** mm, pagemap, files and memfd images of a real process are KiB to a few MiB (a pagemap entry is ~16 bytes per run
 *  of pages): more is not an image snap will hold in memory. */
export const MAX_IMAGE_BYTES = 64 << 20

/** An image's bytes, bounded; undefined when it does not exist (files.img and memfd.img are optional). */
export function readImageFile(file: string, required = true): Buffer | undefined {
  try {
    return readBoundedRegularFile(file, MAX_IMAGE_BYTES)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      if (required) throw new CoreBuildError(`${file} is missing (is this directory a criu dump of that process?)`)
      return undefined
    }
    if (error instanceof BoundedReadError) throw new CoreBuildError(error.message, { cause: error })
    throw error
  }
}

/** Runs a parser; a malformed image's error names it. */
function parsing<T>(name: string, parse: () => T): T {
  try {
    return parse()
  } catch (error) {
    if (error instanceof ImageFormatError && !error.message.startsWith(name)) throw new ImageFormatError(`${name} is not an image criu wrote: ${error.message}`)
    throw error
  }
}

const required = (value: number | undefined, what: string): number => {
  if (value === undefined) throw new ImageFormatError(`${what} is missing`)
  return value
}

// ------------------------------------------------------------------ pstree.img

export interface TaskTree {
  pid: number
  ppid: number
  pgid: number
  sid: number
  /** Thread ids, the main thread (= pid) first. */
  threads: number[]
}

export function taskFromPstree(image: Buffer, pid: number): TaskTree {
  const tasks = parsing('pstree.img', () => parsePstreeImage(image))
  const entry = tasks.find((t) => t.pid === pid)
  if (!entry) throw new CoreBuildError(`pid ${pid} is not in pstree.img (it holds ${tasks.map((t) => t.pid).join(', ')})`)
  // gdb makes the first NT_PRSTATUS its current thread: the main thread goes first, as in a kernel core.
  const threads = [pid, ...entry.threads.filter((tid) => tid !== pid)]
  return { pid, ppid: entry.ppid, pgid: entry.pgid, sid: entry.sid, threads }
}

// ------------------------------------------------------------------ core-TID.img

/** user_regs_struct, in the kernel's order (which is also the order gdb reads NT_PRSTATUS's pr_reg in). */
export const USER_REGS = [
  'r15', 'r14', 'r13', 'r12', 'bp', 'bx', 'r11', 'r10', 'r9', 'r8', 'ax', 'cx', 'dx', 'si', 'di', 'orig_ax', 'ip',
  'cs', 'flags', 'sp', 'ss', 'fs_base', 'gs_base', 'ds', 'es', 'fs', 'gs',
] as const

export interface FpRegs {
  cwd: number
  swd: number
  twd: number
  fop: number
  rip: bigint
  rdp: bigint
  mxcsr: number
  mxcsrMask: number
  /** 32 words: st0-st7, 16 bytes each. */
  stSpace: number[]
  /** 64 words: xmm0-xmm15. */
  xmmSpace: number[]
  /** From the xsave part: which components are live, and the upper halves of ymm0-ymm15 (64 words). */
  xstateBv?: bigint
  ymmhSpace?: number[]
  /** The later XSAVE components, each present only when the dumping CPU has it (CRIU's user_x86_xsave_entry):
   *  MPX bnd0-3 (8 u64) and bndcfgu/bndstatus (2 u64), AVX-512 k0-k7 (8 u64), zmm0-15's upper halves (64 u64),
   *  zmm16-31 (128 u64), PKRU (2 u32). */
  bndregState?: bigint[]
  bndcsrState?: bigint[]
  opmaskReg?: bigint[]
  zmmUpper?: bigint[]
  hi16Zmm?: bigint[]
  pkru?: number[]
}

export interface ThreadState {
  tid: number
  regs: bigint[]
  fpregs?: FpRegs
  /** Blocked signals, as a mask (bit n-1 for signal n). */
  blocked: bigint
  comm?: string
  creds?: { uid: number; gid: number }
}


// ------------------------------------------------------------------ mm-PID.img

/** VmaEntry.status bits (criu/include/image.h). */
export const VMA = {
  AREA_REGULAR: 1 << 0,
  AREA_STACK: 1 << 1,
  AREA_VSYSCALL: 1 << 2,
  AREA_VDSO: 1 << 3,
  AREA_HEAP: 1 << 5,
  FILE_PRIVATE: 1 << 6,
  FILE_SHARED: 1 << 7,
  ANON_SHARED: 1 << 8,
  ANON_PRIVATE: 1 << 9,
  AREA_SYSVIPC: 1 << 10,
  AREA_SOCKET: 1 << 11,
  AREA_VVAR: 1 << 12,
  AREA_AIORING: 1 << 13,
  AREA_MEMFD: 1 << 14,
} as const

/** madvise advice numbers are recorded as bits 1 << advice. */
export const MADV_DONTDUMP_BIT = 1n << 16n

export interface Vma {
  start: number
  end: number
  /** Byte offset into the backing file (or shmem object). */
  pgoff: number
  /** For file mappings, the id of the file in files.img; for shared anonymous ones, the shmem id. */
  shmid: number
  prot: number
  flags: number
  status: number
  madv: bigint
}

export interface MmState {
  vmas: Vma[]
  auxv: bigint[]
  argStart: number
  argEnd: number
  exeFileId?: number
}

/** mm_entry: mm_arg_start 8, mm_arg_end 9, exe_file_id 12, mm_saved_auxv 13, vmas 14 (vma_entry: start 1, end 2,
 *  pgoff 3, shmid 4, prot 5, flags 6, status 7, madv 9). */
export function mmFromImage(image: Buffer, pid: number): MmState {
  const name = `mm-${pid}.img`
  return parsing(name, () => {
    const entry = imageEntries(image, MM_MAGIC, name)[0]
    if (!entry) throw new ImageFormatError('it holds no entry')
    const mm = decodeMessage(entry)
    const vmas: Vma[] = []
    for (const v of messagesField(mm, 14)) {
      const start = u64Field(v, 1) ?? 0n
      // Only the vsyscall page lives above 2^53 (0xffffffffff600000); it is the kernel's, not the process's memory.
      if (start > BigInt(Number.MAX_SAFE_INTEGER)) continue
      vmas.push({
        start: Number(start),
        end: required(uintField(v, 2), 'a vma end'),
        pgoff: uintField(v, 3) ?? 0,
        shmid: uintField(v, 4) ?? 0,
        prot: uintField(v, 5) ?? 0,
        flags: uintField(v, 6) ?? 0,
        status: uintField(v, 7) ?? 0,
        madv: u64Field(v, 9) ?? 0n,
      })
    }
    vmas.sort((a, b) => a.start - b.start)
    return {
      vmas,
      auxv: u64sField(mm, 13),
      argStart: uintField(mm, 8) ?? 0,
      argEnd: uintField(mm, 9) ?? 0,
      exeFileId: uintField(mm, 12),
    }
  })
}

// ------------------------------------------------------------------ pagemap-*.img

/** PagemapEntry.flags (criu/include/pagemap.h). */
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

/** pagemap_head { pages_id 1 }, then pagemap_entry { vaddr 1, compat_nr_pages 2, in_parent 3, flags 4, nr_pages 5 }.
 *  CRIU 4.2 counts pages in nr_pages (64-bit); older images only in compat_nr_pages. */
export function pagemapFromImage(image: Buffer, file: string): Pagemap {
  return parsing(file, () => {
    const [head, ...rest] = imageEntries(image, PAGEMAP_MAGIC, file)
    const pagesId = head ? uintField(decodeMessage(head), 1) : undefined
    if (pagesId === undefined) throw new ImageFormatError('it has no pagemap head (pages_id)')
    const runs = rest.map((raw) => {
      const e = decodeMessage(raw)
      // Images from before CRIU 3 have no flags, only in_parent.
      const flags = uintField(e, 4) ?? (uintField(e, 3) === 1 ? PE.PARENT : PE.PRESENT)
      const pages = uintField(e, 5) ?? required(uintField(e, 2), 'a run\'s page count')
      return { vaddr: required(uintField(e, 1), 'a run\'s vaddr'), pages, flags }
    })
    return { pagesId, runs }
  })
}

// ------------------------------------------------------------------ files.img, memfd.img

/** file_entry.type (images/fdinfo.proto fd_types). */
const FD_TYPE_REG = 1
const FD_TYPE_MEMFD = 18

export interface FilesImage {
  /** Regular files by their files.img id (the id a file VMA's shmid and mm's exe_file_id name), with the size criu
   *  saw at the freeze. */
  regular: Map<number, { path: string; size?: number }>
  /** memfd files: their files.img id -> the inode_id memfd.img describes. */
  memfdInodes: Map<number, number>
}

/** file_entry { type 1, id 2, reg 3 { id 1, name 6, size 8 }, memfd 20 { id 1, inode_id 5 } }. */
export function filesFromImage(image: Buffer): FilesImage {
  return parsing('files.img', () => {
    const regular: FilesImage['regular'] = new Map()
    const memfdInodes = new Map<number, number>()
    for (const raw of imageEntries(image, FILES_MAGIC, 'files.img')) {
      const entry = decodeMessage(raw)
      const type = int32Field(entry, 1)
      const reg = messageField(entry, 3)
      const memfd = messageField(entry, 20)
      if (type === FD_TYPE_REG && reg) {
        const path = textField(reg, 6)
        const id = uintField(entry, 2) ?? uintField(reg, 1)
        if (path !== undefined && id !== undefined) regular.set(id, { path, size: uintField(reg, 8) })
      } else if (type === FD_TYPE_MEMFD && memfd) {
        const id = uintField(entry, 2) ?? uintField(memfd, 1)
        const inode = uintField(memfd, 5)
        if (id !== undefined && inode !== undefined) memfdInodes.set(id, inode)
      }
    }
    return { regular, memfdInodes }
  })
}

/**
 * For memfd files (CRIU 4 dumps MAP_SHARED|MAP_ANONYMOUS memory as one too), the shmem id whose
 * pagemap-shmem-ID.img holds the contents, by files.img id: files.img names an inode_id, memfd.img
 * (memfd_inode_entry { shmid 5, inode_id 7 }) maps it to a shmid.
 */
export function memfdShmids(files: FilesImage, memfdImage: Buffer): Map<number, number> {
  const byInode = parsing('memfd.img', () => {
    const out = new Map<number, number>()
    for (const raw of imageEntries(memfdImage, MEMFD_INODE_MAGIC, 'memfd.img')) {
      const inode = decodeMessage(raw)
      const inodeId = uintField(inode, 7)
      const shmid = uintField(inode, 5)
      if (inodeId !== undefined && shmid !== undefined) out.set(inodeId, shmid)
    }
    return out
  })
  const byFile = new Map<number, number>()
  for (const [fileId, inodeId] of files.memfdInodes) {
    const shmid = byInode.get(inodeId)
    if (shmid !== undefined) byFile.set(fileId, shmid)
  }
  return byFile
}

/** The images of one process's core, read side by side with nothing but the file system. */
export function readProcessImages(imagesDir: string, pid: number): { task: TaskTree; mm: MmState; files: FilesImage; memfds: Map<number, number> } {
  const task = taskFromPstree(readImageFile(join(imagesDir, 'pstree.img'))!, pid)
  const mm = mmFromImage(readImageFile(join(imagesDir, `mm-${pid}.img`))!, pid)
  const filesRaw = readImageFile(join(imagesDir, 'files.img'), false)
  const files = filesRaw ? filesFromImage(filesRaw) : { regular: new Map(), memfdInodes: new Map() }
  const memfdRaw = readImageFile(join(imagesDir, 'memfd.img'), false)
  const memfds = memfdRaw ? memfdShmids(files, memfdRaw) : new Map<number, number>()
  return { task, mm, files, memfds }
}
