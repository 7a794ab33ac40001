// What crit (CRIU's own image decoder) makes of an image, turned into the records snap's readers make
// (src/criu-images/): the reference the e2e tests hold snap's protobuf readers to, on real images. The product never
// runs crit.

import { execa } from 'execa'
import { USER_REGS, type FpRegs, type ThreadState } from '../../src/criu-images/core-entry.js'
import { VMA, type MmState, type Vma } from '../../src/criu-images/mm.js'
import { PE, type Pagemap } from '../../src/criu-images/pagemap.js'
import { CRIU_ENUMS, CRIU_MESSAGES, type MessageName } from '../../src/criu-images/proto.js'
import type { TaskTree } from '../../src/criu-images/pstree.js'

export const CRIT = '/opt/procsnap/bin/crit'

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

export async function decodeImage(file: string, crit = CRIT): Promise<DecodedImage> {
  const { stdout } = await execa(crit, ['decode', '-i', file], { timeout: 60_000, maxBuffer: 512 << 20, stdin: 'ignore' })
  const parsed = parseCritJson(stdout) as Partial<DecodedImage>
  if (typeof parsed?.magic !== 'string' || !Array.isArray(parsed.entries)) throw new Error(`crit decode of ${file} did not print an image`)
  return parsed as DecodedImage
}

export interface DecodedImage {
  magic: string
  entries: Record<string, unknown>[]
}

// ------------------------------------------------------------------ value helpers

/** A uint64 from crit: a number, a bigint (see parseCritJson) or a "0x..." string (fields marked hex). */
export function u64(value: unknown, what: string): bigint {
  if (typeof value === 'bigint') return value
  if (typeof value === 'number' && Number.isInteger(value)) return BigInt(value)
  if (typeof value === 'string' && /^(0x[0-9a-f]+|\d+)$/i.test(value)) return BigInt(value)
  throw new Error(`unexpected value for ${what}: ${JSON.stringify(String(value))}`)
}

/** An address or size that must fit a JS number exactly (every user-space address on x86_64 does). */
export function safeNumber(value: unknown, what: string): number {
  const big = u64(value, what)
  if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`${what} ${big} is past 2^53`)
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
        else throw new Error(`unknown flag ${name} in ${what}`)
      } else flags |= bit
    }
    return flags
  }
  throw new Error(`unexpected flags for ${what}: ${JSON.stringify(value)}`)
}

function record(value: unknown, what: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error(`${what} is missing`)
  return value as Record<string, unknown>
}

/**
 * crit's JSON of a CRIU message, whose fields read only by the names snap's definitions give them
 * (src/criu-images/proto.ts, held to CRIU's by test/unit/criu-proto.test.ts): the reference and snap's readers name the
 * same fields, and a name snap does not define fails here instead of reading as absent.
 */
function named(message: MessageName, value: Record<string, unknown>): Record<string, unknown> {
  const fields = CRIU_MESSAGES[message] as Record<string, unknown>
  return new Proxy(value, {
    get(target, prop, receiver) {
      if (typeof prop === 'string' && !(prop in fields)) throw new Error(`${message}.${prop} is not among the fields snap defines`)
      return Reflect.get(target, prop, receiver)
    },
  })
}

/** A message field of crit's JSON, when present. */
function nested(message: MessageName, value: unknown): Record<string, unknown> | undefined {
  return value && typeof value === 'object' && !Array.isArray(value) ? named(message, value as Record<string, unknown>) : undefined
}

/** An enum value as crit prints it (its name), checked to be one snap defines. */
function enumName<E extends keyof typeof CRIU_ENUMS>(type: E, name: keyof (typeof CRIU_ENUMS)[E] & string): string {
  if (!(name in CRIU_ENUMS[type])) throw new Error(`${name} is not among the values of ${type} snap defines`)
  return name
}

function numberArray(value: unknown, what: string): number[] {
  if (!Array.isArray(value)) throw new Error(`${what} is not a list`)
  return value.map((v, i) => safeNumber(v, `${what}[${i}]`))
}

/** A repeated uint64 field of crit's JSON, or undefined when the image does not have it. */
function u64Array(value: unknown, what: string): bigint[] | undefined {
  if (value === undefined) return undefined
  if (!Array.isArray(value)) throw new Error(`${what} is not a list`)
  return value.map((v, i) => u64(v, `${what}[${i}]`))
}

