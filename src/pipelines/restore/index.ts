// Restore, start to finish, as the steps of a runbook: verify and extract -> preflight -> criu restore -> check ->
// final state (-> isolate) -> restored | failed. It never ends in "restoring": every path out of here reports
// restored or failed, and a failure kills what was partly restored (undo.ts).

import { rmSync } from 'node:fs'
import { readBootId, readStat } from '../../process/proc.js'
import { findCriu } from '../../tools/criu.js'
import type { ProgressReporter } from '../progress.js'
import { checkRestored } from './check.js'
import { restoreWithCriu } from './criu.js'
import { extractImages, makeWorkDir } from './extract.js'
import { applyFinalState } from './final-state.js'
import { sealOffCopy } from './isolate.js'
import { liftKeptLock } from './network-lock.js'
import { preflight } from './preflight.js'
import { enter, manifestOf, newRestoreState, type RestoreOptions, type RestoreResult, type RestoreRunState } from './state.js'
import { undoRestore } from './undo.js'
import { RestoreFailedError } from '../../errors.js'

export type { RestoreOptions, RestoreResult, RestoreState, RestoreStep } from './state.js'

export class RestoreRun {
  private readonly s: RestoreRunState

  constructor(o: RestoreOptions, progress: ProgressReporter) {
    this.s = newRestoreState(o, progress)
  }

  async execute(): Promise<RestoreResult> {
    const s = this.s
    try {
      return await this.run()
    } catch (e) {
      await undoRestore(s, e)
      throw e
    } finally {
      if (s.workDir) rmSync(s.workDir, { recursive: true, force: true })
      s.journal?.remove()
    }
  }

  private async run(): Promise<RestoreResult> {
    const s = this.s
    enter(s, 'verifying')
    s.criu = await findCriu(s.o.criu)
    makeWorkDir(s)
    const asked = s.o.final ?? 'as-captured'
    let restored: Omit<RestoreResult, 'state' | 'bundle' | 'newPidns' | 'signedBy' | 'signature' | 'states' | 'warnings' | 'durations'> | undefined
    await s.progress.run([
      { title: 'Verify the bundle (trust decided on its manifest first) and extract its CRIU images', run: (report) => extractImages(s, report) },
      { title: "Preflight: the images' identity, the CRIU version, this host, the files the process had open, free pids", run: () => preflight(s) },
      {
        title: `Restore the tree with criu restore${s.o.isolate ? ' in namespaces of its own' : ''}, check it in /proc, leave it ${asked === 'as-captured' ? 'as it was captured' : asked}`,
        run: async (report) => {
          restored = await this.restoreTree()
          report(`pid ${restored.pid}, ${restored.threads} thread${restored.threads === 1 ? '' : 's'}, ${restored.finalState}`)
        },
      },
    ])
    enter(s, 'restored')
    return {
      state: 'restored',
      bundle: s.o.bundle,
      ...restored!,
      newPidns: s.o.newPidns || !!s.o.isolate,
      signedBy: s.signedBy,
      signature: s.signature,
      states: s.states,
      warnings: s.warnings,
      durations: s.durations,
    }
  }

  private async restoreTree() {
    const s = this.s
    enter(s, 'restoring')
    const manifest = manifestOf(s)
    const finalState = s.o.final ?? (manifest.originalState.state === 'running' ? 'running' : 'stopped')
    const { pid, pidInNamespace } = await restoreWithCriu(s)
    s.budget.checkCancelled('restoring')
    const threads = await checkRestored(s, pid)
    const stat = readStat(pid)
    if (!stat) throw new RestoreFailedError(`restored pid ${pid} exited before its final state`)
    const root = { pid, startTime: stat.startTime, bootId: readBootId() }
    // Sealed off (cgroup caps, published ports) while it is still held stopped, before it runs a single instruction.
    const isolated = s.o.isolate ? await sealOffCopy(s, root) : undefined
    const processes = await applyFinalState(s, root, finalState)
    // Only now that the tree is back for good: a restore that fails before leaves the peers waiting for another try.
    const lifted = await liftKeptLock(s)
    if (lifted) s.progress.note(lifted)
    return { pid, pidInNamespace, threads, finalState, processes, ...(isolated ? { isolated } : {}) }
  }
}
