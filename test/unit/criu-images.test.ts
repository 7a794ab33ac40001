// The CRIU images a core is built from, read without crit: mm (VMAs, auxv, the executable), pagemap (CRIU 4.2's
// 64-bit page counts and the older field), files and memfd, written here as criu writes them.
import { describe, expect, it } from 'vitest';
import { CoreBuildError } from '../../src/corefile/errors.js';
import { ImageFormatError } from '../../src/criu-images/errors.js';
import { filesFromImage, memfdShmids } from '../../src/criu-images/files.js';
import { FILES_MAGIC, MEMFD_INODE_MAGIC, MM_MAGIC, PAGEMAP_MAGIC, PSTREE_MAGIC } from '../../src/criu-images/image-file.js';
import { mmFromImage, VMA } from '../../src/criu-images/mm.js';
import { PE, pagemapFromImage } from '../../src/criu-images/pagemap.js';
import { VMA_ENTRY } from '../../src/criu-images/proto.js';
import { taskFromPstree } from '../../src/criu-images/pstree.js';
import { decodeMessage, u64Field, uintField } from '../../src/criu-images/wire.js';
import { image, message } from '../helpers/criu-image-writer.js';

const VSYSCALL = 0xffffffffff600000n;
const MADV_DONTDUMP = 1n << 16n;

describe('protobuf fields', () => {
  it('keeps varints past 2^53 exact, and refuses one where a number is expected', () => {
    const f = decodeMessage(message('vma_entry', { start: VSYSCALL, end: 4096, pgoff: 2n ** 53n - 1n, shmid: 2n ** 64n - 1n }));
    expect(u64Field(f, VMA_ENTRY.start)).toBe(VSYSCALL);
    expect(uintField(f, VMA_ENTRY.end)).toBe(4096);
    expect(uintField(f, VMA_ENTRY.pgoff)).toBe(Number.MAX_SAFE_INTEGER);
    expect(u64Field(f, VMA_ENTRY.shmid)).toBe(2n ** 64n - 1n);
    expect(() => uintField(f, VMA_ENTRY.start)).toThrow(ImageFormatError);
    expect(uintField(f, VMA_ENTRY.madv)).toBeUndefined();
  });
});

describe('pstree.img', () => {
  it('puts the main thread first whatever order pstree lists the threads in, and names a pid it lacks', () => {
    const img = image(PSTREE_MAGIC, [message('pstree_entry', { pid: 10, ppid: 1, pgid: 10, sid: 10, threads: [12, 10, 11] })]);
    expect(taskFromPstree(img, 10)).toEqual({ pid: 10, ppid: 1, pgid: 10, sid: 10, threads: [10, 12, 11] });
    expect(() => taskFromPstree(img, 99)).toThrow(CoreBuildError);
    expect(() => taskFromPstree(img, 99)).toThrow(/pid 99 is not in pstree.img \(it holds 10\)/);
  });
});

describe('mm-PID.img', () => {
  const vma = (v: { start: bigint | number; end: bigint | number; pgoff?: number; shmid?: number; prot: number; flags: number; status: number; madv?: bigint }) =>
    message('vma_entry', { start: v.start, end: v.end, pgoff: v.pgoff ?? 0, shmid: v.shmid ?? 0, prot: v.prot, flags: v.flags, status: v.status, fd: -1, madv: v.madv });

  it('reads every VMA sorted by address, leaves out the vsyscall page, keeps madvise bits and auxv words exact', () => {
    const mm = message('mm_entry', {
      mm_arg_start: 0x7ffc1000, mm_arg_end: 0x7ffc1040, exe_file_id: 7,
      mm_saved_auxv: [33n, 0x7ffd000n, 6n, 4096n, 25n, 0xfffffffffffff000n],
      vmas: [
        vma({ start: 0x7f0000000000, end: 0x7f0000002000, shmid: 7, prot: 5, flags: 2, status: VMA.AREA_REGULAR | VMA.FILE_PRIVATE }),
        vma({ start: 0x400000, end: 0x401000, prot: 3, flags: 0x22, status: VMA.AREA_REGULAR | VMA.ANON_PRIVATE, madv: MADV_DONTDUMP }),
        vma({ start: VSYSCALL, end: VSYSCALL + 4096n, prot: 4, flags: 0x22, status: VMA.AREA_VSYSCALL }),
      ],
    });
    const read = mmFromImage(image(MM_MAGIC, [mm]), 42);
    expect(read.vmas.map((v) => v.start)).toEqual([0x400000, 0x7f0000000000]);
    expect(read.vmas[0]).toMatchObject({ end: 0x401000, prot: 3, flags: 0x22, madv: MADV_DONTDUMP });
    expect(read.vmas[1]).toMatchObject({ shmid: 7, status: VMA.AREA_REGULAR | VMA.FILE_PRIVATE, madv: 0n });
    expect(read.auxv.at(-1)).toBe(0xfffffffffffff000n);
    expect(read).toMatchObject({ argStart: 0x7ffc1000, argEnd: 0x7ffc1040, exeFileId: 7 });
  });

  it('names the image when it is not one criu wrote', () => {
    expect(() => mmFromImage(image(PAGEMAP_MAGIC, []), 42)).toThrow(/mm-42.img .*magic/);
    expect(() => mmFromImage(image(MM_MAGIC, [Buffer.from([0x0a, 0x05, 0x01])]), 42)).toThrow(/mm-42.img is not an image criu wrote: truncated/);
  });
});

