// What each runtime's reader needs on another host besides the ELF files the process maps, for --include-binaries
// to carry: CPython's gdb extension and the interpreter's debug info; the JVM's CDS archive (mapped, but not ELF),
// without which jhsdb cannot attach to the core. A Go program's reader needs its executable alone (carried already).
// jhsdb itself and the JDK's modules are not carried: the same JDK build must be installed where the stacks are read.

import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import type { RuntimeRecord } from './detect.js'
import { pythonReaderFiles } from './python.js'

/** The CDS archives beside libjvm.so (JAVA_HOME/lib/server), those this host has. */
function javaReaderFiles(runtime: RuntimeRecord): string[] {
  return ['classes.jsa', 'classes_nocoops.jsa'].map((n) => join(dirname(runtime.file), n)).filter((f) => existsSync(f))
}

/** Each file not already among `mapped`, with a pid of a process whose runtime needs it (its root is where the file
 *  is read from). */
export function runtimeReaderFiles(runtimes: ReadonlyMap<number, RuntimeRecord>, mapped: ReadonlyMap<string, number>): [string, number][] {
  const out = new Map<string, number>()
  for (const [pid, runtime] of runtimes) {
    const files = runtime.name === 'python' ? pythonReaderFiles(runtime) : runtime.name === 'java' ? javaReaderFiles(runtime) : []
    for (const f of files) if (!mapped.has(f) && !out.has(f)) out.set(f, pid)
  }
  return [...out]
}
