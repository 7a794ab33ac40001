// Stage 6c (--include-binaries): the tree's executables and libraries, each once, copied under binaries/ with their
// own paths (binaries/usr/lib/x86_64-linux-gnu/libc.so.6), so a debugger pointed at binaries/ as its sysroot finds
// them on any host. After the release: the copy never lengthens the freeze.

import { copyFileSync, mkdirSync, statSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { runtimeReaderFiles } from '../../analysis/runtimes/readers.js'
import { isOutputFault } from './output-fault.js'
import { MiB, type DumpState } from './state.js'

/** What one file and all of them may take: a mapped "executable" can be anything the process mapped as one (a 1 TiB
 *  sparse file would otherwise be copied whole, filling the output filesystem after the target was released). */
export const BINARY_MAX_BYTES = 2 * 1024 * MiB
export const BINARIES_MAX_BYTES = 8 * 1024 * MiB

export async function storeBinaries(s: DumpState, report: (d: string) => void): Promise<void> {
  await s.timed('binaries', async (rec) => {
    let bytes = 0
    let stored = 0
    // And what each runtime's reader needs beyond the mapped files (CPython's gdb extension and debug info).
    for (const [path, pid] of [...s.mappedBinaries, ...runtimeReaderFiles(s.runtimes, s.mappedBinaries)]) {
      s.budget.checkCancelled('storing the binaries')
      // A bundle entry's name is plain (the manifest's schema allows letters, digits and ._+@- between slashes).
      if (!/^(\/[A-Za-z0-9._+@-]+)+$/.test(path) || path.split('/').includes('..')) {
        s.warn(`${path} is not stored: its name cannot be a bundle entry`)
        continue
      }
      const entry = join('binaries', path)
      const copy = join(s.workDir!, entry)
      // Through the process's own root: a container's files are where the process sees them. A tree criu has ended
      // (--leave killed) has no /proc left: its root is the host's, or the container's on the host.
      const source = s.killedByCriu ? `${s.container?.rootfs ?? ''}${path}` : `/proc/${pid}/root${path}`
      try {
        const st = statSync(source)
        if (!st.isFile()) {
          s.warn(`${path} is not stored: not a regular file`)
          continue
        }
        if (st.size > BINARY_MAX_BYTES || bytes + st.size > BINARIES_MAX_BYTES) {
          const why = st.size > BINARY_MAX_BYTES ? `larger than the ${BINARY_MAX_BYTES / (1024 * MiB)} GiB one file may take` : `the binaries stored already take ${Math.round(bytes / MiB)} MiB of the ${BINARIES_MAX_BYTES / (1024 * MiB)} GiB they may`
          s.warn(`${path} (${Math.round(st.size / MiB)} MiB) is not stored: ${why}; copy it by hand if a debugger needs it`)
          continue
        }
        mkdirSync(dirname(copy), { recursive: true, mode: 0o700 })
        copyFileSync(source, copy)
        bytes += statSync(copy).size
        stored++
        s.addArtifact(entry, 'binary')
      } catch (e) {
        // A full disk or a vanished output directory fails the dump: every later copy would fail the same way.
        if (isOutputFault(s, e)) throw e
        s.warn(`${path} could not be stored: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`)
      }
    }
    rec.note = `${stored} files, ${Math.round(bytes / MiB)} MiB`
    report(`${stored} executables and libraries, ${Math.round(bytes / MiB)} MiB`)
  })
}