describe('pagemap images', () => {
  it('counts pages from CRIU 4.2\'s nr_pages, else from compat_nr_pages, and reads old images without flags', () => {
    const img = image(PAGEMAP_MAGIC, [
      message('pagemap_head', { pages_id: 3 }),
      message('pagemap_entry', { vaddr: 0x1000, compat_nr_pages: 0, flags: PE.PRESENT, nr_pages: 2n ** 33n }), // more pages than a u32 counts
      message('pagemap_entry', { vaddr: 0x9000, compat_nr_pages: 2, flags: PE.PARENT }),
      message('pagemap_entry', { vaddr: 0xa000, compat_nr_pages: 1, in_parent: true }), // before CRIU 3: in_parent, no flags
      message('pagemap_entry', { vaddr: 0xb000, compat_nr_pages: 1 }),
    ]);
    expect(pagemapFromImage(img, 'pagemap-1.img')).toEqual({
      pagesId: 3,
      runs: [
        { vaddr: 0x1000, pages: 2 ** 33, flags: PE.PRESENT },
        { vaddr: 0x9000, pages: 2, flags: PE.PARENT },
        { vaddr: 0xa000, pages: 1, flags: PE.PARENT },
        { vaddr: 0xb000, pages: 1, flags: PE.PRESENT },
      ],
    });
  });

  it('refuses a pagemap without its head, or a run without a page count', () => {
    expect(() => pagemapFromImage(image(PAGEMAP_MAGIC, []), 'pagemap-1.img')).toThrow(/no pagemap head/);
    expect(() => pagemapFromImage(image(PAGEMAP_MAGIC, [message('pagemap_head', { pages_id: 1 }), message('pagemap_entry', { vaddr: 0x1000 })]), 'pagemap-1.img')).toThrow(/page count/);
  });
});

describe('files.img and memfd.img', () => {
  it('names regular files by id with their size, and finds the shmem image of a memfd through its inode', () => {
    const files = image(FILES_MAGIC, [
      message('file_entry', { type: 'REG', id: 5, reg: { id: 5, flags: 0, pos: 0, name: '/usr/bin/worker', size: 123456 } }),
      message('file_entry', { type: 'REG', id: 6, reg: { id: 6, flags: 0, pos: 0, name: 'var/log/app.log' } }),
      message('file_entry', { type: 'MEMFD', id: 9, memfd: { id: 9, flags: 2, pos: 0, inode_id: 77 } }),
      message('file_entry', { type: 'INETSK', id: 10 }), // an inet socket: neither
    ]);
    const read = filesFromImage(files);
    expect([...read.regular]).toEqual([[5, { path: '/usr/bin/worker', size: 123456 }], [6, { path: 'var/log/app.log', size: undefined }]]);
    expect([...read.memfdInodes]).toEqual([[9, 77]]);
    const memfd = image(MEMFD_INODE_MAGIC, [message('memfd_inode_entry', { name: 'memfd:x', uid: 0, gid: 0, size: 8192, shmid: 4242, seals: 0, inode_id: 77 })]);
    expect([...memfdShmids(read, memfd)]).toEqual([[9, 4242]]);
  });
});
