// The kernel's XSAVE buffer (PTRACE_GETREGSET NT_X86_XSTATE) read in the CPU's own layout, told apart by XCR0 and the
// buffer's size, into the registers notes.ts writes in one layout gdb knows: each component found where the CPU put it.
import { describe, expect, it } from 'vitest';
import { fpRegsFromKernel } from '../../src/corefile/thread-registers.js';
import { xstate } from '../../src/corefile/notes.js';

const AVX512 = 0xe7n; // x87, SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
const WITH_PKRU = AVX512 | (1n << 9n);

/** A kernel XSAVE buffer of `size` bytes for `xcr0`, with a marker in k1, zmm0's upper half, zmm16 and PKRU at the
 *  offsets given. */
function kernelBuffer(size: number, xcr0: bigint, at: { opmask: number; zmmHi256: number; hi16Zmm: number; pkru?: number }): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt32LE(0x1f80, 24); // mxcsr
  b.writeUInt32LE(0xabcdef01, 160); // xmm0's first word
  b.writeBigUInt64LE(xcr0, 464);
  b.writeBigUInt64LE(xcr0, 512); // xstate_bv: every component live
  b.writeUInt32LE(0x11111111, 576); // ymm0's upper half, first word
  b.writeBigUInt64LE(0x6b00000000000001n, at.opmask + 8); // k1
  b.writeBigUInt64LE(0x7a00000000000004n, at.zmmHi256); // zmm0, quadword 4
  b.writeBigUInt64LE(0x7a00001000000000n, at.hi16Zmm); // zmm16, quadword 0
  if (at.pkru !== undefined) b.writeUInt32LE(0x55555554, at.pkru);
  return b;
}

describe('registers from the kernel\'s XSAVE buffer', () => {
  for (const [name, size, xcr0, at] of [
    ['AMD, AVX-512 without PKRU (2432 bytes)', 2432, AVX512, { opmask: 832, zmmHi256: 896, hi16Zmm: 1408 }],
    ['AMD, AVX-512 with PKRU (2440 bytes)', 2440, WITH_PKRU, { opmask: 832, zmmHi256: 896, hi16Zmm: 1408, pkru: 2432 }],
    ['Intel, AVX-512 without PKRU (2688 bytes)', 2688, AVX512, { opmask: 1088, zmmHi256: 1152, hi16Zmm: 1664 }],
    ['Intel, AVX-512 with PKRU (2696 bytes)', 2696, WITH_PKRU, { opmask: 1088, zmmHi256: 1152, hi16Zmm: 1664, pkru: 2688 }],
  ] as const) {
    it(`${name}: k1, zmm0, zmm16${'pkru' in at ? ' and PKRU' : ''} found, and written where gdb reads them`, () => {
      const kernel = kernelBuffer(size, xcr0, at);
      const fp = fpRegsFromKernel(kernel.subarray(0, 512), kernel);
      expect(fp.mxcsr).toBe(0x1f80);
      expect(fp.xmmSpace[0]).toBe(0xabcdef01);
      expect(fp.ymmhSpace![0]).toBe(0x11111111);
      expect(fp.opmaskReg![1]).toBe(0x6b00000000000001n);
      expect(fp.zmmUpper![0]).toBe(0x7a00000000000004n);
      expect(fp.hi16Zmm![0]).toBe(0x7a00001000000000n);
      if ('pkru' in at) expect(fp.pkru![0]).toBe(0x55555554);
      else expect(fp.pkru).toBeUndefined();
      // The note is Intel's standard layout, whichever CPU's buffer it came from.
      const note = xstate(fp)!;
      expect(note.length).toBe('pkru' in at ? 2696 : 2688);
      expect(note.readBigUInt64LE(464)).toBe(xcr0);
      expect(note.readBigUInt64LE(1088 + 8)).toBe(0x6b00000000000001n);
      expect(note.readBigUInt64LE(1152)).toBe(0x7a00000000000004n);
      expect(note.readBigUInt64LE(1664)).toBe(0x7a00001000000000n);
    });
  }

  it('a CPU with AVX only: x87, SSE and AVX, nothing of AVX-512', () => {
    const kernel = Buffer.alloc(832);
    kernel.writeBigUInt64LE(0x7n, 464);
    kernel.writeBigUInt64LE(0x7n, 512);
    kernel.writeUInt32LE(0x22222222, 576);
    const fp = fpRegsFromKernel(kernel.subarray(0, 512), kernel);
    expect(fp.ymmhSpace![0]).toBe(0x22222222);
    expect(fp.opmaskReg).toBeUndefined();
    expect(xstate(fp)!.length).toBe(832);
  });

  it('a buffer of a layout not known here keeps x87, SSE and AVX and drops the rest rather than misread it', () => {
    const kernel = kernelBuffer(3000, AVX512, { opmask: 832, zmmHi256: 896, hi16Zmm: 1408 });
    const fp = fpRegsFromKernel(kernel.subarray(0, 512), kernel);
    expect(fp.ymmhSpace![0]).toBe(0x11111111);
    expect(fp.opmaskReg).toBeUndefined();
    expect(fp.zmmUpper).toBeUndefined();
  });

  it('no XSAVE buffer (a kernel or CPU without it): the FXSAVE area alone', () => {
    const fx = Buffer.alloc(512);
    fx.writeUInt16LE(0x37f, 0);
    const fp = fpRegsFromKernel(fx, undefined);
    expect(fp.cwd).toBe(0x37f);
    expect(fp.ymmhSpace).toBeUndefined();
    expect(xstate(fp)).toBeUndefined();
  });
});
