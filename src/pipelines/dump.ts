// The dump, start to finish: preflight -> stop -> checkpoint -> core -> final state -> seal. The order of the steps
// lives here and only here. Every failure path puts the target back as it was found and removes what was written.

import { mkdtempSync, openSync, readSync, closeSync, existsSync, rmSync, readdirSync, readFileSync, mkdirSync, statSync, writeFileSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import type { ArtifactRecord, FinalState, Manifest, StepRecord, TargetRecord } from '../bundle/manifest.js'
import { MANIFEST_FORMAT, MANIFEST_SCHEMA_VERSION } from '../bundle/manifest.js'
import { checkOutputPath, defaultOutputName, workDirPrefix } from '../bundle/output-path.js'
import { writeBundle } from '../bundle/writer.js'
import type { Compression } from '../bundle/compression.js'
import {
  InterruptedError, RollbackIncompleteError, SnapError, StepFailedError, StepTimeoutError, ToolError, type InterruptSignal,
} from '../errors.js'
import { checkPrivileges, checkTargetAllowed } from '../process/access.js'
import { describeCustody, describeHost, describeTarget } from '../process/describe.js'
import { assertSameProcess, captureIdentity, checkIdentity, type TargetIdentity } from '../process/identity.js'
import {
  bringToFinalState, bringToSigstopStop, observeRunState, threadsNotStopped, waitUntilAllStopped, type ObservedState, type StopResult,
} from '../process/stop.js'
import { criuCheck, criuDumpArgs, criuErrorLines, findCriu, stopConversionScript, type CriuInfo } from '../tools/criu.js'
import { keepLog } from '../tools/kept-log.js'
import { writeCoreFromImages } from '../corefile/index.js'
import { resolveCrit } from '../corefile/images.js'
import { findGdb, gcoreCommands, gdbSessionArgs, type GdbInfo } from '../tools/gdb.js'
import { queryTool, round, runTool, startTool, stopAllTools, tailLines, type StartedTool, type ToolRun } from '../tools/run.js'
import type { Progress, ProgressStep } from '../ui/progress.js'
import { OperationBudget } from './budget.js'
import { Journal } from './journal.js'
import { pollUntil } from '../process/poll.js'
import { readStat, readStatus } from '../process/proc.js'
import { signBytes } from '../bundle/signature.js'

export interface DumpOptions {
  pid: number
  output?: string
  /** Overrides the default final state (the state the target was found in). */
  leave?: FinalState
  compression: Compression
  criu?: string
  gdb?: string
  /** Deadline for the whole dump, in seconds. */
  timeoutSec?: number
  includeEnv: boolean
  criuExtraOptions: string[]
  skipCriuCheck?: boolean
  /** Freeze only for criu dump; build the core from its images after the target is released. */
  shortFreeze?: boolean
  signKeyPath?: string
  /** Aborted by snap's signal handlers; its reason is the signal name. */
  cancel: AbortSignal
  toolVersion: string
}

export interface DumpResult {
  bundle: string
  bundleSize: number
  pid: number
  originalState: 'running' | 'stopped'
  normalization: Manifest['normalization']
  finalState: FinalState
  freezeWindowMs: number
  steps: StepRecord[]
  warnings: string[]
  artifacts: { path: string; size: number }[]
}

const STOP_TIMEOUT_MS = 5000
const MiB = 1024 * 1024

/** gcore and criu both write about the target's resident memory; allow a minute plus 30 s per GiB. */
function toolTimeoutMs(rssKiB: number | null): number {
  const gib = (rssKiB ?? 0) / (1024 * 1024)
  return Math.round(60_000 + 30_000 * gib)
}

/** The process group of the target's tracer (criu's pid, for criu), or undefined while nothing traces it. */
function tracerGroup(pid: number): number | undefined {
  const tracer = Number(readStatus(pid)?.['TracerPid'] ?? 0)
  return tracer > 0 ? readStat(tracer)?.pgrp : undefined
}

/** The rollback removes the work directory: the failed tool's log is kept elsewhere and named. */
function keptHint(logFile: string, label: string, outcome = 'the target was put back'): string {
  const kept = keepLog(logFile, label)
  return kept ? `${outcome}; the tool's log: ${kept}` : outcome
}

/** "exit 1", or "killed by SIGSEGV" for a tool that crashed. */
function exitText(run: ToolRun): string {
  return run.exitCode === null && run.signal ? `killed by ${run.signal}` : `exit ${run.exitCode}`
}

function isElfCore(path: string): boolean {
  let fd: number | undefined
  try {
    fd = openSync(path, 'r')
    const h = Buffer.alloc(18)
    if (readSync(fd, h, 0, 18, 0) < 18) return false
    // ELF magic, then e_type (little-endian at offset 16) == ET_CORE (4).
    return h.subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46])) && h.readUInt16LE(16) === 4
  } catch {
    return false
  } finally {
    if (fd !== undefined) closeSync(fd)
  }
}

