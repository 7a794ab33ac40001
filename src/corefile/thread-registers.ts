// Every thread's registers, read from a stopped process as the kernel keeps them: PTRACE_GETREGSET for the general
// registers (NT_PRSTATUS), the FXSAVE area (NT_PRFPREG) and the whole XSAVE buffer (NT_X86_XSTATE), through a small
// python3 helper, because Node has no ptrace. Each thread is seized, read and let go at once; a thread of a process
// in a SIGSTOP group stop goes back into that stop when it is let go, so the process stays stopped.

import { execa } from 'execa'
import { PYTHON } from './copy.js'
import { CoreBuildError } from './errors.js'
import type { FpRegs } from '../criu-images/core-entry.js'

export interface ThreadRegisters {
  tid: number
  /** user_regs_struct, 27 words in the kernel's order (NT_PRSTATUS's pr_reg). */
  regs: bigint[]
  fpregs: FpRegs
}

/** Seizes each thread, waits for its stop, reads its register sets and detaches; prints them as JSON (hex). */
const REGISTERS_SCRIPT = `
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_DETACH, PTRACE_GETREGSET, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4204, 0x4206, 0x4207
NT_PRSTATUS, NT_PRFPREG, NT_X86_XSTATE = 1, 2, 0x202
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
def fail(what, tid):
    e = ctypes.get_errno()
    sys.exit("%s of thread %d: %s" % (what, tid, os.strerror(e)))
def regset(tid, kind, size):
    buf = ctypes.create_string_buffer(size)
    iov = iovec(ctypes.cast(buf, ctypes.c_void_p), size)
    if libc.ptrace(PTRACE_GETREGSET, tid, kind, ctypes.byref(iov)) != 0:
        if kind == NT_X86_XSTATE and ctypes.get_errno() in (errno.ENODEV, errno.EINVAL):
            return None
        fail("PTRACE_GETREGSET %#x" % kind, tid)
    return buf.raw[:iov.len].hex()
out = []
for tid in map(int, sys.argv[1:]):
    if libc.ptrace(PTRACE_SEIZE, tid, None, None) != 0:
        fail("PTRACE_SEIZE", tid)
    try:
        if libc.ptrace(PTRACE_INTERRUPT, tid, None, None) != 0:
            fail("PTRACE_INTERRUPT", tid)
        os.waitpid(tid, 0x40000000)  # __WALL: the stop the seize or the interrupt reports
        out.append({"tid": tid, "prstatus": regset(tid, NT_PRSTATUS, 27 * 8), "fpregs": regset(tid, NT_PRFPREG, 512), "xstate": regset(tid, NT_X86_XSTATE, 1 << 16)})
    finally:
        libc.ptrace(PTRACE_DETACH, tid, None, 0)
print(json.dumps(out))
`

/** Where the AVX-512 and PKRU components are in the kernel's XSAVE buffer: the CPU's own standard layout, told apart
 *  by XCR0 and the buffer's size as gdb does (see the notes on XSAVE in notes.ts). */
const KERNEL_LAYOUTS = [
  { name: 'intel', ymmh: 576, bndregs: 960, bndcsr: 1024, opmask: 1088, zmmHi256: 1152, hi16Zmm: 1664, pkru: 2688 },
  { name: 'amd', ymmh: 576, bndregs: undefined, bndcsr: undefined, opmask: 832, zmmHi256: 896, hi16Zmm: 1408, pkru: 2432 },
] as const

const XFEATURE_YMM = 1n << 2n
const XFEATURE_BNDREGS = 1n << 3n
const XFEATURE_BNDCSR = 1n << 4n
const XFEATURE_AVX512 = (1n << 5n) | (1n << 6n) | (1n << 7n)
const XFEATURE_PKRU = 1n << 9n

function layoutOf(xcr0: bigint, size: number): (typeof KERNEL_LAYOUTS)[number] | undefined {
  const end = (l: (typeof KERNEL_LAYOUTS)[number]) => (xcr0 & XFEATURE_PKRU ? l.pkru + 8 : xcr0 & XFEATURE_AVX512 ? l.pkru : l.opmask)
  return KERNEL_LAYOUTS.find((l) => size === end(l))
}

