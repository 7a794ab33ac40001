// Reads the per-process CRIU images a core needs (pstree, mm, pagemap, files, memfd) through `crit decode`, and turns
// crit's JSON into typed, checked records. pages-N.img is never decoded (page-index.ts reads it raw), nor are the
// per-thread core-TID.img files in production (core-image.ts reads those; threadFromCore is its reference).

import { existsSync } from 'node:fs'
import { delimiter, join } from 'node:path'
import { execa } from 'execa'
import { CoreBuildError } from './errors.js'
import { isExecutableFile, PREFIX_BIN } from '../tools/locate.js'

/** Where scripts/setup.sh installs crit; `crit` on PATH otherwise. */
/** crit from the same CRIU as snap's criu, installed beside it (see PREFIX_BIN). */
export const DEFAULT_CRIT = join(PREFIX_BIN, 'crit')

export function resolveCrit(crit?: string): string {
  if (crit) return crit
  return existsSync(DEFAULT_CRIT) ? DEFAULT_CRIT : 'crit'
}

/** Whether a crit is there to decode images: snap's own, or one on PATH. Decided without running anything. */
export function critFound(): boolean {
  if (existsSync(DEFAULT_CRIT)) return true
  return (process.env.PATH ?? '').split(delimiter).some((dir) => dir !== '' && isExecutableFile(join(dir, 'crit')))
}

export interface DecodedImage {
  magic: string
  entries: Record<string, unknown>[]
}

/**
 * JSON.parse that keeps 64-bit integers exact: crit prints uint64 fields (addresses, auxv values, rlimits) as bare
 * numbers, and anything past 2^53 would silently lose its low bits as a double.
 */
export function parseCritJson(text: string): unknown {
  return JSON.parse(text, (_key, value: unknown, context?: { source?: string }) =>
    typeof value === 'number' && !Number.isSafeInteger(value) && context?.source !== undefined && /^-?\d+$/.test(context.source)
      ? BigInt(context.source)
      : value,
  )
}

export async function decodeImage(crit: string, file: string, timeoutMs = 60_000): Promise<DecodedImage> {
  let stdout: string
  try {
    ;({ stdout } = await execa(crit, ['decode', '-i', file], { timeout: timeoutMs, maxBuffer: 512 << 20, stdin: 'ignore' }))
  } catch (error) {
    const detail = (error as { stderr?: string; shortMessage?: string }).stderr?.trim().split('\n').at(-1)
    throw new CoreBuildError(`crit could not decode ${file}: ${detail || (error as Error).message}`, { cause: error })
  }
  const parsed = parseCritJson(stdout) as Partial<DecodedImage>
  if (typeof parsed?.magic !== 'string' || !Array.isArray(parsed.entries)) {
    throw new CoreBuildError(`crit decode of ${file} did not print an image (no magic/entries)`)
  }
  return parsed as DecodedImage
}

// ------------------------------------------------------------------ value helpers

/** A uint64 from crit: a number, a bigint (see parseCritJson) or a "0x..." string (fields marked hex). */
export function u64(value: unknown, what: string): bigint {
  if (typeof value === 'bigint') return value
  if (typeof value === 'number' && Number.isInteger(value)) return BigInt(value)
  if (typeof value === 'string' && /^(0x[0-9a-f]+|\d+)$/i.test(value)) return BigInt(value)
  throw new CoreBuildError(`unexpected value for ${what}: ${JSON.stringify(String(value))}`)
}

/** An address or size that must fit a JS number exactly (every user-space address on x86_64 does). */
export function safeNumber(value: unknown, what: string): number {
  const big = u64(value, what)
  if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new CoreBuildError(`${what} ${big} is past 2^53`)
  return Number(big)
}

