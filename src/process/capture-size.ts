// How many bytes a capture of a tree will write, from the pages that are really there: the room check must use what
// will be written, and refuse before the freeze. Address space is not memory: a JVM, MariaDB or a Go program reserves
// hundreds of GiB (MAP_NORESERVE) and touches a little of it, and criu's images, the cores (never-touched memory is a
// hole in them) and the bundle hold only the present and swapped pages.

import { readProcText } from './proc.js'

export interface SmapsMapping {
  start: number
  end: number
  perms: string
  offset: number
  /** "dev:inode": the shared object a shared anonymous mapping or memfd is, the same in every process mapping it. */
  object: string
  path: string
  rssKiB: number
  swapKiB: number
  /** Pages of the mapping that are the process's own (written-to private pages, COW copies of a file's pages). */
  anonymousKiB: number
  /** MADV_DONTDUMP: the program asked that the mapping be left out of cores. */
  dontDump: boolean
}

/** The mappings of /proc/PID/smaps with the counts the estimate needs. */
export function parseSmapsMappings(text: string): SmapsMapping[] {
  const out: SmapsMapping[] = []
  let current: SmapsMapping | undefined
  for (const line of text.split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+)\s+(\S{4})\s+([0-9a-f]+)\s+(\S+)\s+(\d+)\s*(.*)$/.exec(line)
    if (head) {
      current = {
        start: parseInt(head[1]!, 16),
        end: parseInt(head[2]!, 16),
        perms: head[3]!,
        offset: parseInt(head[4]!, 16),
        object: `${head[5]}:${head[6]}`,
        path: head[7]!.trim(),
        rssKiB: 0,
        swapKiB: 0,
        anonymousKiB: 0,
        dontDump: false,
      }
      out.push(current)
      continue
    }
    if (!current) continue
    const field = /^(\w+):\s+(\d+) kB/.exec(line)
    if (field) {
      const kib = Number(field[2])
      if (field[1] === 'Rss') current.rssKiB = kib
      else if (field[1] === 'Swap') current.swapKiB = kib
      else if (field[1] === 'Anonymous') current.anonymousKiB = kib
      continue
    }
    if (line.startsWith('VmFlags:')) current.dontDump = line.split(/\s+/).includes('dd')
  }
  return out
}

const PAGE = 4096
const KERNEL_ONLY = new Set(['[vvar]', '[vsyscall]', '[vvar_vclock]'])

/** Memory no file holds: private or shared anonymous memory, a memfd, SysV shared memory (the kernel names the last
 *  three by a path of their own that no file system shows). */
function isAnonymous(m: SmapsMapping): boolean {
  return m.path === '' || m.path.startsWith('[') || m.path.startsWith('/memfd:') || m.path.startsWith('/dev/zero') || m.path.startsWith('/SYSV')
}

/**
 * Bytes a core of this mapping holds on disk, as the kernel's default coredump_filter, gcore and the core built from
 * the images all write it: anonymous memory's present and swapped pages (the rest is a hole); a private file mapping's
 * whole range once the process wrote to it (the pages it did not write come from the file), or the ELF header page
 * the kernel keeps of a mapped executable or library; nothing of a shared file mapping (the file holds it), of the
 * kernel's own pages, or of what the program asked to be left out.
 */
export function mappingCoreBytes(m: SmapsMapping): number {
  if (m.perms[0] !== 'r' || m.dontDump || KERNEL_ONLY.has(m.path)) return 0
  if (isAnonymous(m)) return (m.rssKiB + m.swapKiB) * 1024
  if (m.perms[3] === 's') return 0
  const length = m.end - m.start
  if (m.anonymousKiB > 0 || m.swapKiB > 0 || m.path.endsWith(' (deleted)')) return length
  return m.offset === 0 ? Math.min(PAGE, length) : 0
}

/**
 * Bytes criu's images hold of this mapping: the process's own pages, present or swapped. Shared anonymous memory
 * and memfds are dumped once for the whole tree, whatever number of processes map them: returned with their object
 * so that the caller counts each once.
 */
export function mappingImageBytes(m: SmapsMapping): { bytes: number; shared?: string } {
  if (KERNEL_ONLY.has(m.path)) return { bytes: 0 }
  if (m.perms[3] === 's') return isAnonymous(m) ? { bytes: (m.rssKiB + m.swapKiB) * 1024, shared: m.object } : { bytes: 0 }
  return { bytes: (m.anonymousKiB + m.swapKiB) * 1024 }
}

export interface CaptureEstimate {
  coreBytes: number
  imageBytes: number
  /** Cores, images and the bundle holding both can all exist at once before the work directory is removed. */
  totalBytes: number
}

/** The estimate from each process's smaps text (as read once by the caller); a process gone meanwhile is left out. */
export function estimateFromSmaps(smaps: Map<number, string>, corePids: Set<number>, checkpoint: boolean): CaptureEstimate {
  let cores = 0
  let images = 0
  const sharedObjects = new Map<string, number>()
  for (const [pid, text] of smaps) {
    for (const m of parseSmapsMappings(text)) {
      if (corePids.has(pid)) cores += mappingCoreBytes(m)
      if (!checkpoint) continue
      const image = mappingImageBytes(m)
      if (image.shared === undefined) images += image.bytes
      else sharedObjects.set(image.shared, Math.max(sharedObjects.get(image.shared) ?? 0, image.bytes))
    }
  }
  for (const bytes of sharedObjects.values()) images += bytes
  const MiB = 1024 * 1024
  return { coreBytes: cores, imageBytes: images, totalBytes: Math.max(64 * MiB, 2 * (cores + images) + 16 * MiB) }
}

/** For every pid: its core (if it gets one) and the memory criu's images will hold (if there is a checkpoint). A
 *  process gone meanwhile counts nothing; one whose smaps cannot be read throws ProcUnreadableError, since the room
 *  check would otherwise pass on a guess. */
export function estimateCapture(pids: number[], corePids: Set<number>, checkpoint: boolean): CaptureEstimate {
  const smaps = new Map<number, string>()
  for (const pid of pids) {
    const text = readProcText(`/proc/${pid}/smaps`)
    if (text !== undefined) smaps.set(pid, text)
  }
  return estimateFromSmaps(smaps, corePids, checkpoint)
}