export class DumpRun {
  private readonly o: DumpOptions
  private readonly progress: Progress
  private readonly startedAt = new Date()
  private readonly budget: OperationBudget
  private identity!: TargetIdentity
  private target!: TargetRecord
  private original!: ObservedState
  private stop?: StopResult
  private criu!: CriuInfo
  private gdb!: GdbInfo
  private output!: string
  private workDir?: string
  private journal?: Journal
  private partial?: string
  private shellJob = false
  private gdbSession?: StartedTool
  private readonly toolPids = new Set<number>()
  /** True once criu's post-dump script turned a stop found in place into a SIGSTOP stop. */
  private stopConverted = false
  private touched = false
  private finalApplied = false
  private freezeStart?: number
  private freezeWindowMs = 0
  private readonly steps: StepRecord[] = []
  private readonly warnings: string[] = []
  private readonly artifacts: string[] = []
  private coreFile = ''
  private imagesDir = ''
  private criuOptions: string[] = []
  private crit = 'crit'

  constructor(o: DumpOptions, progress: Progress) {
    this.o = o
    this.progress = progress
    this.budget = new OperationBudget(o.cancel, o.timeoutSec, 'the dump')
  }

  private get finalState(): FinalState {
    return this.o.leave ?? this.original.state
  }

  private async timed<T>(name: string, fn: (rec: StepRecord) => Promise<T>): Promise<T> {
    const startedAt = new Date()
    const t0 = performance.now()
    const rec: StepRecord = { name, status: 'ok', startedAt: startedAt.toISOString(), endedAt: '', durationMs: 0 }
    this.steps.push(rec)
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

  private recordTool(rec: StepRecord, run: ToolRun): void {
    rec.command = run.command
    rec.exitCode = run.exitCode
  }

  /** Runs the whole dump. On any failure it rolls back first, then rethrows. */
  async execute(): Promise<DumpResult> {
    const steps: ProgressStep[] = [
      { title: `Preflight: target ${this.o.pid}, permissions, criu and gdb, output`, run: (r) => this.preflight(r) },
      { title: 'Stop the target with SIGSTOP and verify every thread', run: (r) => this.stopTarget(r) },
      // criu before gdb: a stop found in place is converted to a SIGSTOP stop while criu holds the threads, and only
      // then does gdb leave the target stopped when it detaches.
      { title: 'Checkpoint with criu dump', run: (r) => this.checkpoint(r) },
      // Short freeze: the target is released right after criu, and the core is built from criu's images.
      ...(this.o.shortFreeze
        ? [
            { title: 'Put the target back', run: (r: (d: string) => void) => this.putBack(r) },
            { title: 'Core file built from the CRIU images', run: (r: (d: string) => void) => this.coreFromImages(r) },
          ]
        : [
            { title: 'Core dump with gdb (gcore)', run: (r: (d: string) => void) => this.coreDump(r) },
            { title: 'Put the target back', run: (r: (d: string) => void) => this.putBack(r) },
          ]),
      { title: 'Seal the bundle (manifest, hashes, compression)', run: (r) => this.seal(r) },
    ]
    try {
      await this.progress.run(steps)
    } catch (e) {
      await this.rollback(e)
      throw e
    }
    this.journal?.remove()
    this.cleanupWorkDir()
    return {
      bundle: this.output,
      bundleSize: statSync(this.output).size,
      pid: this.o.pid,
      originalState: this.original.state,
      normalization: this.normalizationRecord(),
      finalState: this.finalState,
      freezeWindowMs: this.freezeWindowMs,
      steps: this.steps,
      warnings: this.warnings,
      artifacts: this.artifactRecords.map((a) => ({ path: a.path, size: a.size })),
    }
  }

  private async preflight(report: (d: string) => void): Promise<void> {
    await this.timed('preflight', async () => {
      this.identity = captureIdentity(this.o.pid)
      // Who may do this is decided from /proc alone, before the lock: a refusal must leave nothing behind.
      checkPrivileges(this.o.pid)
      // The per-target lock comes first: a second snap on this target stops here and names the first, before it reads
      // a state the first one may be changing (a target the first froze would look "found stopped", and its tracer
      // would look like a debugger in the way). Nothing has been sent yet, so the recorded states are placeholders.
      this.journal = Journal.open({
        operation: 'dump',
        target: this.identity,
        originalState: 'running',
        restoreTo: 'running',
        step: 'preflight',
        touched: false,
        output: null,
        partialPath: null,
        workDir: null,
      })
      checkTargetAllowed(this.o.pid)
      // The tool probes, `criu check` and the target's description are independent: run them side by side (preflight
      // is not part of the freeze, but it is part of the time an engineer waits; gdb alone takes 0.1 s to say its
      // version here). Errors are reported in this order: criu, gdb, `criu check`, the target.
      const criuFound = findCriu(this.o.criu)
      const checked = this.o.skipCriuCheck ? Promise.resolve(undefined) : criuFound.then((c) => criuCheck(c.path))
      const [criu, gdb, check, target] = await this.budget.unlessStopped(
        Promise.allSettled([criuFound, findGdb(this.o.gdb), checked, describeTarget(this.o.pid, { includeEnv: this.o.includeEnv })]),
        'preflight (tool versions and `criu check`)',
      )
      if (criu.status === 'rejected') throw criu.reason
      if (gdb.status === 'rejected') throw gdb.reason
      this.criu = criu.value
      this.gdb = gdb.value
      report(`criu ${this.criu.version} (${this.criu.path}), gdb ${this.gdb.version} (${this.gdb.path})`)
      if (check.status === 'rejected') throw check.reason
      if (check.value && !check.value.ok)
        throw new ToolError(`\`criu check\` fails on this host: ${check.value.lines.at(-1) ?? 'no output'}`, 'run `snap doctor` for details')
      if (target.status === 'rejected') throw target.reason
      this.target = target.value
      assertSameProcess(this.identity, 'preflight')
      const rssBytes = (this.target.vmRssKiB ?? 0) * 1024
      // Core + images + bundle can all exist at once before the work directory is removed.
      const estimate = Math.max(64 * MiB, rssBytes * 4)
      const name = this.o.output ?? defaultOutputName(this.target.comm, this.o.pid, this.startedAt, this.o.compression)
      this.output = checkOutputPath(name, estimate)
      this.shellJob = this.target.sid !== this.o.pid || this.target.ttyNr !== 0
      this.criuOptions = [...(this.shellJob ? ['--shell-job'] : []), ...this.o.criuExtraOptions]
      this.original = await observeRunState(this.identity)
      report(`${this.target.comm}: ${this.target.threads} threads, ${this.original.state}, RSS ${Math.round(rssBytes / MiB)} MiB`)
      this.budget.checkCancelled('preflight')
      // Before the first signal: the journal must say what to put back so a crash can be recovered.
      this.journal.update({ originalState: this.original.state, restoreTo: this.original.state, output: this.output })
      // Named with snap's pid, like the partial bundle: if snap dies between creating it and journalling it, `snap
      // recover` still finds it.
      this.workDir = mkdtempSync(join(dirname(this.output), workDirPrefix(this.output, process.pid)))
      mkdirSync(join(this.workDir, 'logs'))
      this.journal.update({ workDir: this.workDir })
      if (this.o.shortFreeze) {
        // Found now, not after the target was frozen and released: a missing crit must cost nothing.
        this.crit = resolveCrit()
        if (this.crit === 'crit' && !(await queryTool('crit', ['--help'])).ok)
          throw new ToolError('--short-freeze needs crit (CRIU image decoder), which was not found', 'run `npm run setup`, or dump without --short-freeze')
      } else {
        this.startGdbSession()
      }
    })
  }

  private async stopTarget(report: (d: string) => void): Promise<void> {
    await this.timed('stop', async (rec) => {
      this.budget.checkCancelled('stopping the target')
      this.freezeStart = performance.now()
      this.touched = true
      this.journal?.update({ touched: true })
      this.stop = await bringToSigstopStop(this.identity, this.original.state, this.budget.remainingMs(STOP_TIMEOUT_MS))
      rec.note = this.normalizationRecord().note
      report(rec.note)
    })
  }

  private normalizationRecord(): Manifest['normalization'] {
    const s = this.stop
    if (!s) return { action: 'sigstop', conversionWindowUs: null, settleMs: 0, note: 'not stopped' }
    const note =
      s.action === 'sigstop'
        ? `running target stopped with SIGSTOP; all ${s.threads.length} threads stopped after ${s.settleMs.toFixed(1)} ms`
        : `already stopped (by an unknown stop signal, e.g. SIGTSTP from Ctrl+Z); all ${s.threads.length} threads seen stopped; ` +
          (this.stopConverted
            ? 'converted to a SIGSTOP stop with SIGCONT+SIGSTOP while criu held every thread, so no thread ran'
            : 'to be converted to a SIGSTOP stop while criu holds every thread')
    // The conversion leaves the target no window to run in: there is none to record.
    return { action: s.action, conversionWindowUs: null, settleMs: round(s.settleMs), note }
  }

  /** After a tool detaches, every thread must still be stopped; if not, stop it again and say so. */
  private async recheckStopped(after: string): Promise<void> {
    assertSameProcess(this.identity, after)
    const late = threadsNotStopped(this.identity)
    if (late.length === 0) return
    const warning = `after ${after}, ${late.length} thread(s) were not stopped (${late.map((t) => `${t.tid}:${t.state}`).join(', ')}); stopped again with SIGSTOP`
    this.warnings.push(warning)
    this.progress.warn(warning)
    process.kill(this.identity.pid, 'SIGSTOP')
    await waitUntilAllStopped(this.identity, this.budget.remainingMs(STOP_TIMEOUT_MS), `re-stopping after ${after}`)
  }

  /**
   * gdb is started before the target is frozen and waits for its commands on stdin: its own start-up (about 150 ms
   * here) is then not part of the freeze window.
   */
  private startGdbSession(): void {
    const logFile = join(this.workDir!, 'logs', 'gdb.log')
    this.gdbSession = startTool(this.gdb.path, gdbSessionArgs(), {
      cancel: this.o.cancel,
      logFile,
      stdin: 'pipe',
      onSpawn: (pid) => this.trackTool(pid, true),
    })
  }

  private trackTool(pid: number, running: boolean): void {
    if (running) this.toolPids.add(pid)
    else this.toolPids.delete(pid)
    this.journal?.update({ toolPids: [...this.toolPids] })
  }

  private async coreDump(report: (d: string) => void): Promise<void> {
    await this.timed('core', async (rec) => {
      this.budget.checkCancelled('the core dump')
      const workDir = this.workDir!
      this.coreFile = join(workDir, `core.${this.o.pid}`)
      const logFile = join(workDir, 'logs', 'gdb.log')
      const session = this.gdbSession!
      const t0 = performance.now()
      session.armTimeout(this.budget.remainingMs(toolTimeoutMs(this.target.vmRssKiB)))
      session.write(gcoreCommands(this.o.pid, this.coreFile))
      const run = await session.done
      if (session.pid !== undefined) this.trackTool(session.pid, false)
      this.recordTool(rec, run)
      rec.note = `gdb started before the stop; commands on its stdin: ${gcoreCommands(this.o.pid, this.coreFile).trim().split('\n').join('; ')}`
      this.artifacts.push('logs/gdb.log')
      this.throwIfToolStopped(run, 'the core dump (gdb)')
      // gdb's exit status is not proof of a core: check that an ELF core file is really there.
      if (run.exitCode !== 0 || !isElfCore(this.coreFile)) {
        assertSameProcess(this.identity, 'the core dump') // a target that died is the story, not gdb's complaint
        const lines = tailLines(logFile, 3, (l) => !l.startsWith('$ ') && !/^\(gdb\)\s*$/.test(l))
        throw new StepFailedError(`gdb did not write a core (${exitText(run)}): ${lines.join(' | ') || 'no output'}`, keptHint(logFile, 'gdb'))
      }
      this.artifacts.push(basename(this.coreFile))
      await this.recheckStopped('gcore')
      report(`core ${Math.round(statSync(this.coreFile).size / MiB)} MiB in ${Math.round(performance.now() - t0)} ms`)
    })
  }

  private throwIfToolStopped(run: ToolRun, what: string): void {
    if (run.cancelled) throw new InterruptedError(this.o.cancel.reason as InterruptSignal, what)
    if (run.timedOut) throw new StepTimeoutError(`${what} did not finish in time; it was killed`, 'raise --timeout if the target is large')
  }

  private async checkpoint(report: (d: string) => void): Promise<void> {
    await this.timed('checkpoint', async (rec) => {
      this.budget.checkCancelled('the checkpoint')
      const workDir = this.workDir!
      this.imagesDir = join(workDir, 'criu')
      mkdirSync(this.imagesDir)
      const logFile = join(workDir, 'logs', 'criu-dump.log')
      const outFile = join(workDir, 'logs', 'criu-dump.out')
      const convert = this.stop?.action === 'converted'
      const marker = join(workDir, 'stop-converted')
      const actionScript = convert ? join(workDir, 'convert-stop.sh') : undefined
      if (actionScript) writeFileSync(actionScript, stopConversionScript(this.o.pid, marker), { mode: 0o700, flag: 'wx' })
      const args = criuDumpArgs(this.o.pid, this.imagesDir, logFile, { shellJob: this.shellJob, extra: this.o.criuExtraOptions, actionScript })
      // criu holds the target from seize to unseize, its parasite code running inside it. Stopped then (SIGTERM kills
      // criu at once: it has no handler), criu can take the target with it: the worker fixture died of SIGPIPE soon
      // after about one interrupted dump in ten here (the parasite's page pipe lost its reader), and a paused one ran a
      // step in half the runs. So a signal stops criu only once it has let go of the target, at the end of its memory
      // dump (0.4 s for 512 MiB here). Its deadline still holds.
      let criuPid: number | undefined
      let settled = false
      const criuStop = new AbortController()
      const holdsTarget = () => criuPid !== undefined && tracerGroup(this.o.pid) === criuPid
      const onSignal = () => {
        if (holdsTarget()) this.progress.note('waiting for criu to let go of the target: stopped while it holds it, criu can take the target down')
        void pollUntil(() => settled || !holdsTarget(), { timeoutMs: Number.MAX_SAFE_INTEGER, maxIntervalMs: 5 }).then(() =>
          criuStop.abort(this.o.cancel.reason),
        )
      }
      this.o.cancel.addEventListener('abort', onSignal, { once: true })
      const run = await runTool(this.criu.path, args, {
        timeoutMs: this.budget.remainingMs(toolTimeoutMs(this.target.vmRssKiB)),
        cancel: criuStop.signal,
        dieWithSnap: false, // the same reason, if snap is killed: criu finishes, and `snap recover` puts the target back
        logFile: outFile,
        onSpawn: (pid) => {
          criuPid = pid
          this.trackTool(pid, true)
        },
      }).finally(() => {
        settled = true
        this.o.cancel.removeEventListener('abort', onSignal)
      })
      if (run.pid !== undefined) this.trackTool(run.pid, false)
      this.budget.checkCancelled('the checkpoint (criu dump)')
      this.recordTool(rec, run)
      if (existsSync(logFile)) this.artifacts.push('logs/criu-dump.log')
      this.artifacts.push('logs/criu-dump.out')
      this.throwIfToolStopped(run, 'the checkpoint (criu dump)')
      const images = existsSync(this.imagesDir) ? readdirSync(this.imagesDir).sort() : []
      const complete = images.includes('inventory.img') && images.includes('pstree.img') && images.includes(`core-${this.o.pid}.img`)
      if (run.exitCode !== 0 || !complete) {
        assertSameProcess(this.identity, 'the checkpoint (criu dump)') // a target that died is the story, not criu's complaint
        let lines: string[] = []
        try {
          lines = criuErrorLines(readFileSync(logFile, 'utf8'), 2)
        } catch {
          lines = tailLines(outFile, 2, (l) => !l.startsWith('$ ')) // not the command line snap wrote first
        }
        throw new StepFailedError(
          `criu dump failed (${exitText(run)}${complete ? '' : ', images incomplete'}): ${lines.join(' | ') || 'no error lines'}`,
          keptHint(logFile, 'criu-dump'),
        )
      }
      for (const img of images) this.artifacts.push(`criu/${img}`)
      if (convert) {
        // Without the conversion gdb would resume a Ctrl+Z-stopped target when it detaches: do not go on.
        if (!existsSync(marker))
          throw new StepFailedError(
            "criu's post-dump script did not convert the target's stop to a SIGSTOP stop",
            keptHint(logFile, 'criu-dump', 'the target was left stopped as it was'),
          )
        this.stopConverted = true
      }
      await this.recheckStopped('criu dump')
      report(`${images.length} image files; criu options: ${this.criuOptions.join(' ') || '(none)'}`)
    })
  }

  private async putBack(report: (d: string) => void): Promise<void> {
    await this.timed('final-state', async (rec) => {
      // A target to be killed is killed only after the bundle is sealed: if sealing fails, it is still there.
      const now: FinalState = this.finalState === 'killed' ? 'stopped' : this.finalState
      await bringToFinalState(this.identity, now, this.budget.remainingMs(STOP_TIMEOUT_MS))
      this.finalApplied = true
      this.freezeWindowMs = round(performance.now() - (this.freezeStart ?? performance.now()))
      this.journal?.update({ step: 'seal', restoreTo: now })
      rec.note = `target ${now}${this.finalState === 'killed' ? ' (to be killed after sealing)' : ''}; freeze window ${this.freezeWindowMs.toFixed(1)} ms`
      report(rec.note)
    })
  }

  private artifactRecords: ArtifactRecord[] = []

  /** Short freeze: the core comes from criu's images, after the target is back in its final state. */
  private async coreFromImages(report: (d: string) => void): Promise<void> {
    await this.timed('core', async (rec) => {
      this.budget.checkCancelled('building the core')
      this.coreFile = join(this.workDir!, `core.${this.o.pid}`)
      const t0 = performance.now()
      const built = await this.budget.unlessStopped(
        writeCoreFromImages({ imagesDir: this.imagesDir, pid: this.o.pid, output: this.coreFile, crit: this.crit }),
        'building the core',
      )
      if (!isElfCore(this.coreFile)) throw new StepFailedError('the core built from the CRIU images is not an ELF core')
      for (const w of built.warnings) {
        this.warnings.push(`core: ${w}`)
        this.progress.warn(`core: ${w}`)
      }
      rec.note = `built from the CRIU images after the target was released (${built.threads} threads, ${built.loadSegments} segments, copy: ${built.copyMethod})`
      this.artifacts.push(basename(this.coreFile))
      report(`core ${Math.round(built.bytes / MiB)} MiB (apparent) in ${Math.round(performance.now() - t0)} ms, ${built.threads} threads`)
    })
  }

  private async seal(report: (d: string) => void): Promise<void> {
    await this.timed('seal', async () => {
      this.budget.checkCancelled('sealing the bundle')
      const signKey = this.o.signKeyPath
      const createdAt = new Date().toISOString()
      let abandoned = false
      const writing = writeBundle({
        workDir: this.workDir!,
        artifacts: this.artifacts.map((path) => ({
          path,
          kind: path.startsWith('criu/') ? 'criu-image' : path.startsWith('logs/') ? 'log' : 'core',
        })),
        manifest: (records) => this.buildManifest(records, createdAt),
        sign: signKey ? (bytes) => signBytes(signKey, bytes) : undefined,
        output: this.output,
        compression: this.o.compression,
        onPartial: (p) => {
          if (abandoned) return
          this.partial = p
          this.journal?.update({ partialPath: p ?? null })
        },
      })
      // The writer cannot be stopped half way (writing 1 GiB took 13 s here), so on a signal or the deadline it is
      // abandoned: the rollback unlinks its partial file, and then the writer can never link it under the final name.
      writing.catch(() => undefined)
      let written: Awaited<typeof writing>
      try {
        written = await this.budget.unlessStopped(writing, 'sealing the bundle')
      } catch (e) {
        abandoned = true
        throw e
      }
      this.artifactRecords = written.manifest.artifacts
      if (this.o.cancel.aborted) {
        // The signal came just as the bundle was linked into place: the person asked snap to stop, so it goes.
        rmSync(written.path, { force: true })
        this.budget.checkCancelled('sealing the bundle')
      }
      report(`${written.path} (${Math.round(written.size / MiB)} MiB, ${this.o.compression})`)
      if (this.finalState === 'killed') await bringToFinalState(this.identity, 'killed', STOP_TIMEOUT_MS)
    })
  }

  private buildManifest(artifacts: ArtifactRecord[], createdAt: string): Manifest {
    return {
      format: MANIFEST_FORMAT,
      schemaVersion: MANIFEST_SCHEMA_VERSION,
      tool: { name: 'procsnap', version: this.o.toolVersion },
      createdAt,
      mode: this.o.shortFreeze ? 'short-freeze' : 'standard',
      host: describeHost(),
      custody: describeCustody(this.startedAt),
      target: this.target,
      originalState: { state: this.original.state, threads: this.original.threads },
      normalization: this.normalizationRecord(),
      steps: this.steps.filter((s) => s.name !== 'seal'),
      freezeWindowMs: this.freezeWindowMs,
      finalState: this.finalState,
      tools: {
        criu: { path: this.criu.path, version: this.criu.version, options: this.criuOptions },
        gdb: { path: this.gdb.path, version: this.gdb.version },
      },
      artifacts,
      warnings: this.warnings,
      signed: this.o.signKeyPath !== undefined,
    }
  }

  private cleanupWorkDir(): void {
    if (this.workDir) rmSync(this.workDir, { recursive: true, force: true })
    this.workDir = undefined
  }

  /**
   * Puts everything back: tools stopped, target in its original state (or the final state if that was already
   * reached), partial files removed. A second signal during this does not interrupt it.
   */
  private async rollback(cause: unknown): Promise<void> {
    const actions: string[] = []
    await stopAllTools()
    if (this.touched && this.identity) {
      const check = checkIdentity(this.identity)
      if (check === 'same') {
        const to = this.finalApplied ? (this.finalState === 'killed' ? 'stopped' : this.finalState) : this.original.state
        try {
          await bringToFinalState(this.identity, to, STOP_TIMEOUT_MS)
          actions.push(`target ${this.identity.pid} ${to === 'running' ? 'resumed' : 'left stopped'} as it was`)
        } catch (e) {
          this.progress.warn(`rollback could not put target ${this.identity.pid} back: ${(e as Error).message}`)
          this.cleanupFiles(actions)
          this.reportRollback(actions)
          throw new RollbackIncompleteError(
            `target ${this.identity.pid} could not be put back in its ${to} state after: ${(cause as Error).message}`,
            to === 'running' ? `run \`kill -CONT ${this.identity.pid}\`` : undefined,
          )
        }
      } else {
        actions.push(`target ${this.identity.pid} is gone (${check}); nothing sent to it`)
      }
    }
    this.cleanupFiles(actions)
    this.journal?.remove()
    this.reportRollback(actions)
  }

  private cleanupFiles(actions: string[]): void {
    if (this.partial) {
      rmSync(this.partial, { force: true })
      actions.push('partial bundle removed')
      this.partial = undefined
    }
    if (this.workDir) {
      this.cleanupWorkDir()
      actions.push('work directory removed')
    }
  }

  private reportRollback(actions: string[]): void {
    if (actions.length > 0) this.progress.note(`rolled back: ${actions.join('; ')}`)
  }
}