/** Flags crit may print as a number or, for fields marked as flags, as "A | B" names. */
export function flagsValue(value: unknown, names: Record<string, number>, what: string): number {
  if (value === undefined) return 0
  if (typeof value === 'number') return value
  if (typeof value === 'string') {
    let flags = 0
    for (const name of value.split('|').map((s) => s.trim()).filter(Boolean)) {
      const bit = names[name]
      if (bit === undefined) {
        if (/^(0x[0-9a-f]+|\d+)$/i.test(name)) flags |= Number(name)
        else throw new CoreBuildError(`unknown flag ${name} in ${what}`)
      } else flags |= bit
    }
    return flags
  }
  throw new CoreBuildError(`unexpected flags for ${what}: ${JSON.stringify(value)}`)
}

function record(value: unknown, what: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new CoreBuildError(`${what} is missing`)
  return value as Record<string, unknown>
}

function numberArray(value: unknown, what: string): number[] {
  if (!Array.isArray(value)) throw new CoreBuildError(`${what} is not a list`)
  return value.map((v, i) => safeNumber(v, `${what}[${i}]`))
}

/** A repeated uint64 field of crit's JSON, or undefined when the image does not have it. */
function u64Array(value: unknown, what: string): bigint[] | undefined {
  if (value === undefined) return undefined
  if (!Array.isArray(value)) throw new CoreBuildError(`${what} is not a list`)
  return value.map((v, i) => u64(v, `${what}[${i}]`))
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

export function taskFromPstree(image: DecodedImage, pid: number): TaskTree {
  const entry = image.entries.find((e) => Number(e.pid) === pid)
  if (!entry) {
    const pids = image.entries.map((e) => e.pid).join(', ')
    throw new CoreBuildError(`pid ${pid} is not in pstree.img (it holds ${pids || 'no task'})`)
  }
  const threads = numberArray(entry.threads ?? [pid], 'pstree threads')
  // gdb makes the first NT_PRSTATUS its current thread: the main thread goes first, as in a kernel core.
  const ordered = [pid, ...threads.filter((tid) => tid !== pid)]
  return {
    pid,
    ppid: safeNumber(entry.ppid ?? 0, 'ppid'),
    pgid: safeNumber(entry.pgid ?? 0, 'pgid'),
    sid: safeNumber(entry.sid ?? 0, 'sid'),
    threads: ordered,
  }
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

/** A thread's state from crit's JSON of its core-TID.img. writeCoreFromImages reads those images itself
 *  (core-image.ts, one python start-up per thread is too slow); this is the reference the e2e test holds it to. */
export function threadFromCore(image: DecodedImage, tid: number): ThreadState {
  const entry = record(image.entries[0], `core-${tid}.img entry`)
  if (entry.mtype !== 'X86_64') throw new CoreBuildError(`core-${tid}.img is for ${String(entry.mtype)}; only X86_64 is supported`)
  const info = record(entry.thread_info, `core-${tid}.img thread_info`)
  const gp = record(info.gpregs, `core-${tid}.img gpregs`)
  if (gp.mode !== undefined && gp.mode !== 'NATIVE') {
    throw new CoreBuildError(`thread ${tid} is a ${String(gp.mode)} (32-bit) task; only 64-bit tasks are supported`)
  }
  const regs = USER_REGS.map((name) => u64(gp[name], `thread ${tid} register ${name}`))

  let fpregs: FpRegs | undefined
  if (info.fpregs && typeof info.fpregs === 'object') {
    const fp = info.fpregs as Record<string, unknown>
    const xsave = fp.xsave && typeof fp.xsave === 'object' ? (fp.xsave as Record<string, unknown>) : undefined
    fpregs = {
      cwd: safeNumber(fp.cwd ?? 0, 'cwd'),
      swd: safeNumber(fp.swd ?? 0, 'swd'),
      twd: safeNumber(fp.twd ?? 0, 'twd'),
      fop: safeNumber(fp.fop ?? 0, 'fop'),
      rip: u64(fp.rip ?? 0, 'fpregs rip'),
      rdp: u64(fp.rdp ?? 0, 'fpregs rdp'),
      mxcsr: safeNumber(fp.mxcsr ?? 0, 'mxcsr'),
      mxcsrMask: safeNumber(fp.mxcsr_mask ?? 0, 'mxcsr_mask'),
      stSpace: numberArray(fp.st_space ?? [], 'st_space'),
      xmmSpace: numberArray(fp.xmm_space ?? [], 'xmm_space'),
      xstateBv: xsave?.xstate_bv !== undefined ? u64(xsave.xstate_bv, 'xstate_bv') : undefined,
      ymmhSpace: Array.isArray(xsave?.ymmh_space) ? numberArray(xsave.ymmh_space, 'ymmh_space') : undefined,
      bndregState: u64Array(xsave?.bndreg_state, 'bndreg_state'),
      bndcsrState: u64Array(xsave?.bndcsr_state, 'bndcsr_state'),
      opmaskReg: u64Array(xsave?.opmask_reg, 'opmask_reg'),
      zmmUpper: u64Array(xsave?.zmm_upper, 'zmm_upper'),
      hi16Zmm: u64Array(xsave?.hi16_zmm, 'hi16_zmm'),
      pkru: Array.isArray(xsave?.pkru) ? numberArray(xsave.pkru, 'pkru') : undefined,
    }
  }

  // The main thread keeps its blocked mask in tc, the others in thread_core.
  const tc = entry.tc && typeof entry.tc === 'object' ? (entry.tc as Record<string, unknown>) : {}
  const threadCore = entry.thread_core && typeof entry.thread_core === 'object' ? (entry.thread_core as Record<string, unknown>) : {}
  const blockedRaw = threadCore.blk_sigset ?? tc.blk_sigset ?? 0
  const credsRaw = threadCore.creds && typeof threadCore.creds === 'object' ? (threadCore.creds as Record<string, unknown>) : undefined
  return {
    tid,
    regs,
    fpregs,
    blocked: u64(blockedRaw, 'blk_sigset'),
    comm: typeof threadCore.comm === 'string' ? threadCore.comm : typeof tc.comm === 'string' ? tc.comm : undefined,
    creds: credsRaw ? { uid: safeNumber(credsRaw.uid ?? 0, 'uid'), gid: safeNumber(credsRaw.gid ?? 0, 'gid') } : undefined,
  }
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

const STATUS_NAMES: Record<string, number> = Object.fromEntries(Object.entries(VMA).map(([k, v]) => [`VMA_${k}`, v]))
const PROT_NAMES: Record<string, number> = { PROT_READ: 1, PROT_WRITE: 2, PROT_EXEC: 4 }
const MAP_NAMES: Record<string, number> = { MAP_SHARED: 1, MAP_PRIVATE: 2, MAP_ANON: 0x20, MAP_GROWSDOWN: 0x100 }
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

export function mmFromImage(image: DecodedImage, pid: number): MmState {
  const entry = record(image.entries[0], `mm-${pid}.img entry`)
  const vmasRaw = entry.vmas
  if (!Array.isArray(vmasRaw)) throw new CoreBuildError(`mm-${pid}.img has no VMA list`)
  const vmas: Vma[] = []
  for (const [i, raw] of vmasRaw.entries()) {
    const v = record(raw, `vma ${i}`)
    const start = u64(v.start, 'vma start')
    // Only the vsyscall page lives above 2^53 (0xffffffffff600000); it is the kernel's, not the process's memory.
    if (start > BigInt(Number.MAX_SAFE_INTEGER)) continue
    vmas.push({
      start: Number(start),
      end: safeNumber(v.end, 'vma end'),
      pgoff: safeNumber(v.pgoff ?? 0, 'vma pgoff'),
      shmid: safeNumber(v.shmid ?? 0, 'vma shmid'),
      prot: flagsValue(v.prot, PROT_NAMES, 'vma prot'),
      flags: flagsValue(v.flags, MAP_NAMES, 'vma flags'),
      status: flagsValue(v.status, STATUS_NAMES, 'vma status'),
      madv: v.madv === undefined ? 0n : u64(v.madv, 'vma madv'),
    })
  }
  vmas.sort((a, b) => a.start - b.start)
  const auxvRaw = Array.isArray(entry.mm_saved_auxv) ? entry.mm_saved_auxv : []
  return {
    vmas,
    auxv: auxvRaw.map((v, i) => u64(v, `auxv[${i}]`)),
    argStart: safeNumber(entry.mm_arg_start ?? 0, 'mm_arg_start'),
    argEnd: safeNumber(entry.mm_arg_end ?? 0, 'mm_arg_end'),
    exeFileId: entry.exe_file_id === undefined ? undefined : safeNumber(entry.exe_file_id, 'exe_file_id'),
  }
}

// ------------------------------------------------------------------ pagemap-*.img

/** PagemapEntry.flags (criu/include/pagemap.h). */
export const PE = { PARENT: 1 << 0, LAZY: 1 << 1, PRESENT: 1 << 2 } as const
const PE_NAMES: Record<string, number> = { PE_PARENT: PE.PARENT, PE_LAZY: PE.LAZY, PE_PRESENT: PE.PRESENT }

export interface PagemapRun {
  vaddr: number
  pages: number
  flags: number
}

export interface Pagemap {
  pagesId: number
  runs: PagemapRun[]
}

export function pagemapFromImage(image: DecodedImage, file: string): Pagemap {
  const [head, ...rest] = image.entries
  if (!head || head.pages_id === undefined) throw new CoreBuildError(`${file} has no pagemap head (pages_id)`)
  const runs = rest.map((raw, i) => {
    const e = record(raw, `${file} entry ${i}`)
    let flags = flagsValue(e.flags, PE_NAMES, `${file} flags`)
    // Images from before CRIU 3 have no flags, only in_parent.
    if (e.flags === undefined) flags = e.in_parent === true ? PE.PARENT : PE.PRESENT
    return { vaddr: safeNumber(e.vaddr, `${file} vaddr`), pages: safeNumber(e.nr_pages, `${file} nr_pages`), flags }
  })
  return { pagesId: safeNumber(head.pages_id, `${file} pages_id`), runs }
}

// ------------------------------------------------------------------ files.img, memfd.img

/** Paths of regular files by their files.img id (the id a file VMA's shmid names). */
export function regularFilePaths(image: DecodedImage): Map<number, { path: string; size?: number }> {
  const paths = new Map<number, { path: string; size?: number }>()
  for (const entry of image.entries) {
    const reg = entry.reg && typeof entry.reg === 'object' ? (entry.reg as Record<string, unknown>) : undefined
    if (entry.type !== 'REG' || !reg || typeof reg.name !== 'string') continue
    const id = safeNumber(entry.id ?? reg.id, 'file id')
    paths.set(id, { path: reg.name, size: reg.size === undefined ? undefined : safeNumber(reg.size, 'file size') })
  }
  return paths
}

/**
 * For memfd files (CRIU 4 dumps MAP_SHARED|MAP_ANONYMOUS memory as one too), the shmem id whose
 * pagemap-shmem-ID.img holds the contents, by files.img id: files.img names an inode_id, memfd.img maps it to a shmid.
 */
export function memfdShmids(files: DecodedImage, memfds: DecodedImage): Map<number, number> {
  const byInode = new Map<number, number>()
  for (const inode of memfds.entries) {
    if (inode.inode_id !== undefined && inode.shmid !== undefined) {
      byInode.set(safeNumber(inode.inode_id, 'memfd inode_id'), safeNumber(inode.shmid, 'memfd shmid'))
    }
  }
  const byFile = new Map<number, number>()
  for (const entry of files.entries) {
    const memfd = entry.memfd && typeof entry.memfd === 'object' ? (entry.memfd as Record<string, unknown>) : undefined
    if (entry.type !== 'MEMFD' || !memfd || memfd.inode_id === undefined) continue
    const shmid = byInode.get(safeNumber(memfd.inode_id, 'memfd inode_id'))
    if (shmid !== undefined) byFile.set(safeNumber(entry.id ?? memfd.id, 'file id'), shmid)
  }
  return byFile
}
