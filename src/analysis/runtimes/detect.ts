// Which language runtime a process runs, from what it maps: the answer picks the reader of its language's stacks
// (python.ts for CPython) and is recorded in the manifest. Deciding is a pure function of the executable's path, the
// files mapped and the Go build info; reading those from a core or an ELF file is done beside it, bounded.

import { closeSync, fstatSync, openSync, readSync } from 'node:fs'
import { basename } from 'node:path'

export type RuntimeName = 'python' | 'java' | 'go' | 'node'

export interface RuntimeRecord {
  name: RuntimeName
  /** "3.11", "go1.19.8", the JVM's home directory name ("java-17-openjdk-amd64"): what the maps or build info say. */
  version: string | null
  /** The file the runtime lives in: the interpreter or libpython, libjvm.so, the Go executable, node or libnode. */
  file: string
}

export interface RuntimeEvidence {
  /** The executable's path as the process ran it (else the first of mappedFiles is taken for it). */
  exe: string | null
  /** Every file the process maps (a core's NT_FILE note or /proc/PID/maps), in any order, repeats allowed. */
  mappedFiles: readonly string[]
  /** The Go version from the executable's build info: a string ("go1.19.8", or "" when the section holds none
   *  inline), or undefined when the executable has no Go build info. */
  goVersion?: string
}

const PYTHON_EXE = /^python(\d+\.\d+)[a-z]*$/
const LIBPYTHON = /^libpython(\d+\.\d+)[a-z]*\.so(\.|$)/
const LIBJVM = /^libjvm\.so$/
const LIBNODE = /^libnode\.so(\.|$)/

/** The runtime the evidence shows, or null for a native program. An embedded interpreter (libpython in a program of
 *  its own) is Python's: its frames are what the threads run. */
