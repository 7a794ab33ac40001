// Stage 6b: every thread's backtrace, from the cores, written into the bundle (stacks.txt for people, stacks.json for
// tools), so the first thing an engineer reads of a capture costs nothing. After the tree is released, like the
// seal: it never lengthens the freeze. A process gdb cannot unwind is a warning, never a failed dump.

import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ProcessStacks } from '../../analysis/stacks-model.js'
import { compactPids, renderStacks } from '../../analysis/stacks-render.js'
import { stacksFromCores, type CoreToUnwind } from '../../analysis/stacks.js'
import { exeOfProcess } from '../../criu-images/identity.js'
import { readLink } from '../../process/proc.js'
import { sharedGdbIndexDir } from '../../tools/gdb-index-cache.js'
import { isOutputFault } from './output-fault.js'
import { settleRecipes } from './cores.js'
import type { DumpState } from './state.js'

/** gdb unwinds a process in well under a second here; more than this is a gdb stuck on a strange core. */
const PER_PROCESS_MS = 60_000

export async function stacksOfCores(s: DumpState, report: (d: string) => void): Promise<void> {
  await s.timed('stacks', async (rec) => {
    const cores: CoreToUnwind[] = []
    for (const m of s.members) {
      const core = s.coreFiles.get(m.id.pid)
      if (!core) continue
      // The executable as criu recorded it (the images name a process by its pid in the tree's namespace), else as
      // /proc names it: gdb needs it for the symbols.
      const fromImages = s.imagesDir && s.mode !== 'core-only' ? exeOfProcess(s.imagesDir, s.container ? m.innerPid : m.id.pid) : undefined
      const exe = fromImages ?? readLink(`/proc/${m.id.pid}/exe`)
      const onHost = exe && s.container ? join(s.container.rootfs, exe) : exe
      cores.push({ pid: m.id.pid, comm: m.comm, core, exe: onHost && !onHost.endsWith(' (deleted)') ? onHost : undefined })
    }
    if (cores.length === 0) return await settleRecipes(s)
    s.budget.checkCancelled('the stacks')
    // A core kept as a recipe is not in the bundle: gone as soon as its stacks are read, its pages never go to disk,
    // where they would compete with the bundle's own writing.
    const dropCore = (pid: number) => {
      const file = s.coreFiles.get(pid)!
      // A recipe still reading its core for the sha256 (cores.ts) has it removed once it is done.
      const reading = s.recipesUnderWay.get(pid)
      if (reading) void reading.then(() => rmSync(file, { force: true }), () => undefined)
      else if (s.coreRecipes.has(pid)) rmSync(file, { force: true })
    }
    let results
    try {
      results = await stacksFromCores(cores, {
        gdb: s.gdb!.path,
        workDir: join(s.workDir!, 'logs'),
        perProcessMs: () => s.budget.remainingMs(PER_PROCESS_MS),
        cancel: s.o.cancel,
        onePerProcess: process.env.PROCSNAP_BENCH_STACKS_ONE_GDB_PER_PROCESS === '1',
        // A container's files are its own, not the host's: their index is not kept.
        indexCache: s.container ? undefined : sharedGdbIndexDir(),
        onDone: dropCore,
        // If snap dies while a gdb reads the cores, `snap recover` finds it (and what it started) by the journal.
        onTool: (pid, running) => s.trackTool(pid, running),
      })
    } catch (e) {
      // A signal stopped gdb: told as any step a signal stops (the unwinding itself throws the signal's bare name).
      s.budget.checkCancelled('the stacks')
      // A full disk or a vanished output directory fails the dump: every later write would fail the same way.
      if (isOutputFault(s, e)) throw e
      for (const c of cores) dropCore(c.pid)
      s.warn(`no stacks: ${(e as Error).message}`)
      return await settleRecipes(s)
    }
    // The cores' recipes, read beside gdb, go into the bundle before the stacks, as when they were read first.
    await settleRecipes(s)
    const all: ProcessStacks[] = []
    const why = new Map<string, number[]>()
    const because = (text: string, pid: number) => why.set(text, [...(why.get(text) ?? []), pid])
    for (const r of results) {
      if (!r.stacks) {
        because(`no stacks for %s: ${r.error}`, r.pid)
        continue
      }
      all.push(r.stacks)
      if (r.stacks.runtime) s.runtimes.set(r.pid, r.stacks.runtime)
      if (r.stacks.runtimeError) because(`no ${r.stacks.runtime?.name ?? 'language'} frames for %s: ${r.stacks.runtimeError}`, r.pid)
    }
    // The same reason for a hundred workers is one warning that names them all.
    for (const [text, pids] of why) s.warn(text.replace('%s', compactPids(pids)))
    if (all.length === 0) return
    writeFileSync(join(s.workDir!, 'stacks.txt'), renderStacks(all) + '\n', { mode: 0o600 })
    writeFileSync(join(s.workDir!, 'stacks.json'), JSON.stringify(all, null, 2) + '\n', { mode: 0o600 })
    s.addArtifact('stacks.txt', 'stacks')
    s.addArtifact('stacks.json', 'stacks')
    const threads = all.reduce((n, p) => n + p.threads.length, 0)
    const shared = results.filter((r) => r.stacks && r.sharedSymbols).length
    const structs = results.filter((r) => r.stacks && r.runtimeStructs).length
    rec.note =
      `${all.length} process(es), ${threads} threads` +
      (shared > 0 ? `; ${shared} read with their libraries' symbols shared with the cores of the same layout` : '') +
      (structs > 0 ? `; ${structs} with their Python frames read from the interpreter's structs` : '')
    report(`${threads} threads of ${all.length} process(es) unwound`)
  })
}
