// `snap debug BUNDLE [--pid P] [-- GDB ARGS]`: gdb on one process's core, with the executable it ran where this host
// still has it. The core is written (`snap core`) into a private directory that is removed when gdb exits.

import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { constants, tmpdir } from 'node:os'
import { join } from 'node:path'
import { findGdb } from '../tools/gdb.js'
import { gdbNoiseFilter, QUIET_GDB_OPTIONS } from '../tools/gdb-noise.js'
import { isExecutableFile } from '../tools/locate.js'
import { TMPDIR_HINT } from '../bundle/extract.js'
import { readManifest } from '../bundle/reader.js'
import { extractBinaries, gdbFileArgs } from './binaries-read.js'
import { exportCore } from './core-export.js'

export interface DebugOptions {
  bundle: string
  pid?: number
  gdb?: string
  gdbArgs: string[]
  /** Told what is missing before gdb starts (its output follows on the terminal). */
  warn: (text: string) => void
}

function isRegularFile(p: string): boolean {
  try {
    return statSync(p).isFile()
  } catch {
    return false
  }
}

/** The executable for gdb: the bundle's own copy, else the one on this host, else none. */
export function chooseExe(exe: string | undefined, sysroot: string | undefined): string | undefined {
  if (exe === undefined) return undefined
  // The bundle's copy is extracted 0600, not executable: gdb only reads it.
  if (sysroot && isRegularFile(join(sysroot, exe))) return join(sysroot, exe)
  return isExecutableFile(exe) ? exe : undefined
}

/** Runs gdb to its end and gives back its exit code. */
export async function debugBundle(o: DebugOptions): Promise<number> {
  const gdb = await findGdb(o.gdb)
  const work = mkdtempSync(join(tmpdir(), 'snap-debug-'))
  try {
    const core = join(work, 'core')
    const exported = await exportCore({ bundle: o.bundle, pid: o.pid, output: core, roomHint: TMPDIR_HINT })
    const { manifest } = await readManifest(o.bundle)
    const sysroot = await extractBinaries(o.bundle, manifest, work)
    const exe = chooseExe(exported.exe, sysroot)
    if (!exe)
      o.warn(
        `${exported.exe ? `the executable ${exported.exe} is not on this host` : 'the bundle does not name the executable'}: gdb shows the program's own frames without names` +
          (sysroot ? '' : ' (a dump with --include-binaries carries it)'),
      )
    const child = spawn(gdb.path, ['--quiet', '-iex', 'set debuginfod enabled off', ...QUIET_GDB_OPTIONS, ...gdbFileArgs(sysroot), ...o.gdbArgs, ...(exe ? [exe] : []), core], {
      stdio: ['inherit', 'inherit', 'pipe'],
    })
    child.stderr!.pipe(gdbNoiseFilter()).pipe(process.stderr, { end: false })
    // Ctrl+C belongs to gdb (it interrupts what gdb is doing); snap waits for gdb to end.
    const ignore = () => {}
    process.on('SIGINT', ignore)
    try {
      return await new Promise<number>((resolve, reject) => {
        child.on('error', reject)
        child.on('close', (code, signal) => resolve(code ?? 128 + (signal ? (constants.signals[signal] ?? 0) : 0)))
      })
    } finally {
      process.off('SIGINT', ignore)
    }
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}
