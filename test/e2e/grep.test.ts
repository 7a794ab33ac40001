// `snap grep BUNDLE PATTERN`: a string a python process keeps in its memory is found at an address where the live
// process (still running after the dump, its memory unchanged) has those very bytes; a 256 MiB worker's bundle is
// searched with snap's peak memory about that of a small one.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runSnap, snapWithPeak } from '../helpers/cli.js';
import { cleanupAllTargets, killPid, startTarget, waitFor } from '../helpers/target.js';

let dir: string;
let py: ChildProcess;
let bundle: string;
const NEEDLE = 'SNAP-GREP-NEEDLE-7f3a9c';

beforeAll(async () => {
  dir = makeTempDir('snap-grep-');
  // Built at run time, so the needle is on the heap, not only in the script's own text.
  const script = `import os, sys, time\nkeep = "-".join(["SNAP", "GREP", "NEEDLE", "7f3a9c"]) + "-" * 40\nopen(sys.argv[1], "w").write("ready")\nwhile True: time.sleep(0.05)`;
  py = spawn('/usr/bin/python3', ['-c', script, join(dir, 'ready')], { detached: true, stdio: 'ignore' });
  await waitFor(() => existsSync(join(dir, 'ready')), { what: 'the python to make its string' });
  bundle = join(dir, 'py.snap.tar.zst');
  const dump = await runSnap(['dump', String(py.pid), '-o', bundle], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
  expect(dump.exitCode, dump.stderr).toBe(0);
}, 60_000);
afterAll(async () => {
  await killPid(py.pid!);
  await cleanupAllTargets();
  removeTempDirs();
});

function liveBytes(pid: number, address: number, length: number): Buffer {
  const fd = openSync(`/proc/${pid}/mem`, 'r');
  try {
    const b = Buffer.alloc(length);
    readSync(fd, b, 0, length, address);
    return b;
  } finally {
    closeSync(fd);
  }
}

describe('snap grep', () => {
  it('finds the string on the heap, at an address where the live process holds it', async () => {
    const r = await runSnap(['grep', bundle, NEEDLE, '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout) as { hits: { pid: number; address: string; mapping: string; context: string }[] };
    const onHeap = result.hits.filter((h) => h.mapping === '[heap]' || h.mapping === '[anon]');
    expect(onHeap.length, JSON.stringify(result.hits)).toBeGreaterThan(0);
    for (const h of result.hits) {
      expect(h.pid).toBe(py.pid);
      expect(liveBytes(py.pid!, Number(h.address), NEEDLE.length).toString('latin1'), `at ${h.address} (${h.mapping})`).toBe(NEEDLE);
      expect(h.context).toContain(NEEDLE);
    }
    const text = await runSnap(['grep', bundle, NEEDLE]);
    expect(text.stdout).toMatch(new RegExp(`^${py.pid}  0x[0-9a-f]+  \\[(heap|anon)\\]  .*${NEEDLE}`, 'm'));
  });

  it('--regex finds the same places; a pattern that is not a regular expression is a usage error (exit 2)', async () => {
    const literal = JSON.parse((await runSnap(['grep', bundle, NEEDLE, '--json'])).stdout) as { hits: { address: string }[] };
    const r = await runSnap(['grep', bundle, '--regex', 'SNAP-GREP-NEEDLE-[0-9a-f]{6}', '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const viaRegex = JSON.parse(r.stdout) as { hits: { address: string }[] };
    expect(viaRegex.hits.map((h) => h.address).sort()).toEqual(literal.hits.map((h) => h.address).sort());
    const bad = await runSnap(['grep', bundle, '--regex', 'SNAP(']);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/is not a regular expression/);
  });

  it("a 1 GiB worker's bundle: searched whole, snap's peak memory flat in the size searched and under 150 MiB", async () => {
    const target = await startTarget({ threads: 2, mib: 1024, group: 'setsid' });
    const big = join(dir, 'big.snap.tar.zst');
    const dump = await runSnap(['dump', String(target.pid), '-o', big], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') }, timeoutMs: 300_000 });
    expect(dump.exitCode, dump.stderr).toBe(0);
    await killPid(target.pid); // its 1 GiB is in the bundle now
    const r = await runSnap(['grep', big, `no-such-bytes-${Date.now()}`, '--json'], { timeoutMs: 300_000 });
    expect(r.exitCode, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { hits: unknown[] }).hits).toEqual([]);
    // snap's own peak, from the kernel's account of it: the pages stream through, none is held, and what was read is
    // freed as the pass goes, so searching 1 GiB costs about what searching the python's few MiB does.
    const small = snapWithPeak(['grep', bundle, 'snap_ticks'], {});
    const large = snapWithPeak(['grep', big, 'snap_ticks'], {});
    expect(small.run.exitCode, small.run.stderr).toBe(0);
    expect(large.run.exitCode, large.run.stderr).toBe(0);
    console.log(`snap grep peak RSS: ${Math.round(small.peakKiB / 1024)} MiB for a ${bundle} of a few MiB, ${Math.round(large.peakKiB / 1024)} MiB for 1 GiB of memory`);
    expect(small.peakKiB).toBeGreaterThan(0);
    expect(large.peakKiB / 1024, 'peak RSS for 1 GiB, in MiB').toBeLessThan(small.peakKiB / 1024 + 32);
    expect(large.peakKiB / 1024).toBeLessThan(150);
  }, 600_000);
});
