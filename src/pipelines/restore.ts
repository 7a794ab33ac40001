// Restore, start to finish: verifying+extracting -> preflight -> restoring -> restored | failed. It never ends in
// "restoring": every path out of here reports restored or failed, and a failure kills what was partly restored.

import { spawn } from 'node:child_process'
import { appendFileSync, closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, statfsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { verifyAndExtract } from '../bundle/extract.js'
import type { FinalState, Manifest } from '../bundle/manifest.js'
import { humanBytes } from '../bundle/output-path.js'
import { judgeTrust, type SignatureStatus } from '../bundle/trust.js'
import { BundleInvalidError, InterruptedError, OutputPathError, RestoreFailedError, RestoreRefusedError, SnapError, StepTimeoutError, type InterruptSignal } from '../errors.js'
import { pollUntil } from '../process/poll.js'
import { innerPidOf, readDescendants } from '../process/tree.js'
import { identifiedDescendants, signalRecorded, type TargetIdentity } from '../process/identity.js'
import { readBootId, readCmdline, readLink, readStat, readTextFile, readThreadStates, readChildren } from '../process/proc.js'
import { criuRestoreArgs, findCriu, type CriuInfo } from '../tools/criu.js'
import { diagnoseCriuLog } from '../tools/criu-log.js'
import { markExited, type DumpedTask } from '../tools/criu-pstree.js'
import { keepLog } from '../tools/kept-log.js'
import { round, shellQuote, stopProcessGroup, stopAllTools } from '../tools/run.js'
import { ByteMeter, meterIntervalMs } from '../ui/byte-meter.js'
import type { Progress } from '../ui/progress.js'
import { OperationBudget } from './budget.js'
import { Journal } from './journal.js'
import { checkCriuVersion, checkFiles, checkHost, checkImageIdentity, checkPidsFree } from './restore-preflight.js'
import { exeOfProcess, readImageIdentity, type ImageIdentity } from '../tools/criu-identity.js'

export type RestoreState = 'verifying' | 'extracting' | 'preflight' | 'restoring' | 'restored' | 'failed'

export interface RestoreOptions {
  bundle: string
  /** Overrides the state recorded at dump. */
  final?: 'running' | 'stopped'
  newPidns: boolean
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

export interface RestoreResult {
  state: 'restored'
  bundle: string
  /** The restored root's pid as seen from this host. */
  pid: number
  /** Its pid inside its own pid namespace (differs from pid only with --new-pidns). */
  pidInNamespace: number
  threads: number
  finalState: 'running' | 'stopped'
  /** Every restored process (host pids, workers first) and the state it was left in. */
  processes: { pid: number; left: 'running' | 'stopped' }[]
  newPidns: boolean
  /** The key whose signature made the bundle trusted, or null when it was restored unsigned (--allow-unsigned). */
  signedBy: string | null
  /** What checking the signature found: verified (key file and fingerprint), or unsigned with --allow-unsigned. */
  signature: SignatureStatus
  states: { state: RestoreState; at: string }[]
  warnings: string[]
  durations: Record<string, number>
}

const STATE_WAIT_MS = 5000
/** How often a running criu restore is looked at for what it has made. */
const WATCH_MS = 10
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p))
/** sh -c: exec the command after $1 if the process $1 is still this one's parent. */
const PARENT_ALIVE = '[ "$PPID" = "$1" ] || exit 125; shift; exec "$@"'

export class RestoreRun {
  private readonly states: { state: RestoreState; at: string }[] = []
  private readonly warnings: string[] = []
  private readonly durations: Record<string, number> = {}
  private workDir?: string
  private signedBy: string | null = null
  private signature: SignatureStatus = { state: 'unsigned' }
  private manifest!: Manifest
  private criu!: CriuInfo
  private holderPid?: number
  /** The restored roots, as recorded: the tree under them is looked for from these. */
  private restoredRoots: TargetIdentity[] = []
  private journal?: Journal
  /** The root's thread count as criu dumped it (pstree.img): what the restored process must have. */
  /** The tree as criu's images hold it: what the restore must bring back, process by process. */
  private imageTree?: DumpedTask[]
  private readonly budget: OperationBudget

