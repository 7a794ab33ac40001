// The one state a dump's stages share, as criu's cr-dump.c shares its dump state: each stage in this folder is a
// function of it. What the options say, what was found, what was done so far (the rollback reads it to undo).

import type { CoreRecipe } from '../../corefile/recipe.js'
import type { ArtifactKind, FinalState, StepRecord, TargetNamingRecord, TargetRecord, ThreadCredsRecord, WatchTriggerRecord } from '../../bundle/manifest.js'
import type { Compression } from '../../bundle/compression.js'
import type { SealResult } from '../../bundle/writer.js'
import { SnapError } from '../../errors.js'
import type { TargetIdentity } from '../../process/identity.js'
import type { ContainerPlan } from '../../process/container.js'
import type { MemberOutcome, TreeMember } from '../../process/tree.js'
import type { TreeFacts } from '../../process/tree-facts.js'
import type { GcoreFeed } from './gcore-feed.js'
import type { MappingUse } from '../../process/memory-map.js'
import type { CriuInfo } from '../../tools/criu.js'
import type { DumpedTask } from '../../criu-images/pstree.js'
import type { GdbInfo } from '../../tools/gdb.js'
import type { RuntimeRecord } from '../../analysis/runtimes/detect.js'
import type { NetworkLockRecord } from '../../tools/network-lock.js'
import type { ThreadSignalRecord } from '../../tools/thread-leftovers.js'
import { round, type GatedTool, type StartedTool, type ToolRun } from '../../tools/run.js'
import type { ProgressReporter } from '../progress.js'
import type { ByteMeter } from '../byte-meter.js'
import type { OperationBudget } from '../budget.js'
import type { Journal } from '../journal.js'
import type { BundleEncryption } from '../../ship/encrypt.js'

export type CoresScope = 'all' | 'root'

export interface DumpOptions {
  pid: number
  output?: string
  /** Overrides the default final state (each process's own found state). */
  leave?: FinalState
  compression: Compression
  criu?: string
  gdb?: string
  /** Deadline for the whole dump, in seconds. */
  timeoutSec?: number
  includeEnv: boolean
  /** Store the executable and every mapped library of the tree in the bundle (binaries/PATH), for another host. */
  includeBinaries?: boolean
  criuExtraOptions: string[]
  skipCriuCheck?: boolean
  /**
   * Where the cores come from. 'images' (the default): built from criu's images after the tree is released, so the
   * freeze lasts only as long as criu dump. 'gcore': written by gdb while the tree is frozen (the slower way, kept
   * for comparison and for a tool that wants gdb's own core). 'native' (--core-only's default): written by snap
   * from /proc while the tree is stopped, so the freeze grows with resident memory, not with the address space.
   */
  core?: CoreSource
  /** Cores only, no checkpoint: for what criu cannot dump. */
  coreOnly?: boolean
  /** With coreOnly: the cores are written only to be unwound, and left out of the bundle, which keeps the stacks and
   *  the manifest (a cheap first look, `watch --then stacks`). */
  stacksOnly?: boolean
  /** Which processes get a core: every process of the tree (default) or the root only. */
  cores?: CoresScope
  signKeyPath?: string
  /** Seals the bundle for age recipients as it is written (src/ship/encrypt.ts). */
  encryption?: BundleEncryption
  /** Told the bundle's temporary path as soon as it exists, and its final one: an upload follows it while it is sealed. */
  onPartialBundle?: (partial: string | undefined, output: string) => void
  /** Aborted by snap's signal handlers; its reason is the signal name. */
  cancel: AbortSignal
  toolVersion: string
  /** How the target was named (--name, --pidfile, ...): recorded in the manifest. */
  naming?: TargetNamingRecord
  /** The watch trigger that asked for this capture: recorded in the manifest. */
  watch?: WatchTriggerRecord
}

export type CoreSource = 'images' | 'gcore' | 'native'

export interface CriuOptionReason {
  option: string
  reason: string
}

