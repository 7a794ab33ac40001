// The core file's building blocks, without a process: ELF note layouts gdb depends on, and the page index that finds each dumped page in pages-N.img or in a parent image directory.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { copyRanges, copyThroughBuffers, KERNEL_COPY_MIN_BYTES, KernelCopier, type CopyJob } from '../../src/corefile/copy.js';
import { note, NT_PRSTATUS } from '../../src/corefile/elf.js';
import { CoreBuildError } from '../../src/corefile/errors.js';
import { USER_REGS, type ThreadState } from '../../src/criu-images/core-entry.js';
import { PAGEMAP_MAGIC } from '../../src/criu-images/image-file.js';
import { PE } from '../../src/criu-images/pagemap.js';
import { image, message } from '../helpers/criu-image-writer.js';
import { auxv, buildNotes, fileNote, maxNotesSize, prpsinfo, prstatus, xstate } from '../../src/corefile/notes.js';
import { PageIndex } from '../../src/corefile/page-index.js';

const PAGE = 4096;

describe('ELF notes', () => {
  it('pads the name and the descriptor to 4 bytes', () => {
    const n = note('CORE', NT_PRSTATUS, Buffer.from([1, 2, 3, 4, 5]));
    expect(n.readUInt32LE(0)).toBe(5); // "CORE\0"
    expect(n.readUInt32LE(4)).toBe(5);
    expect(n.readUInt32LE(8)).toBe(NT_PRSTATUS);
    expect(n.subarray(12, 17).toString('latin1')).toBe('CORE\0');
    expect(n.length).toBe(12 + 8 + 8);
    expect([...n.subarray(20, 25)]).toEqual([1, 2, 3, 4, 5]);
  });

  it('writes NT_PRSTATUS as x86_64 struct elf_prstatus: pids at 32, user_regs_struct at 112, pr_fpvalid at 328', () => {
    const regs = USER_REGS.map((_, i) => BigInt(i + 1) * 0x1000n);
    regs[USER_REGS.indexOf('ax')] = 0xfffffffffffffffcn;
    const thread: ThreadState = { tid: 4242, regs, blocked: 0x4000n, fpregs: undefined };
    const b = prstatus({ pid: 4240, ppid: 1, pgid: 4240, sid: 4240, threads: [4240, 4242] }, thread);
    expect(b.length).toBe(336);
    expect(b.readInt32LE(32)).toBe(4242);
    expect(b.readInt32LE(36)).toBe(1);
    expect(b.readBigUInt64LE(24)).toBe(0x4000n);
    expect(b.readBigUInt64LE(112)).toBe(0x1000n); // r15 first
    expect(b.readBigUInt64LE(112 + 16 * 8)).toBe(17n * 0x1000n); // rip is the 17th
    expect(b.readBigUInt64LE(112 + 10 * 8)).toBe(0xfffffffffffffffcn); // rax
    expect(b.readInt32LE(328)).toBe(0);
  });

  it('writes NT_PRPSINFO with the command name at 40 and the arguments at 56, cut to fit', () => {
    const b = prpsinfo({ task: { pid: 7, ppid: 1, pgid: 7, sid: 7, threads: [7] }, comm: 'worker', psargs: 'x'.repeat(200), uid: 1000, gid: 100 });
    expect(b.length).toBe(136);
    expect(b.readInt32LE(24)).toBe(7);
    expect(b.subarray(40, 47).toString('latin1')).toBe('worker\0');
    expect(b.subarray(56, 136).toString('latin1')).toBe(`${'x'.repeat(79)}\0`);
  });

  it('cuts the saved auxv at AT_NULL and always ends it with one', () => {
    const b = auxv([6n, 4096n, 25n, 0x7ffc0000n, 0n, 0n, 0n, 0n]);
    expect(b.length).toBe(6 * 8);
    expect(b.readBigUInt64LE(32)).toBe(0n);
    expect(auxv([6n, 4096n]).length).toBe(4 * 8); // CRIU trims the zeros: the terminator is added back
  });

  it('writes NT_FILE as count, page size, (start, end, page offset) triples, then the paths', () => {
    const b = fileNote([
      { start: 0x1000, end: 0x3000, offset: 0x2000, path: '/bin/a' },
      { start: 0x5000, end: 0x6000, offset: 0, path: '/lib/b.so' },
    ]);
    expect(b.readBigUInt64LE(0)).toBe(2n);
    expect(b.readBigUInt64LE(8)).toBe(4096n);
    expect(b.readBigUInt64LE(16 + 16)).toBe(2n); // 0x2000 bytes = 2 pages
    expect(b.subarray(16 + 48).toString('latin1')).toBe('/bin/a\0/lib/b.so\0');
  });

  it('writes NT_X86_XSTATE with XCR0 where gdb looks (464), the XSAVE header at 512 and the ymm upper halves at 576', () => {
    const fp = {
      cwd: 0x37f, swd: 0, twd: 0, fop: 0, rip: 0n, rdp: 0n, mxcsr: 0x1f80, mxcsrMask: 0xffff,
      stSpace: new Array(32).fill(0), xmmSpace: new Array(64).fill(7), xstateBv: 0x6n, ymmhSpace: new Array(64).fill(9),
    };
    const b = xstate(fp)!;
    expect(b.length).toBe(832);
    expect(b.readUInt16LE(0)).toBe(0x37f);
    expect(b.readUInt32LE(24)).toBe(0x1f80);
    expect(b.readUInt32LE(160)).toBe(7);
    expect(b.readBigUInt64LE(464)).toBe(7n);
    expect(b.readBigUInt64LE(512)).toBe(6n);
    expect(b.readUInt32LE(576)).toBe(9);
    expect(xstate({ ...fp, ymmhSpace: undefined })).toBeUndefined();
  });

  it('writes AVX-512 and PKRU where gdb reads them for the XCR0 it finds: k0-k7 at 1088, zmm upper halves at 1152, zmm16-31 at 1664, PKRU at 2688', () => {
    const fp = {
      cwd: 0x37f, swd: 0, twd: 0, fop: 0, rip: 0n, rdp: 0n, mxcsr: 0x1f80, mxcsrMask: 0xffff,
      stSpace: new Array(32).fill(0), xmmSpace: new Array(64).fill(0), xstateBv: 0xe7n, ymmhSpace: new Array(64).fill(9),
      opmaskReg: [...Array(8).keys()].map((i) => 0x1234abcd00000000n + BigInt(i)),
      zmmUpper: [...Array(64).keys()].map((i) => 0xa000n + BigInt(i)),
      hi16Zmm: [...Array(128).keys()].map((i) => 0xb000n + BigInt(i)),
    };
    const avx512 = xstate(fp)!;
    // No PKRU on the dumping CPU: XCR0 0xe7 and 2688 bytes, the pair gdb reads as this layout.
    expect(avx512.length).toBe(2688);
    expect(avx512.readBigUInt64LE(464)).toBe(0xe7n);
    expect(avx512.readBigUInt64LE(512)).toBe(0xe7n);
    expect(avx512.readBigUInt64LE(1088 + 8)).toBe(0x1234abcd00000001n); // k1
    expect(avx512.readBigUInt64LE(1152 + 32 * 3)).toBe(0xa000n + 12n); // zmm3's bits 256-319
    expect(avx512.readBigUInt64LE(1664 + 64 * 1)).toBe(0xb000n + 8n); // zmm17's low quadword
    const withPkru = xstate({ ...fp, xstateBv: 0x2e7n, pkru: [0x55555554, 0] })!;
    expect(withPkru.length).toBe(2696);
    expect(withPkru.readBigUInt64LE(464)).toBe(0x2e7n);
    expect(withPkru.readUInt32LE(2688)).toBe(0x55555554);
    // A thread whose AVX-512 state is still initial keeps its own xstate_bv: gdb shows those registers as zero.
    expect(xstate({ ...fp, xstateBv: 0x7n })!.readBigUInt64LE(512)).toBe(0x7n);
  });

  it('sets aside enough room for the notes before the threads are known', () => {
    const fp = {
      cwd: 0, swd: 0, twd: 0, fop: 0, rip: 0n, rdp: 0n, mxcsr: 0, mxcsrMask: 0,
      stSpace: new Array(32).fill(0), xmmSpace: new Array(64).fill(0), xstateBv: 0x2e7n, ymmhSpace: new Array(64).fill(0),
      opmaskReg: new Array(8).fill(0n), zmmUpper: new Array(64).fill(0n), hi16Zmm: new Array(128).fill(0n), pkru: [0, 0],
    };
    const task = { pid: 5, ppid: 1, pgid: 5, sid: 5, threads: [5, 6, 7] };
    const threads = task.threads.map((tid) => ({ tid, regs: USER_REGS.map(() => 0n), blocked: 0n, fpregs: fp }));
    const files = [{ start: 0x1000, end: 0x2000, offset: 0, path: '/usr/lib/x86_64-linux-gnu/libc.so.6' }];
    const auxvWords = [6n, 4096n];
    const notes = buildNotes({ info: { task, comm: 'w', psargs: 'w --x', uid: 0, gid: 0 }, threads, auxv: auxvWords, files });
    expect(maxNotesSize({ threads: 3, auxv: auxvWords, files })).toBe(notes.length); // every thread at its largest
  });
});