export function taskFromPstree(image: DecodedImage, pid: number): TaskTree {
  const entries = image.entries.map((e) => named('pstree_entry', e))
  const entry = entries.find((e) => Number(e.pid) === pid)
  if (!entry) {
    const pids = entries.map((e) => e.pid).join(', ')
    throw new Error(`pid ${pid} is not in pstree.img (it holds ${pids || 'no task'})`)
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

/** A thread's state from crit's JSON of its core-TID.img. writeCoreFromImages reads those images itself
 *  (src/criu-images/core-entry.ts, one python start-up per thread is too slow); this is the reference the e2e test holds it to. */
export function threadFromCore(image: DecodedImage, tid: number): ThreadState {
  const entry = named('core_entry', record(image.entries[0], `core-${tid}.img entry`))
  if (entry.mtype !== enumName('core_entry.march', 'X86_64')) throw new Error(`core-${tid}.img is for ${String(entry.mtype)}; only X86_64 is supported`)
  const info = named('thread_info_x86', record(entry.thread_info, `core-${tid}.img thread_info`))
  const gp = named('user_x86_regs_entry', record(info.gpregs, `core-${tid}.img gpregs`))
  if (gp.mode !== undefined && gp.mode !== enumName('user_x86_regs_mode', 'NATIVE')) {
    throw new Error(`thread ${tid} is a ${String(gp.mode)} (32-bit) task; only 64-bit tasks are supported`)
  }
  const regs = USER_REGS.map((name) => u64(gp[name], `thread ${tid} register ${name}`))

  let fpregs: FpRegs | undefined
  if (info.fpregs && typeof info.fpregs === 'object') {
    const fp = named('user_x86_fpregs_entry', info.fpregs as Record<string, unknown>)
    const xsave = nested('user_x86_xsave_entry', fp.xsave)
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
  const tc = nested('task_core_entry', entry.tc) ?? named('task_core_entry', {})
  const threadCore = nested('thread_core_entry', entry.thread_core) ?? named('thread_core_entry', {})
  const blockedRaw = threadCore.blk_sigset ?? tc.blk_sigset ?? 0
  const credsRaw = nested('creds_entry', threadCore.creds)
  return {
    tid,
    regs,
    fpregs,
    blocked: u64(blockedRaw, 'blk_sigset'),
    comm: typeof threadCore.comm === 'string' ? threadCore.comm : typeof tc.comm === 'string' ? tc.comm : undefined,
    creds: credsRaw ? { uid: safeNumber(credsRaw.uid ?? 0, 'uid'), gid: safeNumber(credsRaw.gid ?? 0, 'gid') } : undefined,
  }
}

const STATUS_NAMES: Record<string, number> = Object.fromEntries(Object.entries(VMA).map(([k, v]) => [`VMA_${k}`, v]))
const PROT_NAMES: Record<string, number> = { PROT_READ: 1, PROT_WRITE: 2, PROT_EXEC: 4 }
const MAP_NAMES: Record<string, number> = { MAP_SHARED: 1, MAP_PRIVATE: 2, MAP_ANON: 0x20, MAP_GROWSDOWN: 0x100 }

export function mmFromImage(image: DecodedImage, pid: number): MmState {
  const entry = named('mm_entry', record(image.entries[0], `mm-${pid}.img entry`))
  const vmasRaw = entry.vmas
  if (!Array.isArray(vmasRaw)) throw new Error(`mm-${pid}.img has no VMA list`)
  const vmas: Vma[] = []
  for (const [i, raw] of vmasRaw.entries()) {
    const v = named('vma_entry', record(raw, `vma ${i}`))
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

const PE_NAMES: Record<string, number> = { PE_PARENT: PE.PARENT, PE_LAZY: PE.LAZY, PE_PRESENT: PE.PRESENT }

export function pagemapFromImage(image: DecodedImage, file: string): Pagemap {
  const head = nested('pagemap_head', image.entries[0])
  const rest = image.entries.slice(1)
  if (!head || head.pages_id === undefined) throw new Error(`${file} has no pagemap head (pages_id)`)
  const runs = rest.map((raw, i) => {
    const e = named('pagemap_entry', record(raw, `${file} entry ${i}`))
    let flags = flagsValue(e.flags, PE_NAMES, `${file} flags`)
    // Images from before CRIU 3 have no flags, only in_parent.
    if (e.flags === undefined) flags = e.in_parent === true ? PE.PARENT : PE.PRESENT
    return { vaddr: safeNumber(e.vaddr, `${file} vaddr`), pages: safeNumber(e.nr_pages, `${file} nr_pages`), flags }
  })
  return { pagesId: safeNumber(head.pages_id, `${file} pages_id`), runs }
}

/** Paths of regular files by their files.img id (the id a file VMA's shmid names). */
export function regularFilePaths(image: DecodedImage): Map<number, { path: string; size?: number }> {
  const paths = new Map<number, { path: string; size?: number }>()
  for (const raw of image.entries) {
    const entry = named('file_entry', raw)
    const reg = nested('reg_file_entry', entry.reg)
    if (entry.type !== enumName('fd_types', 'REG') || !reg || typeof reg.name !== 'string') continue
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
  for (const inode of memfds.entries.map((e) => named('memfd_inode_entry', e))) {
    if (inode.inode_id !== undefined && inode.shmid !== undefined) {
      byInode.set(safeNumber(inode.inode_id, 'memfd inode_id'), safeNumber(inode.shmid, 'memfd shmid'))
    }
  }
  const byFile = new Map<number, number>()
  for (const raw of files.entries) {
    const entry = named('file_entry', raw)
    const memfd = nested('memfd_file_entry', entry.memfd)
    if (entry.type !== enumName('fd_types', 'MEMFD') || !memfd || memfd.inode_id === undefined) continue
    const shmid = byInode.get(safeNumber(memfd.inode_id, 'memfd inode_id'))
    if (shmid !== undefined) byFile.set(safeNumber(entry.id ?? memfd.id, 'file id'), shmid)
  }
  return byFile
}
