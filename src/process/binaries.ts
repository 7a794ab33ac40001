// The ELF files a process runs (its executable and every shared library it maps), from /proc/PID/maps: what a
// debugger needs beside a core to name its frames, and what another host usually lacks.

import { closeSync, openSync, readSync, statSync } from 'node:fs'
import { readTextFile } from './proc.js'

function isElfFile(path: string): boolean {
  let fd: number | undefined
  try {
    if (!statSync(path).isFile()) return false
    fd = openSync(path, 'r')
    const magic = Buffer.alloc(4)
    return readSync(fd, magic, 0, 4, 0) === 4 && magic.toString('latin1') === '\x7fELF'
  } catch {
    return false
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

/** The absolute paths (as the process sees them: a container's inside its root) of the ELF files mapped by `pid`,
 *  each once, in the order first mapped. */
export function mappedElfFiles(pid: number): string[] {
  const maps = readTextFile(`/proc/${pid}/maps`) ?? ''
  const seen = new Set<string>()
  for (const line of maps.split('\n')) {
    const path = /^\S+ \S+ \S+ \S+ \d+\s+(\/.*)$/.exec(line)?.[1]
    if (!path || path.endsWith(' (deleted)') || seen.has(path)) continue
    seen.add(path)
  }
  return [...seen].filter((p) => isElfFile(`/proc/${pid}/root${p}`))
}
