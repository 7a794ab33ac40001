// Reads a thread's core-TID.img (CoreEntry, x86_64) straight from its protobuf bytes. The per-process images go
// through `crit decode`, but one crit is a python start-up of ~0.2 s CPU, and there is one core-TID.img per thread:
// 64 threads took 30 s here through crit. The e2e test checks this reader against crit on real images.
// Field numbers: CRIU's images/core.proto, core-x86.proto and creds.proto.

import { readFile } from 'node:fs/promises'
import { CoreBuildError } from './errors.js'
import { USER_REGS, type FpRegs, type ThreadState } from './images.js'

const IMG_COMMON_MAGIC = 0x54564319
const IMG_SERVICE_MAGIC = 0x55105940
const CORE_MAGIC = 0x55053847
const MTYPE_X86_64 = 1
const REGS_MODE_NATIVE = 1

/** Wire-format fields of one message: number -> the values in order (varints as bigint, the rest as bytes). */
type Fields = Map<number, (bigint | Buffer)[]>

function readVarint(b: Buffer, at: { pos: number }): bigint {
  let value = 0n
  for (let shift = 0n; ; shift += 7n) {
    if (at.pos >= b.length || shift > 63n) throw new CoreBuildError('a core image holds a malformed varint')
    const byte = b[at.pos++]!
    value |= BigInt(byte & 0x7f) << shift
    if (!(byte & 0x80)) return value
  }
}

function parseMessage(b: Buffer): Fields {
  const fields: Fields = new Map()
  const at = { pos: 0 }
  while (at.pos < b.length) {
    const key = readVarint(b, at)
    const number = Number(key >> 3n)
    const wireType = Number(key & 7n)
    let value: bigint | Buffer
    if (wireType === 0) value = readVarint(b, at)
    else if (wireType === 1 || wireType === 5) {
      const size = wireType === 1 ? 8 : 4
      value = b.subarray(at.pos, at.pos + size)
      at.pos += size
    } else if (wireType === 2) {
      const length = Number(readVarint(b, at))
      if (at.pos + length > b.length) throw new CoreBuildError('a core image holds a truncated field')
      value = b.subarray(at.pos, at.pos + length)
      at.pos += length
    } else {
      throw new CoreBuildError(`a core image holds an unsupported protobuf wire type ${wireType}`)
    }
    const list = fields.get(number)
    if (list) list.push(value)
    else fields.set(number, [value])
  }
  return fields
}

function message(fields: Fields, number: number): Fields | undefined {
  const value = fields.get(number)?.at(-1)
  return value instanceof Buffer ? parseMessage(value) : undefined
}

function varint(fields: Fields, number: number, fallback = 0n): bigint {
  const value = fields.get(number)?.at(-1)
  return typeof value === 'bigint' ? value : fallback
}

/** A repeated varint field, packed (one length-delimited run) or not (one entry per value). */
function varints(fields: Fields, number: number): bigint[] {
  const out: bigint[] = []
  for (const value of fields.get(number) ?? []) {
    if (typeof value === 'bigint') out.push(value)
    else for (const at = { pos: 0 }; at.pos < value.length; ) out.push(readVarint(value, at))
  }
  return out
}

function text(fields: Fields, number: number): string | undefined {
  const value = fields.get(number)?.at(-1)
  return value instanceof Buffer ? value.toString('utf8') : undefined
}

export async function readThreadImage(file: string, tid: number): Promise<ThreadState> {
  const bytes = await readFile(file)
  let pos = 0
  const word = (): number => {
    if (pos + 4 > bytes.length) throw new CoreBuildError(`${file} is truncated`)
    const value = bytes.readUInt32LE(pos)
    pos += 4
    return value
  }
  let magic = word()
  if (magic === IMG_COMMON_MAGIC || magic === IMG_SERVICE_MAGIC) magic = word()
  if (magic !== CORE_MAGIC) throw new CoreBuildError(`${file} is not a CRIU core image (magic 0x${magic.toString(16)})`)
  const size = word()
  if (pos + size > bytes.length) throw new CoreBuildError(`${file} is truncated`)
  const core = parseMessage(bytes.subarray(pos, pos + size))

  if (varint(core, 1) !== BigInt(MTYPE_X86_64)) throw new CoreBuildError(`${file} is not for X86_64; only X86_64 is supported`)
  const info = message(core, 2)
  const gp = info && message(info, 2)
  if (!info || !gp) throw new CoreBuildError(`${file} has no x86 registers`)
  if (varint(gp, 28, BigInt(REGS_MODE_NATIVE)) !== BigInt(REGS_MODE_NATIVE)) {
    throw new CoreBuildError(`thread ${tid} is a 32-bit (compat) task; only 64-bit tasks are supported`)
  }
  const regs = USER_REGS.map((_, i) => varint(gp, i + 1)) // user_x86_regs_entry numbers them in user_regs_struct order

  let fpregs: FpRegs | undefined
  const fp = message(info, 3)
  if (fp) {
    const xsave = message(fp, 13)
    const u32s = (n: number): number[] => varints(fp, n).map(Number)
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
      ymmhSpace: xsave && xsave.has(2) ? varints(xsave, 2).map(Number) : undefined,
      // images/core-x86.proto user_x86_xsave_entry: bndreg_state 3, bndcsr_state 4, opmask_reg 5, zmm_upper 6,
      // hi16_zmm 7, pkru 8; a field is absent when the dumping CPU lacks the feature.
      bndregState: xsave && xsave.has(3) ? varints(xsave, 3) : undefined,
      bndcsrState: xsave && xsave.has(4) ? varints(xsave, 4) : undefined,
      opmaskReg: xsave && xsave.has(5) ? varints(xsave, 5) : undefined,
      zmmUpper: xsave && xsave.has(6) ? varints(xsave, 6) : undefined,
      hi16Zmm: xsave && xsave.has(7) ? varints(xsave, 7) : undefined,
      pkru: xsave && xsave.has(8) ? varints(xsave, 8).map(Number) : undefined,
    }
  }

  // The main thread keeps its blocked mask and name in tc (task_core_entry), every thread in thread_core.
  const tc = message(core, 3)
  const threadCore = message(core, 5)
  const creds = threadCore && message(threadCore, 10)
  return {
    tid,
    regs,
    fpregs,
    blocked: threadCore?.has(6) ? varint(threadCore, 6) : tc ? varint(tc, 5) : 0n,
    comm: (threadCore && text(threadCore, 13)) ?? (tc && text(tc, 6)),
    creds: creds ? { uid: Number(varint(creds, 1)), gid: Number(varint(creds, 2)) } : undefined,
  }
}
