// A thread's core-TID.img (core_entry, x86_64): its registers, blocked signals and name, read straight from the
// protobuf bytes. There is one per thread, and through crit (a python start-up each) 64 threads took 30 s here. The
// e2e test checks this reader against crit on real images. Credentials are read by creds.ts.

import { readFile } from 'node:fs/promises'
import { CoreBuildError } from '../corefile/errors.js'
import { ImageFormatError } from './errors.js'
import { CORE_MAGIC, imageEntries } from './image-file.js'
import {
  CORE_ENTRY, CREDS_ENTRY, CRIU_ENUMS, TASK_CORE_ENTRY, THREAD_CORE_ENTRY, THREAD_INFO_X86, USER_X86_FPREGS_ENTRY as FP, USER_X86_REGS_ENTRY,
  USER_X86_XSAVE_ENTRY as XSAVE,
} from './proto.js'
import { decodeMessage, messageField, textField, u64Field, u64sField, type Fields } from './wire.js'

/** user_regs_struct, in the kernel's order (which is also the order gdb reads NT_PRSTATUS's pr_reg in); each is
 *  user_x86_regs_entry's field of that name. */
export const USER_REGS = [
  'r15', 'r14', 'r13', 'r12', 'bp', 'bx', 'r11', 'r10', 'r9', 'r8', 'ax', 'cx', 'dx', 'si', 'di', 'orig_ax', 'ip',
  'cs', 'flags', 'sp', 'ss', 'fs_base', 'gs_base', 'ds', 'es', 'fs', 'gs',
] as const satisfies readonly (keyof typeof USER_X86_REGS_ENTRY)[]

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

export async function readThreadImage(file: string, tid: number): Promise<ThreadState> {
  const bytes = await readFile(file)
  try {
    return threadFromImage(bytes, file, tid)
  } catch (error) {
    if (error instanceof ImageFormatError) throw new ImageFormatError(`${file} is not an image criu wrote: ${error.message}`)
    throw error
  }
}

function threadFromImage(bytes: Buffer, file: string, tid: number): ThreadState {
  const entry = imageEntries(bytes, CORE_MAGIC, file)[0]
  if (!entry) throw new CoreBuildError(`${file} holds no entry`)
  const core = decodeMessage(entry)
  const varint = (f: Fields, n: number, fallback = 0n): bigint => u64Field(f, n) ?? fallback

  if (varint(core, CORE_ENTRY.mtype) !== BigInt(CRIU_ENUMS['core_entry.march'].X86_64)) throw new CoreBuildError(`${file} is not for X86_64; only X86_64 is supported`)
  const info = messageField(core, CORE_ENTRY.thread_info)
  const gp = info && messageField(info, THREAD_INFO_X86.gpregs)
  if (!info || !gp) throw new CoreBuildError(`${file} has no x86 registers`)
  const native = BigInt(CRIU_ENUMS.user_x86_regs_mode.NATIVE)
  if (varint(gp, USER_X86_REGS_ENTRY.mode, native) !== native) {
    throw new CoreBuildError(`thread ${tid} is a 32-bit (compat) task; only 64-bit tasks are supported`)
  }
  const regs = USER_REGS.map((name) => varint(gp, USER_X86_REGS_ENTRY[name]))

  let fpregs: FpRegs | undefined
  const fp = messageField(info, THREAD_INFO_X86.fpregs)
  if (fp) {
    const xsave = messageField(fp, FP.xsave)
    const u32s = (n: number): number[] => u64sField(fp, n).map(Number)
    // A later xsave component is absent when the dumping CPU lacks the feature.
    const u64sOf = (n: number) => (xsave && xsave.has(n) ? u64sField(xsave, n) : undefined)
    fpregs = {
      cwd: Number(varint(fp, FP.cwd)),
      swd: Number(varint(fp, FP.swd)),
      twd: Number(varint(fp, FP.twd)),
      fop: Number(varint(fp, FP.fop)),
      rip: varint(fp, FP.rip),
      rdp: varint(fp, FP.rdp),
      mxcsr: Number(varint(fp, FP.mxcsr)),
      mxcsrMask: Number(varint(fp, FP.mxcsr_mask)),
      stSpace: u32s(FP.st_space),
      xmmSpace: u32s(FP.xmm_space),
      xstateBv: xsave && xsave.has(XSAVE.xstate_bv) ? varint(xsave, XSAVE.xstate_bv) : undefined,
      ymmhSpace: u64sOf(XSAVE.ymmh_space)?.map(Number),
      bndregState: u64sOf(XSAVE.bndreg_state),
      bndcsrState: u64sOf(XSAVE.bndcsr_state),
      opmaskReg: u64sOf(XSAVE.opmask_reg),
      zmmUpper: u64sOf(XSAVE.zmm_upper),
      hi16Zmm: u64sOf(XSAVE.hi16_zmm),
      pkru: u64sOf(XSAVE.pkru)?.map(Number),
    }
  }

  // The main thread keeps its blocked mask and name in tc (task_core_entry), every thread in thread_core.
  const tc = messageField(core, CORE_ENTRY.tc)
  const threadCore = messageField(core, CORE_ENTRY.thread_core)
  const creds = threadCore && messageField(threadCore, THREAD_CORE_ENTRY.creds)
  return {
    tid,
    regs,
    fpregs,
    blocked: threadCore?.has(THREAD_CORE_ENTRY.blk_sigset) ? varint(threadCore, THREAD_CORE_ENTRY.blk_sigset) : tc ? varint(tc, TASK_CORE_ENTRY.blk_sigset) : 0n,
    comm: (threadCore && textField(threadCore, THREAD_CORE_ENTRY.comm)) ?? (tc && textField(tc, TASK_CORE_ENTRY.comm)),
    creds: creds ? { uid: Number(varint(creds, CREDS_ENTRY.uid)), gid: Number(varint(creds, CREDS_ENTRY.gid)) } : undefined,
  }
}
