// The dump, start to finish, as the runbook it replaces: preflight -> stop the tree -> checkpoint -> cores -> put the
// tree back -> seal (by default: checkpoint -> put back -> cores built from the images, the bundle written beside
// them -> seal). The order of the stages lives here and only here; each stage is a function of one DumpState
// (src/pipelines/dump/), and every failure path puts every process back as it was found and removes what was written.

import { statSync } from 'node:fs'
import type { ArtifactRecord, FinalState, Manifest, ProcessRecord, StepRecord } from '../bundle/manifest.js'
import type { ProgressReporter, ProgressStep } from './progress.js'
import { OperationBudget } from './budget.js'
import { InterruptedError, type InterruptSignal } from '../errors.js'
import { checkpoint, readyCheckpoint } from './dump/checkpoint.js'
import { coresFromImages, coresNative, coresWithGdb, leaveCoresOut, recipesOfGcoreCores } from './dump/cores.js'
import { freezeTree, normalizationRecord } from './dump/freeze.js'
import { preflight } from './dump/preflight.js'
import { releaseTree } from './dump/release.js'
import { cleanupWorkDir, rollback } from './dump/rollback.js'
import { asDumpOutputError } from './dump/output-fault.js'
import { processRecords, seal, startSeal } from './dump/seal.js'
import { stacksOfCores } from './dump/stacks.js'
import { storeBinaries } from './dump/binaries.js'
import { DumpState, type DumpOptions } from './dump/state.js'

export type { DumpOptions } from './dump/state.js'

export interface DumpResult {
  bundle: string
  bundleSize: number
  pid: number
  mode: Manifest['mode']
  originalState: 'running' | 'stopped'
  normalization: Manifest['normalization']
  finalState: FinalState
  freezeWindowMs: number
  processes: ProcessRecord[]
  criuOptions: { option: string; reason: string }[]
  steps: StepRecord[]
  warnings: string[]
  artifacts: { path: string; size: number }[]
  /** --leave killed: the lock kept on the tree's connections until the restore (manifest networkLockKept). */
  networkLockKept?: Manifest['networkLockKept']
}

type Stage = (s: DumpState, report: (d: string) => void) => Promise<unknown>

/** A stage that runs while the bundle is already being written: the images go in beside it (see startSeal). */
const withSealStarted =
  (stage: Stage): Stage =>
  (s, report) => {
    startSeal(s)
    s.sealing!.meter.speakTo(report)
    return stage(s, report)
  }

export class DumpRun {
  private readonly s: DumpState

  constructor(o: DumpOptions, progress: ProgressReporter) {
    this.s = new DumpState(o, progress, new OperationBudget(o.cancel, o.timeoutSec, 'the dump'))
  }

  /** The runbook. The tree is frozen only while criu dumps it; the cores are built from criu's images once it is
   *  back as it was found. With --core gcore, gdb writes them while the tree is still frozen: criu first, so that a
   *  stop found in place is converted while criu holds the threads, and only then does gdb leave the tree stopped
   *  when it detaches. */
  private stages(): [title: string, stage: Stage][] {
    const o = this.s.o
    const preflightStep: [string, Stage] = [`Preflight: target ${o.pid} and its tree, permissions, what criu can dump, tools, output`, preflight]
    const freeze: [string, Stage] = ['Stop every process of the tree with SIGSTOP and verify every thread', freezeTree]
    // criu is started while the tree still runs, and held until it is stopped: its start is not part of the freeze.
    const start: [string, Stage][] = o.coreOnly
      ? [preflightStep, freeze]
      : [preflightStep, ['Start criu, held until the tree is stopped', readyCheckpoint], freeze]
    const cores = o.cores === 'root' ? 'Core dump of the root with gdb (gcore)' : 'Core dump of every process with gdb (gcore)'
    const stacks: [string, Stage][] = [
      ['Stacks of every thread, from the cores (gdb)', stacksOfCores],
      ...(o.includeBinaries ? [['Store the executables and libraries (--include-binaries)', storeBinaries] as [string, Stage]] : []),
      ...(o.coreOnly && o.stacksOnly ? [['Leave the cores out: the stacks and the manifest are kept', leaveCoresOut] as [string, Stage]] : []),
    ]
    if (o.coreOnly && this.s.coreSource === 'native')
      return [...start, [`Core dump of ${o.cores === 'root' ? 'the root' : 'every process'} from /proc (native)`, coresNative], ['Put every process back as it was found', releaseTree], ...stacks]
    if (o.coreOnly) return [...start, [cores, coresWithGdb], ['Put every process back as it was found', releaseTree], ...stacks]
    if (this.s.coreSource === 'images')
      return [
        ...start,
        ['Checkpoint the tree with criu dump', checkpoint],
        ['Put every process back as it was found', releaseTree],
        ['Cores built from the CRIU images, while the bundle is written', withSealStarted(coresFromImages)],
        ...stacks,
      ]
    return [
      ...start,
      ['Checkpoint the tree with criu dump', checkpoint],
      [cores, coresWithGdb],
      ['Put every process back as it was found', releaseTree],
      ['Cores kept as recipes over the images, while the bundle is written', withSealStarted(recipesOfGcoreCores)],
      ...stacks,
    ]
  }

  /** Runs the whole dump. On any failure it rolls back first, then rethrows. */
  async execute(): Promise<DumpResult> {
    const s = this.s
    let artifacts: ArtifactRecord[] = []
    const steps: ProgressStep[] = [
      // Once the bundle is being written, each step also shows how far that writing is.
      ...this.stages().map(([title, stage]) => ({
        title,
        run: async (r: (d: string) => void) => {
          s.sealing?.meter.speakTo(r)
          await stage(s, r)
        },
      })),
      { title: 'Seal the bundle (manifest, hashes, compression)', run: async (r) => void (artifacts = await seal(s, r)) },
    ]
    try {
      await s.progress.run(steps)
    } catch (e) {
      // A full disk or a vanished output directory, met by whichever stage wrote, is told as the output's fault.
      const failure = asDumpOutputError(s, asInterrupted(s, e))
      await rollback(s, failure)
      throw failure
    }
    s.journal?.remove()
    cleanupWorkDir(s)
    return {
      bundle: s.output,
      bundleSize: statSync(s.output).size,
      pid: s.o.pid,
      mode: s.mode,
      originalState: s.members[0]!.found,
      normalization: normalizationRecord(s),
      finalState: s.finalState,
      freezeWindowMs: s.freezeWindowMs,
      processes: processRecords(s),
      criuOptions: s.criuReasons,
      steps: s.steps,
      warnings: s.warnings,
      artifacts: artifacts.map((a) => ({ path: a.path, size: a.size })),
      ...(s.networkLockKept ? { networkLockKept: s.networkLockKept } : {}),
    }
  }
}

/** A step that let the cancel's own reason through (the signal's bare name, as AbortSignal.throwIfAborted throws it)
 *  failed as every interrupted step fails: exit 130 or 143 naming the step, never an unexpected error (exit 70). */
function asInterrupted(s: DumpState, e: unknown): unknown {
  if (!s.o.cancel.aborted || e !== s.o.cancel.reason) return e
  const failed = [...s.steps].reverse().find((r) => r.status === 'failed')
  return new InterruptedError(e as InterruptSignal, failed ? `the ${failed.name} step` : 'the dump')
}