export function detectRuntime(e: RuntimeEvidence): RuntimeRecord | null {
  if (e.goVersion !== undefined && e.exe) return { name: 'go', version: e.goVersion || null, file: e.exe }
  const files = [...new Set(e.mappedFiles.map((f) => f.replace(/ \(deleted\)$/, '')))]
  const jvm = files.find((f) => LIBJVM.test(basename(f)))
  // The JDK's layout: JAVA_HOME/lib/server/libjvm.so (JDK 9 on), JAVA_HOME/jre/lib/amd64/server/libjvm.so (8).
  if (jvm) return { name: 'java', version: /\/jvm\/([^/]+)\//.exec(jvm)?.[1] ?? null, file: jvm }
  // Without its name, the executable is the core's first file mapping: the lowest address, PIE or not.
  const exe = (e.exe ?? e.mappedFiles[0])?.replace(/ \(deleted\)$/, '') ?? null
  const lib = files.find((f) => LIBPYTHON.test(basename(f)))
  if (lib) return { name: 'python', version: LIBPYTHON.exec(basename(lib))![1]!, file: lib }
  const exeName = exe ? basename(exe) : ''
  const py = PYTHON_EXE.exec(exeName)
  if (py && exe) return { name: 'python', version: py[1]!, file: exe }
  const node = files.find((f) => LIBNODE.test(basename(f)))
  if (node) return { name: 'node', version: null, file: node }
  if (exe && /^node(js)?$/.test(exeName)) return { name: 'node', version: null, file: exe }
  return null
}

const NT_FILE = 0x46494c45
const PT_NOTE = 4
/** The notes of a core with 2^16 threads and as many mappings as vm.max_map_count allows stay under this. */
const MAX_NOTES_BYTES = 64 << 20
const MAX_PHDRS = 1 << 20

/** The files an x86_64 core's NT_FILE note names, in the order of their mappings; [] for a core without one. */
export function mappedFilesOfCore(path: string): string[] {
  const fd = openSync(path, 'r')
  try {
    const read = (at: number, n: number): Buffer => {
      const b = Buffer.alloc(n)
      const got = readSync(fd, b, 0, n, at)
      return b.subarray(0, got)
    }
    const eh = read(0, 64)
    if (eh.length < 64 || eh.readUInt32BE(0) !== 0x7f454c46 || eh[4] !== 2 || eh[5] !== 1) throw new Error(`${path} is not a 64-bit little-endian ELF core`)
    const phoff = Number(eh.readBigUInt64LE(32))
    const phentsize = eh.readUInt16LE(54)
    let phnum = eh.readUInt16LE(56)
    // PN_XNUM: the count is in the first section header's sh_info.
    if (phnum === 0xffff) phnum = read(Number(eh.readBigUInt64LE(40)) + 44, 4).readUInt32LE(0)
    if (phentsize < 56 || phnum > MAX_PHDRS) throw new Error(`${path}: ${phnum} program headers of ${phentsize} bytes is not a core`)
    const size = fstatSync(fd).size
    const phdrs = read(phoff, phnum * phentsize)
    for (let i = 0; i + 56 <= phdrs.length; i += phentsize) {
      if (phdrs.readUInt32LE(i) !== PT_NOTE) continue
      const offset = Number(phdrs.readBigUInt64LE(i + 8))
      const filesz = Number(phdrs.readBigUInt64LE(i + 32))
      if (filesz > MAX_NOTES_BYTES || offset + filesz > size) throw new Error(`${path}: a note segment of ${filesz} bytes past what a core holds`)
      const files = fileNoteOf(read(offset, filesz))
      if (files) return files
    }
    return []
  } finally {
    closeSync(fd)
  }
}

/** The paths of the NT_FILE note among `notes` (a PT_NOTE segment), or undefined when there is none. */
export function fileNoteOf(notes: Buffer): string[] | undefined {
  let at = 0
  while (at + 12 <= notes.length) {
    const namesz = notes.readUInt32LE(at)
    const descsz = notes.readUInt32LE(at + 4)
    const type = notes.readUInt32LE(at + 8)
    const desc = at + 12 + align4(namesz)
    if (desc + descsz > notes.length) return undefined
    if (type === NT_FILE && notes.toString('latin1', at + 12, at + 12 + Math.max(0, namesz - 1)) === 'CORE') {
      const d = notes.subarray(desc, desc + descsz)
      const count = Number(d.readBigUInt64LE(0))
      const names = d.subarray(16 + count * 24)
      if (16 + count * 24 > d.length) return undefined
      return names.toString('utf8').split('\0').slice(0, count)
    }
    at = desc + align4(descsz)
  }
  return undefined
}

const align4 = (n: number) => (n + 3) & ~3

const GO_BUILDINFO_MAGIC = Buffer.from('\xff Go buildinf:', 'latin1')
const MAX_SECTIONS = 1 << 16

/** Runs `look` on a 64-bit little-endian ELF file (its 64-byte header given, and a reader of its bytes by offset);
 *  undefined for anything else, or a file that cannot be opened. */
function withElf64<T>(path: string, look: (read: (at: number, n: number) => Buffer, header: Buffer) => T | undefined): T | undefined {
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch {
    return undefined
  }
  try {
    const read = (at: number, n: number): Buffer => {
      const b = Buffer.alloc(n)
      return b.subarray(0, readSync(fd, b, 0, n, at))
    }
    const eh = read(0, 64)
    if (eh.length < 64 || eh.readUInt32BE(0) !== 0x7f454c46 || eh[4] !== 2 || eh[5] !== 1) return undefined
    return look(read, eh)
  } finally {
    closeSync(fd)
  }
}

/** The Go version an ELF executable's `.go.buildinfo` section names ("" when its format keeps it behind pointers,
 *  before Go 1.18), or undefined for an executable that is not Go's or cannot be read. */
export function goVersionOfExecutable(path: string): string | undefined {
  return withElf64(path, (read, eh) => {
    const shoff = Number(eh.readBigUInt64LE(40))
    const shentsize = eh.readUInt16LE(58)
    const shnum = eh.readUInt16LE(60)
    const shstrndx = eh.readUInt16LE(62)
    if (shoff === 0 || shentsize < 64 || shnum > MAX_SECTIONS || shstrndx >= shnum) return undefined
    const shdrs = read(shoff, shnum * shentsize)
    if (shdrs.length < shnum * shentsize) return undefined
    const strs = shdrs.subarray(shstrndx * shentsize)
    const strtab = read(Number(strs.readBigUInt64LE(24)), Math.min(Number(strs.readBigUInt64LE(32)), 1 << 20))
    for (let i = 0; i < shnum; i++) {
      const h = shdrs.subarray(i * shentsize)
      const nameAt = h.readUInt32LE(0)
      const end = strtab.indexOf(0, nameAt)
      if (strtab.toString('latin1', nameAt, end < 0 ? strtab.length : end) !== '.go.buildinfo') continue
      return goVersionOfBuildInfo(read(Number(h.readBigUInt64LE(24)), 32 + 10 + 256))
    }
    return undefined
  })
}

/** The version in the head of a `.go.buildinfo` section: its magic, pointer size, flags, and (flags bit 2, Go 1.18
 *  on) the version inline at 32, a varint length before it. */
export function goVersionOfBuildInfo(head: Buffer): string | undefined {
  if (head.length < 32 || !head.subarray(0, GO_BUILDINFO_MAGIC.length).equals(GO_BUILDINFO_MAGIC)) return undefined
  const flags = head[15]!
  if ((flags & 2) === 0) return ''
  let len = 0
  let at = 32
  for (let shift = 0; at < head.length && shift < 35; shift += 7) {
    const b = head[at++]!
    len |= (b & 0x7f) << shift
    if ((b & 0x80) === 0) break
  }
  const v = head.toString('utf8', at, Math.min(head.length, at + len))
  return /^go[0-9][\w.+-]*$/.test(v) ? v : ''
}

const NT_GNU_BUILD_ID = 3

/** The GNU build id of an ELF file (hex), from its PT_NOTE segments; undefined when it has none or cannot be read. */
export function buildIdOf(path: string): string | undefined {
  return withElf64(path, (read, eh) => {
    const phoff = Number(eh.readBigUInt64LE(32))
    const phentsize = eh.readUInt16LE(54)
    const phnum = eh.readUInt16LE(56)
    if (phentsize < 56 || phnum > 4096) return undefined
    const phdrs = read(phoff, phnum * phentsize)
    for (let i = 0; i + 56 <= phdrs.length; i += phentsize) {
      if (phdrs.readUInt32LE(i) !== PT_NOTE) continue
      const notes = read(Number(phdrs.readBigUInt64LE(i + 8)), Math.min(Number(phdrs.readBigUInt64LE(i + 32)), 1 << 16))
      let at = 0
      while (at + 12 <= notes.length) {
        const namesz = notes.readUInt32LE(at)
        const descsz = notes.readUInt32LE(at + 4)
        const desc = at + 12 + align4(namesz)
        if (desc + descsz > notes.length) break
        if (notes.readUInt32LE(at + 8) === NT_GNU_BUILD_ID && notes.toString('latin1', at + 12, at + 15) === 'GNU') return notes.toString('hex', desc, desc + descsz)
        at = desc + align4(descsz)
      }
    }
    return undefined
  })
}
