// The room a capture needs, from smaps: present and swapped pages, never the address space a process reserved.
import { describe, expect, it } from 'vitest';
import { estimateFromSmaps, mappingCoreBytes, mappingImageBytes, parseSmapsMappings } from '../../src/process/capture-size.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/** One smaps entry, as the kernel writes it (fields the estimate does not read included, so the parser skips them). */
function entry(range: [number, number], perms: string, path: string, kib: { rss?: number; swap?: number; anonymous?: number }, flags = 'rd wr mr mw me ac', offset = 0, inode = 0): string {
  const hex = (n: number): string => n.toString(16).padStart(12, '0');
  return [
    `${hex(range[0])}-${hex(range[1])} ${perms} ${offset.toString(16).padStart(8, '0')} 00:01 ${inode}${path ? `                          ${path}` : ''}`,
    `Size:           ${(range[1] - range[0]) / KiB} kB`,
    'KernelPageSize:        4 kB',
    `Rss:            ${kib.rss ?? 0} kB`,
    `Pss:            ${kib.rss ?? 0} kB`,
    `Anonymous:      ${kib.anonymous ?? 0} kB`,
    'LazyFree:              0 kB',
    `Swap:           ${kib.swap ?? 0} kB`,
    'SwapPss:               0 kB',
    'Locked:                0 kB',
    'THPeligible:           0',
    `VmFlags: ${flags}`,
  ].join('\n');
}

const BASE = 0x7f0000000000;

describe('the capture estimate', () => {
  it('counts 64 MiB touched of a 256 GiB MAP_NORESERVE reservation as 64 MiB, for the core and for the images', () => {
    const reservation = entry([BASE, BASE + 256 * GiB], 'rw-p', '', { rss: 60 * KiB, swap: 4 * KiB, anonymous: 60 * KiB }, 'rd wr mr mw me nr ac');
    const estimate = estimateFromSmaps(new Map([[42, reservation]]), new Set([42]), true);
    expect(estimate.coreBytes).toBe(64 * MiB);
    expect(estimate.imageBytes).toBe(64 * MiB);
    // Cores, images and the bundle of both at once, and a little more: never the reservation.
    expect(estimate.totalBytes).toBe(2 * 128 * MiB + 16 * MiB);
  });

  it('reads every mapping of a smaps file with its counts and its MADV_DONTDUMP flag', () => {
    const text = [
      entry([BASE, BASE + 8 * MiB], 'rw-p', '[heap]', { rss: 100, anonymous: 100, swap: 8 }),
      entry([BASE + 8 * MiB, BASE + 9 * MiB], 'rw-p', '', { rss: 4, anonymous: 4 }, 'rd wr mr mw me dd ac'),
    ].join('\n') + '\n';
    const maps = parseSmapsMappings(text);
    expect(maps.map((m) => [m.path, m.rssKiB, m.swapKiB, m.anonymousKiB, m.dontDump])).toEqual([
      ['[heap]', 100, 8, 100, false],
      ['', 4, 0, 4, true],
    ]);
    expect(maps[0]!.end - maps[0]!.start).toBe(8 * MiB);
  });

  it('puts into a core what the kernel and the image-built core put there, and into the images what criu dumps', () => {
    const [lib, libData, sharedFile, heap, dontDump, vvar, shm] = parseSmapsMappings([
      // A library's text: only its ELF header page goes into a core; criu leaves the file's pages to the file.
      entry([BASE, BASE + 2 * MiB], 'r-xp', '/usr/lib/libc.so.6', { rss: 1024 }),
      // Its data, written to: the whole mapping in the core, the written pages in the images.
      entry([BASE + 2 * MiB, BASE + 2 * MiB + 64 * KiB], 'rw-p', '/usr/lib/libc.so.6', { rss: 64, anonymous: 16 }, 'rd wr', 0x1f0000),
      // A shared file mapping: the file holds it, neither the core nor the images do.
      entry([BASE + 4 * MiB, BASE + 8 * MiB], 'rw-s', '/var/lib/db/data', { rss: 4096 }),
      entry([BASE + 8 * MiB, BASE + 16 * MiB], 'rw-p', '[heap]', { rss: 512, anonymous: 512, swap: 256 }),
      entry([BASE + 16 * MiB, BASE + 24 * MiB], 'rw-p', '', { rss: 1024, anonymous: 1024 }, 'rd wr dd'),
      entry([BASE + 24 * MiB, BASE + 24 * MiB + 16 * KiB], 'r--p', '[vvar]', { rss: 4 }),
      entry([BASE + 32 * MiB, BASE + 64 * MiB], 'rw-s', '/dev/zero (deleted)', { rss: 2048, swap: 1024 }, 'rd wr sh', 0, 777),
    ].join('\n'));
    expect(mappingCoreBytes(lib!)).toBe(4096);
    expect(mappingCoreBytes(libData!)).toBe(64 * KiB);
    expect(mappingCoreBytes(sharedFile!)).toBe(0);
    expect(mappingCoreBytes(heap!)).toBe(768 * KiB);
    expect(mappingCoreBytes(dontDump!)).toBe(0);
    expect(mappingCoreBytes(vvar!)).toBe(0);
    expect(mappingCoreBytes(shm!)).toBe(3 * MiB);
    expect(mappingImageBytes(lib!)).toEqual({ bytes: 0 });
    expect(mappingImageBytes(libData!)).toEqual({ bytes: 16 * KiB });
    expect(mappingImageBytes(sharedFile!)).toEqual({ bytes: 0 });
    expect(mappingImageBytes(heap!)).toEqual({ bytes: 768 * KiB });
    expect(mappingImageBytes(shm!)).toEqual({ bytes: 3 * MiB, shared: '00:01:777' });
  });

  it('counts shared memory once in the images and once in each process\'s core; a process without a core adds none', () => {
    const shm = entry([BASE, BASE + 1 * GiB], 'rw-s', '/dev/zero (deleted)', { rss: 256 * KiB }, 'rd wr sh', 0, 99);
    const smaps = new Map([[1, shm], [2, shm], [3, shm]]);
    const all = estimateFromSmaps(smaps, new Set([1, 2, 3]), true);
    expect(all.imageBytes).toBe(256 * MiB);
    expect(all.coreBytes).toBe(3 * 256 * MiB);
    const rootOnly = estimateFromSmaps(smaps, new Set([1]), true);
    expect(rootOnly.coreBytes).toBe(256 * MiB);
    // --core-only: no images at all.
    expect(estimateFromSmaps(smaps, new Set([1, 2, 3]), false).imageBytes).toBe(0);
  });
});
