// Runs one external tool (gdb, criu) as its own process group, with a deadline, a cancel signal, and its output
// in a log file. The group is what gets killed: a tool's own children must not outlive it.

import { appendFileSync, existsSync, readFileSync } from 'node:fs'
import { execa } from 'execa'
import { pollUntil } from '../target/poll.js'

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

/** Processes snap started that are still running, so a signal handler can stop them all. */
const running = new Map<number, { command: string }>()

export function runningToolPids(): number[] {
  return [...running.keys()]
}

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0)
    return true
  } catch {
    return false
  }
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

/** Stops every tool still running (used on SIGINT/SIGTERM/SIGHUP). */
export async function stopAllTools(graceMs = 1000): Promise<void> {
  await Promise.all(runningToolPids().map((pid) => stopProcessGroup(pid, graceMs)))
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
  /** Starts (or restarts) the deadline from now. */
  armTimeout(ms: number): void
  done: Promise<ToolRun>
}

/**
 * Starts a tool and returns at once. With `stdin: 'pipe'` the tool can be started early and given its commands later
 * (gdb, loaded before the target is frozen, so its start-up is not part of the freeze); the deadline then starts
 * with armTimeout().
 */
export function startTool(file: string, args: string[], opts: Omit<ToolRunOptions, 'timeoutMs'> & { timeoutMs?: number; stdin?: 'pipe' }): StartedTool {
  const command = [file, ...args]
  const [bin, binArgs] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', file, ...args]] : [file, args]
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
  const stop = () => {
    if (pid !== undefined && !stopping) stopping = stopProcessGroup(pid, opts.graceMs ?? 2000)
  }
  let timer: NodeJS.Timeout | undefined
  const armTimeout = (ms: number) => {
    clearTimeout(timer)
    timer = setTimeout(() => {
      timedOut = true
      stop()
    }, ms)
  }
  if (opts.timeoutMs !== undefined) armTimeout(opts.timeoutMs)
  const onAbort = () => {
    cancelled = true
    stop()
  }
  if (pid !== undefined) {
    running.set(pid, { command: file })
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
    armTimeout,
    done,
  }
}

export async function runTool(file: string, args: string[], opts: ToolRunOptions): Promise<ToolRun> {
  return startTool(file, args, opts).done
}

export function round(ms: number): number {
  return Math.round(ms * 1000) / 1000
}

export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", `'\\''`)}'`
}

/** The last lines of a log, for error messages: the tool's own words. */
export function tailLines(file: string, n: number, filter?: (line: string) => boolean): string[] {
  try {
    const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim().length > 0)
    return (filter ? lines.filter(filter) : lines).slice(-n)
  } catch {
    return []
  }
}

/** Runs a quick query (a --version) and returns its output; never throws. */
export async function queryTool(file: string, args: string[], timeoutMs = 15000): Promise<{ ok: boolean; output: string; exitCode?: number }> {
  try {
    const r = await execa(file, args, { reject: false, timeout: timeoutMs, stdin: 'ignore', all: true, cleanup: true })
    return { ok: r.exitCode === 0, output: String(r.all ?? ''), exitCode: r.exitCode ?? undefined }
  } catch (e) {
    return { ok: false, output: e instanceof Error ? e.message : String(e) }
  }
}