export class DumpState {
  readonly startedAt = new Date()
  identity!: TargetIdentity
  /** The root's description, read from /proc before any signal. */
  target!: TargetRecord
  /** Every process of the tree, root first, with the state each was found in. */
  members: TreeMember[] = []
  /** What putting the tree back did, per process. */
  outcomes: MemberOutcome[] = []
  /** The tree criu dumped (pstree.img). */
  dumped?: DumpedTask[]
  /** Every dumped thread's credentials, by tid, read from criu's images right after the dump (readDumpedThreadCreds). */
  threadCreds?: Map<number, ThreadCredsRecord | null>
  /** Processes of the tree that ended by themselves during the capture (see assertTreeIntact): named once, in a
   *  warning, and not looked for again. */
  readonly endedByThemselves = new Set<number>()
  stopSettleMs = 0
  bornDuringStop: number[] = []
  criu?: CriuInfo
  gdb?: GdbInfo
  output!: string
  workDir?: string
  journal?: Journal
  partial?: string
  gdbSession?: StartedTool
  /** The gcore step's feeding of gdb, one process at a time: what a stop of gdb waits on (gcore-feed.ts). */
  gcoreFeed?: GcoreFeed
  readonly toolPids = new Set<number>()
  /** True once criu's post-dump script turned the stops found in place into SIGSTOP stops. */
  stopConverted = false
  /** True once the first signal went to the tree: from then on the rollback has something to put back. */
  touched = false
  /** True while criu or gdb holds the tree under ptrace: a process dying then was damaged by the tool. */
  toolHolds?: string
  released = false
  freezeStart?: number
  freezeWindowMs = 0
  readonly steps: StepRecord[] = []
  readonly warnings: string[] = []
  readonly artifacts: { path: string; kind: ArtifactKind }[] = []
  /** pid -> core file (in the work directory). */
  readonly coreFiles = new Map<number, string>()
  /** What /proc said of each process before the freeze (sockets, namespaces), for the manifest. */
  facts?: TreeFacts
  /** The ELF files the tree maps (executables, libraries) as the processes see them, each with a pid that maps it:
   *  found before the freeze, stored with --include-binaries. */
  readonly mappedBinaries = new Map<string, number>()
  /** Each process's open files (not sockets, pipes, anonymous inodes), before the freeze. */
  readonly openFiles = new Map<number, { fd: number; path: string }[]>()
  /** Each process's memory by mapping, before the freeze. */
  readonly memoryMaps = new Map<number, MappingUse[]>()
  /** Each process's language runtime, as the stacks found it in its core (its mappings, Go's build info). */
  readonly runtimes = new Map<number, RuntimeRecord>()
  /** The bundle being written (startSeal): how many artifacts it started with, and how to finish or abandon it. */
  sealing?: {
    known: number
    startedAt: number
    hand: (artifacts: { path: string; kind: ArtifactKind }[]) => void
    abandon: (reason: Error) => void
    readonly abandoned: boolean
    writing: Promise<SealResult>
    /** Bytes read into the bundle so far, of how many: what the seal step shows. */
    meter: ByteMeter
  }
  /** The cores kept as recipes over the images (not stored themselves), by host pid: their sha256 at the dump. */
  readonly coreRecipes = new Map<number, string>()
  /** Recipes of cores built from the images, still reading their core (its sha256) while gdb reads its stacks; in
   *  the tree's order. settleRecipes (cores.ts) waits for them and records them. */
  readonly recipesUnderWay = new Map<number, Promise<CoreRecipe>>()
  imagesDir = ''
  /** criu, started before the freeze and held at its gate (readyCheckpoint), and where it writes. */
  criuRun?: { tool: GatedTool; logFile: string; outFile: string; marker: string; toConvert: number[]; timeoutMs: number }
  /** Every thread's blocked, ignored and caught signals, read once the tree is stopped and before criu starts: what a
   *  criu killed inside a thread may leave changed (thread-leftovers.ts), and the rollback puts back. */
  threadSignals?: ThreadSignalRecord[]
  /** True once criu's gate was opened: from then on criu may have seized the tree and locked its connections. */
  criuOpened = false
  /** How criu dump ended, once it has. */
  criuResult?: ToolRun
  /** The network lock criu's run sets (when the tree has connections to lock), to find what a dead criu left. */
  networkLock?: NetworkLockRecord
  /** method 'snap': the two nft processes, started before the freeze, that set and remove the lock. */
  lockTools?: { lock: StartedTool; unlock: StartedTool }
  /** True from the moment snap's lock may be on the host until it was removed. */
  lockSet = false
  /** True once criu, asked to (--leave killed, see criuKills), ended the tree at the end of a dump that succeeded: from
   *  then on nothing of the tree is to be put back, the images are the process, and the lock on its connections stays
   *  until it is restored. */
  killedByCriu = false
  criuOptions: string[] = []
  criuReasons: CriuOptionReason[] = []
  /** Set when the target is a container's init: its root on the host and the mounts criu must be told about. */
  container?: ContainerPlan