describe('PageIndex', () => {
  let dir: string;
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** An images directory with a pagemap and a pages file whose every page is filled with one byte: the page's own
   *  label, so that a test can tell where each byte came from. */
  function imagesDir(name: string, runs: { vaddr: number; pages: number; flags: number }[], labels: number[]): string {
    const d = join(dir, name);
    mkdirSync(d, { recursive: true });
    const entries = runs.map((r) => message('pagemap_entry', { vaddr: r.vaddr, compat_nr_pages: 0, flags: r.flags, nr_pages: r.pages }));
    writeFileSync(join(d, 'pagemap-1.img'), image(PAGEMAP_MAGIC, [message('pagemap_head', { pages_id: 1 }), ...entries]));
    writeFileSync(join(d, 'pages-1.img'), Buffer.concat(labels.map((label) => Buffer.alloc(PAGE, label))));
    return d;
  }

  it('finds pages in pages-N.img in pagemap order, even when the pagemap is not sorted by address', async () => {
    dir = mkdtempSync(join(tmpdir(), 'corefile-unit-'));
    const d = imagesDir('only', [
      { vaddr: 0x10000, pages: 2, flags: PE.PRESENT | PE.LAZY },
      { vaddr: 0x4000, pages: 1, flags: PE.PRESENT },
      { vaddr: 0x20000, pages: 1, flags: PE.LAZY }, // in a lazy-pages server: no data here
    ], [0xa1, 0xa2, 0xb1]);
    const index = PageIndex.open(d, 'pagemap-1.img')!;
    const extents = index.extents(0, 0x100000);
    expect(extents.map((e) => [e.vaddr, e.bytes, e.offset])).toEqual([
      [0x4000, PAGE, 2 * PAGE],
      [0x10000, 2 * PAGE, 0],
    ]);
    expect([...(await index.read(0x10000 + PAGE - 2, 4))]).toEqual([0xa1, 0xa1, 0xa2, 0xa2]);
    expect([...(await index.read(0x20000, 2))]).toEqual([0, 0]);
  });

  it('reads pages flagged PE_PARENT from the parent directory, through two levels, including part of a run', async () => {
    dir = mkdtempSync(join(tmpdir(), 'corefile-unit-'));
    imagesDir('grand', [{ vaddr: 0x1000, pages: 4, flags: PE.PRESENT }], [0x11, 0x12, 0x13, 0x14]);
    imagesDir('parent', [
      { vaddr: 0x1000, pages: 2, flags: PE.PARENT },
      { vaddr: 0x3000, pages: 2, flags: PE.PRESENT },
    ], [0x23, 0x24]);
    symlinkSync('../grand', join(dir, 'parent', 'parent'));
    const child = imagesDir('child', [
      { vaddr: 0x1000, pages: 1, flags: PE.PRESENT },
      { vaddr: 0x2000, pages: 3, flags: PE.PARENT },
    ], [0x31]);
    symlinkSync('../parent', join(child, 'parent'));
    const index = PageIndex.open(child, 'pagemap-1.img')!;
    const bytes = await index.read(0x1000, 4 * PAGE);
    expect([0, 1, 2, 3].map((page) => bytes[page * PAGE])).toEqual([0x31, 0x12, 0x23, 0x24]);
  });

  it('says which directory to look for when a parent directory is gone', async () => {
    dir = mkdtempSync(join(tmpdir(), 'corefile-unit-'));
    const child = imagesDir('child', [{ vaddr: 0x1000, pages: 1, flags: PE.PARENT }], []);
    expect(() => PageIndex.open(child, 'pagemap-1.img')).toThrow(/parent.*missing/);
  });

  it('refuses a pages file shorter than its pagemap says', async () => {
    dir = mkdtempSync(join(tmpdir(), 'corefile-unit-'));
    const d = imagesDir('short', [{ vaddr: 0x1000, pages: 3, flags: PE.PRESENT }], [1, 2]);
    expect(() => PageIndex.open(d, 'pagemap-1.img')).toThrow(/holds 8192 bytes/);
  });

  it('refuses a pagemap that accounts for less memory than its pages file holds (a reader of another CRIU version)', async () => {
    dir = mkdtempSync(join(tmpdir(), 'corefile-unit-'));
    // What a reader older than CRIU 4.2 made of 4.2's images: the runs are there, their page counts 0.
    const d = imagesDir('thin', [{ vaddr: 0x1000, pages: 0, flags: PE.PRESENT }, { vaddr: 0x9000, pages: 0, flags: PE.PRESENT }], [1, 2, 3]);
    expect(() => PageIndex.open(d, 'pagemap-1.img')).toThrow(/holds 12288 bytes of memory but .* accounts for 0/);
  });
});

