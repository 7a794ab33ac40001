// A core of a stopped process read straight from /proc, holding only what is there: the mappings of /proc/PID/smaps,
// the present or swapped pages /proc/PID/pagemap shows, their bytes from /proc/PID/mem, and every thread's registers
// (thread-registers.ts). Never-touched memory is left as holes, and long holes outside the file altogether (one
// segment per stretch of data, as the image-built core does), so writing it costs the resident memory, not the
// mapped address space. File-backed pages go in only where the process wrote to them, as the kernel's default
// coredump_filter has it. The ELF and note encoders are the image-built core's (elf.ts, notes.ts).

import { closeSync, openSync, readFileSync, readSync, readdirSync } from 'node:fs'
import type { ThreadState } from '../criu-images/core-entry.js'
import type { TaskTree } from '../criu-images/pstree.js'
import { parseSmapsMappings, type SmapsMapping } from '../process/capture-size.js'
import {
  EHDR_SIZE, PAGE_SIZE, PF_R, PF_W, PF_X, PHDR_SIZE, PN_XNUM, PT_LOAD, PT_NOTE, SHDR_SIZE, alignUp, elfHeader, extendedNumberingSection, programHeader,
  type ProgramHeader,
} from './elf.js'
import { writeCoreFile } from './core-file.js'
import { CoreBuildError } from './errors.js'
import { buildNotes, type FileMapping } from './notes.js'
import { scanResidentRuns } from './page-scan.js'
import { readThreadRegisters } from './thread-registers.js'

export interface NativeCoreOptions {
  /** A process every thread of which is stopped (a SIGSTOP group stop), and that nothing else traces. */
  pid: number
  /** The core file to create; it must not exist. Written as OUTPUT.partial-PID, then linked into place. */
  output: string
  /** Called with the bytes the core's data will take before a byte is written: throws when there is no room. */
  checkRoom?: (bytes: number) => void
  cancel?: AbortSignal
}

export interface NativeCoreResult {
  threads: number
  loadSegments: number
  /** The core's size, holes included. */
  bytes: number
  /** Memory bytes read from the process. */
  copiedBytes: number
  warnings: string[]
}

/** As in the image-built core: untouched memory this long ends a segment's bytes in the file. */
const SPLIT_HOLE_BYTES = 1 << 20
/** A pagemap entry's bits 63 (present) and 62 (swapped), in its upper 32 bits. */
const PM_PRESENT_OR_SWAPPED_HIGH = 0xc0000000
const KERNEL_ONLY = new Set(['[vvar]', '[vvar_vclock]', '[vsyscall]'])

interface Segment {
  start: number
  end: number
  flags: number
  /** [from, to) address runs to read from /proc/PID/mem; the rest of [start, start + filesz) stays a hole. */
  runs: [number, number][]
  filesz: number
  offset: number
}

function isAnonymous(m: SmapsMapping): boolean {
  return m.path === '' || m.path.startsWith('[') || m.path.startsWith('/memfd:') || m.path.startsWith('/dev/zero') || m.path.startsWith('/SYSV')
}

function flagsOf(perms: string): number {
  return (perms[0] === 'r' ? PF_R : 0) | (perms[1] === 'w' ? PF_W : 0) | (perms[2] === 'x' ? PF_X : 0)
}

/** The runs of [start, end) whose pages are present or swapped, page-aligned, merged, read from pagemap itself: the
 *  way for a kernel without PAGEMAP_SCAN (page-scan.ts). */
export function residentRuns(pagemap: number, start: number, end: number): [number, number][] {
  const runs: [number, number][] = []
  const entries = 1 << 16
  const buf = Buffer.alloc(entries * 8)
  for (let page = start / PAGE_SIZE; page < end / PAGE_SIZE; ) {
    const want = Math.min(entries, end / PAGE_SIZE - page)
    const got = readSync(pagemap, buf, 0, want * 8, page * 8) / 8
    if (got <= 0) break
    for (let i = 0; i < got; i++) {
      // Bits 63 (present) and 62 (swapped), from the entry's upper half: no BigInt per page.
      if (!(buf.readUInt32LE(i * 8 + 4) & PM_PRESENT_OR_SWAPPED_HIGH)) continue
      const at = (page + i) * PAGE_SIZE
      const last = runs.at(-1)
      if (last && last[1] === at) last[1] = at + PAGE_SIZE
      else runs.push([at, at + PAGE_SIZE])
    }
    page += got
  }
  return runs
}

