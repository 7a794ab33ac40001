// Reading an ELF core's PT_LOAD segments and comparing a core's memory with gcore's of the same stop, byte for byte:
// what the core tests hold every core snap writes to.
import { closeSync, openSync, readSync } from 'node:fs';

export interface Load {
  vaddr: number;
  filesz: number;
  memsz: number;
  offset: number;
}

export function readLoads(core: string): Load[] {
  const fd = openSync(core, 'r');
  try {
    const head = Buffer.alloc(64);
    readSync(fd, head, 0, 64, 0);
    const phoff = Number(head.readBigUInt64LE(32));
    const phnum = head.readUInt16LE(56);
    const table = Buffer.alloc(56 * phnum);
    readSync(fd, table, 0, table.length, phoff);
    const loads: Load[] = [];
    for (let i = 0; i < phnum; i++) {
      if (table.readUInt32LE(i * 56) !== 1) continue;
      loads.push({
        offset: Number(table.readBigUInt64LE(i * 56 + 8)),
        vaddr: Number(table.readBigUInt64LE(i * 56 + 16)),
        filesz: Number(table.readBigUInt64LE(i * 56 + 32)),
        memsz: Number(table.readBigUInt64LE(i * 56 + 40)),
      });
    }
    return loads;
  } finally {
    closeSync(fd);
  }
}

/**
 * Compares every byte gcore wrote with the same addresses in our core. Returns the ranges gcore has and we leave to
 * the mapped files (p_filesz short of p_memsz), and the number of bytes compared.
 */
export function compareMemory(gcoreFile: string, ourFile: string): { compared: number; differing: number[]; notInOurs: [number, number][] } {
  const theirs = readLoads(gcoreFile).filter((l) => l.filesz > 0);
  const ours = readLoads(ourFile);
  const a = openSync(gcoreFile, 'r');
  const b = openSync(ourFile, 'r');
  const bufA = Buffer.alloc(1 << 20);
  const bufB = Buffer.alloc(1 << 20);
  let compared = 0;
  const differing: number[] = [];
  const notInOurs: [number, number][] = [];
  try {
    for (const load of theirs) {
      let addr = load.vaddr;
      const end = load.vaddr + load.filesz;
      while (addr < end) {
        const mine = ours.find((l) => l.vaddr <= addr && addr < l.vaddr + l.filesz);
        if (!mine) {
          const next = Math.min(end, ...ours.filter((l) => l.vaddr > addr && l.filesz > 0).map((l) => l.vaddr));
          notInOurs.push([addr, next]);
          addr = next;
          continue;
        }
        const length = Math.min(bufA.length, end - addr, mine.vaddr + mine.filesz - addr);
        readSync(a, bufA, 0, length, load.offset + (addr - load.vaddr));
        readSync(b, bufB, 0, length, mine.offset + (addr - mine.vaddr));
        if (!bufA.subarray(0, length).equals(bufB.subarray(0, length))) {
          for (let i = 0; i < length && differing.length < 1000; i++) if (bufA[i] !== bufB[i]) differing.push(addr + i);
        }
        compared += length;
        addr += length;
      }
    }
  } finally {
    closeSync(a);
    closeSync(b);
  }
  return { compared, differing, notInOurs };
}

/** Address ranges of file mappings, from /proc/PID/maps taken while the target was stopped. */
export function fileBackedRanges(maps: string): [number, number][] {
  return maps.split('\n').flatMap((line) => {
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ (\d+)\s+(\/\S.*)?$/.exec(line);
    if (!m || m[3] === '0' || !m[4]) return [];
    return [[parseInt(m[1]!, 16), parseInt(m[2]!, 16)] as [number, number]];
  });
}