describe('copying ranges into the core', () => {
  let dir: string;
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** Two sources of distinct bytes and jobs that take odd-sized pieces of both, leaving a hole between them. */
  function setup(): { jobs: CopyJob[]; expected: Buffer } {
    dir = mkdtempSync(join(tmpdir(), 'corefile-copy-'));
    const a = Buffer.from(Array.from({ length: 3 * PAGE + 17 }, (_, i) => (i * 7) % 251));
    const b = Buffer.from(Array.from({ length: 600 << 10 }, (_, i) => (i * 13 + 5) % 253)); // more than one chunk
    writeFileSync(join(dir, 'a'), a);
    writeFileSync(join(dir, 'b b'), b); // a space in a path
    const jobs = [
      { target: 10, file: join(dir, 'a'), offset: 5, bytes: 2 * PAGE },
      { target: 3 * PAGE, file: join(dir, 'b b'), offset: 1, bytes: (600 << 10) - 1 },
    ];
    const expected = Buffer.alloc(3 * PAGE + (600 << 10) - 1);
    a.copy(expected, 10, 5, 5 + 2 * PAGE);
    b.copy(expected, 3 * PAGE, 1);
    return { jobs, expected };
  }

  it('puts every byte at its place, in the kernel and through Node alike', async () => {
    const { jobs, expected } = setup();
    for (const how of ['kernel', 'node'] as const) {
      const path = join(dir, `out-${how}`);
      const out = await open(path, 'wx');
      try {
        if (how === 'kernel') expect((await copyRanges(path, out, jobs, 0)).method).toBe('kernel');
        else await copyThroughBuffers(out, jobs);
      } finally {
        await out.close();
      }
      expect(readFileSync(path).equals(expected), how).toBe(true);
    }
  });

  it('copies less than KERNEL_COPY_MIN_BYTES through Node (no python3 to start), every byte at its place', async () => {
    const { jobs, expected } = setup();
    const path = join(dir, 'out-small');
    const out = await open(path, 'wx');
    try {
      expect(jobs.reduce((n, j) => n + j.bytes, 0)).toBeLessThan(KERNEL_COPY_MIN_BYTES);
      // Chosen, not fallen back to: no reason given.
      expect(await copyRanges(path, out, jobs)).toEqual({ bytes: jobs.reduce((n, j) => n + j.bytes, 0), method: 'node' });
    } finally {
      await out.close();
    }
    expect(readFileSync(path).equals(expected)).toBe(true);
  });

  it('copies core after core through one helper (a tree\'s), each byte at its place, and names a short source', async () => {
    const { jobs, expected } = setup();
    const copier = KernelCopier.start();
    expect(copier, 'setup installs python3').toBeDefined();
    try {
      for (const n of [1, 2, 3]) {
        const path = join(dir, `out-shared-${n}`);
        const out = await open(path, 'wx');
        try {
          // Small cores too: with a helper running, size does not decide.
          expect(await copyRanges(path, out, jobs, undefined, copier)).toEqual({ bytes: jobs.reduce((s, j) => s + j.bytes, 0), method: 'kernel' });
        } finally {
          await out.close();
        }
        expect(readFileSync(path).equals(expected), `core ${n}`).toBe(true);
      }
      const path = join(dir, 'out-short');
      const out = await open(path, 'wx');
      try {
        await expect(copyRanges(path, out, [{ ...jobs[0]!, bytes: 4 * PAGE }], undefined, copier)).rejects.toThrow(/\/a ended at \d+, before/);
      } finally {
        await out.close();
      }
    } finally {
      copier!.close();
    }
  });

  it('fails with the source named when a source is shorter than its job', async () => {
    const { jobs } = setup();
    const short = [{ ...jobs[0]!, bytes: 4 * PAGE }];
    const path = join(dir, 'out');
    const out = await open(path, 'wx');
    try {
      await expect(copyRanges(path, out, short)).rejects.toThrow(/\/a ended at \d+, before/);
      await expect(copyThroughBuffers(out, short)).rejects.toThrow(CoreBuildError);
    } finally {
      await out.close();
    }
  });
});
