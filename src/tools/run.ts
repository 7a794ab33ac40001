// Runs one external tool (gdb, criu) as its own process group, with a deadline, a cancel signal, and its output
// in a log file. The group is what gets killed: a tool's own children must not outlive it.

import { appendFileSync, existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { execa } from 'execa'
import { pollUntil } from '../process/poll.js'
import { readStat } from '../process/proc.js'

export interface ToolRunOptions {
  timeoutMs: number
  /** Aborting it stops the tool: SIGTERM to its group, then SIGKILL after graceMs. */
  cancel?: AbortSignal
  /** stdout and stderr are appended here. */
  logFile: string
  graceMs?: number
  env?: Record<string, string>
  cwd?: string
  /** Called with the tool's pid as soon as it exists (the journal records it). */
  onSpawn?: (pid: number) => void
  /**
   * Killed by the kernel if snap dies (setpriv --pdeathsig SIGKILL). Default true. criu is not: killed while it holds
   * the target it can take the target with it, so it finishes and leaves the target stopped for `snap recover`.
   */
  dieWithSnap?: boolean
  /**
   * Awaited before the tool is stopped (by its deadline, a cancel, or stopAllTools): criu must not be killed while it
   * holds the tree, so its caller waits here until criu has let go (bounded by a deadline of its own).
   */
  beforeStop?: () => Promise<void>
  /**
   * Keep the OOM killer off the tool: a criu or gdb killed while it holds a production process can take the process
   * with it. Lowering oom_score_adj needs CAP_SYS_RESOURCE; without it the tool runs as it would have, and its log says so.
   */
  protectFromOom?: boolean
}

export interface ToolRun {
  /** The exact command, as a person could paste it. */
  command: string[]
  pid: number | undefined
  exitCode: number | null
  signal: string | null
  startedAt: string
  endedAt: string
  durationMs: number
  timedOut: boolean
  cancelled: boolean
  logFile: string
}

/** Processes snap started that are still running, each with the way to stop it, so that they can all be stopped. */
const running = new Map<number, { command: string; stop: () => Promise<void> }>()

export function runningToolPids(): number[] {
  return [...running.keys()]
}

/**
 * True while a process of the group is alive. A zombie is not: it let go of the target when it exited (ptrace detaches
 * then), and one whose parent died first (a tool's child) waits for init to reap it, which here took over a second.
 */
function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0)
  } catch {
    return false
  }
  let names: string[]
  try {
    names = readdirSync('/proc')
  } catch {
    return true
  }
  return names.some((n) => {
    if (!/^\d+$/.test(n)) return false
    const s = readStat(Number(n))
    return s !== undefined && s.pgrp === pgid && s.state !== 'Z' && s.state !== 'X'
  })
}

function signalGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal)
  } catch {
    // already gone
  }
}

/** SIGTERM, a grace period, then SIGKILL; resolves when the group is empty or after the SIGKILL has landed. */
export async function stopProcessGroup(pgid: number, graceMs: number): Promise<void> {
  if (!groupAlive(pgid)) return
  signalGroup(pgid, 'SIGTERM')
  const gone = await pollUntil(() => !groupAlive(pgid), { timeoutMs: graceMs, maxIntervalMs: 20 })
  if (gone) return
  signalGroup(pgid, 'SIGKILL')
  await pollUntil(() => !groupAlive(pgid), { timeoutMs: 2000, maxIntervalMs: 20 })
}

/**
 * How long a tool gets to exit after SIGTERM before SIGKILL. Short because the target stays frozen until the tool is
 * gone: criu (curing its parasite) and gdb (mid-gcore) both exit within tens of ms of SIGTERM here, and a SIGKILLed one
 * is detached by the kernel, criu's parasite restoring the thread it ran in.
 */
export const STOP_GRACE_MS = 500

/** Stops every tool still running (used on SIGINT/SIGTERM/SIGHUP), each the way it asked to be stopped. */
export async function stopAllTools(): Promise<void> {
  await Promise.all([...running.values()].map((r) => r.stop()))
}

