// The AVX-512 state the vector-regs fixture puts in each thread's registers, and gdb's reading of it from a core:
// what the tests of both core writers (from the images, from a stopped process) compare.
import { readFileSync } from 'node:fs';

const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
export const HAS_AVX512 = /\bavx512f\b/.test(cpuinfo) && /\bavx512bw\b/.test(cpuinfo);

const mask64 = (1n << 64n) - 1n;
/** What the fixture's thread `t` holds in k`r`, as gdb prints it (64 bits). */
export const kValue = (t: number, r: number) => ((0x6bn << 56n) | (BigInt(t) << 32n) | BigInt(r)) & mask64;
/** Quad `q` of zmm`r` in the fixture's thread `t`. */
export const zmmValue = (t: number, r: number, q: number) => (0x7an << 56n) | (BigInt(t) << 40n) | (BigInt(r) << 16n) | BigInt(q);

/** gdb's Python: every thread's k and zmm registers in a core, by LWP, on a line of its own after '@@JSON '. */
export const VECTOR_REGS_GDB_SCRIPT = `
import gdb, json
out = {}
for th in gdb.selected_inferior().threads():
    th.switch()
    f = gdb.selected_frame()
    regs = {}
    for r in range(8):
        regs['k%d' % r] = str(int(f.read_register('k%d' % r)) & ((1 << 64) - 1))
    for r in range(32):
        v = f.read_register('zmm%d' % r)['v8_int64']
        regs['zmm%d' % r] = [str(int(v[i]) & ((1 << 64) - 1)) for i in range(8)]
    out[str(th.ptid[1])] = regs
print('@@JSON ' + json.dumps(out))
`;
