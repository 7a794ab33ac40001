// The PT_NOTE contents of the core, from what CRIU recorded: NT_PRPSINFO for the process; NT_PRSTATUS,
// NT_FPREGSET and NT_X86_XSTATE per thread (the main thread first: gdb makes it the current thread); NT_AUXV;
// NT_FILE. Struct layouts are the x86_64 kernel's (include/linux/elfcore.h, asm/user_64.h).

import {
  NT_AUXV, NT_FILE, NT_FPREGSET, NT_PRPSINFO, NT_PRSTATUS, NT_X86_XSTATE, PAGE_SIZE, align4, note,
} from './elf.js'
import type { FpRegs, ThreadState } from '../criu-images/core-entry.js'
import type { TaskTree } from '../criu-images/pstree.js'

const PRSTATUS_SIZE = 336
const PR_REG_OFFSET = 112
const PRPSINFO_SIZE = 136
const FPREGS_SIZE = 512
const XSAVE_HEADER_OFFSET = 512
/** gdb and the kernel keep XCR0 in the legacy area's software-reserved bytes (fxsave offset 464). */
const XSAVE_SW_XCR0_OFFSET = 464

/** XCR0 bits of the user state components CRIU records (arch/x86/include/asm/fpu/types.h). */
const XFEATURE = { X87: 1n << 0n, SSE: 1n << 1n, YMM: 1n << 2n, BNDREGS: 1n << 3n, BNDCSR: 1n << 4n, OPMASK: 1n << 5n, ZMM_HI256: 1n << 6n, HI16_ZMM: 1n << 7n, PKRU: 1n << 9n }
const AVX512 = XFEATURE.OPMASK | XFEATURE.ZMM_HI256 | XFEATURE.HI16_ZMM

/**
 * Where each component sits in the note: the standard (uncompacted) XSAVE layout of Intel CPUs, for every CPU.
 * Readers do not ask the CPU: gdb picks the layout from the pair (XCR0, note size), and knows AMD's own layout only
 * with PKRU (2440 bytes); an AMD CPU with AVX-512 and no PKRU (XCR0 0xe7, a 2432-byte kernel buffer) matches none
 * of its layouts, and gdb then shows no AVX-512 state at all. In Intel's layout every (XCR0, size) pair is one gdb
 * knows, and a core rebuilt from the same images on any host is the same bytes.
 */
const LAYOUT = { ymmh: 576, bndregs: 960, bndcsr: 1024, opmask: 1088, zmmHi256: 1152, hi16Zmm: 1664, pkru: 2688 }
export const XSTATE_MAX_SIZE = 2696

/** The note's size for an XCR0: the end of its last component, as gdb expects it for that XCR0. */
function xstateSize(xcr0: bigint): number {
  if (xcr0 & XFEATURE.PKRU) return 2696
  if (xcr0 & AVX512) return 2688
  if (xcr0 & (XFEATURE.BNDREGS | XFEATURE.BNDCSR)) return 1088
  return 832
}

export function prstatus(task: TaskTree, thread: ThreadState): Buffer {
  const b = Buffer.alloc(PRSTATUS_SIZE)
  // pr_info and pr_cursig stay 0, as in a gcore core: the process was stopped, not killed by a signal.
  b.writeBigUInt64LE(0n, 16) // pr_sigpend: CRIU keeps pending signals as siginfo lists, not as a mask
  b.writeBigUInt64LE(thread.blocked, 24) // pr_sighold
  b.writeInt32LE(thread.tid, 32)
  b.writeInt32LE(task.ppid, 36)
  b.writeInt32LE(task.pgid, 40)
  b.writeInt32LE(task.sid, 44)
  thread.regs.forEach((value, i) => b.writeBigUInt64LE(BigInt.asUintN(64, value), PR_REG_OFFSET + i * 8))
  b.writeInt32LE(thread.fpregs ? 1 : 0, 328) // pr_fpvalid
  return b
}