/** -1000: the OOM killer never picks it. Returns what the log should say. */
function protectFromOom(pid: number): string {
  try {
    writeFileSync(`/proc/${pid}/oom_score_adj`, '-1000')
    return 'oom_score_adj -1000: the OOM killer leaves it alone while it holds the target'
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e)
    return `oom_score_adj not lowered (${code}: lowering it needs CAP_SYS_RESOURCE): the OOM killer may pick this tool`
  }
}

/**
 * setpriv --pdeathsig makes the kernel kill the tool if snap itself dies (even by SIGKILL), so no gdb or criu is left
 * attached to a target nobody watches. It is util-linux, present on every Debian system.
 */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p))

export interface StartedTool {
  pid: number | undefined
  /** Writes to the tool's stdin (only with `stdin: 'pipe'`). */
  write(text: string): void
  /** Ends the tool's stdin (only with `stdin: 'pipe'`). */
  endInput(): void
  /** Starts (or restarts) the deadline from now. */
  armTimeout(ms: number): void
  done: Promise<ToolRun>
}

/**
 * Starts a tool and returns at once. With `stdin: 'pipe'` the tool can be started early and given its commands later
 * (gdb, loaded before the target is frozen, so its start-up is not part of the freeze); the deadline then starts
 * with armTimeout().
 */