  constructor(
    private readonly o: RestoreOptions,
    private readonly progress: Progress,
  ) {
    this.budget = new OperationBudget(o.cancel, o.timeoutSec, 'restore')
  }

  private enter(state: RestoreState): void {
    // Recorded in the result; what a person sees are the steps (Progress.run), not these names.
    this.states.push({ state, at: new Date().toISOString() })
  }

  private async timed<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const t0 = performance.now()
    try {
      return await fn()
    } finally {
      this.durations[name] = round(performance.now() - t0)
    }
  }

  async execute(): Promise<RestoreResult> {
    try {
      return await this.run()
    } catch (e) {
      await this.fail(e)
      throw e
    } finally {
      if (this.workDir) rmSync(this.workDir, { recursive: true, force: true })
      this.journal?.remove()
    }
  }

  /**
   * The head of the bundle, before a byte of it is written: a signature by a trusted key (or --allow-unsigned, said
   * out loud), a bundle that holds a checkpoint at all, the pids it needs free, and room for its images.
   */
  private checkHead(manifest: Manifest, head: { manifestBytes: Buffer; signature?: Buffer }): void {
    const warn = (line: string) => {
      this.warnings.push(line)
      this.progress.warn(line)
    }
    const verdict = judgeTrust(this.o.bundle, head, { key: this.o.publicKey, allowUnsigned: this.o.allowUnsigned, warn })
    this.signature = verdict.signature
    if (verdict.trusted) this.signedBy = verdict.by
    else warn(verdict.warning)
    if (!manifest.tools.criu || manifest.mode === 'core-only')
      throw new RestoreRefusedError(`${this.o.bundle} holds cores only (taken with --core-only): there is no checkpoint to restore`, 'open its cores with gdb instead')
    // One restore of a tree at a time: a second restore of the same bundle (or of another capture of the same pid)
    // stops here, so its clean-up can never kill the first one's restored process. The journal also lets `snap
    // recover` clean up after a restore that was killed.
    this.journal = Journal.open({
      operation: 'restore',
      target: { pid: manifest.target.pid, startTime: 0, bootId: manifest.host.bootId },
      originalState: 'running',
      restoreTo: 'running',
      step: 'extracting',
      touched: false,
      output: null,
      partialPath: null,
      workDir: this.workDir ?? null,
    })
    // Every pid the tree will take, claimed before it is checked free: a dump of a process that gets one of them, or
    // another restore of a tree sharing one, stops at the claim. In a pid namespace of its own the tree takes no pid
    // of the host's that could be known now.
    if (!this.o.newPidns && !manifest.container) {
      this.journal.claimPids(manifest.target.treePids)
      checkPidsFree(manifest)
    }
    const need = manifest.artifacts.filter((a) => a.kind === 'criu-image').reduce((n, a) => n + a.size, 0)
    const st = statfsSync(this.workDir!)
    const free = Number(st.bavail) * Number(st.bsize)
    if (need > free)
      throw new RestoreRefusedError(
        `the bundle's images need ${humanBytes(need)} and ${this.workDir} has ${humanBytes(free)} free`,
        'free space, or give --work-dir on a larger filesystem',
      )
  }

  /** The restore, as the steps a person sees: verify and extract, preflight, criu restore, the final state. */
  private async run(): Promise<RestoreResult> {
    this.enter('verifying')
    this.criu = await findCriu(this.o.criu)
    const parent = this.o.workDirParent ?? tmpdir()
    try {
      this.workDir = mkdtempSync(join(parent, 'snap-restore-'))
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      throw new OutputPathError(`cannot make a work directory in ${parent} (${code === 'ENOENT' ? 'it does not exist' : code === 'ENOTDIR' ? 'not a directory' : code})`, 'give --work-dir an existing directory on a filesystem with room for the images')
    }
    const finalState = this.o.final ?? 'as-captured'
    let restored: Awaited<ReturnType<RestoreRun['restoreTree']>> | undefined
    await this.progress.run([
      { title: 'Verify the bundle (trust decided on its manifest first) and extract its CRIU images', run: (report) => this.extract(report) },
      { title: "Preflight: the images' identity, the CRIU version, this host, the files the process had open, free pids", run: () => this.preflight() },
      {
        title: `Restore the tree with criu restore, check it in /proc, leave it ${finalState === 'as-captured' ? 'as it was captured' : finalState}`,
        run: async (report) => {
          restored = await this.restoreTree()
          report(`pid ${restored.pid}, ${restored.threads} threads, ${restored.finalState}`)
        },
      },
    ])
    this.enter('restored')
    const r = restored!
    return {
      state: 'restored',
      bundle: this.o.bundle,
      pid: r.pid,
      pidInNamespace: r.pidInNamespace,
      threads: r.threads,
      finalState: r.finalState,
      processes: r.processes,
      newPidns: this.o.newPidns,
      signedBy: this.signedBy,
      signature: this.signature,
      states: this.states,
      warnings: this.warnings,
      durations: this.durations,
    }
  }

  private async extract(report: (line: string) => void): Promise<void> {
    this.enter('extracting')
    const meter = new ByteMeter(report, undefined, meterIntervalMs(this.progress.mode), 'read of the bundle: ')
    // Trust, the tree's pids and room for the images are decided on the bundle's head, before anything is written.
    const scan = await this.timed('verify-extract', () =>
      verifyAndExtract({
        bundle: this.o.bundle,
        into: this.workDir!,
        want: (a) => a.kind === 'criu-image',
        onHead: (head) => this.checkHead(head.manifest, head),
        onRead: (done, size) => meter.update(done, size),
      }),
    )
    if (scan.problems.length > 0)
      throw new BundleInvalidError(`${this.o.bundle} failed verification: ${scan.problems.join('; ')}`, scan.problems, 'nothing was restored')
    this.manifest = scan.manifest
    report(`${scan.manifest.artifacts.filter((a) => a.kind === 'criu-image').length} images extracted, every artifact's sha256 checked`)
    this.budget.checkCancelled('extracting')
  }

  private async preflight(): Promise<void> {
    this.enter('preflight')
    // The head's warnings (--allow-unsigned, ignored keys) were printed when they were found: only the preflight's own
    // are printed after it.
    const printed = this.warnings.length
    await this.timed('preflight', async () => {
      // Who the images would bring back, read from them: the manifest's word is checked against it.
      let identity: ImageIdentity
      try {
        identity = readImageIdentity(join(this.workDir!, 'criu'))
      } catch (e) {
        throw new BundleInvalidError(`${this.o.bundle}: its CRIU images cannot be read (${(e as Error).message})`, [], 'nothing was restored')
      }
      checkImageIdentity(this.manifest, identity)
      // A zombie of the dumped tree comes back a zombie: the check after the restore must know which tasks those are.
      try {
        this.imageTree = markExited(join(this.workDir!, 'criu'), identity.tree)
      } catch (e) {
        throw new BundleInvalidError(`${this.o.bundle}: its CRIU core images cannot be read (${(e as Error).message})`, [], 'nothing was restored')
      }
      // The images, not the manifest, say which pids criu will create: any the manifest left out is claimed too.
      if (!this.o.newPidns && !this.manifest.container) this.journal?.claimPids(identity.tree.map((t) => t.pid))
      checkCriuVersion(this.manifest, this.criu.version)
      checkHost(this.manifest, this.warnings)
      await checkFiles(this.manifest, this.budget, identity.files)
      // A container comes back in a PID namespace of its own: its pids are free there whatever the host holds.
      if (!this.o.newPidns && !this.manifest.container) checkPidsFree(this.manifest)
    })
    for (const w of this.warnings.slice(printed)) this.progress.warn(w)
    this.budget.checkCancelled('preflight')
  }

  private async restoreTree(): Promise<{ pid: number; pidInNamespace: number; threads: number; finalState: 'running' | 'stopped'; processes: RestoreResult['processes'] }> {
    this.enter('restoring')
    const finalState = this.o.final ?? (this.manifest.originalState.state === 'running' ? 'running' : 'stopped')
    const { pid, pidInNamespace } = await this.timed('criu-restore', () => this.runCriu(finalState))
    this.budget.checkCancelled('restoring')
    const threads = await this.timed('check', () => this.checkRestored(pid))
    const processes = await this.timed('final-state', () => this.applyFinalState(pid, finalState))
    return { pid, pidInNamespace, threads, finalState, processes }
  }

  private async runCriu(finalState: 'running' | 'stopped'): Promise<{ pid: number; pidInNamespace: number }> {
    const images = join(this.workDir!, 'criu')
    const logFile = join(this.workDir!, 'criu-restore.log')
    const outFile = join(this.workDir!, 'criu-restore.out')
    const pidfile = join(this.workDir!, 'restored.pid')
    // criu gives a task back in the state its images record, which is not always stopped: one it resumed ran on
    // until snap's SIGSTOP landed (a paused target came back a tick further on). --leave-stopped never lets it run,
    // so the tree is checked as criu made it (a process that starts threads would otherwise change under the check)
    // and only then put in its final state.
    const container = this.manifest.container
    const args = [
      ...criuRestoreArgs(images, logFile, pidfile, this.manifest.tools.criu!.options),
      '--leave-stopped',
      ...(container ? containerRestoreArgs(container) : []),
      ...(this.o.tcpClose ? ['--tcp-close'] : []),
      ...(this.o.criuExtraOptions ?? []),
    ]
    const timeoutMs = this.budget.remainingMs(60_000 + 30_000 * ((this.manifest.target.vmRssKiB ?? 0) / (1024 * 1024)))
    if (this.o.newPidns) return this.runCriuInNewPidns(args, logFile, outFile, timeoutMs)
    const run = await this.runCriuDetached([...args, '--restore-sibling'], outFile, timeoutMs, container?.rootfs, (tool) => this.recordRestored(pidfile, tool))
    if (run.cancelled) throw new InterruptedError(this.o.cancel.reason as InterruptSignal, 'criu restore')
    if (run.timedOut) throw this.criuTimeout(logFile, 'criu restore')
    if (run.exitCode !== 0 || !existsSync(pidfile)) throw this.criuFailure(logFile, run.exitCode)
    const pid = Number(readFileSync(pidfile, 'utf8').trim())
    return { pid, pidInNamespace: pid }
  }

  /**
   * Records in the journal, as soon as they can be seen, the processes criu has made: the root, then every process
   * under it, each with its start time. criu writes its pidfile only once the whole tree is restored, so until then the
   * root is found as what --restore-sibling makes it: a child of criu's parent (snap, unless criu runs under a
   * wrapper). Either way it must have the images' root pid and have started after criu did.
   */
  private recordRestored(pidfile: string, tool: { pid: number; startTime: number }): void {
    if (!this.journal) return
    if (this.restoredRoots.length === 0) {
      const pid = [pidFromFile(pidfile), this.siblingRoot(tool.pid)].find((p) => p !== undefined && p !== tool.pid && this.isImageRoot(p))
      const s = pid !== undefined ? readStat(pid) : undefined
      if (pid !== undefined && s && s.startTime >= tool.startTime && s.state !== 'Z' && s.state !== 'X')
        this.restoredRoots.push({ pid, startTime: s.startTime, bootId: readBootId() })
    }
    this.recordTree()
  }

  /** The child of snap's that criu cloned as the images' root (with --restore-sibling, criu's parent is its parent). */
  private siblingRoot(toolPid: number): number | undefined {
    return readChildren(process.pid).find((p) => p !== toolPid && this.isImageRoot(p))
  }

  /** Whether pid is where criu puts the images' root: its own pid, or inside a container the same pid in its namespace. */
  private isImageRoot(pid: number): boolean {
    const want = this.imageTree?.[0]?.pid
    const samePids = !this.o.newPidns && !this.manifest.container
    return want !== undefined && (samePids ? pid : innerPidOf(pid)) === want
  }

  /** The restored roots and everything now under them, into the journal before anything may signal them. */
  private recordTree(): void {
    this.journal?.recordRestored(this.restoredRoots.flatMap((r) => [r, ...identifiedDescendants(r)]))
  }

  /**
   * criu restore in a session of its own, not through runTool, whose clean-up kills what is left in the tool's process
   * group once it exits: with --shell-job the restored root joins criu's group when its own group leader is not part
   * of the tree, so that clean-up killed every restored target that had not been its own group leader.
   * --restore-sibling makes the root snap's child instead of criu's: a job that is its own group leader, restored
   * stopped as criu's child, sat in an orphaned group with a stopped member the moment criu exited, and the kernel
   * then sends SIGHUP (which kills it) and SIGCONT. A session of its own keeps that from happening when snap exits.
   */
  private async runCriuDetached(
    args: string[],
    outFile: string,
    timeoutMs: number,
    containerRoot: string | undefined,
    watch: (tool: { pid: number; startTime: number }) => void,
  ): Promise<{ exitCode: number | null; timedOut: boolean; cancelled: boolean }> {
    appendFileSync(outFile, `$ ${[this.criu.path, ...args].map(shellQuote).join(' ')}\n`, { mode: 0o600 })
    const out = openSync(outFile, 'a', 0o600)
    // setpriv --pdeathsig: criu dies with snap, even if snap is SIGKILLed mid-restore. The kernel sends nothing if snap
    // died before setpriv asked, and criu would then restore a tree nothing records: the shell in between becomes criu
    // only if snap is still its parent once the signal is set.
    let [bin, binArgs] = SETPRIV
      ? [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', '/bin/sh', '-c', PARENT_ALIVE, 'sh', String(process.pid), this.criu.path, ...args]]
      : [this.criu.path, args]
    if (containerRoot) {
      // criu pivots into a container's root, which must be a mount point: bound onto itself in a mount namespace of
      // criu's own, so the host keeps no trace of it (as runc does before it restores).
      binArgs = ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c', 'mount --bind "$1" "$1" && shift && exec "$@"', 'sh', containerRoot, bin, ...binArgs]
      bin = '/usr/bin/unshare'
    }
    const child = spawn(bin, binArgs, { detached: true, stdio: ['ignore', out, out] })
    if (child.pid !== undefined) this.journal?.update({ step: 'restoring', touched: true, toolPids: [child.pid] })
    closeSync(out)
    // What criu makes is recorded while it runs, not after: a snap killed meanwhile leaves recover a journal naming it.
    const toolStart = child.pid !== undefined ? this.journal?.current.toolStartTimes?.[0] : undefined
    const tool = child.pid !== undefined && toolStart != null ? { pid: child.pid, startTime: toolStart } : undefined
    const watcher = tool ? setInterval(() => watch(tool), WATCH_MS) : undefined
    const exited = new Promise<number | null>((resolve) => {
      child.once('exit', (code) => resolve(code))
      child.once('error', () => resolve(null))
    })
    let timedOut = false
    let cancelled = false
    let stopping: Promise<void> | undefined
    const stop = () => {
      if (child.pid !== undefined) stopping ??= stopProcessGroup(child.pid, 2000)
    }
    const timer = setTimeout(() => {
      timedOut = true
      stop()
    }, timeoutMs)
    const onAbort = () => {
      cancelled = true
      stop()
    }
    if (this.o.cancel.aborted) onAbort()
    this.o.cancel.addEventListener('abort', onAbort, { once: true })
    try {
      const exitCode = await exited
      await stopping
      if (tool) watch(tool)
      return { exitCode, timedOut, cancelled }
    } finally {
      clearInterval(watcher)
      clearTimeout(timer)
      this.o.cancel.removeEventListener('abort', onAbort)
    }
  }

  /**
   * Like criu-ns: criu runs as pid 1 of a new pid namespace (unshare --pid --fork --mount-proc), where the tree's
   * old pids are free. criu is not detached there: as the namespace's init it must outlive the restored tree, so
   * snap leaves it running and judges success from criu's log.
   */
  private async runCriuInNewPidns(args: string[], logFile: string, outFile: string, timeoutMs: number): Promise<{ pid: number; pidInNamespace: number }> {
    const nsArgs = args.filter((a) => a !== '--restore-detached')
    const out = openSync(outFile, 'a', 0o600)
    // Plain spawn, not execa: this process must be unref'd and outlive snap.
    const child = spawn('/usr/bin/unshare', ['--pid', '--fork', '--mount-proc', '--', this.criu.path, ...nsArgs], {
      detached: true,
      stdio: ['ignore', out, out],
    })
    closeSync(out)
    const holder = child.pid
    if (holder === undefined) throw new RestoreFailedError('could not start unshare for --new-pidns')
    this.holderPid = holder
    // If snap dies now, `snap recover` kills this group: unshare, criu as the namespace's init, and what it restored.
    this.journal?.update({ step: 'restoring', touched: true, toolPids: [holder] })
    let exited = false
    child.on('exit', () => {
      exited = true
    })
    child.on('error', () => {
      exited = true
    })
    const success = () => {
      try {
        return /Restore finished successfully/.test(readFileSync(logFile, 'utf8'))
      } catch {
        return false
      }
    }
    const done = await pollUntil(() => success() || exited || this.o.cancel.aborted, { timeoutMs, maxIntervalMs: 50 })
    this.budget.checkCancelled('criu restore')
    if (!done) throw this.criuTimeout(logFile, 'criu restore in a new pid namespace')
    if (!success()) throw this.criuFailure(logFile, null)
    // unshare -> criu (pid 1 inside) -> restored root.
    const criuHostPid = await pollUntil(() => readChildren(holder)[0], { timeoutMs: STATE_WAIT_MS })
    const root = criuHostPid !== undefined ? await pollUntil(() => readChildren(criuHostPid)[0], { timeoutMs: STATE_WAIT_MS }) : undefined
    if (root === undefined) throw new RestoreFailedError('criu reported success but no restored process was found in the new pid namespace')
    const rootStat = readStat(root)
    if (rootStat) this.restoredRoots.push({ pid: root, startTime: rootStat.startTime, bootId: readBootId() })
    this.recordTree()
    const nspid = /^NSpid:\s*(.*)$/m.exec(readFileSync(`/proc/${root}/status`, 'utf8'))?.[1]?.trim().split(/\s+/)
    child.unref()
    return { pid: root, pidInNamespace: Number(nspid?.at(-1) ?? root) }
  }

  /**
   * criu killed at its deadline: what its log says (its first error line, else the last line it wrote: where it was
   * when it hung), and the log kept, named in the hint.
   */
  private criuTimeout(logFile: string, what: string): StepTimeoutError {
    let text = ''
    try {
      text = readFileSync(logFile, 'utf8')
    } catch {
      // no log: criu did not get far enough to write one
    }
    const why = diagnoseCriuLog(text)
    const last = text.split('\n').map((l) => l.trim()).filter(Boolean).at(-1)
    const noError = why.known === undefined && why.cause === 'criu gave no error line'
    const said = !noError ? why.cause : last ? `no error line; its log ends: ${last}` : 'it wrote no log'
    const kept = keepLog(logFile, 'criu-restore')
    return new StepTimeoutError(
      `${what} did not finish in time and was killed (${said})`,
      [why.hint, kept ? `criu's log: ${kept}` : undefined, 'raise --timeout if the images are large'].filter(Boolean).join('; '),
    )
  }

  private criuFailure(logFile: string, exitCode: number | null): RestoreFailedError {
    let why: { cause: string; hint?: string } = { cause: 'no error lines in its log' }
    try {
      why = diagnoseCriuLog(readFileSync(logFile, 'utf8'))
    } catch {
      // no log: criu did not get far enough to write one
    }
    const kept = keepLog(logFile, 'criu-restore')
    return new RestoreFailedError(
      `criu restore failed${exitCode !== null ? ` (exit ${exitCode})` : ''}: ${why.cause}`,
      [why.hint, kept ? `criu's log: ${kept}` : undefined].filter(Boolean).join('; ') || undefined,
    )
  }

  /**
   * The restored tree must be the one dumped: the root runs the recorded exe and cmdline, and every process of the
   * images' tree is there with each of its threads (the same tids, where the pids are the host's). Checked while criu's
   * --leave-stopped holds the tree still.
   */
  private async checkRestored(pid: number): Promise<number> {
    const t = this.manifest.target
    const tree = this.imageTree ?? [{ pid: t.pid, ppid: 0, pgid: 0, sid: 0, threads: t.threadIds }]
    // Inside a new pid namespace or a container the images' pids are the inner ones.
    const samePids = !this.o.newPidns && !this.manifest.container
    const restoredAs = (): Map<number, number> => {
      const m = new Map<number, number>()
      for (const p of [pid, ...readDescendants(pid)]) m.set(samePids ? p : innerPidOf(p), p)
      // readDescendants leaves zombies out; a task dumped as one is looked for among the zombies of the tree.
      for (const p of restoredZombies(pid)) m.set(samePids ? p : innerPidOf(p), p)
      m.set(tree[0]!.pid, pid)
      return m
    }
    const complete = (m: Map<number, number>) =>
      tree.every((task) => {
        const host = m.get(task.pid)
        if (host === undefined) return false
        return task.exited ? readStat(host)?.state === 'Z' : readThreadStates(host).length >= task.threads.length
      })
    const seen = (await pollUntil(() => {
      const m = restoredAs()
      return complete(m) ? m : undefined
    }, { timeoutMs: STATE_WAIT_MS })) ?? restoredAs()
    const problems: string[] = []
    if (!readStat(pid)) problems.push(`restored pid ${pid} does not exist`)
    const exe = readLink(`/proc/${pid}/exe`)
    if (exe !== t.exe) problems.push(`exe is ${exe ?? 'unknown'}, expected ${t.exe}`)
    const cmd = readCmdline(pid)
    if (JSON.stringify(cmd) !== JSON.stringify(t.cmdline)) problems.push(`cmdline differs`)
    for (const task of tree) {
      const host = seen.get(task.pid)
      const name = task.pid === tree[0]!.pid ? 'the root' : `process ${task.pid}`
      const state = host === undefined ? undefined : readStat(host)?.state
      if (host === undefined || state === undefined) {
        problems.push(`${name} was not restored`)
        continue
      }
      // criu makes a dumped zombie again as a zombie: it has no threads and no executable left to compare.
      if (task.exited) {
        if (state !== 'Z') problems.push(`${name} was a zombie when dumped and is ${state} now`)
        continue
      }
      if (state === 'Z') {
        problems.push(`${name} was restored but has exited`)
        continue
      }
      const tids = readThreadStates(host).map((s) => s.tid)
      if (tids.length !== task.threads.length) problems.push(`${name} has ${tids.length} threads, the images ${task.threads.length}`)
      else if (samePids && !task.threads.every((tid) => tids.includes(tid))) problems.push(`${name}'s thread ids differ from the images'`)
      // Each child runs the executable its images name (the root's was checked against the manifest above). A
      // container's paths are inside its own root, where this view of /proc/PID/exe does not compare.
      if (task.pid !== tree[0]!.pid && !this.manifest.container) {
        const want = exeOfProcess(join(this.workDir!, 'criu'), task.pid)
        const got = readLink(`/proc/${host}/exe`)
        if (want && !want.endsWith(' (deleted)') && got !== want) problems.push(`${name} runs ${got ?? 'nothing readable'}, its images ${want}`)
      }
    }
    if (problems.length > 0) throw new RestoreFailedError(`the restored process does not match the bundle: ${problems.join('; ')}`)
    return readThreadStates(pid).length
  }

  /**
   * Every restored process to its state: the one asked for (--resume, --leave-stopped), else each its own found state
   * as the manifest records it (a worker paused at the dump comes back paused). criu gives the tree back as its images
   * say, and a tree snap dumped was SIGSTOP-stopped then: without this, the workers of a restored master stay frozen.
   */
  private async applyFinalState(pid: number, final: 'running' | 'stopped'): Promise<RestoreResult['processes']> {
    const found = new Map((this.o.newPidns ? [] : (this.manifest.processes ?? [])).map((p) => [p.pid, p.found]))
    const tree = [pid, ...readDescendants(pid)].reverse() // workers before their master
    // A container's processes are named in the manifest by their pids inside its namespace.
    const key = (p: number) => (this.manifest.container ? innerPidOf(p) : p)
    const want = (p: number): 'running' | 'stopped' => (this.o.final ?? found.get(key(p)) ?? final)
    for (const p of tree) {
      const stopped = () => readThreadStates(p).every((t) => t.state === 'T')
      if (want(p) === 'running') process.kill(p, 'SIGCONT')
      else if (!stopped()) process.kill(p, 'SIGSTOP')
    }
    for (const p of tree) {
      const target = want(p)
      const ok = await pollUntil(() => {
        const ts = readThreadStates(p)
        return ts.length > 0 && (target === 'running' ? ts.every((t) => t.state !== 'T') : ts.every((t) => t.state === 'T'))
      }, { timeoutMs: STATE_WAIT_MS })
      if (!ok) throw new RestoreFailedError(`restored process ${p} did not ${target === 'running' ? 'resume' : 'stop'}`)
    }
    return tree.map((p) => ({ pid: p, left: want(p) }))
  }

  /**
   * Kills what this restore recorded as its own (recordRestored), each only while its pid still has the recorded
   * start time, and reports failed. Nothing else is signalled: not a pid of the images' tree that something else has
   * taken, whenever it started.
   */
  private async fail(cause: unknown): Promise<void> {
    await stopAllTools()
    // What the roots started since they were last looked at (once the final state let them run) is theirs too.
    this.recordTree()
    const killed: number[] = []
    const reused: number[] = []
    for (const id of this.journal?.current.restored ?? []) {
      const sent = signalRecorded(id, 'SIGKILL')
      if (sent === 'signalled') killed.push(id.pid)
      else if (sent === 'reused') reused.push(id.pid)
    }
    if (this.holderPid !== undefined) await stopProcessGroup(this.holderPid, 500)
    this.enter('failed')
    const why = cause instanceof SnapError ? cause.message : String(cause)
    const left = reused.length ? `; left ${reused.join(', ')} alone (the pid now belongs to another process)` : ''
    this.progress.note(`restore failed: ${why}${killed.length ? `; killed partly restored ${killed.join(', ')}` : ''}${left}`)
  }
}

/** criu restore options for a container: its root, and each mount bound in from the host, bound again from where it
 *  is on this host. A cgroup directory the original's runtime removed is made again (mkdir in a cgroup filesystem
 *  creates the cgroup). */
function containerRestoreArgs(c: NonNullable<Manifest['container']>): string[] {
  const args = ['--root', c.rootfs]
  for (const m of c.externalMounts) {
    if (!existsSync(m.hostPath) && (m.fstype === 'cgroup' || m.fstype === 'cgroup2')) mkdirSync(m.hostPath, { recursive: true })
    args.push('--external', `mnt[${m.key}]:${m.hostPath}`)
  }
  return args
}

/** The zombies under pid, at any depth (readDescendants lists only the live processes, and walks through these). */
function restoredZombies(pid: number): number[] {
  const zombies: number[] = []
  for (const p of [pid, ...readDescendants(pid)]) {
    for (const child of readChildren(p)) if (readStat(child)?.state === 'Z') zombies.push(child)
  }
  return zombies
}

/** The pid criu wrote to its pidfile, once it has. */
function pidFromFile(path: string): number | undefined {
  const pid = Number(readTextFile(path)?.trim())
  return Number.isInteger(pid) && pid > 1 ? pid : undefined
}

export type { FinalState }
