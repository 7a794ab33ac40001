// ELF64 little-endian encoding for an x86_64 core file: the file header, program headers and notes, laid out as
// the kernel's binfmt_elf.c writes them (which is what gdb and BFD read).

import type { FileHandle } from 'node:fs/promises'

export const PAGE_SIZE = 4096

export const ET_CORE = 4
export const EM_X86_64 = 62
export const PT_LOAD = 1
export const PT_NOTE = 4
export const PF_X = 1
export const PF_W = 2
export const PF_R = 4
/** e_phnum's escape value: the real count is then in section header 0's sh_info. */
export const PN_XNUM = 0xffff

export const NT_PRSTATUS = 1
export const NT_FPREGSET = 2
export const NT_PRPSINFO = 3
export const NT_AUXV = 6
export const NT_X86_XSTATE = 0x202
export const NT_FILE = 0x46494c45

export const EHDR_SIZE = 64
export const PHDR_SIZE = 56
export const SHDR_SIZE = 64

export interface ProgramHeader {
  type: number
  flags: number
  offset: number
  vaddr: number
  filesz: number
  memsz: number
  align: number
}

export function elfHeader(phnum: number, shoff: number): Buffer {
  const b = Buffer.alloc(EHDR_SIZE)
  b.set([0x7f, 0x45, 0x4c, 0x46, 2 /* ELFCLASS64 */, 1 /* ELFDATA2LSB */, 1 /* EV_CURRENT */, 0 /* ELFOSABI_NONE */])
  b.writeUInt16LE(ET_CORE, 16)
  b.writeUInt16LE(EM_X86_64, 18)
  b.writeUInt32LE(1, 20) // e_version
  b.writeBigUInt64LE(0n, 24) // e_entry
  b.writeBigUInt64LE(BigInt(EHDR_SIZE), 32) // e_phoff: program headers right after this header
  b.writeBigUInt64LE(BigInt(shoff), 40)
  b.writeUInt32LE(0, 48) // e_flags
  b.writeUInt16LE(EHDR_SIZE, 52)
  b.writeUInt16LE(PHDR_SIZE, 54)
  b.writeUInt16LE(Math.min(phnum, PN_XNUM), 56)
  b.writeUInt16LE(shoff ? SHDR_SIZE : 0, 58)
  b.writeUInt16LE(shoff ? 1 : 0, 60) // e_shnum
  b.writeUInt16LE(0, 62) // e_shstrndx: SHN_UNDEF
  return b
}

/** The lone section header that carries the program header count when there are PN_XNUM or more. */
export function extendedNumberingSection(phnum: number): Buffer {
  const b = Buffer.alloc(SHDR_SIZE)
  b.writeUInt32LE(phnum, 44) // sh_info
  return b
}

export function programHeader(h: ProgramHeader): Buffer {
  const b = Buffer.alloc(PHDR_SIZE)
  b.writeUInt32LE(h.type, 0)
  b.writeUInt32LE(h.flags, 4)
  b.writeBigUInt64LE(BigInt(h.offset), 8)
  b.writeBigUInt64LE(BigInt(h.vaddr), 16)
  b.writeBigUInt64LE(0n, 24) // p_paddr
  b.writeBigUInt64LE(BigInt(h.filesz), 32)
  b.writeBigUInt64LE(BigInt(h.memsz), 40)
  b.writeBigUInt64LE(BigInt(h.align), 48)
  return b
}

export const align4 = (n: number): number => (n + 3) & ~3

/** One note: namesz, descsz, type, the NUL-terminated name and the descriptor, each padded to 4 bytes. */
export function note(name: string, type: number, desc: Buffer): Buffer {
  const nameBytes = Buffer.from(`${name}\0`, 'latin1')
  const b = Buffer.alloc(12 + align4(nameBytes.length) + align4(desc.length))
  b.writeUInt32LE(nameBytes.length, 0)
  b.writeUInt32LE(desc.length, 4)
  b.writeUInt32LE(type, 8)
  nameBytes.copy(b, 12)
  desc.copy(b, 12 + align4(nameBytes.length))
  return b
}

export function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to
}

/** The program headers of an x86_64 ELF core as they are in the file (read back from a core gdb wrote): the count
 *  from the lone section header when it is PN_XNUM or more. Throws on anything that is not one. */
export async function readProgramHeaders(file: FileHandle, what: string): Promise<ProgramHeader[]> {
  const eh = Buffer.alloc(EHDR_SIZE)
  await file.read(eh, 0, EHDR_SIZE, 0)
  if (!eh.subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46])) || eh[4] !== 2 || eh[5] !== 1 || eh.readUInt16LE(16) !== ET_CORE)
    throw new Error(`${what} is not a little-endian 64-bit ELF core`)
  const phoff = Number(eh.readBigUInt64LE(32))
  const shoff = Number(eh.readBigUInt64LE(40))
  let phnum = eh.readUInt16LE(56)
  if (eh.readUInt16LE(54) !== PHDR_SIZE) throw new Error(`${what} has program headers of ${eh.readUInt16LE(54)} bytes`)
  if (phnum === PN_XNUM) {
    const sh = Buffer.alloc(SHDR_SIZE)
    await file.read(sh, 0, SHDR_SIZE, shoff)
    phnum = sh.readUInt32LE(44)
  }
  const table = Buffer.alloc(phnum * PHDR_SIZE)
  const { bytesRead } = await file.read(table, 0, table.length, phoff)
  if (bytesRead !== table.length) throw new Error(`${what} ends inside its program headers`)
  return Array.from({ length: phnum }, (_, i) => {
    const at = i * PHDR_SIZE
    return {
      type: table.readUInt32LE(at),
      flags: table.readUInt32LE(at + 4),
      offset: Number(table.readBigUInt64LE(at + 8)),
      vaddr: Number(table.readBigUInt64LE(at + 16)),
      filesz: Number(table.readBigUInt64LE(at + 32)),
      memsz: Number(table.readBigUInt64LE(at + 40)),
      align: Number(table.readBigUInt64LE(at + 48)),
    }
  })
}
