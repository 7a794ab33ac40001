// How many bytes a capture of a tree will write, from the mappings a core holds and the memory criu dumps: the room
// check must use what will be written (a JVM's 104 MB RSS gave a 2.9 GB core), and refuse before the freeze.

import { readProcText } from './proc.js'

export interface MappingLine {
  start: bigint
  end: bigint
  perms: string
  path: string
}

export function parseMaps(text: string): MappingLine[] {
  const out: MappingLine[] = []
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+)\s+(\S{4})\s+\S+\s+\S+\s+\d+\s*(.*)$/.exec(line)
    if (!m) continue
    out.push({ start: BigInt('0x' + m[1]), end: BigInt('0x' + m[2]), perms: m[3]!, path: m[4]!.trim() })
  }
  return out
}

/**
 * Bytes gcore writes for these mappings: every readable mapping that is anonymous or writable (gdb reads the rest from
 * the files). Inaccessible reservations (---p, a JVM's heap reserve) and the kernel's [vvar]/[vsyscall] are left out.
 */
export function coreBytes(maps: MappingLine[]): number {
  let total = 0n
  for (const m of maps) {
    if (m.perms[0] !== 'r') continue
    if (m.path === '[vvar]' || m.path === '[vsyscall]' || m.path === '[vvar_vclock]') continue
    const anonymous = m.path === '' || m.path.startsWith('[') || m.path.endsWith(' (deleted)')
    if (anonymous || m.perms[1] === 'w') total += m.end - m.start
  }
  return Number(total)
}

export interface CaptureEstimate {
  coreBytes: number
  imageBytes: number
  /** Cores, images and the bundle holding both can all exist at once before the work directory is removed. */
  totalBytes: number
}

/** For every pid: its core (if it gets one) and its resident memory in criu's pages (if there is a checkpoint). A
 *  process gone meanwhile counts nothing; one whose maps or status cannot be read throws ProcUnreadableError, since the
 *  room check would otherwise pass on a guess. */
export function estimateCapture(pids: number[], corePids: Set<number>, checkpoint: boolean): CaptureEstimate {
  let cores = 0
  let images = 0
  for (const pid of pids) {
    const maps = readProcText(`/proc/${pid}/maps`)
    const status = maps === undefined ? undefined : readProcText(`/proc/${pid}/status`)
    if (maps === undefined || status === undefined) continue
    if (corePids.has(pid)) cores += coreBytes(parseMaps(maps))
    const rss = /^VmRSS:\s*(\d+)/m.exec(status)
    if (checkpoint && rss) images += Number(rss[1]) * 1024
  }
  const MiB = 1024 * 1024
  return { coreBytes: cores, imageBytes: images, totalBytes: Math.max(64 * MiB, 2 * (cores + images) + 16 * MiB) }
}
