// criu restore, launched the two ways a restore needs: detached in a session of its own (the tree takes the host's
// pids), or as the init of new namespaces (a copy beside the original). What it made is judged by the caller; here are
// the launch, the deadline, the cancel signal, and what its log says when it fails.

import { spawn } from 'node:child_process'
import { appendFileSync, closeSync, existsSync, openSync, readSync } from 'node:fs'
import { readFileSync } from 'node:fs'
import { InterruptedError, RestoreFailedError, StepTimeoutError, type InterruptSignal } from '../errors.js'
import { pollUntil } from '../process/poll.js'
import { diagnoseCriuLog } from './criu-log.js'
import { keepLog } from './kept-log.js'
import { shellQuote, stopProcessGroup } from './run.js'

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p))
/** sh -c: exec the command after $1 if the process $1 is still this one's parent. */
const PARENT_ALIVE = '[ "$PPID" = "$1" ] || exit 125; shift; exec "$@"'
/** How often a running criu restore is looked at for what it has made. */
const WATCH_MS = 10
/** What criu writes last when a restore went through. */
const SUCCESS_LINE = 'Restore finished successfully'

export interface DetachedRestore {
  criu: string
  args: string[]
  outFile: string
  timeoutMs: number
  /** A container's root: bound onto itself in a mount namespace of criu's own before criu pivots into it. */
  containerRoot?: string
  cancel: AbortSignal
  /** The launched process's pid, as soon as there is one (to be journalled before it can make anything). */
  onStarted: (pid: number) => { pid: number; startTime: number } | undefined
  /** Called every few ms while criu runs, and once after: records what it has made so far. */
  watch: (tool: { pid: number; startTime: number }) => void
}

/**
 * criu restore in a session of its own, not through runTool, whose clean-up kills what is left in the tool's process
 * group once it exits: with --shell-job the restored root joins criu's group when its own group leader is not part
 * of the tree, so that clean-up killed every restored target that had not been its own group leader.
 * --restore-sibling makes the root snap's child instead of criu's: a job that is its own group leader, restored
 * stopped as criu's child, sat in an orphaned group with a stopped member the moment criu exited, and the kernel
 * then sends SIGHUP (which kills it) and SIGCONT. A session of its own keeps that from happening when snap exits.
 */
export async function runCriuDetached(r: DetachedRestore): Promise<{ exitCode: number | null }> {
  appendFileSync(r.outFile, `$ ${[r.criu, ...r.args].map(shellQuote).join(' ')}\n`, { mode: 0o600 })
  const out = openSync(r.outFile, 'a', 0o600)
  // setpriv --pdeathsig: criu dies with snap, even if snap is SIGKILLed mid-restore. The kernel sends nothing if snap
  // died before setpriv asked, and criu would then restore a tree nothing records: the shell in between becomes criu
  // only if snap is still its parent once the signal is set.
  let [bin, binArgs] = SETPRIV
    ? [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', '/bin/sh', '-c', PARENT_ALIVE, 'sh', String(process.pid), r.criu, ...r.args]]
    : [r.criu, r.args]
  if (r.containerRoot) {
    // criu pivots into a container's root, which must be a mount point: bound onto itself in a mount namespace of
    // criu's own, so the host keeps no trace of it (as runc does before it restores).
    binArgs = ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c', 'mount --bind "$1" "$1" && shift && exec "$@"', 'sh', r.containerRoot, bin, ...binArgs]
    bin = '/usr/bin/unshare'
  }
  const child = spawn(bin, binArgs, { detached: true, stdio: ['ignore', out, out] })
  closeSync(out)
  // What criu makes is recorded while it runs, not after: a snap killed meanwhile leaves recover a journal naming it.
  const tool = child.pid !== undefined ? r.onStarted(child.pid) : undefined
  const watcher = tool ? setInterval(() => r.watch(tool), WATCH_MS) : undefined
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => resolve(code))
    child.once('error', () => resolve(null))
  })
  let timedOut = false
  let stopping: Promise<void> | undefined
  const stop = () => {
    if (child.pid !== undefined) stopping ??= stopProcessGroup(child.pid, 2000)
  }
  const timer = setTimeout(() => {
    timedOut = true
    stop()
  }, r.timeoutMs)
  if (r.cancel.aborted) stop()
  r.cancel.addEventListener('abort', stop, { once: true })
  try {
    const exitCode = await exited
    await stopping
    if (tool) r.watch(tool)
    if (r.cancel.aborted) throw new InterruptedError(r.cancel.reason as InterruptSignal, 'criu restore')
    if (timedOut) throw criuTimeout(logFileOf(r.args), 'criu restore')
    return { exitCode }
  } finally {
    clearInterval(watcher)
    clearTimeout(timer)
    r.cancel.removeEventListener('abort', stop)
  }
}