  constructor(
    readonly o: DumpOptions,
    readonly progress: ProgressReporter,
    readonly budget: OperationBudget,
  ) {
    this.coreSource = o.coreOnly ? (o.core ?? 'native') : (o.core ?? 'images')
  }

  /** Where the cores come from, decided before anything is done (see DumpOptions.core); core-only has no images. */
  readonly coreSource: CoreSource

  /** Recorded in the manifest: 'short-freeze' for cores built from the images, 'standard' for gcore's. */
  get mode(): 'standard' | 'short-freeze' | 'core-only' {
    return this.o.coreOnly ? 'core-only' : this.coreSource === 'images' ? 'short-freeze' : 'standard'
  }

  /**
   * --leave killed, with the cores built from the images: criu ends the tree itself, the way it does by default, at
   * the end of its dump and with the tree's TCP connections still in repair mode and locked, so their peers see no
   * reset and wait for the restore (criu's own migration). Killed any later, after criu has let the sockets out of
   * repair mode and the lock go, each close resets its peer, and bytes the kernel acknowledged meanwhile are lost.
   * With gdb's cores or core-only, gdb or snap still needs the live tree after criu: snap kills it after the seal.
   */
  get criuKills(): boolean {
    return this.o.leave === 'killed' && !this.o.coreOnly && this.coreSource === 'images'
  }

  /** What the manifest and the result say of the lock kept on the connections of a tree criu ended (see criuKills). */
  get networkLockKept(): { method: 'snap'; table: string; connections: number } | undefined {
    const lock = this.networkLock
    if (!this.killedByCriu || !this.lockSet || lock?.method !== 'snap' || !lock.table) return undefined
    return { method: 'snap', table: lock.table, connections: lock.connections.length }
  }

  /** The state a process is to be left in: the one asked for, else its own found state. Killing comes after the seal
   *  (or at the end of criu's dump, see criuKills). */
  leaveFor(m: TreeMember): 'running' | 'stopped' {
    const leave = this.o.leave
    if (leave === 'running' || leave === 'stopped') return leave
    if (leave === 'killed') return 'stopped'
    return m.found
  }

  /** The final state reported for the root. */
  get finalState(): FinalState {
    return this.o.leave ?? this.members[0]?.found ?? 'running'
  }

  warn(text: string): void {
    this.warnings.push(text)
    this.progress.warn(text)
  }

  addArtifact(path: string, kind: ArtifactKind): void {
    if (!this.artifacts.some((a) => a.path === path)) this.artifacts.push({ path, kind })
  }

  /** From the first SIGSTOP until the tree is put back. */
  get frozen(): boolean {
    return this.touched && !this.released
  }

  /**
   * The journal's list of tools to kill if snap dies. A tool that started is written at once; one that exited while
   * the tree is frozen is written with the next update (a journal naming an exited tool is harmless: recover checks
   * each pid's start time before it signals).
   */
  trackTool(pid: number, running: boolean): void {
    if (running) this.toolPids.add(pid)
    else this.toolPids.delete(pid)
    if (running || !this.frozen) this.journal?.update({ toolPids: [...this.toolPids] })
    else this.journal?.note({ toolPids: [...this.toolPids] })
  }

  async timed<T>(name: string, fn: (rec: StepRecord) => Promise<T>): Promise<T> {
    const startedAt = new Date()
    const t0 = performance.now()
    const rec: StepRecord = { name, status: 'ok', startedAt: startedAt.toISOString(), endedAt: '', durationMs: 0 }
    this.steps.push(rec)
    // Written at once, frozen or not: `snap recover --list` names the step a dead snap was in.
    this.journal?.update({ step: name })
    try {
      return await fn(rec)
    } catch (e) {
      rec.status = 'failed'
      rec.note = e instanceof SnapError ? e.message : String(e)
      throw e
    } finally {
      rec.endedAt = new Date().toISOString()
      rec.durationMs = round(performance.now() - t0)
    }
  }
}

export function recordTool(rec: StepRecord, run: ToolRun): void {
  rec.command = run.command
  rec.exitCode = run.exitCode
}

/** "exit 1", or "killed by SIGSEGV" for a tool that crashed. */
export function exitText(run: ToolRun): string {
  return run.exitCode === null && run.signal ? `killed by ${run.signal}` : `exit ${run.exitCode}`
}

export { toolTimeoutMs } from '../budget.js'

export const STOP_TIMEOUT_MS = 5000
export const MiB = 1024 * 1024