/** struct user_fpregs_struct: the FXSAVE image. */
function fxsave(fp: FpRegs): Buffer {
  const b = Buffer.alloc(FPREGS_SIZE)
  b.writeUInt16LE(fp.cwd & 0xffff, 0)
  b.writeUInt16LE(fp.swd & 0xffff, 2)
  b.writeUInt16LE(fp.twd & 0xffff, 4) // the abridged tag word FXSAVE stores
  b.writeUInt16LE(fp.fop & 0xffff, 6)
  b.writeBigUInt64LE(BigInt.asUintN(64, fp.rip), 8)
  b.writeBigUInt64LE(BigInt.asUintN(64, fp.rdp), 16)
  b.writeUInt32LE(fp.mxcsr >>> 0, 24)
  b.writeUInt32LE(fp.mxcsrMask >>> 0, 28)
  fp.stSpace.slice(0, 32).forEach((word, i) => b.writeUInt32LE(word >>> 0, 32 + i * 4))
  fp.xmmSpace.slice(0, 64).forEach((word, i) => b.writeUInt32LE(word >>> 0, 160 + i * 4))
  return b
}

export function fpregset(fp: FpRegs): Buffer {
  return fxsave(fp)
}

/**
 * NT_X86_XSTATE: x87 and SSE, then every component CRIU recorded (AVX, MPX, AVX-512, PKRU), in the layout above.
 * XCR0 is rebuilt from which components the image has (CRIU stores one only when the dumping CPU has the feature);
 * xstate_bv is the thread's own, so a component in its initial state reads as such. Undefined when the image has
 * no xsave part.
 */
export function xstate(fp: FpRegs): Buffer | undefined {
  if (!fp.ymmhSpace || fp.xstateBv === undefined) return undefined
  let xcr0 = XFEATURE.X87 | XFEATURE.SSE | XFEATURE.YMM
  if (fp.bndregState) xcr0 |= XFEATURE.BNDREGS
  if (fp.bndcsrState) xcr0 |= XFEATURE.BNDCSR
  if (fp.opmaskReg && fp.zmmUpper && fp.hi16Zmm) xcr0 |= AVX512
  if (fp.pkru) xcr0 |= XFEATURE.PKRU
  const b = Buffer.alloc(xstateSize(xcr0))
  fxsave(fp).copy(b, 0)
  b.writeBigUInt64LE(xcr0, XSAVE_SW_XCR0_OFFSET)
  b.writeBigUInt64LE(fp.xstateBv & xcr0, XSAVE_HEADER_OFFSET)
  const u32s = (words: number[] | undefined, at: number, count: number) =>
    words?.slice(0, count).forEach((w, i) => b.writeUInt32LE(w >>> 0, at + i * 4))
  const u64s = (words: bigint[] | undefined, at: number, count: number) =>
    words?.slice(0, count).forEach((w, i) => b.writeBigUInt64LE(BigInt.asUintN(64, w), at + i * 8))
  u32s(fp.ymmhSpace, LAYOUT.ymmh, 64)
  u64s(fp.bndregState, LAYOUT.bndregs, 8)
  u64s(fp.bndcsrState, LAYOUT.bndcsr, 2)
  if (xcr0 & AVX512) {
    u64s(fp.opmaskReg, LAYOUT.opmask, 8)
    u64s(fp.zmmUpper, LAYOUT.zmmHi256, 64)
    u64s(fp.hi16Zmm, LAYOUT.hi16Zmm, 128)
  }
  u32s(fp.pkru, LAYOUT.pkru, 2) // PKRU and its padding word, as CRIU keeps them
  return b
}

export interface ProcessInfo {
  task: TaskTree
  comm: string
  psargs: string
  uid: number
  gid: number
}

