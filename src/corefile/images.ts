// The per-process CRIU images a core needs (pstree, mm, pagemap, files, memfd), read straight from their protobuf
// bytes into typed, checked records; the threads' core-TID.img are read by core-image.ts, pages-N.img by
// page-index.ts. No crit: one python start-up per image made the cores built after the release cost seconds. The
// e2e test holds every reader here to what crit decodes from the same real images.
// Field numbers: CRIU's images/pstree.proto, mm.proto, vma.proto, pagemap.proto, fdinfo.proto, regfile.proto, memfd.proto.

import { join } from 'node:path'
import { BoundedReadError, readBoundedRegularFile } from '../bundle/bounded-read.js'
import {
  decodeMessage, FILES_MAGIC, IMG_COMMON_MAGIC, IMG_SERVICE_MAGIC, ImageFormatError, imageEntries, MEMFD_INODE_MAGIC, MM_MAGIC, PAGEMAP_MAGIC,
  readVarint, uintField,
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

/** A process has at most vm.max_map_count mappings (65530 by default, 262144 where databases raise it): an mm image
 *  listing more than this is not one snap decodes, each mapping costing a record and a program header. */
export const MAX_VMAS = 1 << 20

/** mm_entry: mm_arg_start 8, mm_arg_end 9, exe_file_id 12, mm_saved_auxv 13, vmas 14 (vma_entry: start 1, end 2,
 *  pgoff 3, shmid 4, prot 5, flags 6, status 7, madv 9). Walked where the bytes lie, each mapping straight into its
 *  record: decodeMessage's Map and Buffers per mapping cost 100 times the image (3.8 MiB of mappings took 400 MB). */
export function mmFromImage(image: Buffer, pid: number): MmState {
  const name = `mm-${pid}.img`
  return parsing(name, () => {
    let entry: [number, number] | undefined
    forEachEntry(image, MM_MAGIC, name, (from, to) => void (entry ??= [from, to]))
    if (!entry) throw new ImageFormatError('it holds no entry')
    const vmas: Vma[] = []
    const auxv: bigint[] = []
    let argStart: number | undefined
    let argEnd: number | undefined
    let exeFileId: number | undefined
    const raw: (number | bigint | undefined)[] = []
    scanFields(image, entry[0], entry[1], (n, value, start, end) => {
      if (n === 8) argStart = exact(value, 8)
      else if (n === 9) argEnd = exact(value, 9)
      else if (n === 12) exeFileId = exact(value, 12)
      else if (n === 13) {
        if (value !== undefined) auxv.push(BigInt(value))
        else for (let p = start; p < end; ) {
          const [x, next] = readVarint(image, p)
          auxv.push(BigInt(x))
          p = next
        }
      } else if (n === 14 && value === undefined) {
        if (vmas.length >= MAX_VMAS) throw new ImageFormatError(`it lists more than ${MAX_VMAS} mappings, more than a process can have`)
        raw.fill(undefined)
        scanFields(image, start, end, (f, v) => {
          if (f >= 1 && f <= 9) raw[f] = v
        })
        const vStart = raw[1] ?? 0
        // Only the vsyscall page lives above 2^53 (0xffffffffff600000); it is the kernel's, not the process's memory.
        if (typeof vStart === 'bigint') return
        const madv = raw[9]
        vmas.push({
          start: vStart,
          end: required(exact(raw[2], 2), 'a vma end'),
          pgoff: exact(raw[3], 3) ?? 0,
          shmid: exact(raw[4], 4) ?? 0,
          prot: exact(raw[5], 5) ?? 0,
          flags: exact(raw[6], 6) ?? 0,
          status: exact(raw[7], 7) ?? 0,
          madv: madv === undefined || madv === 0 ? 0n : BigInt(madv),
        })
      }
    })
    vmas.sort((a, b) => a.start - b.start)
    return { vmas, auxv, argStart: argStart ?? 0, argEnd: argEnd ?? 0, exeFileId }
  })
}

/** What an mm image says without its mappings decoded: how many it lists, and the executable's files.img id. */
export function mmSummary(image: Buffer, pid: number): { vmas: number; exeFileId: number | undefined } {
  const name = `mm-${pid}.img`
  return parsing(name, () => {
    let entry: [number, number] | undefined
    forEachEntry(image, MM_MAGIC, name, (from, to) => void (entry ??= [from, to]))
    if (!entry) throw new ImageFormatError('it holds no entry')
    let vmas = 0
    let exeFileId: number | undefined
    scanFields(image, entry[0], entry[1], (n, value) => {
      if (n === 12) exeFileId = exact(value, 12)
      else if (n === 14 && value === undefined) vmas++
    })
    return { vmas, exeFileId }
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
  const runs: PagemapRun[] = []
  const pagesId = forEachPagemapRun(image, file, (vaddr, pages, flags) => void runs.push({ vaddr, pages, flags }))
  return { pagesId, runs }
}

/** The runs of a pagemap, one call each in the image's order, none held: its pages_id. */
export function forEachPagemapRun(image: Buffer, file: string, run: (vaddr: number, pages: number, flags: number) => void): number {
  return parsing(file, () => {
    let at = 0
    if (image.length >= 4 && (image.readUInt32LE(0) === IMG_COMMON_MAGIC || image.readUInt32LE(0) === IMG_SERVICE_MAGIC)) at = 4
    if (image.length < at + 4 || image.readUInt32LE(at) !== PAGEMAP_MAGIC) throw new ImageFormatError(`${file} does not start with its magic`)
    at += 4
    let pagesId: number | undefined
    // Each entry decoded where it lies, its five fields straight into the run: a Map and a Buffer an entry (as
    // decodeMessage and imageEntries make them) cost 16 times the image, a GB for a 57 MiB pagemap.
    const last: (number | bigint | undefined)[] = [undefined, undefined, undefined, undefined, undefined, undefined]
    const field = (n: number): number | undefined => {
      const v = last[n]
      if (typeof v === 'bigint') throw new ImageFormatError(`field ${n} holds ${v}, past 2^53`)
      return v
    }
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
        if (n >= 1 && n <= 5) last[n] = value
      }
      if (first) {
        pagesId = field(1)
        if (pagesId === undefined) throw new ImageFormatError('it has no pagemap head (pages_id)')
        continue
      }
      // Images from before CRIU 3 have no flags, only in_parent.
      const flags = field(4) ?? (field(3) === 1 ? PE.PARENT : PE.PRESENT)
      const pages = field(5) ?? required(field(2), 'a run\'s page count')
      run(required(field(1), 'a run\'s vaddr'), pages, flags)
    }
    if (pagesId === undefined) throw new ImageFormatError('it has no pagemap head (pages_id)')
    return pagesId
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

/** file_entry { type 1, id 2, reg 3 { id 1, name 6, size 8 }, memfd 20 { id 1, inode_id 5 } }: the regular files
 *  (only those of `wanted` ids, when given) and the memfds, each entry walked where it lies and nothing else kept. */
export function filesFromImage(image: Buffer, wanted?: ReadonlySet<number>): FilesImage {
  return parsing('files.img', () => {
    const regular: FilesImage['regular'] = new Map()
    const memfdInodes = new Map<number, number>()
    forEachEntry(image, FILES_MAGIC, 'files.img', (from, to) => {
      let type: number | undefined
      let entryId: number | undefined
      let reg: [number, number] | undefined
      let memfd: [number, number] | undefined
      scanFields(image, from, to, (n, value, start, end) => {
        if (n === 1 && value !== undefined) type = Number(BigInt.asIntN(32, BigInt(value)))
        else if (n === 2) entryId = exact(value, 2)
        else if (n === 3) reg = value === undefined ? [start, end] : undefined
        else if (n === 20) memfd = value === undefined ? [start, end] : undefined
      })
      if (type === FD_TYPE_REG && reg) {
        let regId: number | undefined
        let size: number | undefined
        let name: [number, number] | undefined
        scanFields(image, reg[0], reg[1], (n, value, start, end) => {
          if (n === 1) regId = exact(value, 1)
          else if (n === 6) name = value === undefined ? [start, end] : undefined
          else if (n === 8) size = exact(value, 8)
        })
        const id = entryId ?? regId
        if (name && id !== undefined && (!wanted || wanted.has(id))) regular.set(id, { path: image.toString('utf8', name[0], name[1]), size })
      } else if (type === FD_TYPE_MEMFD && memfd) {
        let memfdId: number | undefined
        let inode: number | undefined
        scanFields(image, memfd[0], memfd[1], (n, value) => {
          if (n === 1) memfdId = exact(value, 1)
          else if (n === 5) inode = exact(value, 5)
        })
        const id = entryId ?? memfdId
        if (id !== undefined && inode !== undefined && (!wanted || wanted.has(id))) memfdInodes.set(id, inode)
      }
    })
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
  // Only the files the mappings name: files.img lists every file of the tree, each kept would cost a record.
  const mapped = new Set(mm.vmas.filter((v) => v.status & (VMA.FILE_PRIVATE | VMA.FILE_SHARED | VMA.AREA_MEMFD)).map((v) => v.shmid))
  const files = filesRaw ? filesFromImage(filesRaw, mapped) : { regular: new Map(), memfdInodes: new Map() }
  const memfdRaw = readImageFile(join(imagesDir, 'memfd.img'), false)
  const memfds = memfdRaw ? memfdShmids(files, memfdRaw) : new Map<number, number>()
  return { task, mm, files, memfds }
}

// ------------------------------------------------------------------ lean readers, for images from a bundle

// decodeMessage makes a Map, and a Buffer a field, for every message: for an mm image of minimal VMAs that was 100
// times the image (3.8 MiB took 400 MB), and files.img is the same. The reading commands only need the executable's
// name and the mappings around a few hits: these walk the bytes where they lie and keep nothing a VMA or a file.

/** Each field of the message in buf[from, to): its number, its value when a varint (undefined otherwise), and the
 *  bounds of its bytes when length-delimited. */
export function scanFields(buf: Buffer, from: number, to: number, fn: (n: number, value: number | bigint | undefined, start: number, end: number) => void): void {
  let at = from
  while (at < to) {
    const [keyValue, afterKey] = readVarint(buf, at)
    const key = Number(keyValue)
    const wire = key & 7
    at = afterKey
    let value: number | bigint | undefined
    let start = at
    if (wire === 0) [value, at] = readVarint(buf, at)
    else if (wire === 2 || wire === 1 || wire === 5) {
      let len = wire === 1 ? 8 : 4
      if (wire === 2) {
        const [l, next] = readVarint(buf, at)
        len = Number(l)
        at = start = next
      }
      at += len
    } else throw new ImageFormatError(`unexpected wire type ${wire}`)
    if (at > to) throw new ImageFormatError('truncated field')
    fn(Math.floor(key / 8), value, start, at)
  }
}

/** Each entry of an image (after its magic), as the bounds of its message. */
export function forEachEntry(image: Buffer, magic: number, name: string, fn: (from: number, to: number) => void): void {
  let at = 0
  if (image.length >= 4 && (image.readUInt32LE(0) === IMG_COMMON_MAGIC || image.readUInt32LE(0) === IMG_SERVICE_MAGIC)) at = 4
  if (image.length < at + 4 || image.readUInt32LE(at) !== magic) throw new ImageFormatError(`${name} does not start with its magic`)
  at += 4
  while (at < image.length) {
    if (at + 4 > image.length) throw new ImageFormatError(`${name}: truncated entry size`)
    const end = at + 4 + image.readUInt32LE(at)
    if (end > image.length) throw new ImageFormatError(`${name}: truncated entry`)
    fn(at + 4, end)
    at = end
  }
}

const exact = (v: number | bigint | undefined, n: number): number | undefined => {
  if (typeof v === 'bigint') throw new ImageFormatError(`field ${n} holds ${v}, past 2^53`)
  return v
}

/** The mappings of an mm image, one call each, as mmFromImage reads them (the vsyscall page above 2^53 left out),
 *  in the image's order; none held. */
export function forEachVma(image: Buffer, pid: number, fn: (vma: { start: number; end: number; shmid: number; status: number }) => void): void {
  const name = `mm-${pid}.img`
  parsing(name, () => {
    let first = true
    forEachEntry(image, MM_MAGIC, name, (from, to) => {
      if (!first) return
      first = false
      scanFields(image, from, to, (n, _v, start, end) => {
        if (n !== 14) return
        const raw: (number | bigint | undefined)[] = []
        scanFields(image, start, end, (f, value) => {
          if (f === 1 || f === 2 || f === 4 || f === 7) raw[f] = value
        })
        // Only the vsyscall page lives above 2^53; it is the kernel's, not the process's memory.
        const vStart = raw[1] ?? 0
        if (typeof vStart === 'bigint') return
        fn({ start: vStart, end: required(exact(raw[2], 2), 'a vma end'), shmid: exact(raw[4], 4) ?? 0, status: exact(raw[7], 7) ?? 0 })
      })
    })
  })
}

/** The paths files.img gives the regular files of these ids (the last entry for each, as filesFromImage keeps), in
 *  one pass. */
export function regularFilePaths(image: Buffer, ids: ReadonlySet<number>): Map<number, string> {
  return parsing('files.img', () => {
    const paths = new Map<number, string>()
    forEachEntry(image, FILES_MAGIC, 'files.img', (from, to) => {
      let type: number | undefined
      let entryId: number | undefined
      let reg: [number, number] | undefined
      scanFields(image, from, to, (n, value, start, end) => {
        if (n === 1 && value !== undefined) type = Number(BigInt.asIntN(32, BigInt(value)))
        else if (n === 2) entryId = exact(value, 2)
        else if (n === 3 && value === undefined) reg = [start, end]
      })
      if (type !== FD_TYPE_REG || !reg) return
      let regId: number | undefined
      let name: [number, number] | undefined
      scanFields(image, reg[0], reg[1], (n, value, start, end) => {
        if (n === 1) regId = exact(value, 1)
        else if (n === 6) name = value === undefined ? [start, end] : undefined
      })
      const id = entryId ?? regId
      if (id !== undefined && ids.has(id) && name) paths.set(id, image.toString('utf8', name[0], name[1]))
    })
    return paths
  })
}

/** The executable criu recorded for a process (mm's exe_file_id, named through files.img), read without decoding a
 *  mapping or a file more than it takes; undefined when the images do not say, or cannot be read. */
export function exeOfImages(imagesDir: string, pid: number): string | undefined {
  try {
    const mm = readBoundedRegularFile(join(imagesDir, `mm-${pid}.img`), MAX_IMAGE_BYTES)
    let exeId: number | undefined
    parsing(`mm-${pid}.img`, () => {
      let first = true
      forEachEntry(mm, MM_MAGIC, `mm-${pid}.img`, (from, to) => {
        if (first) scanFields(mm, from, to, (n, value) => void (n === 12 && (exeId = exact(value, 12))))
        first = false
      })
    })
    if (exeId === undefined) return undefined
    return regularFilePaths(readBoundedRegularFile(join(imagesDir, 'files.img'), MAX_IMAGE_BYTES), new Set([exeId])).get(exeId)
  } catch (e) {
    if (e instanceof ImageFormatError || e instanceof BoundedReadError || (e as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw e
  }
}