export interface NamespacedRestore {
  criu: string
  args: string[]
  outFile: string
  timeoutMs: number
  cancel: AbortSignal
  /** unshare's namespace flags: --pid always (criu is the namespace's init), --net, --mount, --ipc, --uts for a copy. */
  namespaces: string[]
  /** Shell run inside the namespaces before criu, as root there (loopback up, the addresses the tree listened on). */
  setup?: string
  onStarted: (pid: number) => void
}

/**
 * Like criu-ns: criu runs as pid 1 of a new pid namespace (unshare --pid --fork --mount-proc), where the tree's old
 * pids are free. criu is not detached there: as the namespace's init it must outlive the restored tree, so it is left
 * running, and success is judged from the log it writes (read from where the last look ended, never again whole).
 * Returns the host pid of the process holding the namespaces (unshare).
 */
export async function runCriuInNamespaces(r: NamespacedRestore): Promise<number> {
  const logFile = logFileOf(r.args)
  const nsArgs = r.args.filter((a) => a !== '--restore-detached')
  appendFileSync(r.outFile, `$ unshare ${r.namespaces.join(' ')} --fork --mount-proc -- ${[r.criu, ...nsArgs].map(shellQuote).join(' ')}\n`, { mode: 0o600 })
  const out = openSync(r.outFile, 'a', 0o600)
  const inner = r.setup ? ['/bin/sh', '-c', `${r.setup}\nexec "$@"`, 'sh', r.criu, ...nsArgs] : [r.criu, ...nsArgs]
  // Plain spawn, not execa: this process must be unref'd and outlive snap.
  const child = spawn('/usr/bin/unshare', [...r.namespaces, '--fork', '--mount-proc', '--', ...inner], { detached: true, stdio: ['ignore', out, out] })
  closeSync(out)
  const holder = child.pid
  if (holder === undefined) throw new RestoreFailedError('could not start unshare for a restore in new namespaces')
  r.onStarted(holder)
  let exited = false
  child.once('exit', () => (exited = true))
  child.once('error', () => (exited = true))
  const log = new LogWatch(logFile, SUCCESS_LINE)
  const done = await pollUntil(() => log.seen() || exited || r.cancel.aborted, { timeoutMs: r.timeoutMs, maxIntervalMs: 50 })
  if (r.cancel.aborted) throw new InterruptedError(r.cancel.reason as InterruptSignal, 'criu restore')
  if (!done) throw criuTimeout(logFile, 'criu restore in new namespaces')
  if (!log.seen()) throw criuFailure(logFile, null)
  child.unref()
  return holder
}

/** Reads a growing log from where the last look ended, for one line; only the last few bytes are kept between looks. */
class LogWatch {
  private offset = 0
  private tail = ''
  private found = false

  constructor(
    private readonly path: string,
    private readonly line: string,
  ) {}

  seen(): boolean {
    if (this.found) return true
    let fd: number
    try {
      fd = openSync(this.path, 'r')
    } catch {
      return false // criu has not written its log yet
    }
    try {
      const buf = Buffer.alloc(1 << 16)
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, this.offset)
        if (n <= 0) break
        this.offset += n
        const text = this.tail + buf.subarray(0, n).toString('latin1')
        if (text.includes(this.line)) return (this.found = true)
        this.tail = text.slice(-this.line.length)
      }
    } finally {
      closeSync(fd)
    }
    return false
  }
}

function logFileOf(args: string[]): string {
  const i = args.indexOf('--log-file')
  return i >= 0 ? args[i + 1]! : ''
}

/**
 * criu killed at its deadline: what its log says (its first error line, else the last line it wrote: where it was when
 * it hung), and the log kept, named in the hint.
 */
export function criuTimeout(logFile: string, what: string): StepTimeoutError {
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

export function criuFailure(logFile: string, exitCode: number | null): RestoreFailedError {
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
