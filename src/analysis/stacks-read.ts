// `snap stacks BUNDLE [--pid P]`: every thread's backtrace. A bundle written with them (stacks.json, at the dump)
// answers from that entry alone; an older one has each core written out (`snap core`) and unwound by gdb now, with
// the executable the manifest names where it is still on this host.

import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ProcessStacks } from './stacks-model.js'
import { stacksFromCores, type CoreToUnwind } from './stacks.js'
import { sharedGdbIndexDir } from '../tools/gdb-index-cache.js'
import { readStacksEntry, STACKS_ENTRY } from '../bundle/entry-bounds.js'
import { TMPDIR_HINT, verifyAndExtract } from '../bundle/extract.js'
import { readManifest } from '../bundle/reader.js'
import { BundleInvalidError, UsageError } from '../errors.js'
import { findGdb } from '../tools/gdb.js'
import { extractBinaries, gdbFileArgs } from './binaries-read.js'
import { exportCore } from './core-export.js'
import { chooseExe } from './debug.js'

export interface StacksResult {
  bundle: string
  /** 'bundle': the stacks recorded at the dump; 'cores': unwound now from the bundle's cores. */
  source: 'bundle' | 'cores'
  processes: ProcessStacks[]
  /** What the answer lacks, and why (an executable missing here). */
  warnings: string[]
}

/** Why a process's threads have no frames of its language, one line each. */
function runtimeWarnings(all: ProcessStacks[]): string[] {
  return all.filter((p) => p.runtimeError).map((p) => `no ${p.runtime?.name ?? 'language'} frames for ${p.pid}: ${p.runtimeError}`)
}

export async function readStacks(o: { bundle: string; pid?: number; gdb?: string }): Promise<StacksResult> {
  const { manifest } = await readManifest(o.bundle)
  const processes = manifest.processes?.map((p) => ({ pid: p.hostPid ?? p.pid, comm: p.comm, core: p.core })) ?? [
    { pid: manifest.target.pid, comm: manifest.target.comm, core: `core.${manifest.target.pid}` },
  ]
  if (o.pid !== undefined && !processes.some((p) => p.pid === o.pid))
    throw new UsageError(`process ${o.pid} is not in the bundle`, `its processes are ${processes.map((p) => p.pid).join(', ')}`)
  const wanted = (pid: number) => o.pid === undefined || pid === o.pid
  const warnings: string[] = []

  if (manifest.artifacts.some((a) => a.path === STACKS_ENTRY)) {
    const work = mkdtempSync(join(tmpdir(), 'snap-stacks-'))
    try {
      // Only stacks.json is written out; it was held to its shape and the manifest's threads as it streamed by, and is
      // read again the same way.
      const scan = await verifyAndExtract({ bundle: o.bundle, into: work, want: (a) => a.path === STACKS_ENTRY, roomHint: TMPDIR_HINT })
      if (scan.problems.length > 0) throw new BundleInvalidError(`${o.bundle} failed verification: ${scan.problems.join('; ')}`, scan.problems)
      const all = readStacksEntry(join(work, STACKS_ENTRY), scan.manifest)
      for (const p of processes) if (p.core && wanted(p.pid) && !all.some((s) => s.pid === p.pid)) warnings.push(`gdb could not unwind ${p.pid} at the dump`)
      warnings.push(...runtimeWarnings(all.filter((p) => wanted(p.pid))))
      return { bundle: o.bundle, source: 'bundle', processes: all.filter((p) => wanted(p.pid)), warnings }
    } finally {
      rmSync(work, { recursive: true, force: true })
    }
  }

  const gdb = await findGdb(o.gdb)
  const work = mkdtempSync(join(tmpdir(), 'snap-stacks-'))
  try {
    const sysroot = await extractBinaries(o.bundle, manifest, work)
    const cores: CoreToUnwind[] = []
    for (const p of processes.filter((p) => p.core && wanted(p.pid))) {
      const core = join(work, `core.${p.pid}`)
      const exported = await exportCore({ bundle: o.bundle, pid: p.pid, output: core, roomHint: TMPDIR_HINT })
      const exe = chooseExe(exported.exe, sysroot)
      if (!exe)
        warnings.push(
          `${p.pid}: ${exported.exe ? `its executable ${exported.exe} is not on this host` : 'the bundle does not name its executable'}; the program's own frames have no names` +
            (sysroot ? '' : ' (a dump with --include-binaries carries it)'),
        )
      cores.push({ pid: p.pid, comm: p.comm, core, exe })
    }
    // All of them in one pass: a gdb per executable, not per process.
    const results = await stacksFromCores(cores, {
      gdb: gdb.path, fileArgs: gdbFileArgs(sysroot), sysroot, workDir: work, perProcessMs: () => 120_000,
      onDone: (pid) => rmSync(join(work, `core.${pid}`), { force: true }),
      // This host's own binaries (none from the bundle): gdb's index of them is kept as a dump keeps it.
      indexCache: sysroot ? undefined : sharedGdbIndexDir(),
    })
    const out: ProcessStacks[] = []
    for (const r of results) {
      if (r.stacks) out.push(r.stacks)
      else warnings.push(`gdb could not unwind ${r.pid}: ${r.error}`)
    }
    if (out.length === 0) throw new BundleInvalidError(`${o.bundle} holds no core to unwind`, [], 'a dump with --cores all gives every process one')
    warnings.push(...runtimeWarnings(out))
    return { bundle: o.bundle, source: 'cores', processes: out, warnings }
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