export function prpsinfo(info: ProcessInfo): Buffer {
  const b = Buffer.alloc(PRPSINFO_SIZE)
  b.writeInt8(3, 0) // pr_state: the kernel's index of TASK_STOPPED...
  b.write('T', 1, 'latin1') // ...and its letter: CRIU dumps stopped tasks
  b.writeUInt32LE(info.uid >>> 0, 16)
  b.writeUInt32LE(info.gid >>> 0, 20)
  b.writeInt32LE(info.task.pid, 24)
  b.writeInt32LE(info.task.ppid, 28)
  b.writeInt32LE(info.task.pgid, 32)
  b.writeInt32LE(info.task.sid, 36)
  b.write(info.comm.slice(0, 15), 40, 15, 'latin1')
  b.write(info.psargs.slice(0, 79), 56, 79, 'latin1')
  return b
}

/** The saved auxv, cut at its AT_NULL (CRIU's array is fixed-size and zero-padded) and always terminated by one. */
export function auxv(words: bigint[]): Buffer {
  const pairs: bigint[] = []
  for (let i = 0; i + 1 < words.length; i += 2) {
    const type = words[i]!
    if (type === 0n) break
    pairs.push(type, words[i + 1]!)
  }
  pairs.push(0n, 0n)
  const b = Buffer.alloc(pairs.length * 8)
  pairs.forEach((word, i) => b.writeBigUInt64LE(BigInt.asUintN(64, word), i * 8))
  return b
}

export interface FileMapping {
  start: number
  end: number
  /** Byte offset into the file. */
  offset: number
  path: string
}

/** NT_FILE: count, page size, then (start, end, offset in pages) per mapping, then the NUL-terminated paths. */
export function fileNote(mappings: FileMapping[]): Buffer {
  const head = Buffer.alloc(16 + mappings.length * 24)
  head.writeBigUInt64LE(BigInt(mappings.length), 0)
  head.writeBigUInt64LE(BigInt(PAGE_SIZE), 8)
  mappings.forEach((m, i) => {
    head.writeBigUInt64LE(BigInt(m.start), 16 + i * 24)
    head.writeBigUInt64LE(BigInt(m.end), 24 + i * 24)
    head.writeBigUInt64LE(BigInt(Math.floor(m.offset / PAGE_SIZE)), 32 + i * 24)
  })
  return Buffer.concat([head, ...mappings.map((m) => Buffer.from(`${m.path}\0`, 'utf8'))])
}

export interface NotesInput {
  info: ProcessInfo
  threads: ThreadState[]
  auxv: bigint[]
  files: FileMapping[]
}

/** Room to set aside for the notes before the threads' images are decoded: each thread at its largest. */
export function maxNotesSize(input: { threads: number; auxv: bigint[]; files: FileMapping[] }): number {
  const perThread = noteSize('CORE', PRSTATUS_SIZE) + noteSize('CORE', FPREGS_SIZE) + noteSize('LINUX', XSTATE_MAX_SIZE)
  return (
    noteSize('CORE', PRPSINFO_SIZE) +
    input.threads * perThread +
    noteSize('CORE', auxv(input.auxv).length) +
    (input.files.length > 0 ? noteSize('CORE', fileNote(input.files).length) : 0)
  )
}

function noteSize(name: string, descSize: number): number {
  return 12 + align4(name.length + 1) + align4(descSize)
}

export function buildNotes(input: NotesInput): Buffer {
  const parts: Buffer[] = [note('CORE', NT_PRPSINFO, prpsinfo(input.info))]
  for (const thread of input.threads) {
    // A thread's register notes follow its NT_PRSTATUS: that is how BFD ties them to the thread.
    parts.push(note('CORE', NT_PRSTATUS, prstatus(input.info.task, thread)))
    if (thread.fpregs) {
      parts.push(note('CORE', NT_FPREGSET, fpregset(thread.fpregs)))
      const xs = xstate(thread.fpregs)
      if (xs) parts.push(note('LINUX', NT_X86_XSTATE, xs))
    }
  }
  parts.push(note('CORE', NT_AUXV, auxv(input.auxv)))
  if (input.files.length > 0) parts.push(note('CORE', NT_FILE, fileNote(input.files)))
  return Buffer.concat(parts)
}