export function startTool(
  file: string,
  args: string[],
  opts: Omit<ToolRunOptions, 'timeoutMs'> & { timeoutMs?: number; stdin?: 'pipe'; /** What the log and the record show instead. */ command?: string[] },
): StartedTool {
  const command = opts.command ?? [file, ...args]
  const [bin, binArgs] = SETPRIV && opts.dieWithSnap !== false ? [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', file, ...args]] : [file, args]
  const startedAt = new Date()
  const t0 = performance.now()
  appendFileSync(opts.logFile, `$ ${command.map(shellQuote).join(' ')}\n`, { mode: 0o600 })
  const child = execa(bin, binArgs, {
    detached: true, // its own process group, so we can stop it and everything it started
    cleanup: true,
    reject: false,
    stdin: opts.stdin === 'pipe' ? 'pipe' : 'ignore',
    stdout: { file: opts.logFile, append: true },
    stderr: { file: opts.logFile, append: true },
    env: opts.env,
    cwd: opts.cwd,
  })
  child.stdin?.on('error', () => undefined) // a tool that died early: its exit status tells the story
  const pid = child.pid
  let timedOut = false
  let cancelled = false
  let stopping: Promise<void> | undefined
  const stop = (): Promise<void> => {
    if (pid !== undefined && !stopping)
      stopping = (async () => {
        await opts.beforeStop?.().catch(() => undefined)
        await stopProcessGroup(pid, opts.graceMs ?? STOP_GRACE_MS)
      })()
    return stopping ?? Promise.resolve()
  }
  let timer: NodeJS.Timeout | undefined
  const armTimeout = (ms: number) => {
    clearTimeout(timer)
    timer = setTimeout(() => {
      timedOut = true
      void stop()
    }, ms)
  }
  if (opts.timeoutMs !== undefined) armTimeout(opts.timeoutMs)
  const onAbort = () => {
    cancelled = true
    void stop()
  }
  if (pid !== undefined) {
    // Inherited through the gate's exec and by the tool's own children.
    if (opts.protectFromOom) appendFileSync(opts.logFile, `# ${protectFromOom(pid)}\n`)
    running.set(pid, { command: file, stop })
    opts.onSpawn?.(pid)
  }
  if (opts.cancel?.aborted) onAbort()
  opts.cancel?.addEventListener('abort', onAbort, { once: true })
  const done = (async (): Promise<ToolRun> => {
    try {
      const result = await child
      if (pid !== undefined && groupAlive(pid)) await stopProcessGroup(pid, 200) // stragglers the tool left
      await stopping
      return {
        command,
        pid,
        exitCode: result.exitCode ?? null,
        signal: result.signal ?? null,
        startedAt: startedAt.toISOString(),
        endedAt: new Date().toISOString(),
        durationMs: round(performance.now() - t0),
        timedOut,
        cancelled,
        logFile: opts.logFile,
      }
    } finally {
      clearTimeout(timer)
      opts.cancel?.removeEventListener('abort', onAbort)
      if (pid !== undefined) running.delete(pid)
    }
  })()
  return {
    pid,
    write: (text: string) => {
      child.stdin?.write(text)
    },
    endInput: () => {
      child.stdin?.end()
    },
    armTimeout,
    done,
  }
}

export async function runTool(file: string, args: string[], opts: ToolRunOptions): Promise<ToolRun> {
  return startTool(file, args, opts).done
}

// The gate: a shell that waits for one line on its stdin, then replaces itself with the tool (same pid, same process
// group). Its stdin closing first (snap gone, or the freeze given up) ends it without the tool ever running.
const GATE = 'IFS= read -r go || exit 125; [ "$go" = go ] || exit 125; exec "$0" "$@"'

export interface GatedTool {
  /** The shell's pid now, the tool's once the gate is open (exec keeps it). */
  pid: number | undefined
  /** Lets the tool run, its deadline starting now. */
  open(timeoutMs: number): void
  done: Promise<ToolRun>
}

/**
 * Starts a tool now and holds it at a gate until open(). Starting a program from snap costs a fork of snap itself,
 * 14-18 ms measured here with snap's memory; paid while the target runs, it is not part of the freeze, which then
 * pays only for an exec. The record and the log show the tool's own command.
 */
export function startGatedTool(file: string, args: string[], opts: Omit<ToolRunOptions, 'timeoutMs'>): GatedTool {
  const started = startTool('/bin/sh', ['-c', GATE, file, ...args], { ...opts, stdin: 'pipe', command: [file, ...args] })
  return {
    pid: started.pid,
    open: (timeoutMs) => {
      started.armTimeout(timeoutMs)
      started.write('go\n')
      started.endInput()
    },
    done: started.done,
  }
}

export function round(ms: number): number {
  return Math.round(ms * 1000) / 1000
}

export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`
}

/**
 * A tool's line made fit for a one-line message: terminal escape sequences and control characters removed (a tool
 * that prints garbage must not clear the screen or retitle the terminal of the person reading the error), and cut short.
 */
export function printableLine(line: string, max = 200): string {
  const text = line
    .replace(/\x1b\[[0-?]*[ -/]*[@-~]/g, '') // CSI: colours, cursor moves, clear screen
    .replace(/\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?/g, '') // OSC: window titles
    .replace(/[\x00-\x1f\x7f-\x9f]+/g, ' ')
    .trim()
  return text.length > max ? `${text.slice(0, max - 3)}...` : text
}

/** Bytes that are not text (a tool printing a core to its stdout): many of them did not decode as UTF-8. */
function looksBinary(line: string): boolean {
  const undecodable = line.length - line.replaceAll('\uFFFD', '').length
  return undecodable > 0 && undecodable / line.length > 0.05
}

/** A line the tool printed, not one snap wrote into its log (the command line, `$ ...`; a note, `# ...`). */
export function isToolLine(line: string): boolean {
  return !line.startsWith('$ ') && !line.startsWith('# ')
}

/** The last lines of a log, for error messages: the tool's own words, made printable; binary junk left out. */
export function tailLines(file: string, n: number, filter?: (line: string) => boolean): string[] {
  try {
    const lines = readFileSync(file, 'utf8')
      .split('\n')
      .map((l) => printableLine(l))
      .filter((l) => l.length > 0 && !looksBinary(l))
    return (filter ? lines.filter(filter) : lines).slice(-n)
  } catch {
    return []
  }
}

/** Runs a quick query (a --version) and returns its output; never throws. */
export async function queryTool(file: string, args: string[], timeoutMs = 15000): Promise<{ ok: boolean; output: string; exitCode?: number }> {
  // setpriv --pdeathsig as for the tools themselves: a `criu check` that hangs must not outlive a snap killed by SIGKILL
  // (execa's cleanup runs only when snap exits normally).
  const [bin, binArgs] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', file, ...args]] : [file, args]
  try {
    const r = await execa(bin, binArgs, { reject: false, timeout: timeoutMs, stdin: 'ignore', all: true, cleanup: true })
    return { ok: r.exitCode === 0, output: String(r.all ?? ''), exitCode: r.exitCode ?? undefined }
  } catch (e) {
    return { ok: false, output: e instanceof Error ? e.message : String(e) }
  }
}