/** FpRegs (the shape notes.ts writes) from the FXSAVE area and, when there is one, the kernel's XSAVE buffer. */
export function fpRegsFromKernel(fx: Buffer, xsave: Buffer | undefined): FpRegs {
  const u32s = (b: Buffer, at: number, n: number) => Array.from({ length: n }, (_, i) => b.readUInt32LE(at + i * 4))
  const u64s = (b: Buffer, at: number, n: number) => Array.from({ length: n }, (_, i) => b.readBigUInt64LE(at + i * 8))
  const fp: FpRegs = {
    cwd: fx.readUInt16LE(0),
    swd: fx.readUInt16LE(2),
    twd: fx.readUInt16LE(4),
    fop: fx.readUInt16LE(6),
    rip: fx.readBigUInt64LE(8),
    rdp: fx.readBigUInt64LE(16),
    mxcsr: fx.readUInt32LE(24),
    mxcsrMask: fx.readUInt32LE(28),
    stSpace: u32s(fx, 32, 32),
    xmmSpace: u32s(fx, 160, 64),
  }
  if (!xsave || xsave.length < 832) return fp
  const xcr0 = xsave.readBigUInt64LE(464)
  if (!(xcr0 & XFEATURE_YMM)) return fp
  fp.xstateBv = xsave.readBigUInt64LE(512)
  fp.ymmhSpace = u32s(xsave, 576, 64)
  const layout = layoutOf(xcr0, xsave.length)
  if (!layout) return fp // a layout not known here: x87, SSE and AVX only, as gdb itself would show
  if (layout.bndregs !== undefined && xcr0 & XFEATURE_BNDREGS) fp.bndregState = u64s(xsave, layout.bndregs, 8)
  if (layout.bndcsr !== undefined && xcr0 & XFEATURE_BNDCSR) fp.bndcsrState = u64s(xsave, layout.bndcsr, 2)
  if ((xcr0 & XFEATURE_AVX512) === XFEATURE_AVX512) {
    fp.opmaskReg = u64s(xsave, layout.opmask, 8)
    fp.zmmUpper = u64s(xsave, layout.zmmHi256, 64)
    fp.hi16Zmm = u64s(xsave, layout.hi16Zmm, 128)
  }
  if (xcr0 & XFEATURE_PKRU) fp.pkru = u32s(xsave, layout.pkru, 2)
  return fp
}

/** The registers of each thread of `tids` (all of one stopped process). */
export async function readThreadRegisters(tids: number[], o: { cancel?: AbortSignal; timeoutMs?: number } = {}): Promise<ThreadRegisters[]> {
  let stdout: string
  try {
    ;({ stdout } = await execa(PYTHON, ['-c', REGISTERS_SCRIPT, ...tids.map(String)], { timeout: o.timeoutMs ?? 60_000, cancelSignal: o.cancel, stdin: 'ignore' }))
  } catch (error) {
    const e = error as { code?: string; stderr?: string; message: string }
    const detail = e.code === 'ENOENT' ? `${PYTHON} not found` : (e.stderr?.trim().split('\n').at(-1) ?? e.message)
    throw new CoreBuildError(`could not read the threads' registers: ${detail}`, { cause: error })
  }
  const rows = JSON.parse(stdout) as { tid: number; prstatus: string; fpregs: string; xstate: string | null }[]
  return rows.map((r) => {
    const gp = Buffer.from(r.prstatus, 'hex')
    if (gp.length < 27 * 8) throw new CoreBuildError(`thread ${r.tid}: the kernel gave ${gp.length} bytes of general registers`)
    return {
      tid: r.tid,
      regs: Array.from({ length: 27 }, (_, i) => gp.readBigUInt64LE(i * 8)),
      fpregs: fpRegsFromKernel(Buffer.from(r.fpregs, 'hex'), r.xstate ? Buffer.from(r.xstate, 'hex') : undefined),
    }
  })
}
