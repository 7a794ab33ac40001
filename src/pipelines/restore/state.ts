// What one restore knows as it goes: the options, what the bundle and its images said, what criu made. Every stage
// (head, extract, preflight, criu, check, final state, undo) is a function of this state, as cr-restore.c's stages
// are of its restore context.

import type { Manifest } from '../../bundle/manifest.js'
import type { SignatureStatus } from '../../bundle/trust.js'
import type { TargetIdentity } from '../../process/identity.js'
import type { DumpedTask } from '../../criu-images/pstree.js'
import type { CriuInfo } from '../../tools/criu.js'
import { round } from '../../tools/run.js'
import type { ProgressReporter } from '../progress.js'
import { OperationBudget } from '../budget.js'
import type { Journal } from '../journal.js'
import type { CopyRecord } from '../copies.js'
import type { IsolationOptions, IsolatedCopy } from './isolate.js'

export type RestoreStep = 'verifying' | 'extracting' | 'preflight' | 'restoring' | 'restored' | 'failed'
/** @deprecated the name the result's `states` used first; the same steps. */
export type RestoreState = RestoreStep

export interface RestoreOptions {
  bundle: string
  /** Overrides the state recorded at dump. */
  final?: 'running' | 'stopped'
  newPidns: boolean
  /** A copy sealed off from everything the original talks to (new pid, network, mount, IPC and UTS namespaces). */
  isolate?: IsolationOptions
  criu?: string
  workDirParent?: string
  timeoutSec?: number
  publicKey?: string
  /** Restore a bundle that is not signed (warned and recorded). */
  allowUnsigned?: boolean
  /** Bring the process back with its TCP connections closed: for study away from its peers. */
  tcpClose?: boolean
  /** Extra criu restore options, given as they are. */
  criuExtraOptions?: string[]
  cancel: AbortSignal
}

export interface RestoredProcess {
  pid: number
  left: 'running' | 'stopped'
}

export interface RestoreResult {
  state: 'restored'
  bundle: string
  /** The restored root's pid as seen from this host. */
  pid: number
  /** Its pid inside its own pid namespace (differs from pid only with --new-pidns or --isolate). */
  pidInNamespace: number
  threads: number
  finalState: 'running' | 'stopped'
  /** Every restored process (host pids, workers first) and the state it was left in. */
  processes: RestoredProcess[]
  newPidns: boolean
  /** With --isolate: the copy, how to reach it, how to enter it and how to end it. */
  isolated?: IsolatedCopy
  /** The key whose signature made the bundle trusted, or null when it was restored unsigned (--allow-unsigned). */
  signedBy: string | null
  /** What checking the signature found: verified (key file and fingerprint), or unsigned with --allow-unsigned. */
  signature: SignatureStatus
  states: { state: RestoreStep; at: string }[]
  warnings: string[]
  durations: Record<string, number>
}

export interface RestoreRunState {
  readonly o: RestoreOptions
  readonly progress: ProgressReporter
  readonly budget: OperationBudget
  readonly states: { state: RestoreStep; at: string }[]
  readonly warnings: string[]
  readonly durations: Record<string, number>
  workDir?: string
  signedBy: string | null
  signature: SignatureStatus
  manifest?: Manifest
  criu?: CriuInfo
  journal?: Journal
  /** The tree as criu's images hold it: what the restore must bring back, process by process. */
  imageTree?: DumpedTask[]
  /** The process holding the restore's namespaces (unshare, criu as their init under it), when there is one. */
  holderPid?: number
  /** The restored roots, as recorded: the tree under them is looked for from these. */
  restoredRoots: TargetIdentity[]
  /** --isolate: files the original changed since the dump, which the copy gets private copies of (cut back to their
   *  size at the dump) instead of sharing the original's. */
  privateFiles: { path: string; size: number }[]
  /** What --isolate set up around the copy (forwarders, cgroups): ended with it if the restore fails. */
  copy?: CopyRecord
}

export function newRestoreState(o: RestoreOptions, progress: ProgressReporter): RestoreRunState {
  return {
    o,
    progress,
    budget: new OperationBudget(o.cancel, o.timeoutSec, 'restore'),
    states: [],
    warnings: [],
    durations: {},
    signedBy: null,
    signature: { state: 'unsigned' },
    restoredRoots: [],
    privateFiles: [],
  }
}

/** The manifest, once the head of the bundle has been read: every stage after extraction has it. */
export function manifestOf(s: RestoreRunState): Manifest {
  if (!s.manifest) throw new Error('restore stage ran before the bundle was read')
  return s.manifest
}

/** Whether the restored tree keeps the pids its images name: not inside a pid namespace of its own. */
export function keepsHostPids(s: RestoreRunState): boolean {
  return !s.o.newPidns && !s.o.isolate && !manifestOf(s).container
}

export function enter(s: RestoreRunState, step: RestoreStep): void {
  // Recorded in the result; what a person sees are the steps (ProgressReporter.run), not these names.
  s.states.push({ state: step, at: new Date().toISOString() })
}

export function warn(s: RestoreRunState, line: string): void {
  s.warnings.push(line)
  s.progress.warn(line)
}

export async function timed<T>(s: RestoreRunState, name: string, fn: () => Promise<T>): Promise<T> {
  const t0 = performance.now()
  try {
    return await fn()
  } finally {
    s.durations[name] = round(performance.now() - t0)
  }
}

/** How long a state change of a restored process is waited for. */
export const STATE_WAIT_MS = 5000
