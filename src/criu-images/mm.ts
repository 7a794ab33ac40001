// mm-PID.img (mm_entry and its vma_entry list): a process's mappings, its saved auxv, its argv's place and its
// executable's files.img id. Walked where the bytes lie, each mapping straight into its record: decodeMessage's Map
// and Buffers per mapping cost 100 times the image (3.8 MiB of mappings took 400 MB).

import { ImageFormatError } from './errors.js'
import { forEachEntry, MM_MAGIC, parsing } from './image-file.js'
import { MM_ENTRY, VMA_ENTRY } from './proto.js'
import { exact, readVarint, required, scanFields } from './wire.js'

/** vma_entry.status bits (criu/include/image.h), without their VMA_ prefix. */
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

/** The bounds of an mm image's one mm_entry. */
function mmEntry(image: Buffer, name: string): [number, number] {
  let entry: [number, number] | undefined
  forEachEntry(image, MM_MAGIC, name, (from, to) => void (entry ??= [from, to]))
  if (!entry) throw new ImageFormatError('it holds no entry')
  return entry
}

export function mmFromImage(image: Buffer, pid: number): MmState {
  const name = `mm-${pid}.img`
  return parsing(name, () => {
    const entry = mmEntry(image, name)
    const vmas: Vma[] = []
    const auxv: bigint[] = []
    let argStart: number | undefined
    let argEnd: number | undefined
    let exeFileId: number | undefined
    const V = VMA_ENTRY
    const raw: (number | bigint | undefined)[] = []
    scanFields(image, entry[0], entry[1], (n, value, start, end) => {
      if (n === MM_ENTRY.mm_arg_start) argStart = exact(value, n)
      else if (n === MM_ENTRY.mm_arg_end) argEnd = exact(value, n)
      else if (n === MM_ENTRY.exe_file_id) exeFileId = exact(value, n)
      else if (n === MM_ENTRY.mm_saved_auxv) {
        if (value !== undefined) auxv.push(BigInt(value))
        else for (let p = start; p < end; ) {
          const [x, next] = readVarint(image, p)
          auxv.push(BigInt(x))
          p = next
        }
      } else if (n === MM_ENTRY.vmas && value === undefined) {
        if (vmas.length >= MAX_VMAS) throw new ImageFormatError(`it lists more than ${MAX_VMAS} mappings, more than a process can have`)
        raw.fill(undefined)
        scanFields(image, start, end, (f, v) => {
          if (f >= V.start && f <= V.madv) raw[f] = v
        })
        const vStart = raw[V.start] ?? 0
        // Only the vsyscall page lives above 2^53 (0xffffffffff600000); it is the kernel's, not the process's memory.
        if (typeof vStart === 'bigint') return
        const madv = raw[V.madv]
        vmas.push({
          start: vStart,
          end: required(exact(raw[V.end], V.end), 'a vma end'),
          pgoff: exact(raw[V.pgoff], V.pgoff) ?? 0,
          shmid: exact(raw[V.shmid], V.shmid) ?? 0,
          prot: exact(raw[V.prot], V.prot) ?? 0,
          flags: exact(raw[V.flags], V.flags) ?? 0,
          status: exact(raw[V.status], V.status) ?? 0,
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
    const entry = mmEntry(image, name)
    let vmas = 0
    let exeFileId: number | undefined
    scanFields(image, entry[0], entry[1], (n, value) => {
      if (n === MM_ENTRY.exe_file_id) exeFileId = exact(value, n)
      else if (n === MM_ENTRY.vmas && value === undefined) vmas++
    })
    return { vmas, exeFileId }
  })
}

/** The executable's files.img id (mm_entry.exe_file_id) of an mm image, its mappings skipped, not decoded. */
export function mmExeFileId(image: Buffer, pid: number): number | undefined {
  const name = `mm-${pid}.img`
  let exeId: number | undefined
  parsing(name, () => {
    let first = true
    forEachEntry(image, MM_MAGIC, name, (from, to) => {
      if (first) scanFields(image, from, to, (n, value) => void (n === MM_ENTRY.exe_file_id && (exeId = exact(value, n))))
      first = false
    })
  })
  return exeId
}

/** The mappings of an mm image, one call each, as mmFromImage reads them (the vsyscall page above 2^53 left out),
 *  in the image's order; none held. */
export function forEachVma(image: Buffer, pid: number, fn: (vma: { start: number; end: number; shmid: number; status: number }) => void): void {
  const name = `mm-${pid}.img`
  const V = VMA_ENTRY
  parsing(name, () => {
    let first = true
    forEachEntry(image, MM_MAGIC, name, (from, to) => {
      if (!first) return
      first = false
      scanFields(image, from, to, (n, _v, start, end) => {
        if (n !== MM_ENTRY.vmas) return
        const raw: (number | bigint | undefined)[] = []
        scanFields(image, start, end, (f, value) => {
          if (f === V.start || f === V.end || f === V.shmid || f === V.status) raw[f] = value
        })
        // Only the vsyscall page lives above 2^53; it is the kernel's, not the process's memory.
        const vStart = raw[V.start] ?? 0
        if (typeof vStart === 'bigint') return
        fn({ start: vStart, end: required(exact(raw[V.end], V.end), 'a vma end'), shmid: exact(raw[V.shmid], V.shmid) ?? 0, status: exact(raw[V.status], V.status) ?? 0 })
      })
    })
  })
}
