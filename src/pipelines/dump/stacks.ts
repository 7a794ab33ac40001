// Stage 6b: every thread's backtrace, from the cores, written into the bundle (stacks.txt for people, stacks.json for
// tools), so the first thing an engineer reads of a capture costs nothing. After the tree is released, like the
// seal: it never lengthens the freeze. A process gdb cannot unwind is a warning, never a failed dump.

import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { renderStacks, stacksFromCore, type ProcessStacks } from '../../analysis/stacks.js'
import { exeOfProcess } from '../../criu-images/identity.js'
import { readLink } from '../../process/proc.js'
import { isOutputFault } from './output-fault.js'
import type { DumpState } from './state.js'

/** gdb unwinds a process in well under a second here; more than this is a gdb stuck on a strange core. */
const PER_PROCESS_MS = 60_000

export async function stacksOfCores(s: DumpState, report: (d: string) => void): Promise<void> {
  await s.timed('stacks', async (rec) => {
    const all: ProcessStacks[] = []
    for (const m of s.members) {
      const core = s.coreFiles.get(m.id.pid)
      if (!core) continue
      s.budget.checkCancelled('the stacks')
      // The executable as criu recorded it (the images name a process by its pid in the tree's namespace), else as
      // /proc names it: gdb needs it for the symbols.
      const fromImages = s.imagesDir && s.mode !== 'core-only' ? exeOfProcess(s.imagesDir, s.container ? m.innerPid : m.id.pid) : undefined
      const exe = fromImages ?? readLink(`/proc/${m.id.pid}/exe`)
      const onHost = exe && s.container ? join(s.container.rootfs, exe) : exe
      try {
        const stacks = await stacksFromCore({
          gdb: s.gdb!.path, core, exe: onHost && !onHost.endsWith(' (deleted)') ? onHost : undefined, pid: m.id.pid, comm: m.comm,
          workDir: join(s.workDir!, 'logs'), timeoutMs: s.budget.remainingMs(PER_PROCESS_MS), cancel: s.o.cancel,
        })
        all.push(stacks)
        if (stacks.runtime) s.runtimes.set(m.id.pid, stacks.runtime)
        if (stacks.runtimeError) s.warn(`no ${stacks.runtime?.name ?? 'language'} frames for ${m.id.pid}: ${stacks.runtimeError}`)
      } catch (e) {
        // A full disk or a vanished output directory fails the dump: every later write would fail the same way.
        if (isOutputFault(s, e)) throw e
        s.warn(`no stacks for ${m.id.pid}: ${(e as Error).message}`)
      } finally {
        // A core kept as a recipe is not in the bundle: gone now, its pages never go to disk, where they would
        // compete with the bundle's own writing.
        if (s.coreRecipes.has(m.id.pid)) rmSync(core, { force: true })
      }
    }
    if (all.length === 0) return
    writeFileSync(join(s.workDir!, 'stacks.txt'), renderStacks(all) + '\n', { mode: 0o600 })
    writeFileSync(join(s.workDir!, 'stacks.json'), JSON.stringify(all, null, 2) + '\n', { mode: 0o600 })
    s.addArtifact('stacks.txt', 'stacks')
    s.addArtifact('stacks.json', 'stacks')
    const threads = all.reduce((n, p) => n + p.threads.length, 0)
    rec.note = `${all.length} process(es), ${threads} threads`
    report(`${threads} threads of ${all.length} process(es) unwound`)
  })
}
