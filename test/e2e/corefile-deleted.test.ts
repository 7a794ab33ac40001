// A mapping of a file deleted while mapped: nothing on the host holds its pages any more, criu carries them in its
// images (a ghost file), and the core built from the images must hold them too: the pages the process wrote from its
// own memory, the others from the ghost, the tail past the file's end as zeros.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { extractBundle, makeTempDir, removeTempDirs } from '../helpers/bundle.js';
import { runSnap } from '../helpers/cli.js';
import { killPid, waitFor } from '../helpers/target.js';

const PAGE = 4096;
const FILE_BYTES = 3 * PAGE + 100;
const content = Buffer.from(Array.from({ length: FILE_BYTES }, (_, i) => (i * 7 + 3) & 0xff));
const WRITTEN = Buffer.from('written by the process');

const pids: number[] = [];
afterAll(async () => {
  for (const pid of pids) await killPid(pid);
  removeTempDirs();
});

/** The bytes [addr, addr + length) as a core's PT_LOAD segments hold them (an ELF64 little-endian core). */
function readCore(core: string, addr: number, length: number): Buffer {
  const fd = openSync(core, 'r');
  try {
    const eh = Buffer.alloc(64);
    readSync(fd, eh, 0, 64, 0);
    const phoff = Number(eh.readBigUInt64LE(0x20));
    const phentsize = eh.readUInt16LE(0x36);
    const phnum = eh.readUInt16LE(0x38);
    for (let i = 0; i < phnum; i++) {
      const ph = Buffer.alloc(phentsize);
      readSync(fd, ph, 0, phentsize, phoff + i * phentsize);
      if (ph.readUInt32LE(0) !== 1) continue; // PT_LOAD
      const offset = Number(ph.readBigUInt64LE(8));
      const vaddr = Number(ph.readBigUInt64LE(16));
      const filesz = Number(ph.readBigUInt64LE(32));
      if (addr < vaddr || addr + length > vaddr + filesz) continue;
      const out = Buffer.alloc(length);
      readSync(fd, out, 0, length, offset + (addr - vaddr));
      return out;
    }
    throw new Error(`no PT_LOAD of ${core} holds 0x${addr.toString(16)}+${length}`);
  } finally {
    closeSync(fd);
  }
}

describe('a core built from the images, of a process that maps a deleted file', () => {
  it('holds the deleted file\'s pages from criu\'s ghost, and the page the process wrote from its memory', async () => {
    const dir = makeTempDir('snap-deleted-map-');
    const script = [
      'import mmap, os, sys, time',
      'd = sys.argv[1]; p = os.path.join(d, "mapped.bin")',
      `open(p, "wb").write(bytes((i * 7 + 3) & 0xff for i in range(${FILE_BYTES})))`,
      'fd = os.open(p, os.O_RDWR)',
      `m = mmap.mmap(fd, ${FILE_BYTES}, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)`,
      'os.close(fd); os.unlink(p)',
      `m[${PAGE}:${PAGE + WRITTEN.length}] = b"${WRITTEN.toString()}"`,
      'start = next(l.split("-")[0] for l in open("/proc/self/maps") if "mapped.bin (deleted)" in l)',
      'open(os.path.join(d, "addr.tmp"), "w").write(start); os.rename(os.path.join(d, "addr.tmp"), os.path.join(d, "addr"))',
      'while True: time.sleep(0.05)',
    ].join('\n');
    const child: ChildProcess = spawn('/usr/bin/python3', ['-c', script, dir], { detached: true, stdio: 'ignore' });
    pids.push(child.pid!);
    const addr = await waitFor(() => existsSync(join(dir, 'addr')) && parseInt(readFileSync(join(dir, 'addr'), 'utf8'), 16), {
      what: 'the python to map and delete its file',
    });

    const bundle = join(dir, 'deleted.snap.tar.zst');
    const dump = await runSnap(['dump', String(child.pid), '-o', bundle, '--json'], { env: { PROCSNAP_JOURNAL_DIR: join(dir, 'journal') } });
    expect(dump.exitCode, dump.stderr).toBe(0);
    const extracted = await extractBundle(bundle);
    expect(existsSync(join(extracted, 'criu', 'remap-fpath.img')), 'criu kept the deleted file as a ghost').toBe(true);

    const expected = Buffer.alloc(4 * PAGE);
    content.copy(expected);
    WRITTEN.copy(expected, PAGE);
    const inCore = readCore(join(extracted, `core.${child.pid}`), addr, 4 * PAGE);
    expect(inCore.subarray(0, PAGE).equals(expected.subarray(0, PAGE)), 'page 0, from the ghost').toBe(true);
    expect(inCore.subarray(PAGE, 2 * PAGE).equals(expected.subarray(PAGE, 2 * PAGE)), 'page 1, written by the process').toBe(true);
    expect(inCore.subarray(2 * PAGE).equals(expected.subarray(2 * PAGE)), 'pages 2 and 3, from the ghost, zeros past the end').toBe(true);
  });
});
