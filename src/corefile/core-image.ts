// Reads a thread's core-TID.img (CoreEntry, x86_64) straight from its protobuf bytes: there is one per thread, and
// through crit (a python start-up each) 64 threads took 30 s here. The e2e test checks this reader against crit on
// real images.
// Field numbers: CRIU's images/core.proto, core-x86.proto and creds.proto.

import { readFile } from 'node:fs/promises'
import {
  CORE_MAGIC, decodeMessage, ImageFormatError, imageEntries, messageField, textField, u64Field, u64sField, type Fields,
} from '../tools/criu-image-format.js'
import { CoreBuildError } from './errors.js'
import { USER_REGS, type FpRegs, type ThreadState } from './images.js'

const MTYPE_X86_64 = 1
const REGS_MODE_NATIVE = 1

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

  if (varint(core, 1) !== BigInt(MTYPE_X86_64)) throw new CoreBuildError(`${file} is not for X86_64; only X86_64 is supported`)
  const info = messageField(core, 2)
  const gp = info && messageField(info, 2)
  if (!info || !gp) throw new CoreBuildError(`${file} has no x86 registers`)
  if (varint(gp, 28, BigInt(REGS_MODE_NATIVE)) !== BigInt(REGS_MODE_NATIVE)) {
    throw new CoreBuildError(`thread ${tid} is a 32-bit (compat) task; only 64-bit tasks are supported`)
  }
  const regs = USER_REGS.map((_, i) => varint(gp, i + 1)) // user_x86_regs_entry numbers them in user_regs_struct order

  let fpregs: FpRegs | undefined
  const fp = messageField(info, 3)
  if (fp) {
    const xsave = messageField(fp, 13)
    const u32s = (n: number): number[] => u64sField(fp, n).map(Number)
    fpregs = {
      cwd: Number(varint(fp, 1)),
      swd: Number(varint(fp, 2)),
      twd: Number(varint(fp, 3)),
      fop: Number(varint(fp, 4)),
      rip: varint(fp, 5),
      rdp: varint(fp, 6),
      mxcsr: Number(varint(fp, 7)),
      mxcsrMask: Number(varint(fp, 8)),
      stSpace: u32s(9),
      xmmSpace: u32s(10),
      xstateBv: xsave && xsave.has(1) ? varint(xsave, 1) : undefined,
      ymmhSpace: xsave && xsave.has(2) ? u64sField(xsave, 2).map(Number) : undefined,
      // images/core-x86.proto user_x86_xsave_entry: bndreg_state 3, bndcsr_state 4, opmask_reg 5, zmm_upper 6,
      // hi16_zmm 7, pkru 8; a field is absent when the dumping CPU lacks the feature.
      bndregState: xsave && xsave.has(3) ? u64sField(xsave, 3) : undefined,
      bndcsrState: xsave && xsave.has(4) ? u64sField(xsave, 4) : undefined,
      opmaskReg: xsave && xsave.has(5) ? u64sField(xsave, 5) : undefined,
      zmmUpper: xsave && xsave.has(6) ? u64sField(xsave, 6) : undefined,
      hi16Zmm: xsave && xsave.has(7) ? u64sField(xsave, 7) : undefined,
      pkru: xsave && xsave.has(8) ? u64sField(xsave, 8).map(Number) : undefined,
    }
  }

  // The main thread keeps its blocked mask and name in tc (task_core_entry), every thread in thread_core.
  const tc = messageField(core, 3)
  const threadCore = messageField(core, 5)
  const creds = threadCore && messageField(threadCore, 10)
  return {
    tid,
    regs,
    fpregs,
    blocked: threadCore?.has(6) ? varint(threadCore, 6) : tc ? varint(tc, 5) : 0n,
    comm: (threadCore && textField(threadCore, 13)) ?? (tc && textField(tc, 6)),
    creds: creds ? { uid: Number(varint(creds, 1)), gid: Number(varint(creds, 2)) } : undefined,
  }
}
