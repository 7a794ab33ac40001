// A dump writes in one place, the work directory beside the output: the criu images, the cores and their recipes,
// the stacks, the binaries, the bundle. Whichever of those writes meets a full disk, a quota or a directory removed
// under it, the dump's failure is the output's (exit 7), one line naming the directory and its filesystem, never a
// bare errno (exit 70). Mapped here once, where a stage's failure becomes the dump's (DumpRun.execute).

import { dirname } from 'node:path'
import { asOutputError, noSpaceCode, outputDirGone } from '../../bundle/output-path.js'
import type { DumpState } from './state.js'

/** What each step writes, for the message: the step a failure came from names what was being written. */
const WRITING: Record<string, string> = {
  preflight: 'preparing the work directory',
  'criu-ready': 'preparing the checkpoint',
  checkpoint: 'writing the CRIU images',
  core: 'writing the cores',
  'core-recipes': 'keeping the cores as recipes',
  stacks: 'writing the stacks',
  binaries: 'storing the binaries',
  seal: 'writing the bundle',
}

/**
 * True when a failure is the output's: the disk is full, or the output or work directory is gone. A stage that lets
 * a failure pass as a warning (a core stored whole, a process without stacks, a binary not stored) rethrows it then:
 * every later write would fail the same way, and the warning would name the wrong cause.
 */
export function isOutputFault(s: DumpState, e: unknown): boolean {
  return !!s.output && (noSpaceCode(e) !== undefined || outputDirGone(dirname(s.output), s.workDir))
}

/** The dump's failure as the output's (OutputPathError, exit 7) when it is one; otherwise unchanged. */
export function asDumpOutputError(s: DumpState, e: unknown): unknown {
  if (!s.output) return e
  const failed = [...s.steps].reverse().find((r) => r.status === 'failed')
  return asOutputError(e, dirname(s.output), (failed && WRITING[failed.name]) ?? 'writing the capture', s.workDir)
}