function startsWithElfMagic(mem: number, at: number): boolean {
  const b = Buffer.alloc(4)
  try {
    return readSync(mem, b, 0, 4, at) === 4 && b.toString('latin1') === '\x7fELF'
  } catch {
    return false
  }
}

/** The segments of one mapping: see the file's head for what each kind of mapping holds. */
function segmentsOf(m: SmapsMapping, residentOf: (m: SmapsMapping) => [number, number][], mem: number): Segment[] {
  const flags = flagsOf(m.perms)
  const empty: Segment[] = [{ start: m.start, end: m.end, flags, runs: [], filesz: 0, offset: 0 }]
  if (m.perms[0] !== 'r' || m.dontDump || KERNEL_ONLY.has(m.path)) return empty
  // The vDSO whole, as the kernel dumps it: gdb reads its ELF image from the core, and not every page of it need be
  // in the page tables.
  if (m.path === '[vdso]') return [{ start: m.start, end: m.end, flags, runs: [[m.start, m.end]], filesz: m.end - m.start, offset: 0 }]
  if (!isAnonymous(m)) {
    if (m.perms[3] === 's') return empty // the file holds these bytes
    if (m.anonymousKiB > 0 || m.swapKiB > 0) return [{ start: m.start, end: m.end, flags, runs: [[m.start, m.end]], filesz: m.end - m.start, offset: 0 }]
    if (m.offset === 0 && startsWithElfMagic(mem, m.start)) {
      const header = Math.min(PAGE_SIZE, m.end - m.start)
      return [{ start: m.start, end: m.end, flags, runs: [[m.start, m.start + header]], filesz: header, offset: 0 }]
    }
    return empty
  }
  if (m.rssKiB + m.swapKiB === 0) return empty
  const runs = residentOf(m)
  if (runs.length === 0) return empty
  // Stretches of data, each ending at a hole of SPLIT_HOLE_BYTES; a segment's memory runs on to the next stretch.
  const stretches: { from: number; to: number; runs: [number, number][] }[] = []
  for (const run of runs) {
    const last = stretches.at(-1)
    if (last && run[0] - last.to < SPLIT_HOLE_BYTES) {
      last.to = run[1]
      last.runs.push(run)
    } else stretches.push({ from: run[0], to: run[1], runs: [run] })
  }
  const out: Segment[] = []
  const first = stretches[0]!
  if (first.from - m.start < SPLIT_HOLE_BYTES) first.from = m.start
  else out.push({ start: m.start, end: first.from, flags, runs: [], filesz: 0, offset: 0 })
  stretches.forEach((s, i) => out.push({ start: s.from, end: stretches[i + 1]?.from ?? m.end, flags, runs: s.runs, filesz: s.to - s.from, offset: 0 }))
  return out
}

function statusField(status: string, name: string): string | undefined {
  return new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status)?.[1]
}

function readTask(pid: number): { task: TaskTree; comm: string; psargs: string; uid: number; gid: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'))
  const status = readFileSync(`/proc/${pid}/status`, 'latin1')
  const tids = readdirSync(`/proc/${pid}/task`).map(Number).filter((t) => t !== pid).sort((a, b) => a - b)
  const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'latin1').replace(/\0+$/, '').replace(/\0/g, ' ')
  return {
    task: { pid, ppid: Number(fields[1]), pgid: Number(fields[2]), sid: Number(fields[3]), threads: [pid, ...tids] },
    comm,
    psargs: cmdline || comm,
    uid: Number(statusField(status, 'Uid')?.split(/\s+/)[0] ?? 0),
    gid: Number(statusField(status, 'Gid')?.split(/\s+/)[0] ?? 0),
  }
}

function readAuxv(pid: number): bigint[] {
  const raw = readFileSync(`/proc/${pid}/auxv`)
  return Array.from({ length: Math.floor(raw.length / 8) }, (_, i) => raw.readBigUInt64LE(i * 8))
}

/** Blocked signals of a thread, as its NT_PRSTATUS carries them. */
function blockedOf(pid: number, tid: number): bigint {
  try {
    return BigInt(`0x${statusField(readFileSync(`/proc/${pid}/task/${tid}/status`, 'latin1'), 'SigBlk') ?? '0'}`)
  } catch {
    return 0n
  }
}

