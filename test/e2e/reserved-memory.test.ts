// A process that reserves far more address space than it touches (MAP_NORESERVE, as JVMs, MariaDB and Go programs
// do): the capture is sized by what is in memory. The default dump's room check counts the touched pages, not the
// 256 GiB reserved, and the core built from the images holds the data, not the reservation's holes, yet opens in gdb
// with every touched word where it was and the untouched memory reading as zeros.
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import type { DumpResult } from '../../src/pipelines/dump.js';
import { extractBundle, makeTempDir, readExtractedManifest, removeTempDirs } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { waitFor } from '../helpers/target.js';

const execFileAsync = promisify(execFile);
const MiB = 1 << 20;
const GiB = 1 << 30;
const RESERVED = 256 * GiB;
/** Where the scattered MiBs are: one every 16 GiB, 8 GiB in. */
const scattered = (i: number): number => i * 16 * GiB + 8 * GiB;
const marker = (i: number): bigint => 0x6d61726b00000000n + BigInt(i);

// 48 MiB at the start of the reservation, random; 16 MiB more, one MiB every 16 GiB, each starting with its marker.
const SCRIPT = `
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_NORESERVE = 1, 2, 0x02, 0x20, 0x4000
addr = libc.mmap(None, ${RESERVED}, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
if addr in (None, ctypes.c_void_p(-1).value): sys.exit("mmap: errno %d" % ctypes.get_errno())
chunk = os.urandom(${MiB})
for i in range(48): ctypes.memmove(addr + i * ${MiB}, chunk, ${MiB})
for i in range(16):
    at = addr + i * ${16 * GiB} + ${8 * GiB}
    ctypes.memmove(at, chunk, ${MiB})
    ctypes.c_uint64.from_address(at).value = 0x6d61726b00000000 + i
ctypes.c_uint64.from_address(addr).value = 0x5eed5eed5eed5eed
open(sys.argv[1] + ".tmp", "w").write("%x" % addr)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
while True: time.sleep(0.05)
`;

const pids: number[] = [];
afterAll(() => {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  removeTempDirs();
});

function state(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
}

describe('a process with 256 GiB reserved and 64 MiB touched', () => {
  it('is dumped by default, sized by its touched pages, and its core opens in gdb with its data where it was', async () => {
    const dir = makeTempDir('snap-reserved-');
    const ready = join(dir, 'addr');
    const child = spawn('/usr/bin/python3', ['-c', SCRIPT, ready], { detached: true, stdio: 'ignore' });
    pids.push(child.pid!);
    const base = await waitFor(() => existsSync(ready) && parseInt(readFileSync(ready, 'utf8'), 16), { what: 'the python to reserve and touch its memory', timeoutMs: 20_000 });
    const exe = readlinkSync(`/proc/${child.pid}/exe`);
    const vmSizeKiB = Number(/^VmSize:\s+(\d+)/m.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))![1]);
    expect(vmSizeKiB * 1024).toBeGreaterThan(RESERVED);

    const bundle = join(dir, 'reserved.tar.zst');
    const run = await runSnap(['dump', String(child.pid), '-o', bundle, '--json'], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal'), SNAP_JOURNAL_DIR: join(dir, 'journal') } });
    expect(run.exitCode, run.stderr).toBe(0);
    const result = JSON.parse(run.stdout) as DumpResult;
    expect(result.finalState).toBe('running');
    expect(state(child.pid!)).not.toBe('T');
    // The room asked for is the touched memory's (twice: images and cores, with the bundle of both), far below the
    // reservation.
    const asked = Number(/about (\d+) MiB to write/.exec(run.stderr)?.[1]);
    expect(asked, run.stderr).toBeGreaterThanOrEqual(2 * 64 * 2);
    expect(asked).toBeLessThan(1024);

    const extracted = await extractBundle(bundle);
    const manifest = readExtractedManifest(extracted);
    const core = join(extracted, manifest.processes!.find((p) => (p.hostPid ?? p.pid) === child.pid)!.core!);
    // The reservation's untouched memory is not in the file: it lies past each segment's bytes.
    expect(statSync(core).size).toBeLessThan(1 * GiB);

    const words = [
      ...Array.from({ length: 16 }, (_, i) => ({ at: base + scattered(i), value: marker(i) })),
      { at: base, value: 0x5eed5eed5eed5eedn },
      // Untouched: between the first 48 MiB and the first scattered MiB, between two of those, and the last word.
      { at: base + 48 * MiB + 4096, value: 0n },
      { at: base + scattered(3) + 2 * GiB, value: 0n },
      { at: base + RESERVED - 8, value: 0n },
    ];
    const { stdout } = await execFileAsync('gdb', [
      '--batch', '-nx', '-iex', 'set debuginfod enabled off', '-ex', 'info threads',
      ...words.flatMap((w) => ['-ex', `x/gx 0x${w.at.toString(16)}`]),
      exe, core,
    ], { maxBuffer: 1 << 24 });
    expect(stdout).toContain(`LWP ${child.pid}`);
    for (const w of words) {
      const seen = new RegExp(`^0x0*${w.at.toString(16)}:\\s+0x([0-9a-f]+)$`, 'm').exec(stdout);
      expect(seen, `0x${w.at.toString(16)} in gdb:\n${stdout}`).not.toBeNull();
      expect(BigInt(`0x${seen![1]}`), `0x${w.at.toString(16)}`).toBe(w.value);
    }
    expect(stdout).not.toContain('Cannot access memory');
  });
});