export async function writeCoreOfStoppedProcess(opts: NativeCoreOptions): Promise<NativeCoreResult> {
  const { pid } = opts
  const warnings: string[] = []
  const info = readTask(pid)
  const maps = parseSmapsMappings(readFileSync(`/proc/${pid}/smaps`, 'latin1'))
  const registers = await readThreadRegisters(info.task.threads, { cancel: opts.cancel })
  const threads: ThreadState[] = registers.map((r) => ({ tid: r.tid, regs: r.regs, fpregs: r.fpregs, blocked: blockedOf(pid, r.tid) }))

  // The anonymous memory's present and swapped pages, asked of the kernel in runs where it can answer so.
  const wanted = maps.filter((m) => isAnonymous(m) && m.rssKiB + m.swapKiB > 0)
  const runs = await scanResidentRuns(pid, wanted.map((m) => [m.start, m.end]), { cancel: opts.cancel })
  const scanned = runs && new Map(wanted.map((m, i) => [m.start, runs[i]!]))
  const mem = openSync(`/proc/${pid}/mem`, 'r')
  const pagemap = openSync(`/proc/${pid}/pagemap`, 'r')
  let segments: Segment[]
  try {
    segments = maps.filter((m) => m.path !== '[vsyscall]').flatMap((m) => segmentsOf(m, (at) => scanned?.get(at.start) ?? residentRuns(pagemap, at.start, at.end), mem))
  } finally {
    closeSync(pagemap)
  }
  const files: FileMapping[] = maps
    .filter((m) => m.path.startsWith('/') && !isAnonymous(m) && m.object.split(':')[2] !== '0')
    .map((m) => ({ start: m.start, end: m.end, offset: m.offset, path: m.path }))
  const notes = buildNotes({ info, threads, auxv: readAuxv(pid), files })

  const phnum = 1 + segments.length
  const notesOffset = EHDR_SIZE + phnum * PHDR_SIZE
  let cursor = alignUp(notesOffset + notes.length, PAGE_SIZE)
  for (const s of segments) {
    s.offset = cursor
    cursor += s.filesz
  }
  const extended = phnum >= PN_XNUM
  const shoff = extended ? cursor : 0
  const size = extended ? cursor + SHDR_SIZE : cursor
  const dataBytes = segments.reduce((n, s) => n + s.runs.reduce((k, [a, b]) => k + b - a, 0), 0)
  opts.checkRoom?.(notesOffset + notes.length + dataBytes)

  let copied = 0
  try {
    await writeCoreFile(opts.output, async (out) => {
      const headers: ProgramHeader[] = [
        { type: PT_NOTE, flags: 0, offset: notesOffset, vaddr: 0, filesz: notes.length, memsz: 0, align: 1 },
        ...segments.map((s) => ({ type: PT_LOAD, flags: s.flags, offset: s.offset, vaddr: s.start, filesz: s.filesz, memsz: s.end - s.start, align: PAGE_SIZE })),
      ]
      const head = Buffer.concat([elfHeader(phnum, shoff), ...headers.map(programHeader), notes])
      await out.write(head, 0, head.length, 0)
      if (extended) {
        const section = extendedNumberingSection(phnum)
        await out.write(section, 0, section.length, shoff)
      }
      const buf = Buffer.alloc(1 << 20)
      for (const s of segments) {
        for (const [from, to] of s.runs) {
          for (let at = from; at < to; ) {
            if (opts.cancel?.aborted) throw new CoreBuildError(`stopped while reading the memory of ${pid}`)
            const want = Math.min(buf.length, to - at)
            let got: number
            try {
              got = readSync(mem, buf, 0, want, at)
            } catch (error) {
              // A page the kernel will not hand out (an I/O mapping, a page gone to a truncated file): it stays a hole.
              warnings.push(`0x${at.toString(16)}: ${(error as Error).message.split(',')[0]}; a page reads as zeros`)
              at += PAGE_SIZE
              continue
            }
            if (got <= 0) {
              warnings.push(`0x${at.toString(16)}-0x${to.toString(16)}: not readable; reads as zeros`)
              break
            }
            await out.write(buf, 0, got, s.offset + (at - s.start))
            copied += got
            at += got
          }
        }
      }
      await out.truncate(size) // the last segment may end in a hole
    })
  } finally {
    closeSync(mem)
  }
  return { threads: threads.length, loadSegments: segments.length, bytes: size, copiedBytes: copied, warnings }
}

